"""MP4 out: `write_mp4` encodes frames (and audio, and settings as metadata) with H.264 + AAC,
writing beside the destination and renaming into place once complete."""
from __future__ import annotations

import itertools
import math
import os
from pathlib import Path
from typing import Iterable

import numpy as np

from engine.errors import EngineError, InputError
from engine.media.ffmpeg import h264_encoder
from engine.media.files import atomic_write


def _frame_iter(frames) -> tuple[Iterable[np.ndarray], int | None]:
    if isinstance(frames, np.ndarray):
        if frames.ndim != 4 or frames.shape[-1] != 3:
            raise InputError(f"Video frames must be [N, H, W, 3] uint8, got shape {tuple(frames.shape)}.")
        if frames.shape[0] == 0:
            raise InputError("No frames to write.")
        return frames, frames.shape[0]
    return frames, None


def _as_uint8(frame) -> np.ndarray:
    frame = np.asarray(frame)
    if frame.dtype != np.uint8:
        frame = np.clip(np.rint(frame), 0, 255).astype(np.uint8)
    return frame


def write_mp4(frames, path: str | os.PathLike, fps: float = 25, audio: np.ndarray | None = None,
              audio_sr: int = 16000, metadata: dict | None = None, *, crf: int = 18,
              preset: str = "veryfast", frame_count: int | None = None) -> str:
    """Encode uint8 RGB frames [N, H, W, 3] (an array or an iterable of frames) as H.264 MP4.

    For an iterable, `frame_count` (when known) says how many frames will come, so the audio can
    be cut to the video as it is for an array.
    Audio (float mono or [n, channels]) is muxed as AAC; the clip is cut to the shorter of
    video and audio. `metadata` is stored as JSON in the MP4 comment tag (see `probe_mp4`).
    The file appears at `path` only once it is complete.
    """
    path = Path(path)
    if fps <= 0:
        raise InputError(f"Frame rate must be positive, got {fps}.")
    path.parent.mkdir(parents=True, exist_ok=True)
    frame_source, n_frames = _frame_iter(frames)
    if n_frames is None and frame_count is not None:
        n_frames = int(frame_count)

    audio_arr = None
    if audio is not None:
        audio_arr = np.asarray(audio, dtype=np.float32)
        if audio_arr.ndim == 2 and audio_arr.shape[0] in (1, 2) and audio_arr.shape[1] > 2:
            audio_arr = audio_arr.T  # [channels, n] -> [n, channels]
        if audio_arr.ndim == 1:
            audio_arr = audio_arr[:, None]
        if audio_arr.size == 0:
            audio_arr = None
    if audio_arr is not None and n_frames is not None:
        # The shorter of the two wins: drop frames past the audio, and audio past the frames.
        audio_s = audio_arr.shape[0] / audio_sr
        n_frames = max(1, min(n_frames, math.ceil(audio_s * fps - 1e-6)))
        frame_source = frame_source[:n_frames] if isinstance(frame_source, np.ndarray) \
            else itertools.islice(frame_source, n_frames)
        audio_arr = audio_arr[: int(round(n_frames / fps * audio_sr))]

    try:
        with atomic_write(path, what="the video", suffix=".mp4") as tmp_video:
            _encode(frame_source, n_frames, tmp_video, path, fps, audio_arr, audio_sr, metadata, crf, preset)
    except OSError as err:
        raise EngineError(f"Could not save the video as {path}: {err.strerror or err}.",
                          hint="Choose another file name or folder.") from err
    return str(path)


def _encode(frame_source, n_frames, tmp_video: Path, path: Path, fps, audio_arr, audio_sr, metadata,
            crf, preset) -> None:
    """Feed the frames to the encoder, checking that they all have the first frame's size."""
    it = iter(frame_source)
    try:
        first = _as_uint8(next(it))
    except StopIteration:
        raise InputError("No frames to write.") from None
    if first.ndim != 3 or first.shape[2] != 3:
        raise InputError(f"Video frames must be [H, W, 3] uint8, got shape {tuple(first.shape)}.")
    h, w = first.shape[:2]
    with h264_encoder(tmp_video, w, h, fps, audio=audio_arr, audio_sr=audio_sr, metadata=metadata,
                      crf=crf, preset=preset, dest=path) as pipe:
        frame, written = first, 0
        while True:
            if frame.shape != (h, w, 3):
                raise InputError(f"All frames must have the same size: frame {written} is "
                                 f"{frame.shape[1]}x{frame.shape[0]}, the first is {w}x{h}.")
            pipe.write(np.ascontiguousarray(frame).tobytes())
            written += 1
            if n_frames is not None and written >= n_frames:
                break
            try:
                frame = _as_uint8(next(it))
            except StopIteration:
                break
