"""Memory plans: where each component lives, in which dtype, and what a run needs on the GPU.

A plan is a base placement plus modifiers, written as one string (`parse_plan`, `Plan.name`):

  full              everything in the compute dtype on the GPU, kept there between runs
  model-offload     each component on the GPU only while it runs (text, audio, VAE, DiT in turn)
  block-offload     as model-offload, and the DiT streams its blocks from CPU memory
                    (diffusers group offload; only a few blocks are resident)
  cpu               everything on the CPU in float32
  +fp8              DiT weights stored as float8 e4m3, cast per layer for compute (diffusers layerwise casting)
  +text-cpu / +text-int8 / +text-nf4
                    the umT5 encoder on the CPU, or quantized with bitsandbytes (8-bit / 4-bit NF4)
  +vae-tiling[-N]   decode (and encode) the video in N×N-pixel tiles (default 256, stride 3/4 of N)
  +sequential       run the guidance passes of a step one after another instead of as one batch

`estimate` says what a plan needs, component by component (weights from the real parameter
counts of each component built at its real shapes on empty weights, plus activations from the
formulas below); `choose_plan` picks the fastest plan that fits a memory budget.
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field, replace
from functools import lru_cache

import torch

from engine.errors import InputError, OutOfResources
from engine.variants import Variant, get_variant

GIB = 1024**3
COMPONENTS = ("text", "audio", "vae", "dit")
LABELS = {"text": "text encoder (umT5-XXL)", "audio": "audio encoder (whisper)", "vae": "VAE", "dit": "DiT"}
TEXT_MODES = ("gpu", "cpu", "int8", "nf4")
DEFAULT_TILE = 256

# -- activation model constants (bytes; see estimate_* below for where each one enters) --------
# DiT, per token and per pass run together, the largest of three phases of a block:
#   residual add : 4 tensors of width `dim` in the compute dtype (block input, new hidden states,
#                  the norm, the branch output) + 3 float32 temporaries (the block upcasts
#                  hidden states, gate product and sum): (4·cb + 12)·dim
#   feed-forward : 3·cb·dim (input, hidden, norm) + 2·cb·ffn (projection and GELU output)
#   attention    : 7·cb·dim (input, norm, q, k, v, rotary output, attention output)
#                  + 4·dim (float32 halves inside the rotary embedding)
# SDPA/flash attention keeps no tokens×tokens matrix. The result is scaled by ACT_SLACK for the
# caching allocator's fragmentation and kernel workspaces (not measured on a GPU yet).
ACT_SLACK = 1.25
# Wan VAE: it decodes one latent frame at a time (4 video frames) with causal-conv caches, so its
# working set scales with pixels × channels, not with the clip length. Bytes per output pixel per
# base channel (96 for the real VAE) per compute-dtype byte: 45, calibrated on CPU with the tiny
# VAE (base dim 16, float32; 42 measured between 256² and 512² frames) and consistent with a count
# of the caches and temporaries of the full-resolution decoder stage.
VAE_BYTES_PER_PX_CH = 45
# Safety margin on a budget: a fraction of it plus fixed bytes (cuBLAS workspaces, allocator).
MARGIN_FRACTION = 0.10
MARGIN_BYTES = int(0.5 * GIB)
CUDA_CONTEXT_BYTES = int(0.5 * GIB)  # counted only for --vram-gb (mem_get_info already excludes it)

# -- speed model constants (seconds of overhead per video compared to everything resident) ----
PCIE_BPS = 12e9          # host -> GPU copies, pageable memory
HBM_BPS = 2e12           # on-GPU casts (fp8 -> bf16 and back, per layer per pass)
GPU_FLOPS = 4e14         # sustained dense bf16
CPU_FLOPS = 2e11         # umT5 on the CPU (bf16)
GROUP_SYNC_S = 1e-3      # per offloaded block group per pass (hooks, stream sync)
PASS_LAUNCH_S = 2e-4     # per block per extra (unbatched) pass
TEXT_QUANT_S = 0.5       # bitsandbytes matmuls on two prompts
VAE_S_PER_MPX = 0.05     # decode time per million output pixels (frames × H × W)


@dataclass(frozen=True)
class Plan:
    device: str = "cuda"            # "cuda" | "cpu"
    offload: str = "none"           # "none" | "model" | "block"
    fp8: bool = False
    text: str = "gpu"               # "gpu" (the plan's device) | "cpu" | "int8" | "nf4"
    vae_tile: int | None = None     # pixels; None = no tiling
    sequential: bool = False
    blocks_per_group: int = 1

    @property
    def name(self) -> str:
        base = {"none": "full", "model": "model-offload", "block": "block-offload"}[self.offload]
        mods = []
        if self.device == "cpu":
            if self.offload == "none":
                base = "cpu"
            else:
                mods.append("cpu")
        if self.fp8:
            if base == "full":
                base = "fp8"
            else:
                mods.append("fp8")
        if self.offload == "block" and self.blocks_per_group != 1:
            mods.append(f"blocks-{self.blocks_per_group}")
        if self.text != "gpu":
            mods.append(f"text-{self.text}")
        if self.vae_tile:
            mods.append("vae-tiling" if self.vae_tile == DEFAULT_TILE else f"vae-tiling-{self.vae_tile}")
        if self.sequential:
            mods.append("sequential")
        return "+".join([base] + mods)

    @property
    def compute_dtype(self) -> torch.dtype:
        return torch.bfloat16 if self.device == "cuda" else torch.float32

    @property
    def lossless(self) -> bool:
        return not self.fp8 and self.text not in ("int8", "nf4")

    def text_device(self) -> str:
        return "cpu" if self.text == "cpu" else self.device

    def __str__(self) -> str:
        return self.name


def parse_plan(text: str, device: str | None = None) -> Plan:
    """'model-offload+fp8+text-nf4' -> Plan. `device` ("cuda"/"cpu") overrides the GPU default."""
    tokens = [t.strip().lower() for t in str(text).replace(" ", "").split("+") if t.strip()]
    if not tokens or "auto" in tokens:
        raise InputError(f"Plan {text!r} is not a concrete plan ('auto' is resolved by choose_plan).")
    fields: dict = {"device": "cuda"}
    for tok in tokens:
        if tok in ("full", "gpu"):
            fields["offload"] = "none"
        elif tok == "cpu":
            fields["device"] = "cpu"
        elif tok == "model-offload":
            fields["offload"] = "model"
        elif tok == "block-offload":
            fields["offload"] = "block"
        elif tok == "fp8":
            fields["fp8"] = True
        elif tok.startswith("text-") and tok[5:] in TEXT_MODES:
            fields["text"] = tok[5:]
        elif tok == "vae-tiling":
            fields["vae_tile"] = DEFAULT_TILE
        elif tok.startswith("vae-tiling-") and tok[11:].isdigit() and int(tok[11:]) % 16 == 0 and int(tok[11:]) >= 32:
            fields["vae_tile"] = int(tok[11:])
        elif tok == "sequential":
            fields["sequential"] = True
        elif tok.startswith("blocks-") and tok[7:].isdigit() and int(tok[7:]) >= 1:
            fields["blocks_per_group"] = int(tok[7:])
        else:
            raise InputError(f"Unknown memory plan part {tok!r} in {text!r}; use e.g. full, fp8, model-offload, "
                             "block-offload, cpu, with +fp8, +text-cpu, +text-int8, +text-nf4, +vae-tiling, +sequential.")
    if device is not None:
        fields["device"] = "cpu" if str(device).startswith("cpu") else "cuda"
    return Plan(**fields)


def describe(plan: Plan | str) -> str:
    """One sentence a person can read: where each component runs and what it costs."""
    if not isinstance(plan, Plan) and str(plan).strip().lower() == "auto":
        return "auto: the fastest plan whose estimated peak fits the GPU's free memory (everything on the CPU without a GPU)."
    p = plan if isinstance(plan, Plan) else parse_plan(plan)
    dev = "GPU" if p.device == "cuda" else "CPU"
    parts = []
    if p.device == "cpu":
        parts.append("Everything on the CPU in float32" if p.offload == "none" else
                     f"CPU run ({p.offload} offload is a no-op there)")
    elif p.offload == "none":
        parts.append("All components stay on the GPU (fastest)")
    elif p.offload == "model":
        parts.append("Each component moves to the GPU only while it runs")
    else:
        n = p.blocks_per_group
        parts.append(f"DiT blocks stream from CPU memory ({n} block{'s' if n > 1 else ''} at a time); "
                     "the other components move to the GPU only while they run")
    parts.append("DiT weights stored in fp8 (small quality loss)" if p.fp8 else
                 f"DiT in {'bf16' if p.device == 'cuda' else 'float32'}")
    parts.append({"gpu": f"text encoder on the {dev}", "cpu": "text encoder on the CPU (slower prompts)",
                  "int8": "text encoder 8-bit (bitsandbytes)", "nf4": "text encoder 4-bit NF4 (bitsandbytes)"}[p.text])
    if p.vae_tile:
        parts.append(f"VAE in {p.vae_tile}px tiles")
    if p.sequential:
        parts.append("guidance passes one at a time")
    return f"{p.name}: " + "; ".join(parts) + "."


def plan_options(variant: Variant | str | None = None) -> list[str]:
    """Plans worth offering in a picker, fastest first ('auto' leads)."""
    options = ["auto", "full", "fp8", "model-offload", "model-offload+fp8", "model-offload+text-int8",
               "model-offload+text-nf4", "model-offload+fp8+text-nf4+vae-tiling", "model-offload+text-cpu",
               "block-offload", "block-offload+sequential+vae-tiling", "block-offload+fp8+text-nf4+sequential+vae-tiling",
               "cpu"]
    return options


# ---------------------------------------------------------------------------------------------
# Weights: counted on the real modules built at the real shapes on empty weights.
# ---------------------------------------------------------------------------------------------
def _dtype_bytes(dt: torch.dtype) -> int:
    return torch.empty(0, dtype=dt).element_size()


@dataclass(frozen=True)
class DiTCounts:
    kept_fp32: int                 # numel the loader keeps in float32
    castable: int                  # numel layerwise casting stores in fp8
    other: int                     # numel in the load dtype
    buffer_bytes: int              # RoPE tables etc. (not in the checkpoint)
    blocks: tuple                  # per block: (kept_fp32, castable, other)
    largest_linear: int            # numel of the largest linear weight

    def bytes(self, dtype: torch.dtype, fp8: bool) -> int:
        return _mix_bytes(self.kept_fp32, self.castable, self.other, dtype, fp8) + self.buffer_bytes

    def block_bytes(self, dtype: torch.dtype, fp8: bool) -> list[int]:
        return [_mix_bytes(k, c, o, dtype, fp8) for k, c, o in self.blocks]


def _mix_bytes(kept, castable, other, dtype, fp8):
    db = _dtype_bytes(dtype)
    return kept * 4 + castable * (1 if fp8 else db) + other * db


# HuMoAudioProjection casts its input to linear_1's weight dtype, which is the storage dtype (fp8)
# under layerwise casting; it is small (39 M parameters in the real models), so it stays unquantized.
FP8_EXTRA_SKIP = ("audio_proj",)


def enable_fp8(model, compute_dtype: torch.dtype) -> None:
    """Store the DiT's linear weights in float8 e4m3 and cast each layer up only while it runs."""
    from diffusers.hooks.layerwise_casting import DEFAULT_SKIP_MODULES_PATTERN

    model.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn, compute_dtype=compute_dtype,
                                   skip_modules_pattern=tuple(DEFAULT_SKIP_MODULES_PATTERN) + FP8_EXTRA_SKIP)


