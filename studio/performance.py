"""The Performance panel: memory plan, fast mode, attention backend, compile.

The engine's memory, fast-mode and attention modules import torch, so everything here that
needs them imports them inside the function: the page starts without torch and fills the
panel's choices when it is first opened (or when a run needs them).
"""
from __future__ import annotations

from typing import Any

from engine.errors import EngineError, InputError
from engine.variants import get_variant
from studio.form import AUTO, EXACT, fast_mode_value, uses_image

EXACT_LABEL = "Exact (default)"
EXACT_INFO = "**Exact**: every block of every guidance pass at every step, as the model was trained."
COMPILE_LABEL = "compile (torch.compile, exact, slower first run)"
PLAN_AUTO_LABEL = "auto (the fastest that fits)"
ATTENTION_AUTO_LABEL = "auto (the fastest installed)"
PLAN_PLACEHOLDER = "Open this panel to see the plan auto picks for this model and size."
ATTENTION_LABELS = {
    "native": "native (PyTorch SDPA)",
    "_native_math": "_native_math (reference, slow)",
    "_native_flash": "_native_flash (PyTorch flash kernel)",
    "_native_efficient": "_native_efficient (PyTorch memory-efficient kernel)",
    "_native_cudnn": "_native_cudnn (cuDNN)",
    "_flash_3": "_flash_3 (FlashAttention 3)",
    "flash": "flash (FlashAttention 2)",
    "xformers": "xformers",
}


# ----------------------------------------------------------------------------- choices

def plan_choices(variant: str) -> list[tuple[str, str]]:
    from engine.memory import plan_options

    return [(PLAN_AUTO_LABEL if p == AUTO else p, p) for p in plan_options(variant, device=_device())]


def fast_label(mode) -> str:
    return mode.label if "approximate" in mode.label.lower() else f"{mode.label} (approximate)"


def fast_choices() -> list[tuple[str, str]]:
    """Exact first, then every fast mode, each marked approximate."""
    from engine.fast import FAST_MODES

    return [(EXACT_LABEL, EXACT)] + [(fast_label(m), name) for name, m in FAST_MODES.items()]


def fast_info(value) -> str:
    """A line about the chosen fast mode: what it does, and that it is approximate."""
    name = fast_mode_value(value)
    if name is None:
        return EXACT_INFO
    from engine.fast import get_fast_mode

    try:
        mode = get_fast_mode(name)
    except InputError as err:
        return f"**Problem:** {err}"
    return f"**{fast_label(mode)}**: {mode.description} The video differs from exact mode."


def attention_choices() -> list[tuple[str, str]]:
    from engine.attention import APPROXIMATE, available_backends

    out = [(ATTENTION_AUTO_LABEL, AUTO)]
    for name in available_backends():
        label = ATTENTION_LABELS.get(name, name)
        out.append((label + (" (approximate)" if name in APPROXIMATE else ""), name))
    return out


# ----------------------------------------------------------------------------- checks before a run

def check_options(plan, fast_mode, attention) -> None:
    """Raise InputError for a plan, fast mode or attention backend this machine cannot use."""
    from engine.fast import get_fast_mode

    get_fast_mode(fast_mode_value(fast_mode))
    plan = str(plan or AUTO).strip()
    if plan.lower() != AUTO:
        from engine.memory import parse_plan

        parse_plan(plan)
    attention = str(attention or AUTO).strip()
    if attention.lower() != AUTO:
        from engine.attention import choose_backend

        choose_backend(attention)


# ----------------------------------------------------------------------------- memory plan

