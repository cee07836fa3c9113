"""Voice clips in: container facts (`audio_info`) and decoding to float32 mono (`load_audio`)."""
from __future__ import annotations

import os
from typing import Any

import numpy as np

from engine.errors import InputError
from engine.media.container import container_seconds, open_container, seconds
from engine.media.ffmpeg import decode_audio_mono
from engine.media.files import _check_file

# Audio limits.
MIN_AUDIO_SECONDS = 0.2
MAX_AUDIO_SECONDS = 15 * 60     # longest clip decoded at all; longer uploads are refused before decoding
SILENCE_PEAK = 1e-4


def audio_info(path: str | os.PathLike) -> dict[str, Any]:
    """Container-level facts: duration_s (None if unknown), sample_rate, channels, codec."""
    p = _check_file(path, "Audio")
    with open_container(p) as container:
        if container is None or not container.streams.audio:
            raise InputError(f"{p.name} has no audio track or is not a media file ffmpeg can read.",
                             hint="Use a wav, mp3, m4a, ogg or flac file.")
        stream = container.streams.audio[0]
        ctx = stream.codec_context
        duration = container_seconds(container)
        if duration is None:
            duration = seconds(stream.duration, stream.time_base)
        return {"duration_s": duration, "sample_rate": int(ctx.sample_rate),
                "channels": ctx.layout.nb_channels or None, "codec": ctx.name}


def _fmt_seconds(s: float) -> str:
    return f"{s:.1f} s" if s < 120 else f"{int(s // 60)} min {s % 60:.0f} s"


def _refuse_long(length_s: float | None, max_seconds: float):
    length = _fmt_seconds(length_s) if length_s else f"more than {_fmt_seconds(max_seconds)}"
    return InputError(f"The audio is too long: {length}, the limit is {_fmt_seconds(max_seconds)}.",
                      hint="Trim it to the part you want and upload it again.")


def load_audio(path: str | os.PathLike, sr: int = 16000, max_seconds: float | None = None,
               start_s: float = 0.0, end_s: float | None = None) -> np.ndarray:
    """Decode any audio (or the first audio track of a video) to float32 mono at `sr`; with
    `start_s`/`end_s`, only that part.

    The container's duration is read first, so a clip longer than `max_seconds` is refused before
    any decoding; the decode itself streams in chunks and stops once past the limit, so memory
    holds the mono result only. Raises InputError for a missing, unreadable, empty, silent, too
    short or too long clip.
    """
    p = _check_file(path, "Audio")
    name = p.name
    if p.stat().st_size == 0:
        raise InputError(f"The audio file {name} is empty (0 bytes).", hint="Record or export the clip again.")
    try:
        info = audio_info(p)
    except InputError:
        info = {"channels": 1, "duration_s": None}  # let the decode below say what is wrong
    start = max(0.0, float(start_s or 0.0))
    end = float(end_s) if end_s else None
    if max_seconds is not None and info["duration_s"]:
        kept = min(end or info["duration_s"], info["duration_s"]) - start
        if kept > max_seconds + 0.5:
            raise _refuse_long(info["duration_s"] if not (start or end) else kept, max_seconds)
    # Decode every channel and average them here: ffmpeg's own downmix scales stereo by 1/sqrt(2)
    # per channel, which can push a loud centered voice past full scale.
    channels = max(1, min(int(info["channels"] or 1), 8))
    limit = None if max_seconds is None else int((float(max_seconds) + 1.0) * sr)
    wave, too_long = decode_audio_mono(p, sr, channels, start_s=start, end_s=end, limit_samples=limit)
    if too_long:
        raise _refuse_long(info["duration_s"], max_seconds)
    if wave.size == 0:
        raise InputError(f"The audio file {name} contains no sound samples.", hint="Record or export the clip again.")
    if not np.all(np.isfinite(wave)):
        wave = np.nan_to_num(wave, nan=0.0, posinf=1.0, neginf=-1.0)
    seconds = wave.size / sr
    if max_seconds is not None and seconds > max_seconds + 0.5 / sr:
        raise _refuse_long(info["duration_s"], max_seconds)
    if seconds < MIN_AUDIO_SECONDS:
        raise InputError(f"The audio is too short: {seconds:.2f} s, it needs at least {MIN_AUDIO_SECONDS} s.",
                         hint="Upload a longer voice clip.")
    if float(np.max(np.abs(wave))) < SILENCE_PEAK:
        raise InputError(f"The audio in {name} is silent.", hint="Check the recording level and upload a clip with a voice.")
    return wave
