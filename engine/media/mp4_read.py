"""MP4 in: `probe_mp4` reads back what `write_mp4` wrote (sizes, durations, metadata);
decoding its frames and its audio track."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from engine.errors import InputError
from engine.media.container import container_seconds, open_container, packet_count, seconds
from engine.media.ffmpeg import METADATA_TAG, decode_audio, decode_frames


def probe_mp4(path: str | os.PathLike) -> dict[str, Any]:
    """Read back what `write_mp4` wrote: frames, fps, width, height, duration_s, has_audio,
    audio_duration_s and the metadata dict (empty when the file has none)."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"Video file not found: {p.name}.")
    with open_container(p) as container:
        video = container.streams.video[0] if container is not None and container.streams.video else None
        if video is None:
            raise InputError(f"Could not read the video {p.name}: it is damaged or not a video.")
        audio = container.streams.audio[0] if container.streams.audio else None
        rate = video.average_rate or video.guessed_rate
        fps = float(rate) if rate else None
        n_frames = video.frames or packet_count(container, video) or None
        raw = container.metadata.get(METADATA_TAG)
        return {
            "frames": n_frames,
            "fps": fps,
            "width": video.codec_context.width or None,
            "height": video.codec_context.height or None,
            "duration_s": container_seconds(container),
            "video_duration_s": n_frames / fps if (n_frames and fps) else None,
            "has_audio": audio is not None,
            "audio_duration_s": seconds(audio.duration, audio.time_base) if audio is not None else None,
            "metadata": _settings_from_tag(raw),
        }


def _settings_from_tag(raw: str | None) -> dict:
    if not raw:
        return {}
    try:
        loaded = json.loads(raw)
    except json.JSONDecodeError:
        return {"comment": raw}
    return loaded if isinstance(loaded, dict) else {"value": loaded}


def read_video_frames(path: str | os.PathLike, max_frames: int | None = None) -> np.ndarray:
    """Decode a video to uint8 RGB frames [N, H, W, 3]."""
    info = probe_mp4(path)
    return decode_frames(path, info["width"], info["height"], max_frames)


def read_mp4_audio(path: str | os.PathLike, sr: int = 16000) -> np.ndarray:
    """The audio track of a video as float32 mono at `sr` (empty if it has none)."""
    try:
        return decode_audio(path, sr, 1)[:, 0]
    except InputError:
        return np.zeros(0, np.float32)
