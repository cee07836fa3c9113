"""LatentSync's 3D UNet, built from diffusers blocks, loading `latentsync_unet.pt` with its own key names.

Tensors are [batch, channels, frames, height, width]. Convolutions, spatial transformers and
samplers run per frame; ResNet group norms and `conv_norm_out` pool their statistics over all
frames of the chunk (the official `use_inflated_groupnorm: false`), so a frame's output depends
on the other frames of its chunk and on the chunk length. Motion modules attend across frames
at each spatial position, with the checkpoint's sinusoid table added to their normalised input.

Spatial attention, audio cross-attention and the temporal attention are diffusers `Attention`
modules, so attention processors/backends and `torch.compile` apply to them as to any
diffusers model.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.attention import FeedForward
from diffusers.models.attention_processor import Attention
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from diffusers.models.modeling_utils import ModelMixin
from diffusers.models.resnet import Downsample2D, ResnetBlock2D, Upsample2D
from diffusers.models.transformers.transformer_2d import Transformer2DModel
from torch import nn

from engine.errors import WeightsError


def _frames_to_batch(x: torch.Tensor) -> torch.Tensor:
    b, c, f, h, w = x.shape
    return x.transpose(1, 2).reshape(b * f, c, h, w)


def _batch_to_frames(x: torch.Tensor, frames: int) -> torch.Tensor:
    bf, c, h, w = x.shape
    return x.reshape(bf // frames, frames, c, h, w).transpose(1, 2)


def per_frame(module, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
    """Run a 2-D module on every frame of a [B, C, F, H, W] tensor."""
    out = module(_frames_to_batch(x), *args, **kwargs)
    return _batch_to_frames(out, x.shape[2])


class DispatchAttnProcessor:
    """Plain (self or cross) attention through diffusers' dispatcher, so `model.set_attention_backend(name)`
    switches every attention of the UNet (native SDPA by default)."""

    _attention_backend = None
    _parallel_config = None

    def __call__(self, attn: Attention, hidden_states, encoder_hidden_states=None, attention_mask=None, **kwargs):
        from diffusers.models.attention_dispatch import dispatch_attention_fn

        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        b = hidden_states.shape[0]
        q = attn.to_q(hidden_states).unflatten(-1, (attn.heads, -1))
        k = attn.to_k(context).unflatten(-1, (attn.heads, -1))
        v = attn.to_v(context).unflatten(-1, (attn.heads, -1))
        out = dispatch_attention_fn(q, k, v, backend=self._attention_backend)
        out = attn.to_out[0](out.reshape(b, -1, q.shape[-2] * q.shape[-1]).to(q.dtype))
        return attn.to_out[1](out)


class ResnetBlock3D(ResnetBlock2D):
    """diffusers' ResNet block on video: group norms pooled over frames, convolutions per frame."""

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        h = per_frame(self.conv1, self.nonlinearity(self.norm1(x)))
        h = h + self.time_emb_proj(self.nonlinearity(temb))[:, :, None, None, None]
        h = per_frame(self.conv2, self.dropout(self.nonlinearity(self.norm2(h))))
        if self.conv_shortcut is not None:
            x = per_frame(self.conv_shortcut, x)
        return (x + h) / self.output_scale_factor


class SpatialTransformer3D(Transformer2DModel):
    """diffusers' spatial transformer per frame; frame i attends to its own audio tokens (rows b*F + i)."""

    def forward(self, x: torch.Tensor, audio: torch.Tensor | None) -> torch.Tensor:
        out = super().forward(_frames_to_batch(x), encoder_hidden_states=audio, return_dict=False)[0]
        return _batch_to_frames(out, x.shape[2])


class PositionTable(nn.Module):
    """Holds the checkpoint's temporal sinusoid table `pe` [1, max_len, dim] (loaded, not recomputed)."""

    def __init__(self, dim: int, max_len: int):
        super().__init__()
        self.register_buffer("pe", torch.zeros(1, max_len, dim))


