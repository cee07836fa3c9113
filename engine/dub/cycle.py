"""Which input frame each MuseTalk output uses.

There is one output per audio window, whatever the number of frames: the frames (and their
boxes) and the latents are each cycled "ping-pong" (0, 1, ..., n-1, n-1, ..., 1, 0, 0, 1, ...).
Latents exist only for frames with a face, so the latent cycle is shorter than the frame cycle
when a frame has none; from there on an output pastes one frame's latents onto another frame
(the official behaviour, kept), and an output whose frame has no face is not written.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from engine.errors import InputError


def ping_pong(items: Sequence) -> list:
    """The items followed by their reverse: both ends appear twice in a row when cycled."""
    items = list(items)
    return items + items[::-1]


@dataclass(frozen=True)
class OutputSource:
    index: int               # output number = audio window number
    latent_frame: int        # input frame whose latents feed the UNet
    frame: int               # input frame whose pixels and box take the face
    written: bool            # False where that frame has no face (nothing is written)


def output_sources(n_outputs: int, has_face: Sequence[bool]) -> list[OutputSource]:
    """Output i: audio window i, latents of latent_cycle[i mod len], frame frame_cycle[i mod len]."""
    faces = _face_frames(has_face)
    return [_source(i, faces, has_face) for i in range(n_outputs)]


def output_source(i: int, has_face: Sequence[bool]) -> OutputSource:
    """The sources of output i alone (for streaming: no list of every output)."""
    return _source(i, _face_frames(has_face), has_face)


def _face_frames(has_face: Sequence[bool]) -> list[int]:
    faces = [f for f, ok in enumerate(has_face) if ok]
    if not faces:
        raise InputError("No face was found in any frame; give a video where one face is visible.")
    return faces


def _source(i: int, faces: list[int], has_face: Sequence[bool]) -> OutputSource:
    n, m = len(has_face), len(faces)
    k, j = i % (2 * m), i % (2 * n)
    latent = faces[k] if k < m else faces[2 * m - 1 - k]
    frame = j if j < n else 2 * n - 1 - j
    return OutputSource(i, latent, frame, bool(has_face[frame]))
