"""Sequence (context) parallelism inside each network pass, through diffusers' own machinery.

With S sequence ranks, the tokens of every pass are cut into S slices by diffusers' context-
parallel hooks (the plan is `HuMoTransformer3DModel._cp_plan`): the rotary tables and the token
stream entering the first block are split, the output projection's tokens are gathered back, so
every rank of a sequence group ends the pass holding the whole prediction. Inside, the
self-attention exchanges the slices through diffusers' dispatcher:
  Ulysses  two all-to-alls per attention, each rank attending with all tokens on 1/S of the heads
           (needs the head count to divide by S);
  ring     keys and values passed round the ranks (needs an attention kernel that returns the
           log-sum-exp: FlashAttention, cuDNN or SageAttention on a GPU).
When the head count does not divide S, the largest Ulysses share that divides both is used and
the rest goes to ring (the 17B's 40 heads on 3 ranks: ring 3; on 6 ranks: Ulysses 2 × ring 3).
The text and audio cross-attentions need no communication: each rank runs them on its slice,
and HuMo's frame-local audio attention finds each token's latent frame from the slice's position
(engine.humo.dit.frame_runs), since slices do not align with frame boundaries.

diffusers cuts the tokens into equal slices, so the token count of a pass must divide by S:
`check_tokens` says so before anything runs.
"""
from __future__ import annotations

import math

from engine.errors import InputError

# Attention backends diffusers' context parallelism runs on; the ring also needs the log-sum-exp.
CP_BACKENDS = ("native", "_native_cudnn", "_native_flash", "flash", "sage")
RING_BACKENDS = ("_native_cudnn", "_native_flash", "flash", "sage")
# What to use instead when the chosen backend cannot be split (FlashAttention 3 has no context-parallel path).
FALLBACK_ORDER = ("flash", "_native_cudnn", "_native_flash", "native")


def split(ways: int, heads: int) -> tuple[int, int]:
    """(ring, ulysses) degrees for `ways` sequence ranks on a model with `heads` attention heads."""
    if ways < 1 or heads < 1:
        raise ValueError(f"cannot split {heads} heads over {ways} sequence ranks")
    ulysses = math.gcd(heads, ways)
    return ways // ulysses, ulysses


def describe(ring: int, ulysses: int) -> str:
    parts = [f"Ulysses {ulysses}" if ulysses > 1 else "", f"ring {ring}" if ring > 1 else ""]
    return " × ".join(p for p in parts if p) or "none"


def backend_for(backend: str, ring: int, available: list[str]) -> tuple[str, str | None]:
    """The attention backend a split pass runs on: `backend` when diffusers can split it (and, for a
    ring, it returns the log-sum-exp), else the first usable fallback. Returns (backend, note),
    where the note says what changed; InputError when nothing here can do it."""
    usable = RING_BACKENDS if ring > 1 else CP_BACKENDS
    if backend in usable:
        return backend, None
    for candidate in FALLBACK_ORDER:
        if candidate in usable and candidate in available:
            return candidate, (f"Attention runs on {candidate} instead of {backend}: "
                               f"sequence parallelism cannot split {backend}.")
    if ring > 1:
        raise InputError("Sequence parallelism here needs ring attention (the head count does not divide by the "
                         "sequence ranks), and ring attention needs FlashAttention, cuDNN or SageAttention on a GPU.",
                         hint="Choose a number of sequence ranks that divides the model's attention heads.")
    raise InputError(f"Sequence parallelism cannot split the {backend} attention backend.",
                     hint=f"Choose one of: {', '.join(CP_BACKENDS)}.")


def check_tokens(ways: int, tokens: int, frames_per_pass: int) -> None:
    """InputError unless the `tokens` of a pass cut into `ways` equal slices."""
    if ways > 1 and tokens % ways:
        per_frame = tokens // max(frames_per_pass, 1)
        raise InputError(f"A pass of this video has {tokens} tokens ({frames_per_pass} latent frames × {per_frame}), "
                         f"which do not split into {ways} equal slices for the sequence ranks.",
                         hint=f"Choose a width and height whose tokens per frame divide by {ways} (sizes in steps of "
                              f"{16 * ways} pixels do), or another number of sequence ranks.")


def enable(model, mesh, ring: int, ulysses: int):
    """Split `model`'s passes over `mesh` (a DeviceMesh with 'ring' and 'ulysses' dimensions):
    what diffusers' `ModelMixin.enable_parallelism` does, with the mesh and device given here
    (diffusers derives the device from the accelerator count, which is 0 on a CPU-only machine)."""
    import torch.distributed as dist
    from diffusers.hooks.context_parallel import apply_context_parallel
    from diffusers.models._modeling_parallel import ContextParallelConfig, ParallelConfig

    if getattr(model, "_parallel_config", None) is not None:
        return model._parallel_config.context_parallel_config
    cp = ContextParallelConfig(ring_degree=ring, ulysses_degree=ulysses, mesh=mesh)
    config = ParallelConfig(context_parallel_config=cp)
    device = next(model.parameters()).device
    config.setup(dist.get_rank(), dist.get_world_size(), device, mesh=mesh)
    model._parallel_config = config
    for module in model.modules():
        processor = getattr(module, "processor", None)
        if processor is not None and hasattr(processor, "_parallel_config"):
            processor._parallel_config = config
    apply_context_parallel(model, cp, model._cp_plan)
    return cp