@lru_cache(maxsize=16)
def dit_counts(shape) -> DiTCounts:
    from engine.models.dit_loader import _fp32_matcher, build_dit_empty

    model = build_dit_empty(shape)
    keep = _fp32_matcher(model)
    # Same rule as load_into: fp32-kept modules stay float32, the rest takes the load dtype; then
    # let diffusers decide (on the meta model) which weights layerwise casting stores in fp8.
    for name, p in model.named_parameters():
        p.data = p.data.to(torch.float32 if keep(name) else torch.bfloat16)
    enable_fp8(model, torch.bfloat16)
    totals = [0, 0, 0]
    blocks = [[0, 0, 0] for _ in model.blocks]
    for name, p in model.named_parameters():
        kind = 1 if p.dtype == torch.float8_e4m3fn else 0 if keep(name) else 2
        totals[kind] += p.numel()
        if name.startswith("blocks."):
            blocks[int(name.split(".")[1])][kind] += p.numel()
    buffers = sum(b.numel() * b.element_size() for b in model.buffers())
    largest = max(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
    return DiTCounts(*totals, buffers, tuple(tuple(b) for b in blocks), largest)


@dataclass(frozen=True)
class TextCounts:
    linears: tuple                 # (out, in) of every nn.Linear bitsandbytes would quantize
    other: int                     # numel of everything else (embedding, norms, position bias)

    def bytes(self, dtype: torch.dtype, mode: str) -> int:
        db = _dtype_bytes(dtype)
        if mode == "int8":
            lin = sum(o * i + 4 * o for o, i in self.linears)            # int8 weight + float32 row scales
        elif mode == "nf4":
            lin = sum(_nf4_bytes(o * i) for o, i in self.linears)
        else:
            lin = sum(o * i for o, i in self.linears) * db
        return lin + self.other * db


def _nf4_bytes(n: int, blocksize: int = 64) -> int:
    """bitsandbytes Params4bit with nested statistics: packed 4-bit values, uint8 block absmax,
    float32 absmax of 256-block groups, float32 offset, the 16-value NF4 code and the 256-value
    nested code (float32)."""
    nb = math.ceil(n / blocksize)
    return math.ceil(n / 2) + nb + 4 * math.ceil(nb / 256) + 4 + 16 * 4 + 256 * 4


def _unique_params(model) -> list[tuple[str, torch.nn.Parameter]]:
    seen, out = set(), []
    for name, p in model.named_parameters():
        if id(p) not in seen:
            seen.add(id(p))
            out.append((name, p))
    return out


@lru_cache(maxsize=8)
def text_counts(config_items: tuple) -> TextCounts:
    from engine.text import build_umt5_empty, umt5_config

    model = build_umt5_empty(umt5_config(**dict(config_items)))
    tie_text_embeddings(model)
    quantized = {id(m.weight) for m in quantizable_linears(model)}
    linears = tuple(tuple(m.weight.shape) for m in quantizable_linears(model))
    other = sum(p.numel() for _, p in _unique_params(model) if id(p) not in quantized)
    return TextCounts(linears, other)


def tie_text_embeddings(model) -> None:
    """umT5's `shared` and `encoder.embed_tokens` come from one checkpoint tensor; the loader can
    leave two copies (one per name) when it converts dtype or device. Keep one: 2.1 GB for XXL."""
    shared, embed = getattr(model, "shared", None), getattr(model.encoder, "embed_tokens", None)
    if shared is not None and embed is not None and shared.weight is not embed.weight \
            and shared.weight.shape == embed.weight.shape:
        embed.weight = shared.weight


def quantizable_linears(model) -> list[torch.nn.Linear]:
    """The umT5 linears bitsandbytes quantizes: every nn.Linear of the encoder blocks."""
    return [m for name, m in model.named_modules() if isinstance(m, torch.nn.Linear) and ".block." in f".{name}"]


@lru_cache(maxsize=8)
def state_numel(kind: str, config_items: tuple) -> int:
    """Floating-point numel of a module's state dict (each tensor once)."""
    cfg = dict(config_items)
    if kind == "vae":
        from engine.vae import build_vae_empty

        model = build_vae_empty(**cfg)
    elif kind == "audio":
        from accelerate import init_empty_weights
        from transformers import WhisperConfig
        from transformers.models.whisper.modeling_whisper import WhisperEncoder

        with init_empty_weights():
            model = WhisperEncoder(WhisperConfig(**cfg))
    else:
        raise KeyError(kind)
    seen, total = set(), 0
    for t in model.state_dict(keep_vars=True).values():
        if id(t) not in seen and t.is_floating_point():
            seen.add(id(t))
            total += t.numel()
    return total


WHISPER_LARGE_V3 = dict(d_model=1280, encoder_layers=32, encoder_attention_heads=20, encoder_ffn_dim=5120,
                        num_mel_bins=128, max_source_positions=1500)


def component_configs(variant: Variant) -> dict:
    """Configs of the text encoder, VAE and whisper encoder that go with `variant`."""
    from engine.text import UMT5_XXL
    from engine.vae import WAN21_VAE

    if variant.random_weights:
        from engine.tiny import TINY_T5, TINY_VAE_BASE_DIM, TINY_WHISPER

        t5 = dict(vocab_size=TINY_VOCAB, **TINY_T5)
        vae = dict(WAN21_VAE, base_dim=TINY_VAE_BASE_DIM)
        whisper = {k: TINY_WHISPER[k] for k in ("d_model", "encoder_layers", "encoder_attention_heads",
                                                "encoder_ffn_dim", "num_mel_bins", "max_source_positions")}
    else:
        t5, vae, whisper = dict(UMT5_XXL), dict(WAN21_VAE), dict(WHISPER_LARGE_V3)
    return {"text": t5, "vae": vae, "audio": whisper}


TINY_VOCAB = 400  # the tiny tokenizer's vocabulary (engine.tiny trains a 400-token BPE)


def _items(cfg: dict) -> tuple:
    return tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in cfg.items()))


