"""Lengths: which source frame each output frame shows, and which outputs get a new mouth.

There is one dubbed output per audio window. When the audio is longer than the video the
frames are cycled ping-pong (0, 1, ..., n-1, n-1, ..., 1, 0, 0, 1, ..., the order of
`engine.dub.cycle`, as the official code does: the turning frames show twice, a visible stall),
bounced (0, 1, ..., n-1, n-2, ..., 1, 0, 1, ...: each turning frame once) or the last frame is held
("freeze"). When the video is longer, it is cut at the end of the audio ("cut") or its remaining
frames follow unchanged with their own sound ("keep"). Torch-free.
"""
from __future__ import annotations

from dataclasses import dataclass

from engine.dub.request import WHEN_AUDIO_LONGER, WHEN_VIDEO_LONGER, _choice
from engine.errors import InputError


def ping_pong_frame(i: int, n: int) -> int:
    """Source frame of output i when n frames are cycled forward and backward."""
    j = i % (2 * n)
    return j if j < n else 2 * n - 1 - j


def bounce_frame(i: int, n: int) -> int:
    """Source frame of output i when n frames go forward and backward, each turning frame shown once."""
    if n == 1:
        return 0
    j = i % (2 * n - 2)
    return j if j < n else 2 * n - 2 - j


@dataclass(frozen=True)
class OutputPlan:
    n_source: int            # frames in the source video
    n_dubbed: int            # outputs with a new mouth (= audio windows)
    n_out: int               # frames in the result
    when_audio_longer: str
    when_video_longer: str

    def source(self, i: int) -> int:
        if i < self.n_source:
            return i
        if self.when_audio_longer == "freeze":
            return self.n_source - 1
        if self.when_audio_longer == "bounce":
            return bounce_frame(i, self.n_source)
        return ping_pong_frame(i, self.n_source)

    def dubbed(self, i: int) -> bool:
        return i < self.n_dubbed

    @property
    def cycles(self) -> bool:
        """Source frames are shown again (so they must be kept somewhere after the first pass)."""
        return self.n_dubbed > self.n_source and self.when_audio_longer != "freeze"

    @property
    def kept_tail(self) -> int:
        """Source frames after the audio that are kept unchanged (with their own sound)."""
        return self.n_out - self.n_dubbed


def plan_lengths(n_source: int, n_dubbed: int, when_audio_longer: str = "pingpong",
                 when_video_longer: str = "cut") -> OutputPlan:
    if n_source < 1:
        raise InputError("The video has no frames.")
    if n_dubbed < 1:
        raise InputError("The audio is shorter than one video frame.", hint="Give a longer voice clip.")
    when_audio_longer = _choice("when_audio_longer", when_audio_longer, WHEN_AUDIO_LONGER)
    when_video_longer = _choice("when_video_longer", when_video_longer, WHEN_VIDEO_LONGER)
    n_out = max(n_source, n_dubbed) if when_video_longer == "keep" else n_dubbed
    return OutputPlan(n_source, n_dubbed, n_out, when_audio_longer, when_video_longer)
