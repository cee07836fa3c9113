"""Fast modes: APPROXIMATE speed-ups, off by default, each a named preset.

Exact mode runs every block of every pass at every step. A fast mode trades exactness for
speed in one of two ways:
  * a diffusers cache that skips network work between steps:
      - First Block Cache: run block 0; when its residual changed by less than `threshold`
        (relative mean abs) since the last full step, reuse the cached residual of the other
        blocks instead of running them;
      - TaylorSeer (lite): run the full network every `interval` steps and predict the output
        projection in between with a first-order Taylor expansion over the steps;
  * fewer solver steps (the network stays exact, the ODE is integrated more coarsely).

Caches compare one step with the previous one, so they must see the same passes in the same
order at every step: fast modes run the guidance passes of a step as one batch (one forward
per step), never one pass after the other, whose states would mix.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from engine.errors import InputError


@dataclass(frozen=True)
class FastMode:
    name: str
    label: str
    description: str
    cache: str | None = None           # "first_block" | "taylorseer" | None
    threshold: float | None = None     # first_block: relative change below which blocks are skipped
    interval: int | None = None        # taylorseer: full computation every `interval` steps
    warmup_steps: int = 3              # taylorseer: full steps before any prediction
    step_factor: float = 1.0           # fraction of the requested steps actually run
    approximate: bool = True           # every fast mode is: the video differs from exact mode

    def steps_for(self, steps: int) -> int:
        return max(1, round(steps * self.step_factor)) if self.step_factor != 1.0 else steps


FAST_MODES: dict[str, FastMode] = {m.name: m for m in (
    FastMode("fast", "Fast (approximate)",
             "First Block Cache, threshold 0.05: skips the remaining blocks when the first block barely changed.",
             cache="first_block", threshold=0.05),
    FastMode("faster", "Faster (approximate)",
             "First Block Cache, threshold 0.12: skips more steps, with more visible differences.",
             cache="first_block", threshold=0.12),
    FastMode("taylor", "TaylorSeer (approximate)",
             "TaylorSeer lite: full network every 3rd step after 3 warm-up steps, predicted in between.",
             cache="taylorseer", interval=3, warmup_steps=3),
    FastMode("fewer-steps", "Fewer steps (approximate)",
             "60 % of the solver steps (e.g. 30 of 50), exact network.", step_factor=0.6),
    FastMode("fastest", "Fastest (approximate)",
             "First Block Cache 0.12 and 60 % of the steps.", cache="first_block", threshold=0.12, step_factor=0.6),
)}


def get_fast_mode(name: str | None) -> FastMode | None:
    """None / "" / "exact" / "off": exact mode (None). Unknown names are an InputError."""
    if name is None:
        return None
    key = str(name).strip().lower()
    if key in ("", "exact", "off", "none"):
        return None
    if key not in FAST_MODES:
        raise InputError(f"Unknown fast mode {name!r}; choose exact or one of: {', '.join(FAST_MODES)}.")
    return FAST_MODES[key]


def register_block_class() -> None:
    """Teach diffusers' cache hooks our block: same call layout as Wan's (hidden_states first,
    one tensor out). Their registry is keyed on the exact class, not on parent classes."""
    from diffusers.hooks._helpers import TransformerBlockMetadata, TransformerBlockRegistry

    from engine.humo.dit import HuMoTransformerBlock

    TransformerBlockRegistry._register()
    if HuMoTransformerBlock not in TransformerBlockRegistry._registry:
        TransformerBlockRegistry.register(
            HuMoTransformerBlock, TransformerBlockMetadata(return_hidden_states_index=0,
                                                            return_encoder_hidden_states_index=None))


def cache_config(mode: FastMode):
    if mode.cache == "first_block":
        from diffusers.hooks import FirstBlockCacheConfig

        return FirstBlockCacheConfig(threshold=mode.threshold)
    if mode.cache == "taylorseer":
        from diffusers.hooks import TaylorSeerCacheConfig

        # Lite form: blocks are skipped outright on predicted steps and only the output
        # projection is extrapolated, so the cache holds one small tensor, not one per block.
        return TaylorSeerCacheConfig(cache_interval=mode.interval, disable_cache_before_step=mode.warmup_steps,
                                     max_order=1, taylor_factors_dtype=torch.float32,
                                     skip_predict_identifiers=[r"blocks\.\d+"], cache_identifiers=[r"proj_out"])
    return None


@dataclass
class CacheStats:
    """Network calls, and how many of them skipped the blocks (cache hits)."""
    calls: int = 0
    full: int = 0

    @property
    def hits(self) -> int:
        return self.calls - self.full

    def summary(self) -> str:
        return f"{self.hits} of {self.calls} network calls served from the cache"


class CachedModel:
    """Wraps a `ModelFn` so every call runs inside the model's cache context and is counted."""

    CONTEXT = "passes"

    def __init__(self, model_fn, dit, stats: CacheStats):
        self.model_fn, self.dit, self.stats = model_fn, dit, stats

    def __call__(self, *args):
        self.stats.calls += 1
        with self.dit.cache_context(self.CONTEXT):
            return self.model_fn(*args)


@contextlib.contextmanager
def fast_mode_cache(dit, mode: FastMode | None, model_fn):
    """Enable `mode`'s cache on `dit` for one generation; yields (model_fn to use, CacheStats).

    The cache starts empty and is removed afterwards, so exact runs stay exact.
    """
    stats = CacheStats()
    config = cache_config(mode) if mode is not None else None
    if config is None:
        yield model_fn, stats
        return
    register_block_class()
    if dit.is_cache_enabled:
        dit.disable_cache()
    dit.enable_cache(config)

    # The last block's feed-forward runs only when the blocks were really computed.
    def count_full(*_):
        stats.full += 1

    handle = dit.blocks[-1].ffn.register_forward_pre_hook(count_full)
    try:
        yield CachedModel(model_fn, dit, stats), stats
    finally:
        handle.remove()
        dit._reset_stateful_cache()
        dit.disable_cache()