def weight_bytes(plan: Plan, variant: Variant, configs: dict | None = None) -> dict[str, int]:
    """Bytes of each component's weights as the plan stores them (wherever they live)."""
    configs = configs or component_configs(variant)
    dt = plan.compute_dtype
    text_dt = torch.bfloat16 if plan.text == "cpu" and plan.device == "cuda" else dt
    audio_dt = torch.float32 if plan.device == "cpu" else dt
    return {
        "text": text_counts(_items(configs["text"])).bytes(text_dt, plan.text),
        "audio": state_numel("audio", _items(configs["audio"])) * _dtype_bytes(audio_dt),
        "vae": state_numel("vae", _items(configs["vae"])) * _dtype_bytes(dt),
        "dit": dit_counts(variant.dit).bytes(dt, plan.fp8),
    }


def module_bytes(module: torch.nn.Module) -> int:
    """Bytes a loaded module really holds: parameters, buffers and bitsandbytes quantization
    states, each storage once."""
    seen: set = set()
    total = 0

    def add(t):
        nonlocal total
        if t is None or not isinstance(t, torch.Tensor):
            return
        key = (t.device.type, t.untyped_storage().data_ptr()) if t.device.type != "meta" else ("meta", id(t))
        if key in seen:
            return
        seen.add(key)
        total += t.untyped_storage().nbytes() if t.device.type != "meta" else t.numel() * t.element_size()

    def add_state(qs):
        if qs is None:
            return
        for value in vars(qs).values():
            if isinstance(value, torch.Tensor):
                add(value)
            elif type(value).__name__ == "QuantState":
                add_state(value)

    for p in module.parameters():
        add(p.data)
        add(getattr(p, "SCB", None))
        add_state(getattr(p, "quant_state", None))
    for m in module.modules():
        state = getattr(m, "state", None) if _is_bnb(m) else None
        if state is not None:           # Linear8bitLt keeps its int8 weight and row scales here
            add(getattr(state, "CB", None))
            add(getattr(state, "SCB", None))
    for b in module.buffers():
        add(b)
    return total


