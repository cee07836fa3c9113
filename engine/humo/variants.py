"""The model variants and their defaults, as data.

`reference` says how reference latents reach the DiT (SPEC §3):
  "append": 1.7B style, the last R latent frames are overwritten before every call;
  "channel": 17B style, the DiT input is latents ⊕ y (mask + condition latents).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace


@dataclass(frozen=True)
class DiTShape:
    dim: int
    ffn_dim: int
    num_heads: int
    num_layers: int
    in_dim: int
    text_dim: int = 4096
    out_dim: int = 16
    freq_dim: int = 256
    text_len: int = 512
    patch_size: tuple[int, int, int] = (1, 2, 2)
    eps: float = 1e-6
    audio_channels: int = 1280        # whisper-large-v3 width
    audio_intermediate_dim: int = 512
    audio_dim: int = 1536             # audio token width
    audio_tokens: int = 16            # audio tokens per latent frame


@dataclass(frozen=True)
class Defaults:
    steps: int
    shift: float
    scale_t: float
    scale_a: float
    scale_i: float | None             # None: the variant has no separate image scale
    switch_t: int | None              # 17B: the time-adaptive guidance switch (t > switch_t)
    width: int = 832
    height: int = 480
    frames: int = 97
    mode: str = "TIA"
    max_frames: int = 15 * 60 * 25 + 1  # longest video (15 min); past 97 frames (the trained length) in context windows


@dataclass(frozen=True)
class Variant:
    name: str
    label: str
    reference: str                    # "append" | "channel"
    dit: DiTShape
    defaults: Defaults
    # Files, relative to the weights folder, in the layout of the official download commands.
    dit_files: tuple[str, ...]
    vae_file: str = "Wan2.1-T2V-1.3B/Wan2.1_VAE.pth"
    t5_file: str = "Wan2.1-T2V-1.3B/models_t5_umt5-xxl-enc-bf16.pth"
    tokenizer_dir: str = "Wan2.1-T2V-1.3B/google/umt5-xxl"
    whisper_dir: str = "whisper-large-v3"
    random_weights: bool = False      # the tiny variant: a pipeline check, never a real model
    sizes: tuple[tuple[int, int], ...] = ((832, 480), (480, 832), (1280, 720), (720, 1280))
    notes: dict = field(default_factory=dict)


HUMO_1_7B = Variant(
    name="humo-1.7b",
    label="HuMo-1.7B",
    reference="append",
    dit=DiTShape(dim=1536, ffn_dim=8960, num_heads=12, num_layers=30, in_dim=16),
    defaults=Defaults(steps=50, shift=5.0, scale_t=7.0, scale_a=7.5, scale_i=4.0, switch_t=None),
    dit_files=("HuMo/HuMo-1.7B/ema.pth",),
)

HUMO_17B = Variant(
    name="humo-17b",
    label="HuMo-17B",
    reference="channel",
    dit=DiTShape(dim=5120, ffn_dim=13824, num_heads=40, num_layers=40, in_dim=36),
    defaults=Defaults(steps=50, shift=5.0, scale_t=5.0, scale_a=5.5, scale_i=None, switch_t=980,
                      width=1280, height=720),
    dit_files=("HuMo/HuMo-17B/humo.safetensors.index.json",),
)

# Same architecture as the 1.7B, tiny sizes, random weights: proves the whole pipeline on CPU.
TINY = Variant(
    name="tiny",
    label="Tiny (random weights — pipeline check, not a real model)",
    reference="append",
    dit=DiTShape(dim=64, ffn_dim=128, num_heads=2, num_layers=2, in_dim=16, text_dim=32,
                 audio_channels=32, audio_intermediate_dim=48, audio_dim=64),
    defaults=Defaults(steps=4, shift=5.0, scale_t=7.0, scale_a=7.5, scale_i=4.0, switch_t=None,
                      width=128, height=96, frames=17),
    dit_files=("tiny/dit/ema.pth",),
    vae_file="tiny/vae/Wan2.1_VAE.pth",
    t5_file="tiny/t5/models_t5_umt5-xxl-enc-bf16.pth",
    tokenizer_dir="tiny/t5/tokenizer",
    whisper_dir="tiny/whisper",
    random_weights=True,
    sizes=((128, 96), (96, 128), (160, 96)),
)

# The 17B layout (y on the channel axis, time-adaptive guidance) at tiny sizes: proves that path
# end to end on CPU. Not offered in the studio's picker; usable from the CLI and tests.
TINY_17B = replace(
    TINY,
    name="tiny-17b",
    label="Tiny 17B-layout (random weights — pipeline check, not a real model)",
    reference="channel",
    dit=replace(TINY.dit, in_dim=36),
    defaults=replace(TINY.defaults, scale_t=5.0, scale_a=5.5, scale_i=None, switch_t=980),
    dit_files=("tiny-17b/dit/humo.safetensors.index.json",),
)

VARIANTS: dict[str, Variant] = {v.name: v for v in (HUMO_1_7B, HUMO_17B, TINY)}
HIDDEN_VARIANTS: dict[str, Variant] = {TINY_17B.name: TINY_17B}


def get_variant(name: str) -> Variant:
    key = name.strip().lower()
    if key in VARIANTS:
        return VARIANTS[key]
    if key in HIDDEN_VARIANTS:
        return HIDDEN_VARIANTS[key]
    raise KeyError(f"Unknown variant {name!r}; choose one of: {', '.join(VARIANTS)}.")