class TemporalAttention(Attention):
    """Self-attention across frames at each spatial position (diffusers `Attention` + position table)."""

    def __init__(self, dim: int, heads: int, max_len: int):
        super().__init__(query_dim=dim, heads=heads, dim_head=dim // heads, bias=False)
        self.pos_encoder = PositionTable(dim, max_len)

    def forward(self, x: torch.Tensor, frames: int) -> torch.Tensor:  # x: [(b f), d, c]
        bf, d, c = x.shape
        x = x.reshape(bf // frames, frames, d, c).transpose(1, 2).reshape(-1, frames, c)
        x = x + self.pos_encoder.pe[:, :frames]
        out = super().forward(x)
        return out.reshape(bf // frames, d, frames, c).transpose(1, 2).reshape(bf, d, c)


class TemporalBlock(nn.Module):
    def __init__(self, dim: int, heads: int, attention_count: int, max_len: int):
        super().__init__()
        self.attention_blocks = nn.ModuleList(TemporalAttention(dim, heads, max_len) for _ in range(attention_count))
        self.norms = nn.ModuleList(nn.LayerNorm(dim) for _ in range(attention_count))
        self.ff = FeedForward(dim, activation_fn="geglu")
        self.ff_norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, frames: int) -> torch.Tensor:
        for attention, norm in zip(self.attention_blocks, self.norms):
            x = attention(norm(x), frames) + x
        return self.ff(self.ff_norm(x)) + x


class TemporalTransformer(nn.Module):
    def __init__(self, dim: int, heads: int, layers: int, attention_count: int, max_len: int, groups: int = 32):
        super().__init__()
        self.norm = nn.GroupNorm(groups, dim, eps=1e-6)
        self.proj_in = nn.Linear(dim, dim)
        self.transformer_blocks = nn.ModuleList(TemporalBlock(dim, heads, attention_count, max_len) for _ in range(layers))
        self.proj_out = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        frames = x.shape[2]
        x = _frames_to_batch(x)
        bf, c, h, w = x.shape
        tokens = self.proj_in(self.norm(x).permute(0, 2, 3, 1).reshape(bf, h * w, c))
        for block in self.transformer_blocks:
            tokens = block(tokens, frames)
        out = self.proj_out(tokens).reshape(bf, h, w, c).permute(0, 3, 1, 2) + x
        return _batch_to_frames(out, frames)


class MotionModule(nn.Module):
    """AnimateDiff's 'Vanilla' temporal module (no timestep input)."""

    def __init__(self, dim: int, kwargs: dict):
        super().__init__()
        heads = kwargs.get("num_attention_heads", 8)
        types = kwargs.get("attention_block_types", ["Temporal_Self", "Temporal_Self"])
        if any(t != "Temporal_Self" for t in types) or kwargs.get("temporal_attention_dim_div", 1) != 1:
            raise WeightsError(f"Motion module settings {types} are not supported (only Temporal_Self blocks).")
        self.temporal_transformer = TemporalTransformer(
            dim, heads, kwargs.get("num_transformer_block", 1), len(types), kwargs.get("temporal_position_encoding_max_len", 24))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.temporal_transformer(x)


@dataclass
class BlockSpec:
    channels: int
    in_channels: int
    layers: int
    cross_attention: bool
    motion: bool
    resample: bool  # a downsampler after a down block, an upsampler after an up block
    skip_channels: list[int] = field(default_factory=list)  # up blocks: the skip joined before each ResNet


class UNetBlock3D(nn.Module):
    """One down, mid or up block: ResNet (+ spatial transformer) (+ motion module) per layer."""

    def __init__(self, spec: BlockSpec, cfg: dict, temb: int, kind: str):
        super().__init__()
        heads, groups, eps = cfg["attention_head_dim"], cfg["norm_num_groups"], cfg["norm_eps"]
        c = spec.channels
        ins = [spec.in_channels] + [c] * (spec.layers - 1)
        if kind == "up":
            ins = [(spec.in_channels if i == 0 else c) + s for i, s in enumerate(spec.skip_channels)]
        resnets = [ResnetBlock3D(in_channels=i, out_channels=c, temb_channels=temb, groups=groups, eps=eps,
                                 output_scale_factor=cfg.get("mid_block_scale_factor", 1) if kind == "mid" else 1.0)
                   for i in ins]
        self.resnets = nn.ModuleList(resnets)
        n_attn = spec.layers - 1 if kind == "mid" else spec.layers
        self.attentions = nn.ModuleList(
            SpatialTransformer3D(num_attention_heads=heads, attention_head_dim=c // heads, in_channels=c,
                                 norm_num_groups=groups, cross_attention_dim=cfg["cross_attention_dim"])
            for _ in range(n_attn)) if spec.cross_attention else None
        self.motion_modules = nn.ModuleList(
            MotionModule(c, cfg.get("motion_module_kwargs", {})) for _ in range(spec.layers)) if spec.motion else None
        if kind == "down" and spec.resample:
            self.downsamplers = nn.ModuleList([Downsample2D(c, use_conv=True, out_channels=c,
                                                            padding=cfg.get("downsample_padding", 1), name="op")])
        if kind == "up" and spec.resample:
            self.upsamplers = nn.ModuleList([Upsample2D(c, use_conv=True, out_channels=c)])
        self.kind = kind

    def layer(self, i: int, h: torch.Tensor, temb: torch.Tensor, audio: torch.Tensor | None) -> torch.Tensor:
        h = self.resnets[i](h, temb)
        if self.attentions is not None:
            h = self.attentions[i](h, audio)
        if self.motion_modules is not None:
            h = self.motion_modules[i](h)
        return h

    def down(self, h, temb, audio):
        skips = []
        for i in range(len(self.resnets)):
            h = self.layer(i, h, temb, audio)
            skips.append(h)
        if hasattr(self, "downsamplers"):
            h = per_frame(self.downsamplers[0], h)
            skips.append(h)
        return h, skips

    def mid(self, h, temb, audio):
        h = self.resnets[0](h, temb)
        for attention, resnet in zip(self.attentions or [], self.resnets[1:]):
            h = resnet(attention(h, audio), temb)
        return h

    def up(self, h, skips, temb, audio, size=None, first: int = 0, before_last: list | None = None):
        """Layers `first`.. of an up block; `skips` are popped from the end. `before_last` receives
        the hidden state entering the last layer (what DeepCache keeps)."""
        for i in range(first, len(self.resnets)):
            if before_last is not None and i == len(self.resnets) - 1:
                before_last.append(h)
            h = self.layer(i, torch.cat([h, skips.pop()], dim=1), temb, audio)
        if hasattr(self, "upsamplers"):
            h = per_frame(self.upsamplers[0], h, output_size=size)
        return h


class DeepCacheState:
    """DeepCache (interval N, branch 0): an APPROXIMATION that reuses deep features between steps.

    On a full step the whole UNet runs and the hidden state entering the last layer of the last up
    block is kept. On the other steps only `conv_in`, that last layer (fed the fresh `conv_in`
    output as its skip), `conv_norm_out` and `conv_out` run, on the kept state. Step i of a chunk
    is full when i % interval == 0 (each chunk restarts at step 0), as in the official pipeline.
    """

    def __init__(self, interval: int = 3):
        self.interval = interval
        self.kept: torch.Tensor | None = None

    def is_full(self, step: int) -> bool:
        return self.kept is None or step % self.interval == 0


class LatentSyncUNet3D(ModelMixin, ConfigMixin):
    """The LatentSync 1.x UNet: 13 input channels (noisy 4, mask 1, masked 4, reference 4), audio cross-attention."""

    @register_to_config
    def __init__(self, unet: dict):
        super().__init__()
        cfg = dict(unet)
        if cfg.get("use_inflated_groupnorm", False) or cfg.get("motion_module_mid_block", False) \
                or cfg.get("motion_module_type", "Vanilla") != "Vanilla" or cfg.get("resnet_time_scale_shift", "default") != "default" \
                or not cfg.get("add_audio_layer", True) or cfg.get("center_input_sample", False):
            raise WeightsError("This UNet configuration is not a LatentSync 1.x one (inflated group norm, mid-block or "
                               "non-Vanilla motion modules, no audio layer or centred input are not supported).")
        chans = list(cfg["block_out_channels"])
        layers = cfg["layers_per_block"]
        temb = chans[0] * 4
        use_motion = cfg.get("use_motion_module", True)
        motion_res = cfg.get("motion_module_resolutions", [1, 2, 4, 8])
        decoder_only = cfg.get("motion_module_decoder_only", False)
        self.time_proj = Timesteps(chans[0], cfg["flip_sin_to_cos"], cfg["freq_shift"])
        self.time_embedding = TimestepEmbedding(chans[0], temb)
        self.conv_in = nn.Conv2d(cfg["in_channels"], chans[0], 3, padding=1)
        n = len(chans)
        self.down_blocks = nn.ModuleList()
        skip_channels = [chans[0]]
        for i, kind in enumerate(cfg["down_block_types"]):
            spec = BlockSpec(chans[i], chans[i - 1] if i else chans[0], layers, kind.startswith("CrossAttn"),
                             use_motion and not decoder_only and 2 ** i in motion_res, i < n - 1)
            self.down_blocks.append(UNetBlock3D(spec, cfg, temb, "down"))
            skip_channels += [chans[i]] * (layers + (1 if spec.resample else 0))
        self.mid_block = UNetBlock3D(BlockSpec(chans[-1], chans[-1], 2, True, False, False), cfg, temb, "mid")
        self.up_blocks = nn.ModuleList()
        rev = chans[::-1]
        for i, kind in enumerate(cfg["up_block_types"]):
            skips = [skip_channels.pop() for _ in range(layers + 1)]
            spec = BlockSpec(rev[i], rev[i - 1] if i else rev[0], layers + 1, kind.startswith("CrossAttn"),
                             use_motion and 2 ** (n - 1 - i) in motion_res, i < n - 1, skips)
            self.up_blocks.append(UNetBlock3D(spec, cfg, temb, "up"))
        self.conv_norm_out = nn.GroupNorm(cfg["norm_num_groups"], chans[0], eps=cfg["norm_eps"])
        self.conv_out = nn.Conv2d(chans[0], cfg["out_channels"], 3, padding=1)
        for module in self.modules():
            if isinstance(module, Attention):
                module.set_processor(DispatchAttnProcessor())

    def forward(self, sample: torch.Tensor, timestep, audio: torch.Tensor | None,
                cache: DeepCacheState | None = None, step: int = 0) -> torch.Tensor:
        """sample [B, C_in, F, H, W], timestep (scalar or [B]), audio [B*F, tokens, dim] -> noise [B, C_out, F, H, W].

        With `cache`, step `step` reuses the deep features of the last full step (DeepCache: approximate).
        """
        t = torch.as_tensor(timestep, device=sample.device)
        t = t.reshape(-1).expand(sample.shape[0])
        temb = self.time_embedding(self.time_proj(t).to(sample.dtype))
        x = per_frame(self.conv_in, sample)
        last = self.up_blocks[-1]
        if cache is not None and not cache.is_full(step):
            h = last.up(cache.kept, [x], temb, audio, first=len(last.resnets) - 1)
        else:
            h, skips = x, [x]
            for block in self.down_blocks:
                h, s = block.down(h, temb, audio)
                skips += s
            h = self.mid_block.mid(h, temb, audio)
            factor = 2 ** sum(hasattr(b, "upsamplers") for b in self.up_blocks)
            odd = any(s % factor for s in sample.shape[-2:])
            kept = [] if cache is not None else None
            for block in self.up_blocks:
                mine = skips[-len(block.resnets):]
                del skips[-len(block.resnets):]
                size = skips[-1].shape[-2:] if odd and hasattr(block, "upsamplers") else None
                h = block.up(h, mine, temb, audio, size, before_last=kept if block is last else None)
            if cache is not None:
                cache.kept = kept[0]
        h = F.silu(self.conv_norm_out(h))
        return per_frame(self.conv_out, h)


def load_unet(path: str | Path, config: dict, *, dtype: torch.dtype = torch.float32, device="cpu") -> LatentSyncUNet3D:
    """Build the UNet for `config` (the `model` block of a LatentSync UNet yaml) and load `latentsync_unet.pt`.

    Every parameter and buffer must be in the file with its shape; otherwise `WeightsError` names the file and key.
    """
    from accelerate import init_empty_weights

    from engine.weights.loading import load_into, read_checkpoint

    checkpoint = read_checkpoint(path)
    with init_empty_weights(include_buffers=True):
        model = LatentSyncUNet3D(config)
    names = {k: k for k in model.state_dict()}
    load_into(model, checkpoint, names, dtype=dtype, device=device, label="LatentSync UNet")
    return model.eval()


RELEASED_CONFIG = Path(__file__).with_name("config.json")


def unet_config(path: str | Path | None = None) -> dict:
    """The UNet settings: the released 1.6 ones by default, or the `model` block of a LatentSync yaml/json."""
    import json

    path = Path(path) if path is not None else RELEASED_CONFIG
    try:
        text = path.read_text()
    except OSError as err:
        raise WeightsError(f"UNet config {path} could not be read ({err.strerror}).") from None
    if path.suffix in (".yaml", ".yml"):
        import yaml

        data = yaml.safe_load(text)
    else:
        data = json.loads(text)
    data = data.get("model", data) if isinstance(data, dict) else None
    if not isinstance(data, dict) or "block_out_channels" not in data:
        raise WeightsError(f"UNet config {path} has no LatentSync model settings (block_out_channels missing).")
    return {k: v for k, v in data.items() if not k.startswith("_")}