# ---------------------------------------------------------------------------------------------
# Activations
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Job:
    """The size of one run, as far as memory is concerned."""
    width: int
    height: int
    frames: int                    # video frames (snapped to 4k+1)
    images: int = 1                # reference images R (TA mode: one zero frame)
    mode: str = "TIA"
    steps: int = 50

    @property
    def latent_frames(self) -> int:
        return (self.frames - 1) // 4 + 1

    def tokens(self, shape) -> int:
        """(T + R) · (H/16) · (W/16) for patch (1, 2, 2)."""
        pt, ph, pw = shape.patch_size
        return (self.latent_frames + self.images) // pt * (self.height // 8 // ph) * (self.width // 8 // pw)


def passes_per_step(variant: Variant, mode: str) -> int:
    from engine.guidance import plan_for

    return len(plan_for(variant.reference, mode, 999.0, variant.defaults.switch_t).passes)


def dit_activation_bytes(shape, job: Job, batch: int, compute: torch.dtype) -> int:
    """Peak of one DiT forward (batch = passes run together); see the constants at the top."""
    cb = _dtype_bytes(compute)
    s, d, f = job.tokens(shape), shape.dim, shape.ffn_dim
    residual = (4 * cb + 12) * d
    ffn = 3 * cb * d + 2 * cb * f
    attention = 7 * cb * d + 4 * d
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
    if not decode:
        # Reference images (one frame each) and, for the 17B, the all-zero video of T+R latent frames.
        frames = 1 + 4 * (job.latent_frames + job.images - 1)
        return work + 3 * frames * w * h * cb
    out = 3 * job.frames * w * h * cb
    out32 = 3 * job.frames * w * h * 4
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


