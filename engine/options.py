"""The engine's options as a front end sees them: memory plans (the names, the plan auto picks
and its estimate), fast modes, attention backends, and the variants.

The studio and other front ends use these functions and never reach into engine.memory,
engine.humo.fast or engine.attention. Importing this module is cheap: torch loads on the
first call that needs it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from engine.errors import EngineError
from engine.humo.variants import VARIANTS, Variant, get_variant  # noqa: F401  (part of the public face)

AUTO = "auto"


def device() -> str:
    """"cuda" when this machine has a GPU, else "cpu"."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


# ----------------------------------------------------------------------------- memory plans

def plan_names(variant: str | Variant | None = None, on: str | None = None) -> list[str]:
    """Plans worth offering in a picker, fastest first ("auto" leads), for device `on` (default: this machine's)."""
    from engine.memory import plan_options

    return plan_options(variant, device=on or device())


def check_plan(name: str, on: str | None = None) -> None:
    """InputError unless `name` is "auto" or a plan this machine can run."""
    if str(name or AUTO).strip().lower() == AUTO:
        return
    from engine.memory import parse_plan

    parse_plan(str(name).strip(), device=on)


def _job(variant: Variant, width, height, frames, mode: str, images: int = 1):
    """The job a plan is estimated for: size and frames checked by the one request rule (empty:
    the variant's defaults). Returns (memory.Job, the rule's notices)."""
    from engine import memory
    from engine.request import check_mode, resolve_shape

    shape = resolve_shape(variant, width, height, frames)
    mode = check_mode(mode or "TIA")
    job = memory.Job(shape.width, shape.height, shape.frames, max(1, images) if mode in ("TIA", "TI") else 1, mode,
                     variant.defaults.steps)
    return job, list(shape.notices)


def _variant(name: str | Variant) -> Variant:
    from engine.request import check_variant

    return name if isinstance(name, Variant) else check_variant(name)   # the one rule's answer


def auto_plan(variant: str | Variant, width, height, frames, mode: str = "TIA", vram_gb: float | None = None,
              images: int = 1) -> dict[str, Any]:
    """The memory plan "auto" picks for this job, and its estimate, as JSON.

    With `vram_gb` the plan is chosen for a GPU of that size; without it, for this machine (its
    free GPU memory, or the CPU when there is no GPU). Returns variant, width, height, frames,
    mode, device, plan, description, budget_bytes, budget_gib, notes and the estimate (peak bytes,
    peak stage, per component); on a job that fits no plan, plan is None and error says why.
    """
    from engine import memory

    v = _variant(variant)
    job, notices = _job(v, width, height, frames, mode, images)
    out: dict[str, Any] = {"variant": v.name, "width": job.width, "height": job.height, "frames": job.frames,
                           "mode": job.mode, "notices": notices}
    if vram_gb is not None and float(vram_gb) > 0:
        on, kwargs = "cuda", {"vram_gb": float(vram_gb)}
        out["vram_gb"] = float(vram_gb)
    else:
        on = device()
        kwargs = {"free_bytes": memory.job_free_bytes()} if on == "cuda" else {}
    out["device"] = on
    try:
        choice = memory.choose_plan(v, job, device=on, **kwargs)
    except EngineError as err:
        out.update(plan=None, error=str(err))
        return out
    out.update(plan=choice.plan.name, description=memory.describe(choice.plan), budget_bytes=choice.budget,
               budget_gib=None if choice.budget is None else round(choice.budget / memory.GIB, 2),
               notes=list(choice.notes), estimate=choice.estimate.as_dict())
    return out


def plan_estimate(plan: str, variant: str | Variant, width, height, frames, mode: str = "TIA",
                  images: int = 1) -> dict[str, Any]:
    """The estimate (JSON) of a plan picked by hand, on this machine's device."""
    from engine import memory

    v = _variant(variant)
    p = memory.parse_plan(plan, device=device())
    return memory.estimate(p, v, _job(v, width, height, frames, mode, images)[0]).as_dict()


# ----------------------------------------------------------------------------- fast modes

@dataclass(frozen=True)
class FastModeInfo:
    name: str
    label: str
    description: str


def fast_modes() -> list[FastModeInfo]:
    """Every fast mode (all approximate), in the order a picker shows them."""
    from engine.humo.fast import FAST_MODES

    return [FastModeInfo(m.name, m.label, m.description) for m in FAST_MODES.values()]


def fast_mode(name: str | None) -> FastModeInfo | None:
    """The fast mode called `name`; None for exact mode ("", "exact", "off"). Unknown: InputError."""
    from engine.humo.fast import get_fast_mode

    m = get_fast_mode(name)
    return None if m is None else FastModeInfo(m.name, m.label, m.description)


# ----------------------------------------------------------------------------- attention

def attention_backends(on: str | None = None) -> list[str]:
    """Attention backends that run on `on` (default: the GPU when there is one, else the CPU)."""
    from engine.attention import available_backends

    return available_backends(on)


def attention_is_approximate(name: str) -> bool:
    from engine.attention import APPROXIMATE

    return name in APPROXIMATE


