"""Typed events that `Engine.generate` yields, in order.

A consumer (CLI progress bar, Gradio handler, API client) only renders these; it never
reaches into the engine. Every event is a small dataclass; `to_dict()` gives a JSON-able form.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

# Stages, in the order a run passes through them.
STAGES = (
    "loading",          # weights into memory (only when not already loaded)
    "encoding_text",
    "encoding_audio",
    "encoding_image",
    "denoising",
    "decoding",
    "writing",
    "done",
)


@dataclass
class Event:
    kind: str = field(init=False, default="event")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class StageEvent(Event):
    stage: str
    message: str = ""

    def __post_init__(self):
        self.kind = "stage"


@dataclass
class NoticeEvent(Event):
    """Something the user should know that did not stop the run (e.g. frames rounded)."""
    message: str

    def __post_init__(self):
        self.kind = "notice"


@dataclass
class StepEvent(Event):
    step: int            # 1-based, steps done so far
    total: int
    elapsed_s: float     # since denoising started
    eta_s: float         # estimate for the remaining denoising steps
    # A video longer than one context window also reports, during step `step` + 1, the window about
    # to be denoised: window 1..windows of that step (0 and 0 on the event that ends a step).
    window: int = 0
    windows: int = 0

    def __post_init__(self):
        self.kind = "step"

    @property
    def fraction(self) -> float:
        return self.step / max(self.total, 1)


@dataclass
class PreviewEvent(Event):
    """Cheap RGB preview of the current clean estimate: uint8 [frames, h, w, 3]."""
    step: int
    total: int
    frames: np.ndarray

    def __post_init__(self):
        self.kind = "preview"

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "step": self.step, "total": self.total, "shape": list(self.frames.shape)}


@dataclass
class ResultEvent(Event):
    video_path: str | None       # None on the ranks of a torchrun run other than rank 0 (no file)
    frames: int
    width: int
    height: int
    fps: int
    seed: int
    duration_s: float            # length of the video in seconds (run times are in `timings`)
    timings: dict[str, float]    # seconds per stage, and total_s for the whole run
    settings: dict[str, Any]

    def __post_init__(self):
        self.kind = "result"