# ---------------------------------------------------------------------------------------------
# The estimate
# ---------------------------------------------------------------------------------------------
@dataclass
class PartEstimate:
    name: str
    where: str                      # where the weights live while it runs: "gpu" | "cpu" | "gpu (streamed)"
    weights: int                    # bytes of its weights as stored
    resident: int                   # bytes of its weights on the GPU while it runs
    activations: int                # peak working memory of its stage (on its device)
    stage_peak: int                 # GPU bytes in use during its stage (all resident weights + activations)

    def as_dict(self) -> dict:
        return {k: getattr(self, k) for k in ("name", "where", "weights", "resident", "activations", "stage_peak")}


@dataclass
class Estimate:
    plan: Plan
    variant: str
    job: Job
    parts: list[PartEstimate]
    peak: int                       # GPU bytes (CPU plan: process memory for weights + activations)
    peak_stage: str
    cpu_weights: int                # bytes of weights held in CPU memory
    overhead_s: float               # expected extra seconds per video compared to "full"
    batch: int

    def as_dict(self) -> dict:
        return {"plan": self.plan.name, "description": describe(self.plan), "variant": self.variant,
                "width": self.job.width, "height": self.job.height, "frames": self.job.frames,
                "tokens": self.job.tokens(get_variant(self.variant).dit), "peak_bytes": self.peak, "peak_gib": round(self.peak / GIB, 2),
                "peak_stage": self.peak_stage, "cpu_weights_bytes": self.cpu_weights, "passes_per_batch": self.batch,
                "overhead_s": round(self.overhead_s, 2), "parts": [p.as_dict() for p in self.parts]}


def estimate(plan: Plan | str, variant: Variant, job: Job, configs: dict | None = None) -> Estimate:
    """What `plan` needs for `job`: per component, weights + activations, and the GPU peak."""
    plan = plan if isinstance(plan, Plan) else parse_plan(plan)
    configs = configs or component_configs(variant)
    weights = weight_bytes(plan, variant, configs)
    counts = dit_counts(variant.dit)
    dt = plan.compute_dtype
    passes = passes_per_step(variant, job.mode)
    # The engine batches the passes of a step on the GPU and runs them one by one on the CPU.
    batch = 1 if plan.sequential or plan.device == "cpu" else passes

    on_gpu = {"text": plan.text != "cpu", "audio": True, "vae": True, "dit": True}
    resident = dict(weights)
    where = {n: "gpu" if on_gpu[n] else "cpu" for n in COMPONENTS}
    if plan.offload == "block":
        blocks = counts.block_bytes(dt, plan.fp8)
        # With CUDA streams the next group is prefetched while the current one runs: 2 groups resident.
        groups = 2 if plan.device == "cuda" else 1
        n = plan.blocks_per_group if plan.device != "cuda" else 1
        resident["dit"] = weights["dit"] - sum(blocks) + groups * n * max(blocks)
        where["dit"] = "gpu (streamed)"
    if plan.device == "cpu":
        where = {n: "cpu" for n in COMPONENTS}

    largest_text = max(o * i for o, i in text_counts(_items(configs["text"])).linears)
    acts = {
        "text": text_activation_bytes(configs["text"], torch.bfloat16 if plan.text == "cpu" and dt != torch.float32 else dt,
                                      largest_text),
        "audio": audio_activation_bytes(configs["audio"], torch.float32 if plan.device == "cpu" else dt),
        "vae": max(vae_activation_bytes(configs["vae"]["base_dim"], job, dt, plan.vae_tile, decode=True),
                   vae_activation_bytes(configs["vae"]["base_dim"], job, dt, plan.vae_tile, decode=False)),
        "dit": dit_activation_bytes(variant.dit, job, batch, dt) + latents_bytes(job),
    }
    if plan.fp8:  # one layer at a time is cast up to the compute dtype
        acts["dit"] += counts.largest_linear * _dtype_bytes(dt)

    gpu_resident_always = {n: resident[n] for n in COMPONENTS if on_gpu[n]} if plan.offload == "none" else {}
    parts = []
    for n in COMPONENTS:
        if plan.device == "cpu":
            peak = sum(weights.values()) + acts[n]
        elif plan.offload == "none":
            peak = sum(gpu_resident_always.values()) + (acts[n] if on_gpu[n] else 0)
        else:
            peak = (resident[n] + acts[n]) if on_gpu[n] else 0
        parts.append(PartEstimate(n, where[n], weights[n], resident[n] if on_gpu[n] and plan.device == "cuda" else 0,
                                  acts[n], peak))
    top = max(parts, key=lambda p: p.stage_peak)
    cpu_weights = sum(weights.values()) if (plan.device == "cpu" or plan.offload != "none") else \
        sum(weights[n] for n in COMPONENTS if not on_gpu[n])
    return Estimate(plan, variant.name, job, parts, top.stage_peak, top.name, cpu_weights,
                    overhead_seconds(plan, variant, job, weights, configs), batch)