def check_attention(name: str | None) -> None:
    """InputError unless `name` is "auto" or a backend that can run here."""
    if str(name or AUTO).strip().lower() == AUTO:
        return
    from engine.attention import choose_backend

    choose_backend(str(name).strip())


# ----------------------------------------------------------------------------- time

def run_estimate(variant: str | Variant, width=None, height=None, frames=None, mode: str = "TIA", steps=None, *,
                 audio_seconds: float | None = None, window_length=None, window_overlap=None,
                 window_schedule=None, images: int = 1, on: str | None = None) -> dict[str, Any]:
    """How a job is cut into context windows, and about how long its denoising takes, as JSON.

    Every value is checked by the one request rule (InputError); `frames` None or "auto" follows
    `audio_seconds` (the kept part of the clip) when the mode has audio. Returns variant, width,
    height, frames, latent_frames, window_frames (video frames per window), windows (per step),
    steps, passes (network passes in all), pass_s, seconds, device and notices. A video that fits
    one window is an ordinary run: windows is 1, and no time is estimated (pass_s and seconds are
    None), so nothing heavy loads. The time is the speed model's (engine.memory.speed: the DiT's
    FLOPs per pass at a sustained rate for `on`, default this machine's device): an estimate of the
    denoising alone, for exact mode.
    """
    from engine.humo.windows import DEFAULT_LENGTH, DEFAULT_OVERLAP, DEFAULT_SCHEDULE, WindowPlan
    from engine.request import check_mode, check_steps, check_windows, frames_for_audio, resolve_shape

    v = _variant(variant)
    mode = check_mode(mode or "TIA")
    follows_audio = mode in ("TA", "TIA") and audio_seconds is not None
    shape = resolve_shape(v, width, height, frames, audio_frames=follows_audio)
    notices = list(shape.notices)
    n = shape.frames if shape.frames is not None else frames_for_audio(int(float(audio_seconds) * 16000),
                                                                       v.defaults.max_frames)
    steps = check_steps(steps if steps not in (None, "") else v.defaults.steps, notices)
    length, overlap, schedule = check_windows({"window_length": window_length, "window_overlap": window_overlap,
                                               "window_schedule": window_schedule})
    plan = WindowPlan(length or DEFAULT_LENGTH, overlap or DEFAULT_OVERLAP, schedule or DEFAULT_SCHEDULE)
    latent = (n - 1) // 4 + 1
    out: dict[str, Any] = {"variant": v.name, "width": shape.width, "height": shape.height, "frames": n,
                           "latent_frames": latent, "window_frames": 4 * plan.length - 3,
                           "windows": plan.count(latent), "schedule": plan.schedule, "steps": steps,
                           "passes": None, "pass_s": None, "seconds": None, "device": None, "notices": notices}
    if latent <= plan.length:
        return out
    from engine import memory

    on = on or device()
    refs = max(1, images) if mode in ("TIA", "TI") else 1
    window_job = memory.Job(shape.width, shape.height, 4 * plan.length - 3, refs, mode, steps)
    pass_s = memory.dit_flops(v.dit, window_job.tokens(v.dit)) / (memory.GPU_FLOPS if on == "cuda" else memory.CPU_FLOPS)
    window_passes = sum(len(plan.spans(latent, step)) for step in range(steps))
    passes = window_passes * memory.passes_per_step(v, mode)
    out.update(passes=passes, pass_s=pass_s, seconds=passes * pass_s, device=on)
    return out


def about(seconds: float) -> str:
    """A rough duration for an estimate: "about 40 s", "about 12 min", "about 3 h 05 min"."""
    seconds = max(0.0, float(seconds))
    if seconds < 1:
        return "under a second"
    if seconds < 90:
        return f"about {seconds:.0f} s"
    minutes = seconds / 60
    if minutes < 90:
        return f"about {minutes:.0f} min"
    hours, rest = divmod(int(round(minutes)), 60)
    return f"about {hours} h {rest:02d} min" if hours < 48 else f"about {hours / 24:.0f} days"


def long_video_line(request, on: str | None = None) -> str | None:
    """For the command line: one line on a request longer than one context window (its windows and
    the estimated denoising time, from `run_estimate`), else None. A request that follows its
    clip's length reads the clip's duration (nothing loads)."""
    seconds = None
    if request.frames is None and request.audio and request.mode in ("TA", "TIA"):
        from engine.media.audio import audio_info

        seconds = audio_info(request.audio)["duration_s"]
        if seconds is None:
            return None
    est = run_estimate(request.variant, request.width, request.height, request.frames, request.mode, request.steps,
                       audio_seconds=seconds, window_length=request.window_length,
                       window_overlap=request.window_overlap, window_schedule=request.window_schedule,
                       images=len(request.images), on=on)
    if est["windows"] <= 1:
        return None
    where = "a GPU" if est["device"] == "cuda" else "this CPU"
    return (f"long video: {est['frames']:,} frames in {est['windows']} overlapping windows of {est['window_frames']} "
            f"frames ({est['schedule']}) at each of {est['steps']} steps; denoising takes {about(est['seconds'])} "
            f"on {where} (an estimate from the model's size; decoding comes on top)")
