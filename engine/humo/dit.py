"""The HuMo DiT: diffusers' Wan 2.1 transformer plus HuMo's audio modules (SPEC §2).

We subclass `WanTransformer3DModel` so attention backends, layerwise casting, group offload
and caches keep working; only the pieces HuMo adds are defined here:
  * `HuMoAudioProjection`: per-latent-frame window [8, 5, C] -> 16 audio tokens;
  * `HuMoAudioAttention`: per-block cross-attention from the video tokens of a latent frame
    to the 16 audio tokens of that same frame;
  * a forward that zero-pads the text to `text_len`, concatenates `y` (17B layout) and
    computes the sinusoidal time embedding in float64 like the official code.
"""
from __future__ import annotations

import logging

import torch
import torch.nn as nn
import torch.nn.functional as F
from diffusers.configuration_utils import register_to_config
from diffusers.models.attention import AttentionModuleMixin
from diffusers.models._modeling_parallel import ContextParallelInput, ContextParallelOutput
from diffusers.models.attention_dispatch import dispatch_attention_fn
from diffusers.models.modeling_outputs import Transformer2DModelOutput
from diffusers.models.normalization import FP32LayerNorm
from diffusers.models.transformers.transformer_wan import WanTransformer3DModel, WanTransformerBlock

AUDIO_WINDOW = 8   # whisper frames per latent frame window
AUDIO_GROUPS = 5   # groups of whisper hidden states


class HuMoAudioProjection(nn.Module):
    """[..., 8, 5, C] -> [..., tokens, audio_dim]: Linear-ReLU-Linear-ReLU-Linear, then LayerNorm."""

    def __init__(self, channels: int, intermediate_dim: int, audio_dim: int, tokens: int):
        super().__init__()
        self.tokens = tokens
        self.audio_dim = audio_dim
        self.linear_1 = nn.Linear(AUDIO_WINDOW * AUDIO_GROUPS * channels, intermediate_dim)
        self.linear_2 = nn.Linear(intermediate_dim, intermediate_dim)
        self.linear_3 = nn.Linear(intermediate_dim, tokens * audio_dim)
        self.norm = nn.LayerNorm(audio_dim)

    def forward(self, windows: torch.Tensor) -> torch.Tensor:
        lead = windows.shape[:-3]
        x = windows.reshape(*lead, -1)  # the caller passes the compute dtype (fp8 storage is upcast by hooks)
        x = F.relu(self.linear_1(x))
        x = F.relu(self.linear_2(x))
        x = self.linear_3(x).unflatten(-1, (self.tokens, self.audio_dim))
        return self.norm(x)


def slice_start(total: int, ranks: int, rank: int) -> int:
    """Where rank `rank`'s slice of `total` tokens starts when they are split over `ranks` ranks
    (torch.tensor_split's rule, which diffusers' context parallelism uses; equal slices when it divides)."""
    base, extra = divmod(total, ranks)
    return rank * base + min(rank, extra)