def dit_flops(shape, tokens: int) -> float:
    """FLOPs of one pass (SPEC §6: 4.2e14 for the 1.7B at 40 560 tokens)."""
    d, f = shape.dim, shape.ffn_dim
    linear = 2 * tokens * (8 * d * d + 2 * d * f) + 2 * shape.text_len * 2 * d * d
    attention = 4 * tokens * tokens * d + 4 * tokens * shape.text_len * d + 4 * tokens * shape.audio_tokens * d
    return shape.num_layers * (linear + attention)


def overhead_seconds(plan: Plan, variant: Variant, job: Job, weights: dict, configs: dict) -> float:
    """Expected extra seconds per video compared to the 'full' plan (speed model constants above)."""
    if plan.device == "cpu":
        return 0.0
    shape = variant.dit
    passes = job.steps * passes_per_step(variant, job.mode)
    cost = 0.0
    if plan.offload != "none":
        moved = [weights["audio"], weights["vae"]] + ([weights["text"]] if plan.text != "cpu" else [])
        if plan.offload == "model":
            moved.append(weights["dit"])
        cost += sum(moved) / PCIE_BPS
    if plan.offload == "block":
        counts = dit_counts(shape)
        blocks = counts.block_bytes(plan.compute_dtype, plan.fp8)
        batch = 1 if plan.sequential else passes_per_step(variant, job.mode)
        compute_block = dit_flops(shape, job.tokens(shape)) * batch / shape.num_layers / GPU_FLOPS
        forwards = passes / batch
        per_block = max(0.0, max(blocks) / PCIE_BPS - compute_block) + GROUP_SYNC_S
        cost += forwards * len(blocks) * per_block
    if plan.fp8:
        cost += passes * dit_counts(shape).castable * 6 / HBM_BPS
    if plan.text == "cpu":
        cfg = configs["text"]
        params = sum(o * i for o, i in text_counts(_items(cfg)).linears)
        cost += 2 * 2 * params * 512 / CPU_FLOPS
    elif plan.text in ("int8", "nf4"):
        cost += TEXT_QUANT_S
    if plan.sequential:
        cost += passes * shape.num_layers * PASS_LAUNCH_S
    if plan.vae_tile and (job.width > plan.vae_tile or job.height > plan.vae_tile):
        stride = plan.vae_tile * 3 // 4
        cost += VAE_S_PER_MPX * job.frames * job.width * job.height / 1e6 * ((plan.vae_tile / stride) ** 2 - 1)
    return cost


# ---------------------------------------------------------------------------------------------
# Choosing a plan
# ---------------------------------------------------------------------------------------------
def candidate_plans() -> list[Plan]:
    """Every GPU plan auto considers."""
    out = []
    for offload in ("none", "model", "block"):
        for fp8 in (False, True):
            for text in TEXT_MODES:
                for tile in (None, DEFAULT_TILE):
                    for seq in (False, True):
                        out.append(Plan("cuda", offload, fp8, text, tile, seq))
    return out


def budget_bytes(vram_gb: float | None = None, free_bytes: int | None = None) -> int:
    """Usable GPU bytes: of a card of `vram_gb` GiB (its CUDA context taken off), or of the free
    memory torch reports; both less the safety margin."""
    if vram_gb is not None:
        total = int(vram_gb * GIB) - CUDA_CONTEXT_BYTES
    elif free_bytes is not None:
        total = int(free_bytes)
    else:
        free, _ = torch.cuda.mem_get_info()
        total = int(free)
    return max(0, int(total * (1 - MARGIN_FRACTION)) - MARGIN_BYTES)


@dataclass
class Choice:
    plan: Plan
    estimate: Estimate
    budget: int | None
    considered: int = 0
    notes: list[str] = field(default_factory=list)


# A lossy choice (fp8 DiT weights, quantized text encoder) ranks as if it cost this many seconds
# more per video: it is taken when it saves real time or is needed to fit, not for a few tenths.
LOSSY_PENALTY_S = 5.0


