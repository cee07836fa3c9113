"""A request checked and completed: every default filled in, sizes and frame counts on the
model's grid, guidance scales for the mode (SPEC §3). Cheap: it runs before any weights load."""
from __future__ import annotations

from dataclasses import dataclass, field

from engine.errors import InputError
from engine.humo.variants import Variant, get_variant
from engine.humo.windows import DEFAULT_LENGTH, DEFAULT_OVERLAP, DEFAULT_SCHEDULE, WindowPlan
from engine.request import GenerationRequest, frames_for_audio, resolve_request

FPS = 25
MAX_SIDE = 2048
MIN_SIDE = 32


@dataclass
class Resolved:
    """The request with every default filled in and every value checked."""
    variant: Variant
    mode: str
    prompt: str
    negative: str
    width: int
    height: int
    frames: int
    steps: int
    shift: float
    scales: dict[str, float]
    seed: int
    notices: list[str] = field(default_factory=list)
    windows: WindowPlan | None = None     # context windows, when the video is longer than one
    request: GenerationRequest | None = None      # the checked request (values the rule accepted)

    @property
    def latent_frames(self) -> int:
        return (self.frames - 1) // 4 + 1

    def settings(self, request: GenerationRequest) -> dict:
        data = (self.request or request).to_dict()
        # The metadata as it is now: a front end notes in it what the engine chose while loading.
        data["metadata"] = request.to_dict()["metadata"]
        data.update(variant=self.variant.name, mode=self.mode, width=self.width, height=self.height,
                    frames=self.frames, steps=self.steps, shift=self.shift, seed=self.seed,
                    negative_prompt=self.negative, **self.scales)
        if self.windows is not None:
            data.update(window_length=self.windows.length, window_overlap=self.windows.overlap,
                        window_schedule=self.windows.schedule)
        data.pop("out_path", None)
        return data


def resolve(request: GenerationRequest, audio_samples: int | None) -> Resolved:
    """The engine's view of a request: the one rule (engine.request) checks and fills it; the frame
    count follows the audio when none was given; past one window, context windows."""
    from engine.humo.guidance import scales_needed
    from engine.humo.text import DEFAULT_NEGATIVE, check_prompt

    req, notices = resolve_request(request.to_dict())
    variant = get_variant(req.variant)
    d = variant.defaults
    prompt = check_prompt(req.prompt)
    negative = req.negative_prompt or DEFAULT_NEGATIVE
    frames = req.frames
    if frames is None:
        frames = d.frames if audio_samples is None else frames_for_audio(audio_samples, d.max_frames)
    windows = window_plan(req, frames, notices)
    scales = {key: float(getattr(req, key)) for key in sorted(scales_needed(variant.reference, req.mode))}
    return Resolved(variant, req.mode, prompt, negative, req.width, req.height, frames, req.steps, req.shift,
                    scales, req.seed, notices, windows, req)


def window_plan(request: GenerationRequest, frames: int, notices: list[str]) -> WindowPlan | None:
    """The context windows of a video longer than one window (None for one that fits)."""
    try:
        windows = WindowPlan(length=int(request.window_length or DEFAULT_LENGTH),
                             overlap=int(request.window_overlap or DEFAULT_OVERLAP),
                             schedule=request.window_schedule or DEFAULT_SCHEDULE)
    except ValueError as err:
        raise InputError(str(err)) from None
    latent = (frames - 1) // 4 + 1
    if latent <= windows.length:
        return None
    notices.append(f"{frames} frames is longer than one window of {4 * windows.length - 3} frames: "
                   f"{windows.count(latent)} overlapping context windows per step ({windows.schedule}).")
    return windows
