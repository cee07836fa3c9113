"""Activations: the size of a run (`Job`) and the peak working memory of each stage."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from engine.humo.variants import Variant
from engine.humo.windows import DEFAULT_LENGTH as DEFAULT_WINDOW
from engine.memory.counts import _dtype_bytes

# -- activation model constants (bytes; see estimate_* below for where each one enters) --------
# DiT, per token and per pass run together, the largest of three phases of a block:
#   residual add : the float32 residual stream (block input and new hidden states, see
#                  HuMoTransformerBlock), the norm and the branch output in the compute dtype,
#                  and a float32 gate product: (2·cb + 12)·dim
#   feed-forward : 4·dim (the float32 stream) + 2·cb·dim (norm, output) + 2·cb·ffn (projection
#                  and GELU output)
#   attention    : 4·dim (the float32 stream) + 6·cb·dim (norm, q, k, v, rotary output, attention
#                  output) + 4·dim (float32 halves inside the rotary embedding)
# SDPA/flash attention keeps no tokens×tokens matrix. The result is scaled by ACT_SLACK for the
# caching allocator's fragmentation and kernel workspaces (not measured on a GPU yet).
ACT_SLACK = 1.25
# Wan VAE: it decodes one latent frame at a time (4 video frames) with causal-conv caches, so its
# working set scales with pixels × channels, not with the clip length. Bytes per output pixel per
# base channel (96 for the real VAE) per compute-dtype byte: 45, calibrated on CPU with the tiny
# VAE (base dim 16, float32; 42 measured between 256² and 512² frames) and consistent with a count
# of the caches and temporaries of the full-resolution decoder stage.
VAE_BYTES_PER_PX_CH = 45


@dataclass(frozen=True)
class Job:
    """The size of one run, as far as memory is concerned. A video longer than one context window
    (engine.humo.windows) runs its network passes a window at a time: its activations are those
    of one window, whatever its length; only the latents grow with it."""
    width: int
    height: int
    frames: int                    # video frames (snapped to 4k+1)
    images: int = 1                # reference images R (TA mode: one zero frame)
    mode: str = "TIA"
    steps: int = 50
    window_length: int = DEFAULT_WINDOW    # latent frames per context window

    @property
    def latent_frames(self) -> int:
        return (self.frames - 1) // 4 + 1

    @property
    def pass_latent_frames(self) -> int:
        """Latent frames (reference frames apart) in one network pass: the whole video, or one window."""
        return min(self.latent_frames, self.window_length)

    @property
    def pass_frames(self) -> int:
        return 1 + 4 * (self.pass_latent_frames - 1)

    def tokens(self, shape) -> int:
        """(T + R) · (H/16) · (W/16) for patch (1, 2, 2), T the latent frames of one pass."""
        pt, ph, pw = shape.patch_size
        return (self.pass_latent_frames + self.images) // pt * (self.height // 8 // ph) * (self.width // 8 // pw)


def passes_per_step(variant: Variant, mode: str) -> int:
    from engine.humo.guidance import plan_for

    return len(plan_for(variant.reference, mode, 999.0, variant.defaults.switch_t).passes)


def dit_activation_bytes(shape, job: Job, batch: int, compute: torch.dtype) -> int:
    """Peak of one DiT forward (batch = passes run together); see the constants at the top."""
    cb = _dtype_bytes(compute)
    s, d, f = job.tokens(shape), shape.dim, shape.ffn_dim
    residual = (2 * cb + 12) * d
    ffn = (4 + 2 * cb) * d + 2 * cb * f
    attention = (8 + 6 * cb) * d
    per_token = max(residual, ffn, attention)
    head_dim = d // shape.num_heads
    fixed = (2 * shape.text_len * d * cb                        # text embedding MLP in/out
             + s * head_dim * 4 * 2                             # RoPE cos/sin for every token
             + (shape.in_dim + 16) * s * 4 * 4 * 4)             # inputs, output and its float32 copies
    return int(ACT_SLACK * batch * (s * per_token + fixed))


def latents_bytes(job: Job) -> int:
    """The solver's float32 state on the device: latents, noise, a few model outputs (order 2),
    the conditions (reference latents, y)."""
    n = 16 * (job.latent_frames + job.images) * (job.height // 8) * (job.width // 8)
    return 8 * n * 4


def vae_activation_bytes(base_dim: int, job: Job, compute: torch.dtype, tile: int | None, decode: bool) -> int:
    """Peak of a decode (or of the encodes before denoising) at this size."""
    cb = _dtype_bytes(compute)
    w, h = job.width, job.height
    tiled = tile is not None and (w > tile or h > tile)
    px = tile * tile if tiled else w * h
    work = VAE_BYTES_PER_PX_CH * base_dim * cb * px
    # A video longer than one window is encoded (the 17B's zero video, a chunk at a time) and decoded
    # (into the MP4 writer) as it streams: counted as one window's worth. Tiles cannot stream in time.
    frames = job.frames if tiled else job.pass_frames
    if not decode:
        # Reference images (one frame each) and, for the 17B, the all-zero video of T+R latent frames.
        frames = 1 + 4 * ((job.latent_frames if tiled else job.pass_latent_frames) + job.images - 1)
        return work + 3 * frames * w * h * cb
    out = 3 * frames * w * h * cb
    out32 = 3 * frames * w * h * 4
    final = out + 2 * out32                                     # the engine's float copy and clamp
    if tiled:
        stride = tile * 3 // 4
        overlap = (tile / stride) ** 2
        return int(max(work + overlap * out, (overlap + 2) * out, final))
    return int(max(work + 2 * out, final))


def text_activation_bytes(cfg: dict, compute: torch.dtype, largest_linear: int) -> int:
    """One prompt of 512 tokens: hidden states, the FFN, the position bias and attention scores
    (eager attention), and one dequantized weight for bitsandbytes layers."""
    cb = _dtype_bytes(compute)
    L = 512
    return (4 * L * cfg["d_model"] * 4 + 3 * L * cfg["d_ff"] * cb + 3 * cfg["num_heads"] * L * L * 4
            + largest_linear * cb)


def audio_activation_bytes(cfg: dict, compute: torch.dtype) -> int:
    """One 30 s window: all 33 hidden states kept and stacked (float32 copy), one layer's FFN and
    attention scores."""
    cb = _dtype_bytes(compute)
    t, c = cfg["max_source_positions"], cfg["d_model"]
    states = (cfg["encoder_layers"] + 1) * t * c
    return (states * (2 * cb + 4) + 3 * t * cfg["encoder_ffn_dim"] * cb
            + 3 * cfg["encoder_attention_heads"] * t * t * 4 + 2 * cfg["num_mel_bins"] * 3000 * 4)
