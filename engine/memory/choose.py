"""Choosing a plan: the GPU budget, the candidates 'auto' considers, and the fastest that fits."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from engine.errors import OutOfResources
from engine.memory.activations import Job
from engine.memory.counts import component_configs
from engine.memory.estimates import Estimate, estimate
from engine.memory.placement import job_free_bytes
from engine.memory.plans import DEFAULT_TILE, GIB, LABELS, TEXT_MODES, Plan, parse_plan
from engine.humo.variants import Variant

# Safety margin on a budget: a fraction of it plus fixed bytes (cuBLAS workspaces, allocator).
MARGIN_FRACTION = 0.10
MARGIN_BYTES = int(0.5 * GIB)
CUDA_CONTEXT_BYTES = int(0.5 * GIB)  # counted only for --vram-gb (mem_get_info already excludes it)


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