def speed_key(est: Estimate):
    p = est.plan
    lossy = int(p.fp8) + int(p.text in ("int8", "nf4"))
    return (round(est.overhead_s + LOSSY_PENALTY_S * lossy, 1), len(p.name))


def choose_plan(variant: Variant, job: Job, *, vram_gb: float | None = None, free_bytes: int | None = None,
                device: str | None = None) -> Choice:
    """The fastest plan whose estimated peak fits the budget; on a machine without a GPU, 'cpu'."""
    if device is None:
        device = "cuda" if (vram_gb is not None or free_bytes is not None or torch.cuda.is_available()) else "cpu"
    if str(device).startswith("cpu"):
        plan = Plan(device="cpu")
        return Choice(plan, estimate(plan, variant, job), None, 1, ["No GPU: everything runs on the CPU in float32."])
    budget = budget_bytes(vram_gb, free_bytes)
    configs = component_configs(variant)
    estimates = [estimate(p, variant, job, configs) for p in candidate_plans()]
    fitting = sorted((e for e in estimates if e.peak <= budget), key=speed_key)
    if not fitting:
        best = min(estimates, key=lambda e: e.peak)
        raise OutOfResources(
            f"No memory plan fits {variant.label} at {job.width}×{job.height}, {job.frames} frames in "
            f"{budget / GIB:.1f} GiB of usable GPU memory: the leanest ({best.plan.name}) needs about "
            f"{best.peak / GIB:.1f} GiB at its {LABELS[best.peak_stage]} stage.",
            hint="Use a smaller size or fewer frames, a smaller variant, or a GPU with more memory.")
    return Choice(fitting[0].plan, fitting[0], budget, len(estimates))


def resolve_plan(spec: str | Plan | None, variant: Variant, job: Job, device: str) -> Plan:
    """'auto' (or None) -> choose_plan on this machine; anything else parsed for `device`."""
    if isinstance(spec, Plan):
        return spec
    if spec is None or str(spec).strip().lower() == "auto":
        if str(device).startswith("cpu"):
            return Plan(device="cpu")
        return choose_plan(variant, job, free_bytes=job_free_bytes(), device=device).plan
    return parse_plan(spec, device=device)


# ---------------------------------------------------------------------------------------------
# Placement: applied by the engine while loading and around each stage
# ---------------------------------------------------------------------------------------------
def load_device(plan: Plan, name: str, device: str) -> str:
    """Where a component's weights are first loaded: the GPU only for the full plan; otherwise the
    CPU (offloaded parts start there; fp8 casting and the umT5 embedding tie happen in CPU memory
    so no bf16 copy ever crowds the GPU)."""
    if plan.device == "cpu" or str(device).startswith("cpu"):
        return "cpu"
    if name == "text" or plan.offload != "none" or (name == "dit" and plan.fp8):
        return "cpu"
    return device


def load_dtype(plan: Plan, name: str, dtype: torch.dtype) -> torch.dtype:
    if name == "text" and plan.text == "cpu" and plan.device == "cuda":
        return torch.bfloat16
    if name == "audio" and plan.device == "cpu":
        return torch.float32
    return dtype


