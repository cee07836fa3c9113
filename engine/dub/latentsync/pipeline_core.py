"""One LatentSync chunk: aligned faces + audio chunks -> faces with a redrawn mouth, in face space.

The streaming pipeline and the golden pipeline check share this computation:
1. `prepare_chunk`: pixels in [-1, 1], the fixed mask, VAE latents of the masked faces and of the
   same faces unmasked (two posterior samples drawn from the global RNG, masked first), x0.18215;
2. `ddim.denoise_chunk` from the single noise frame repeated over the chunk;
3. `decode` (latents / 0.18215, no clamp) and `paste_back` (the mouth from the decode, the rest
   from the input face, blended by the mask's soft LANCZOS edge).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from engine.dub.latentsync.ddim import denoise_chunk
from engine.dub.latentsync.masks import latent_mask, masked_inputs
from engine.errors import WeightsError

VAE_SCALE = 0.18215
VAE_SHIFT = 0.0
CHUNK_FRAMES = 16


@dataclass
class Settings:
    """Sampling settings; the defaults are the official `inference.sh` / Gradio ones."""

    steps: int = 20
    guidance_scale: float = 1.5
    deepcache_interval: int | None = 3  # None: every step runs the full UNet (exact, slower)
    chunk_frames: int = CHUNK_FRAMES
    scheduler_config: dict | None = None


def load_vae(folder: str | Path, *, dtype: torch.dtype = torch.float32, device="cpu"):
    """SD VAE (diffusers layout, e.g. sd-vae-ft-mse) with LatentSync's scaling 0.18215 and shift 0."""
    from diffusers import AutoencoderKL

    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise WeightsError(f"VAE folder {folder} has no config.json.", hint="Fetch stabilityai/sd-vae-ft-mse into it.")
    try:
        vae = AutoencoderKL.from_pretrained(str(folder), torch_dtype=dtype)
    except (OSError, ValueError, RuntimeError) as err:
        raise WeightsError(f"VAE in {folder} could not be loaded ({str(err).splitlines()[0]}).",
                           hint="Re-download stabilityai/sd-vae-ft-mse.") from None
    vae.register_to_config(scaling_factor=VAE_SCALE, shift_factor=VAE_SHIFT)
    return vae.to(device).eval().requires_grad_(False)


def frame_order(outputs: int, inputs: int) -> list[int]:
    """Input frame behind each output frame: forward, backward, forward... when the audio is longer
    (the turning frame shows twice in a row, as in the official loop); else the first `outputs`."""
    if inputs <= 0:
        raise ValueError("no input frames")
    order: list[int] = []
    forward = list(range(inputs))
    loop = 0
    while len(order) < outputs:
        order += forward if loop % 2 == 0 else forward[::-1]
        loop += 1
    return order[:outputs]


def initial_noise(latent_size: tuple[int, int], *, dtype=torch.float32, generator: torch.Generator | None = None) -> torch.Tensor:
    """The single noise frame [1, 4, 1, h, w]; every frame of every chunk starts from it."""
    return torch.randn((1, 4, 1, *latent_size), generator=generator, dtype=dtype)


def _to_video(x: torch.Tensor) -> torch.Tensor:  # [F, C, h, w] -> [1, C, F, h, w]
    return x.transpose(0, 1)[None]


