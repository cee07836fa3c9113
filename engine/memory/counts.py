"""Weight bytes: counted on the real modules built at the real shapes on empty weights, and
measured on loaded modules (`module_bytes`)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import torch

from engine.memory.plans import Plan
from engine.memory.storage import _is_bnb, enable_fp8, quantizable_linears, tie_text_embeddings
from engine.humo.variants import Variant


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


@lru_cache(maxsize=16)
def dit_counts(shape) -> DiTCounts:
    from engine.humo.dit_loader import _fp32_matcher, build_dit_empty

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
    linears: tuple                 # (out, in) of every nn.Linear bitsandbytes quantizes in NF4 mode
    other: int                     # numel of everything else (embedding, norms, position bias)
    int8_kept: tuple = ()          # (out, in) of the linears 8-bit mode leaves in the compute dtype

    def bytes(self, dtype: torch.dtype, mode: str) -> int:
        db = _dtype_bytes(dtype)
        if mode == "int8":
            kept = list(self.int8_kept)
            quantized = list(self.linears)
            for shape in kept:
                quantized.remove(shape)
            lin = sum(o * i + 4 * o for o, i in quantized)               # int8 weight + float32 row scales
            lin += sum(o * i for o, i in kept) * db
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
    from engine.humo.text import build_umt5_empty, umt5_config

    model = build_umt5_empty(umt5_config(**dict(config_items)))
    tie_text_embeddings(model)
    quantized = {id(m.weight) for m in quantizable_linears(model, "nf4")}
    linears = tuple(tuple(m.weight.shape) for m in quantizable_linears(model, "nf4"))
    in_int8 = {id(m) for m in quantizable_linears(model, "int8")}
    kept = tuple(tuple(m.weight.shape) for m in quantizable_linears(model, "nf4") if id(m) not in in_int8)
    other = sum(p.numel() for _, p in _unique_params(model) if id(p) not in quantized)
    return TextCounts(linears, other, kept)


@lru_cache(maxsize=8)
def state_numel(kind: str, config_items: tuple) -> int:
    """Floating-point numel of a module's state dict (each tensor once)."""
    cfg = dict(config_items)
    if kind == "vae":
        from engine.humo.vae import build_vae_empty

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
    from engine.humo.text import UMT5_XXL
    from engine.humo.vae import WAN21_VAE

    if variant.random_weights:
        from engine.tools.tiny import TINY_T5, TINY_VAE_BASE_DIM, TINY_WHISPER

        t5 = dict(vocab_size=TINY_VOCAB, **TINY_T5)
        vae = dict(WAN21_VAE, base_dim=TINY_VAE_BASE_DIM)
        whisper = {k: TINY_WHISPER[k] for k in ("d_model", "encoder_layers", "encoder_attention_heads",
                                                "encoder_ffn_dim", "num_mel_bins", "max_source_positions")}
    else:
        t5, vae, whisper = dict(UMT5_XXL), dict(WAN21_VAE), dict(WHISPER_LARGE_V3)
    return {"text": t5, "vae": vae, "audio": whisper}


TINY_VOCAB = 400  # the tiny tokenizer's vocabulary (engine.tools.tiny trains a 400-token BPE)


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