def frame_runs(start: int, length: int, frame_tokens: int) -> list[tuple[int, int, int]]:
    """The tokens [start, start + length) of a sequence made of frames of `frame_tokens` tokens, cut
    at frame boundaries: (first frame, frame count, tokens per frame) runs covering the slice in
    order. A slice that starts or ends inside a frame gets a run of one partial frame there."""
    runs, pos, end = [], start, start + length
    head = min(end, -(-pos // frame_tokens) * frame_tokens) - pos
    if head:
        runs.append((pos // frame_tokens, 1, head))
        pos += head
    whole = (end - pos) // frame_tokens
    if whole:
        runs.append((pos // frame_tokens, whole, frame_tokens))
        pos += whole * frame_tokens
    if end > pos:
        runs.append((pos // frame_tokens, 1, end - pos))
    return runs


class HuMoAudioAttnProcessor:
    """Frame-local attention through diffusers' dispatcher: the backend is set like every other
    processor's (`ModelMixin.set_attention_backend`).

    Under sequence (context) parallelism each rank holds a slice of the tokens, and a slice's ends
    need not fall on frame boundaries: the tokens are cut into runs of one latent frame each (a
    partial frame at either end, whole frames batched between), and each run attends to its own
    frame's audio tokens, so every token sees exactly what it sees in a single process. The audio
    attention itself needs no communication."""

    _attention_backend = None   # diffusers AttentionBackendName; None = the active default (SDPA)
    _parallel_config = None     # set by diffusers' enable_parallelism; only the slice position is read

    def slice_start(self, length: int, frames: int, frame_tokens: int) -> int:
        cp = getattr(self._parallel_config, "context_parallel_config", None)
        if cp is None or length == frames * frame_tokens:
            return 0
        import torch.distributed as dist

        mesh = cp._flattened_mesh
        return slice_start(frames * frame_tokens, mesh.size(), dist.get_rank(mesh.get_group()))

    def __call__(self, attn: "HuMoAudioAttention", hidden_states: torch.Tensor, audio_tokens: torch.Tensor,
                 frames: int, frame_tokens: int | None = None) -> torch.Tensor:
        # hidden_states [B, L, dim]: all F*hw tokens, or this rank's slice of them; audio_tokens [B, F, n, audio_dim]
        seq = hidden_states.shape[1]
        frame_tokens = frame_tokens or seq // frames
        q = attn.norm_q(attn.to_q(hidden_states))
        k = attn.norm_k(attn.to_k(audio_tokens))
        v = attn.to_v(audio_tokens)
        out = frame_local_attention(q, k, v, attn.heads, self.slice_start(seq, frames, frame_tokens), frame_tokens,
                                    self._attention_backend)
        return attn.to_out(out.type_as(q))


def frame_local_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int, start: int,
                          frame_tokens: int, backend=None) -> torch.Tensor:
    """Each query token attends to the keys of its own latent frame. q [B, L, dim] holds the tokens
    [start, start + L) of the video; k, v [B, F, n, dim] hold n keys per latent frame."""
    b, seq, dim = q.shape
    head_dim = dim // heads
    outs, pos = [], 0
    for first, count, tokens in frame_runs(start, seq, frame_tokens):
        qr = q[:, pos:pos + count * tokens].reshape(b * count, tokens, heads, head_dim)
        kr = k[:, first:first + count].reshape(b * count, -1, heads, head_dim)
        vr = v[:, first:first + count].reshape(b * count, -1, heads, head_dim)
        out = dispatch_attention_fn(qr, kr, vr, backend=backend, parallel_config=None)
        outs.append(out.reshape(b, count * tokens, dim))
        pos += count * tokens
    return outs[0] if len(outs) == 1 else torch.cat(outs, dim=1)


class HuMoAudioAttention(nn.Module, AttentionModuleMixin):
    """Frame-local cross-attention: the h·w video tokens of each latent frame attend to its audio tokens."""

    _default_processor_cls = HuMoAudioAttnProcessor
    _available_processors = [HuMoAudioAttnProcessor]
    _supports_qkv_fusion = False

    def __init__(self, dim: int, audio_dim: int, heads: int, eps: float, processor=None):
        super().__init__()
        self.heads = heads
        self.to_q = nn.Linear(dim, dim)
        self.to_k = nn.Linear(audio_dim, dim)
        self.to_v = nn.Linear(audio_dim, dim)
        self.to_out = nn.Linear(dim, dim)
        self.norm_q = nn.RMSNorm(dim, eps=eps, elementwise_affine=True)
        self.norm_k = nn.RMSNorm(dim, eps=eps, elementwise_affine=True)
        self.set_processor(processor or self._default_processor_cls())

    def forward(self, hidden_states: torch.Tensor, audio_tokens: torch.Tensor, frames: int,
                frame_tokens: int | None = None) -> torch.Tensor:
        return self.processor(self, hidden_states, audio_tokens, frames, frame_tokens)


class HuMoTransformerBlock(WanTransformerBlock):
    """Wan block with the audio cross-attention between the text cross-attention and the FFN.

    Mixed precision as the official model computes it: the residual stream and the modulation
    stay in float32 (its gated adds multiply by float32 modulation, so every sum is float32),
    while every matmul runs in the compute dtype (the text tokens' dtype: bf16 on a GPU). With
    `float32_residual` off, the stream is cast back to the compute dtype after every add, as
    diffusers' Wan block does. In float32 both are the same computation.
    """

    float32_residual = True

    def __init__(self, dim, ffn_dim, num_heads, qk_norm, cross_attn_norm, eps, audio_dim):
        super().__init__(dim, ffn_dim, num_heads, qk_norm, cross_attn_norm, eps, None)
        self.norm_audio = FP32LayerNorm(dim, eps, elementwise_affine=True)
        self.audio_attn = HuMoAudioAttention(dim, audio_dim, num_heads, eps)

    def forward(self, hidden_states, encoder_hidden_states, temb, rotary_emb, audio_tokens=None, frames=1,
                frame_tokens=None):
        compute = encoder_hidden_states.dtype
        stream = torch.float32 if self.float32_residual else compute
        x = hidden_states.to(stream)
        shift_msa, scale_msa, gate_msa, c_shift_msa, c_scale_msa, c_gate_msa = (
            self.scale_shift_table + temb.float()
        ).chunk(6, dim=1)

        norm = (self.norm1(x.float()) * (1 + scale_msa) + shift_msa).to(compute)
        attn = self.attn1(norm, None, None, rotary_emb)
        x = (x.float() + attn * gate_msa).to(stream)

        norm = self.norm2(x.float()).to(compute)
        x = (x + self.attn2(norm, encoder_hidden_states, None, None)).to(stream)

        norm = self.norm_audio(x.float()).to(compute)
        x = (x + self.audio_attn(norm, audio_tokens, frames, frame_tokens)).to(stream)

        norm = (self.norm3(x.float()) * (1 + c_scale_msa) + c_shift_msa).to(compute)
        ff = self.ffn(norm)
        return (x.float() + ff.float() * c_gate_msa).to(stream)


def sinusoidal_embedding(timestep: torch.Tensor, dim: int) -> torch.Tensor:
    """Wan's time embedding, cos then sin, computed in float64 as the official model does."""
    half = dim // 2
    t = timestep.to(torch.float64)
    freqs = torch.pow(10000.0, -torch.arange(half, dtype=torch.float64, device=t.device) / half)
    args = torch.outer(t, freqs)
    return torch.cat([torch.cos(args), torch.sin(args)], dim=1).float()


class HuMoTransformer3DModel(WanTransformer3DModel):
    # Sequence (context) parallelism, for diffusers' `enable_parallelism`: the rotary tables and the
    # token stream entering the first block are split over the ranks, the output projection's
    # tokens are gathered back. The text and audio cross-attentions run on each rank's slice.
    _cp_plan = {
        "rope": {
            0: ContextParallelInput(split_dim=1, expected_dims=4, split_output=True),
            1: ContextParallelInput(split_dim=1, expected_dims=4, split_output=True),
        },
        "blocks.0": {"hidden_states": ContextParallelInput(split_dim=1, expected_dims=3, split_output=False)},
        "proj_out": ContextParallelOutput(gather_dim=1, expected_dims=3),
    }
    _no_split_modules = ["HuMoTransformerBlock"]
    _repeated_blocks = ["HuMoTransformerBlock"]
    _skip_layerwise_casting_patterns = ["patch_embedding", "condition_embedder", "norm", "audio_proj.norm"]
    _keep_in_fp32_modules = ["rope", "time_embedder", "scale_shift_table", "norm1", "norm2", "norm3", "norm_audio"]

    @register_to_config
    def __init__(
        self,
        patch_size=(1, 2, 2),
        num_attention_heads: int = 12,
        attention_head_dim: int = 128,
        in_channels: int = 16,
        out_channels: int = 16,
        text_dim: int = 4096,
        freq_dim: int = 256,
        ffn_dim: int = 8960,
        num_layers: int = 30,
        cross_attn_norm: bool = True,
        qk_norm: str | None = "rms_norm_across_heads",
        eps: float = 1e-6,
        rope_max_seq_len: int = 1024,
        text_len: int = 512,
        audio_channels: int = 1280,
        audio_intermediate_dim: int = 512,
        audio_dim: int = 1536,
        audio_tokens: int = 16,
    ):
        super().__init__(
            patch_size=patch_size, num_attention_heads=num_attention_heads, attention_head_dim=attention_head_dim,
            in_channels=in_channels, out_channels=out_channels, text_dim=text_dim, freq_dim=freq_dim,
            ffn_dim=ffn_dim, num_layers=0, cross_attn_norm=cross_attn_norm, qk_norm=qk_norm, eps=eps,
            rope_max_seq_len=rope_max_seq_len,
        )
        # The parent's own config registration (num_layers=0, so it builds no Wan blocks) ran last.
        self.register_to_config(num_layers=num_layers)
        inner = num_attention_heads * attention_head_dim
        self.blocks = nn.ModuleList(
            HuMoTransformerBlock(inner, ffn_dim, num_attention_heads, qk_norm, cross_attn_norm, eps, audio_dim)
            for _ in range(num_layers)
        )
        self.audio_proj = HuMoAudioProjection(audio_channels, audio_intermediate_dim, audio_dim, audio_tokens)

    @property
    def float32_residual(self) -> bool:
        """Whether the blocks keep the residual stream in float32 (the official policy, default)."""
        return all(block.float32_residual for block in self.blocks)

    @float32_residual.setter
    def float32_residual(self, value: bool) -> None:
        for block in self.blocks:
            block.float32_residual = bool(value)

    def set_attention_backend_all(self, backend: str | None) -> None:
        """Select the attention backend for every attention in the model (self, text, audio: all
        are diffusers attention modules, so diffusers' own `set_attention_backend` reaches them).

        None means PyTorch SDPA ("native"). Every attention gets its backend named explicitly:
        diffusers' `set_attention_backend` also makes its choice the process-wide default, and
        `reset_attention_backend` does not undo that, so a model left on "no backend" would keep
        running the previously chosen kernel (e.g. flash after switching back to SDPA). The
        process-wide default is put back as it was, so other models are not affected.
        """
        from diffusers.models.attention_dispatch import AttentionBackendName, _AttentionBackendRegistry

        name = AttentionBackendName(backend or "native")
        before = _AttentionBackendRegistry._active_backend
        # diffusers warns on every call that the backend API is experimental; we pin its version.
        quiet = logging.getLogger("diffusers.models.modeling_utils")
        level = quiet.level
        quiet.setLevel(logging.ERROR)
        try:
            self.set_attention_backend(name.value)
        finally:
            quiet.setLevel(level)
            _AttentionBackendRegistry.set_active_backend(before)

    def forward(self, hidden_states, timestep, encoder_hidden_states, audio, y=None, return_dict: bool = True):
        """
        hidden_states [B, 16, F, H, W] latents (reference frames included); y [B, 20, F, H, W] (17B layout);
        timestep [B]; encoder_hidden_states [B, L, text_dim] (L <= text_len, zero-padded here);
        audio [B, F, 8, 5, C] per-latent-frame windows. The velocity [B, 16, F, H, W] comes back as
        diffusers models return it: `Transformer2DModelOutput(sample=...)`, or `(velocity,)` with
        `return_dict=False`.
        """
        if y is not None:
            hidden_states = torch.cat([hidden_states, y], dim=1)
        batch, _, frames, height, width = hidden_states.shape
        p_t, p_h, p_w = self.config.patch_size
        f, h, w = frames // p_t, height // p_h, width // p_w

        rotary_emb = self.rope(hidden_states)
        hidden_states = self.patch_embedding(hidden_states.to(self.patch_embedding.weight.dtype))
        hidden_states = hidden_states.flatten(2).transpose(1, 2).contiguous()

        text = encoder_hidden_states
        pad = self.config.text_len - text.shape[1]
        if pad > 0:
            text = torch.cat([text, text.new_zeros(text.shape[0], pad, text.shape[2])], dim=1)

        emb = self.condition_embedder
        t_freq = sinusoidal_embedding(timestep.reshape(-1), self.config.freq_dim)
        temb = emb.time_embedder(t_freq.to(emb.time_embedder.linear_1.weight.dtype)).float()
        timestep_proj = emb.time_proj(emb.act_fn(temb).to(emb.time_proj.weight.dtype)).float().unflatten(1, (6, -1))
        text = emb.text_embedder(text.to(emb.text_embedder.linear_1.weight.dtype))

        audio_tokens = self.audio_proj(audio)

        if self.float32_residual:
            hidden_states = hidden_states.float()  # every block then sees the same dtype (one compiled graph)
        for block in self.blocks:
            hidden_states = block(hidden_states, text, timestep_proj, rotary_emb, audio_tokens=audio_tokens, frames=f,
                                  frame_tokens=h * w)

        shift, scale = (self.scale_shift_table.to(temb.device) + temb.unsqueeze(1)).chunk(2, dim=1)
        hidden_states = (self.norm_out(hidden_states.float()) * (1 + scale) + shift).to(text.dtype)
        hidden_states = self.proj_out(hidden_states)
        hidden_states = hidden_states.reshape(batch, f, h, w, p_t, p_h, p_w, -1)
        out = hidden_states.permute(0, 7, 1, 4, 2, 5, 3, 6).flatten(6, 7).flatten(4, 5).flatten(2, 3)
        if not return_dict:
            return (out,)
        return Transformer2DModelOutput(sample=out)


def dit_from_shape(shape) -> HuMoTransformer3DModel:
    """Build the DiT for a `variants.DiTShape` (on whatever device/init context is active)."""
    return HuMoTransformer3DModel(
        patch_size=tuple(shape.patch_size),
        num_attention_heads=shape.num_heads,
        attention_head_dim=shape.dim // shape.num_heads,
        in_channels=shape.in_dim,
        out_channels=shape.out_dim,
        text_dim=shape.text_dim,
        freq_dim=shape.freq_dim,
        ffn_dim=shape.ffn_dim,
        num_layers=shape.num_layers,
        eps=shape.eps,
        text_len=shape.text_len,
        audio_channels=shape.audio_channels,
        audio_intermediate_dim=shape.audio_intermediate_dim,
        audio_dim=shape.audio_dim,
        audio_tokens=shape.audio_tokens,
    )
