"""The Performance panel: memory plan, fast mode, attention backend, compile.

Everything comes from the engine's public face, `engine.options`, which loads torch only when a
function is first called: the page starts without torch and fills the panel's choices when it is
first opened (or when a run needs them).
"""
from __future__ import annotations

from typing import Any

from engine import options
from engine.errors import EngineError, InputError
from engine.options import about, get_variant
from studio.form import AUTO, EXACT, fast_mode_value

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
    return [(PLAN_AUTO_LABEL if p == AUTO else p, p) for p in options.plan_names(variant)]


def fast_label(mode) -> str:
    return mode.label if "approximate" in mode.label.lower() else f"{mode.label} (approximate)"


def fast_choices() -> list[tuple[str, str]]:
    """Exact first, then every fast mode, each marked approximate."""
    return [(EXACT_LABEL, EXACT)] + [(fast_label(m), m.name) for m in options.fast_modes()]


def fast_info(value) -> str:
    """A line about the chosen fast mode: what it does, and that it is approximate."""
    name = fast_mode_value(value)
    if name is None:
        return EXACT_INFO
    try:
        mode = options.fast_mode(name)
    except InputError as err:
        return f"**Problem:** {err}"
    return f"**{fast_label(mode)}**: {mode.description} The video differs from exact mode."


def attention_choices() -> list[tuple[str, str]]:
    out = [(ATTENTION_AUTO_LABEL, AUTO)]
    for name in options.attention_backends():
        label = ATTENTION_LABELS.get(name, name)
        out.append((label + (" (approximate)" if options.attention_is_approximate(name) else ""), name))
    return out


# ----------------------------------------------------------------------------- checks before a run

def check_options(plan, fast_mode, attention) -> None:
    """Raise InputError for a plan, fast mode or attention backend this machine cannot use."""
    options.fast_mode(fast_mode_value(fast_mode))
    options.check_plan(plan)
    options.check_attention(attention)


# ----------------------------------------------------------------------------- memory plan

def memory_plan(variant: str, width: int, height: int, frames: int, mode: str = "TIA",
                vram_gb: float | None = None) -> dict[str, Any]:
    """The memory plan 'auto' picks for this job, and its estimate (see `engine.options.auto_plan`)."""
    return options.auto_plan(variant, width, height, frames, mode, vram_gb)


def selected_estimate(plan: str, variant: str, width, height, frames, mode: str) -> dict[str, Any]:
    """The estimate of a plan picked by hand, for this machine's device."""
    return options.plan_estimate(plan, variant, width, height, frames, mode)


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
    lines += info.get("notices") or []
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


# ----------------------------------------------------------------------------- long videos

def clip_seconds(audio, trim_start=0, trim_end=0) -> float | None:
    """How long the part of the clip a run keeps lasts (None: no clip, or its length is unknown)."""
    if not audio:
        return None
    from engine.media import audio_info

    try:
        total = audio_info(audio).get("duration_s")
    except (EngineError, OSError):
        return None
    if total is None:
        return None
    start = max(0.0, float(trim_start or 0))
    end = min(float(trim_end), total) if trim_end else total
    return max(end - start, 0.0)


def window_line(variant, mode, audio, trim_start, trim_end, match_audio, frames, width, height, steps,
                window_length=None, window_overlap=None, window_schedule=None) -> str:
    """Markdown under the frame count: for a video longer than one context window, how many windows
    each step denoises and the estimated denoising time (engine.options.run_estimate); empty for
    a video that fits one window. Settings the one request rule refuses are a problem line."""
    follow = bool(match_audio) and str(mode or "").upper() in ("TA", "TIA")
    seconds = clip_seconds(audio, trim_start, trim_end) if follow else None
    if follow and seconds is None:
        return ""                  # no clip yet: the frame count is not known
    try:
        est = options.run_estimate(variant, width, height, "auto" if follow else frames, mode, steps,
                                   audio_seconds=seconds, window_length=window_length,
                                   window_overlap=window_overlap, window_schedule=window_schedule)
    except (EngineError, ValueError, TypeError) as err:
        return f"**Problem:** {err}"
    if est["windows"] <= 1:
        return ""
    where = "this GPU" if est["device"] == "cuda" else "this machine's CPU"
    return (f"**Long video: {est['frames']:,} frames, {est['windows']} overlapping windows of "
            f"{est['window_frames']} frames** ({est['schedule']}) at each of {est['steps']} steps · "
            f"estimated denoising time **{about(est['seconds'])}** on {where} (an estimate from the model's "
            f"size, for exact mode: the real time varies with the machine; decoding comes on top).")