@torch.no_grad()
def encode(vae, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Images [F, 3, R, R] in [-1, 1] -> scaled latents [F, 4, R/8, R/8] (one posterior sample; the global
    RNG unless `generator` is given)."""
    dist = vae.encode(images.to(vae.device, vae.dtype)).latent_dist
    return (dist.sample(generator=generator) - VAE_SHIFT) * VAE_SCALE


@dataclass
class ChunkConditions:
    pixels: torch.Tensor      # [F, 3, R, R] float32 in [-1, 1]
    masks: torch.Tensor       # [F, 1, R, R] float64, 0 in the mouth
    unet_input: torch.Tensor  # [1, 1 + 4 + 4, F, h, w]: mask, masked-image latents, reference latents

    @property
    def mask_latents(self):
        return self.unet_input[:, :1]

    @property
    def masked_latents(self):
        return self.unet_input[:, 1:5]

    @property
    def ref_latents(self):
        return self.unet_input[:, 5:]


@torch.no_grad()
def prepare_chunk(vae, faces: torch.Tensor, mask: torch.Tensor, generator: torch.Generator | None = None) -> ChunkConditions:
    """Aligned uint8 faces [F, 3, R, R] and the fixed mask [3, R, R] -> the chunk's UNet conditions."""
    pixels, masked, masks = masked_inputs(faces, mask)
    size = (faces.shape[-2] // 8, faces.shape[-1] // 8)
    mask_latents = latent_mask(masks, size)
    masked_latents = encode(vae, masked.float(), generator)
    ref_latents = encode(vae, pixels, generator)
    dtype = masked_latents.dtype
    device = masked_latents.device
    unet_input = torch.cat([_to_video(mask_latents.to(device, dtype)), _to_video(masked_latents), _to_video(ref_latents)], dim=1)
    return ChunkConditions(pixels.to(device), masks.to(device), unet_input)


@torch.no_grad()
def decode(vae, latents: torch.Tensor) -> torch.Tensor:
    """Latents [1, 4, F, h, w] -> images [F, 3, R, R] (not clamped)."""
    frames = latents[0].transpose(0, 1) / VAE_SCALE + VAE_SHIFT
    return vae.decode(frames.to(vae.device, vae.dtype)).sample


def paste_back(decoded: torch.Tensor, pixels: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """The mouth from the decode, the rest from the input face: decoded*m + pixels*(1-m), m = float32(1 - mask)."""
    decoded = decoded.float()       # a bf16 decode is blended in float32
    m = (1 - masks).float()
    return decoded * m + pixels.float() * (1 - m)


@torch.no_grad()
def run_chunk(unet, vae, faces: torch.Tensor, audio: torch.Tensor, noise: torch.Tensor, mask: torch.Tensor,
              settings: Settings, on_step=None, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One chunk: uint8 faces [F, 3, R, R], audio [F, 50, 384], the noise frame -> (pasted faces [F, 3, R, R]
    in [-1, 1], final latents [1, 4, F, h, w])."""
    cond = prepare_chunk(vae, faces, mask, generator)
    frames = faces.shape[0]
    dtype = cond.unet_input.dtype
    device = cond.unet_input.device
    latents = noise.to(device, torch.float32).expand(-1, -1, frames, -1, -1).contiguous()
    latents = denoise_chunk(unet, latents, cond.unet_input, audio.to(device, dtype), steps=settings.steps,
                            guidance_scale=settings.guidance_scale, deepcache_interval=settings.deepcache_interval,
                            scheduler_config=settings.scheduler_config, on_step=on_step)
    return paste_back(decode(vae, latents), cond.pixels, cond.masks), latents


@dataclass
class ClipResult:
    frames: np.ndarray          # uint8 [N, H, W, 3], the output frames
    order: list[int]            # input frame behind each output frame
    matrices: torch.Tensor      # [K', 2, 3] alignment of each input frame used, in input order
    features: torch.Tensor      # [rows, 5, 384] whisper features
    noise: torch.Tensor         # [1, 4, 1, h, w]
    latents: torch.Tensor       # [1, 4, N, h, w] final latents of every chunk


@torch.no_grad()
def lipsync_clip(unet, vae, whisper, frames: np.ndarray, landmarks: np.ndarray, wave: np.ndarray, *, resolution: int,
                 mask_path, settings: Settings, fps: float = 25, feat_length=(2, 2), aligner=None,
                 generator: torch.Generator | None = None, frame_count: str = "official") -> ClipResult:
    """A short clip held in memory, end to end, in the official order: align every input frame used (in input
    order), whisper features -> per-frame chunks (their count sets the output length), loop the frames,
    draw the noise frame, run each chunk, paste every face back. The streaming pipeline runs the same steps
    chunk by chunk. `frame_count="audio"` stops at the audio's length instead of the official `rows // 2 + 2`."""
    from engine.dub.face.align import FaceAligner
    from engine.dub.latentsync.audio import SAMPLE_RATE, frame_chunks
    from engine.dub.latentsync.masks import fixed_mask

    features = whisper.features(wave)
    audio = frame_chunks(features, fps, feat_length)
    if frame_count not in ("official", "audio"):
        raise ValueError("frame_count must be 'official' or 'audio'")
    if frame_count == "audio":
        audio = audio[: max(1, math.ceil(len(wave) * fps / SAMPLE_RATE))]
    n = audio.shape[0]
    used = min(n, len(frames))
    aligner = aligner or FaceAligner(resolution)
    aligned = [aligner.align(frames[i], landmarks[i]) for i in range(used)]
    order = frame_order(n, used)
    mask = fixed_mask(mask_path, resolution)
    noise = initial_noise((resolution // 8, resolution // 8), generator=generator)
    faces = torch.stack([aligned[i].face for i in order])
    out, latents = [], []
    for start in range(0, n, settings.chunk_frames):
        part = slice(start, min(start + settings.chunk_frames, n))
        pasted, final = run_chunk(unet, vae, faces[part], audio[part], noise, mask, settings, generator=generator)
        latents.append(final)
        out += [aligner.restore(frames[order[i]], face, aligned[order[i]].matrix)
                for i, face in zip(range(part.start, part.stop), pasted.float().cpu())]
    return ClipResult(np.stack(out), order, torch.stack([a.matrix for a in aligned]), features, noise,
                      torch.cat(latents, dim=2).cpu())