def _device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _job(variant: str, width, height, frames, mode: str, images: int = 1):
    from engine import memory

    v = get_variant(variant)
    w, h = int(width or v.defaults.width), int(height or v.defaults.height)
    if w < 16 or h < 16:
        raise InputError(f"The size {w}×{h} is too small.", hint="Pick a size preset.")
    w, h = max(16, w // 16 * 16), max(16, h // 16 * 16)
    n = max(1, int(frames or v.defaults.frames))
    n = 4 * ((n - 1) // 4) + 1
    mode = mode if mode in ("TA", "TIA", "TI") else "TIA"
    return memory.Job(w, h, n, max(1, images) if uses_image(mode) else 1, mode, v.defaults.steps)


def memory_plan(variant: str, width: int, height: int, frames: int, mode: str = "TIA",
                vram_gb: float | None = None) -> dict[str, Any]:
    """The memory plan 'auto' picks for this job, and its estimate.

    With `vram_gb` the plan is chosen for a GPU of that size; without it, for this machine (its
    free GPU memory, or the CPU when there is no GPU). Returns JSON: plan, description, device,
    budget, notes and the estimate (peak bytes, peak stage, per component); on a job that fits no
    plan, plan is null and error says why.
    """
    from engine import memory

    try:
        v = get_variant(variant)
    except KeyError as err:
        raise InputError(str(err.args[0])) from None
    job = _job(v.name, width, height, frames, mode)
    out: dict[str, Any] = {"variant": v.name, "width": job.width, "height": job.height, "frames": job.frames,
                           "mode": job.mode}
    if vram_gb is not None and float(vram_gb) > 0:
        device, kwargs = "cuda", {"vram_gb": float(vram_gb)}
        out["vram_gb"] = float(vram_gb)
    else:
        device = _device()
        kwargs = {"free_bytes": memory.job_free_bytes()} if device == "cuda" else {}
    out["device"] = device
    try:
        choice = memory.choose_plan(v, job, device=device, **kwargs)
    except EngineError as err:
        out.update(plan=None, error=str(err))
        return out
    out.update(plan=choice.plan.name, description=memory.describe(choice.plan), budget_bytes=choice.budget,
               budget_gib=None if choice.budget is None else round(choice.budget / memory.GIB, 2),
               notes=list(choice.notes), estimate=choice.estimate.as_dict())
    return out


def selected_estimate(plan: str, variant: str, width, height, frames, mode: str) -> dict[str, Any]:
    """The estimate of a plan picked by hand, for this machine's device."""
    from engine import memory

    v = get_variant(variant)
    p = memory.parse_plan(plan, device=_device())
    return memory.estimate(p, v, _job(v.name, width, height, frames, mode)).as_dict()


def plan_line(variant: str, width, height, frames, mode: str, plan: str = AUTO) -> str:
    """Markdown for the panel: what auto picks here, its estimated peak, and the selected plan."""
    try:
        info = memory_plan(variant, width, height, frames, mode)
    except (EngineError, ValueError, TypeError) as err:
        return f"**Problem:** {err}"
    label = get_variant(info["variant"]).label
    size = f"{info['width']}×{info['height']}, {info['frames']} frames"
    if info["plan"] is None:
        return f"**No plan fits:** {info['error']}"
    est = info["estimate"]
    if info["device"] == "cpu":
        lines = [f"**No GPU here: the run uses the CPU** (plan `{info['plan']}`, everything in float32). "
                 f"Estimated peak for {label} at {size}: **{est['peak_gib']:.2f} GiB** of system memory "
                 f"({est['peak_stage']} stage)."]
    else:
        lines = [f"**auto picks `{info['plan']}`** for {label} at {size}: {info['description']} "
                 f"Estimated GPU peak **{est['peak_gib']:.2f} GiB** ({est['peak_stage']} stage) of "
                 f"{info['budget_gib']:.1f} GiB usable."]
    plan = str(plan or AUTO).strip()
    if plan.lower() != AUTO:
        try:
            sel = selected_estimate(plan, info["variant"], width, height, frames, mode)
        except EngineError as err:
            lines.append(f"**Problem with the selected plan:** {err}")
        else:
            where = "system memory" if info["device"] == "cpu" else "GPU"
            lines.append(f"Selected: {sel['description']} Estimated {where} peak "
                         f"**{sel['peak_gib']:.2f} GiB** ({sel['peak_stage']} stage).")
            if info["device"] == "cuda" and info.get("budget_bytes") and sel["peak_bytes"] > info["budget_bytes"]:
                lines.append("That is more than the GPU has free: the run may stop for lack of memory.")
    return "  \n".join(lines)