def prepare(plan: Plan, name: str, part, device: str, dtype: torch.dtype):
    """Apply the plan to a freshly loaded component (the DiT module, or the TextEncoder / WanVAE /
    WhisperAudioEncoder wrappers) and put it where it waits between stages."""
    on_gpu = plan.device == "cuda" and not str(device).startswith("cpu")
    resident = on_gpu and plan.offload == "none"
    if name == "dit":
        if plan.fp8:
            enable_fp8(part, dtype)
        if plan.offload == "block":
            part.enable_group_offload(torch.device(device), offload_device=torch.device("cpu"),
                                      offload_type="block_level", num_blocks_per_group=plan.blocks_per_group,
                                      use_stream=on_gpu)
        elif resident:
            part.to(device)
        return part
    if name == "text":
        tie_text_embeddings(part.model)
        if plan.text in ("int8", "nf4"):
            # Quantize where it will run (bitsandbytes is fastest on the GPU), then park it if offloaded.
            quantize_linears(part.model, plan.text, dtype, device if on_gpu else "cpu")
            move_module(part.model, device if resident else "cpu")
            return part
        if plan.text == "cpu":
            return part
    if name == "vae" and plan.vae_tile:
        t = plan.vae_tile
        part.model.enable_tiling(t, t, t * 3 // 4, t * 3 // 4)
    if resident:
        move_module(_module(part), device)
    return part


def quantize_linears(model: torch.nn.Module, mode: str, compute_dtype: torch.dtype, device: str) -> None:
    """Replace the umT5 block linears by bitsandbytes 8-bit or NF4 layers, quantized on `device`."""
    import warnings

    import bitsandbytes as bnb

    # Expected: 8-bit matmuls quantize their float inputs through float16.
    warnings.filterwarnings("ignore", message="MatMul8bitLt: inputs will be cast")
    targets = {id(m) for m in quantizable_linears(model)}
    for parent in list(model.modules()):
        for child_name, child in list(parent.named_children()):
            if id(child) not in targets:
                continue
            w = child.weight.data.to(torch.float32)
            if mode == "int8":
                new = bnb.nn.Linear8bitLt(child.in_features, child.out_features, bias=child.bias is not None,
                                          has_fp16_weights=False, threshold=0.0)
                new.weight = bnb.nn.Int8Params(w, requires_grad=False, has_fp16_weights=False)
            else:
                new = bnb.nn.Linear4bit(child.in_features, child.out_features, bias=child.bias is not None,
                                        compute_dtype=compute_dtype, quant_type="nf4", compress_statistics=True)
                new.weight = bnb.nn.Params4bit(w, requires_grad=False, quant_type="nf4", compress_statistics=True)
                # bitsandbytes repacks 4-bit weights on some CPUs at the first call (it needs whole blocks
                # per row, and changes the layout the estimate counts): keep the one GPU-style layout.
                new.support_avx512bf16_for_cpu = False
            if child.bias is not None:
                new.bias = torch.nn.Parameter(child.bias.data, requires_grad=False)
            new = new.to(device)
            if mode == "int8":
                new.init_8bit_state()  # the row scales live in the layer state from now on (moved by .to)
            setattr(parent, child_name, new.eval())


def _is_bnb(m: torch.nn.Module) -> bool:
    return type(m).__module__.startswith("bitsandbytes")


def move_module(module: torch.nn.Module, device) -> None:
    """module.to(device), plus the bitsandbytes layer states that Module.to does not reach."""
    module.to(device)
    for m in module.modules():
        if _is_bnb(m):
            m.to(device)


def _module(part) -> torch.nn.Module:
    return part if isinstance(part, torch.nn.Module) else part.model


class _Swap:
    """Move a module to the GPU and back without copying its weights back: the CPU tensors are kept
    and put back (the weights never change while it runs). Quantized (bitsandbytes) modules are
    moved both ways instead, since their quantization states live outside the parameters."""

    def __init__(self, module: torch.nn.Module):
        self.module = module
        self.saved: list = []
        self.quantized = any(_is_bnb(m) for m in module.modules())

    def up(self, device) -> None:
        if self.quantized:
            move_module(self.module, device)
            return
        self.saved = []
        for m in self.module.modules():
            for kind in ("_parameters", "_buffers"):
                for key, t in getattr(m, kind).items():
                    if t is not None:
                        self.saved.append((m, kind, key, t.data if kind == "_parameters" else t))
        self.module.to(device)

    def down(self) -> None:
        if self.quantized:
            move_module(self.module, "cpu")
            return
        for m, kind, key, t in self.saved:
            if kind == "_parameters":
                m._parameters[key].data = t
            else:
                m._buffers[key] = t
        self.saved = []


def moves_per_stage(plan: Plan, name: str) -> bool:
    """Does this component go to the compute device for its stage and leave afterwards?"""
    if plan.offload == "none" or (name == "text" and plan.text == "cpu"):
        return False
    return not (name == "dit" and plan.offload == "block")


@contextlib.contextmanager
def on_device(plan: Plan, name: str, part, device: str):
    """Model offload: the component is on `device` for the body of the `with`, then back in CPU
    memory. (On a CPU run the moves are no-ops but the same code runs.)"""
    if part is None or not moves_per_stage(plan, name):
        yield part
        return
    swap = _Swap(_module(part))
    swap.up(device)
    try:
        yield part
    finally:
        swap.down()
        if torch.cuda.is_available() and not str(device).startswith("cpu"):
            torch.cuda.empty_cache()


class Placement:
    """The engine's side of a plan during a run: `stage(name, part)` brings the component that is
    about to run onto the device and sends the previous one back; `release()` clears the device."""

    def __init__(self, plan: Plan, device: str):
        self.plan = plan
        self.device = device
        self.current: tuple[str, _Swap] | None = None

    def stage(self, name: str, part) -> None:
        if self.current is not None and self.current[0] == name:
            return
        self.release()
        if part is not None and moves_per_stage(self.plan, name):
            swap = _Swap(_module(part))
            swap.up(self.device)
            self.current = (name, swap)

    def release(self) -> None:
        if self.current is None:
            return
        _, swap = self.current
        self.current = None
        swap.down()
        if torch.cuda.is_available() and not str(self.device).startswith("cpu"):
            torch.cuda.empty_cache()


def text_needed(text_encoder, prompts) -> bool:
    """False when every prompt is already in the text encoder's cache (then it need not move)."""
    from engine.text import clean_prompt

    cache = getattr(text_encoder, "cache", None)
    return cache is None or any(clean_prompt(p) not in cache for p in prompts)


def job_free_bytes() -> int:
    """Free GPU memory as a plan sees it: what the driver reports free plus what this process's
    allocator already holds (our own loaded parts are replaced when the plan changes)."""
    free, _ = torch.cuda.mem_get_info()
    return int(free) + int(torch.cuda.memory_reserved())
