"""Voice clips in: container facts (`audio_info`) and decoding to float32 mono (`load_audio`)."""
from __future__ import annotations

import os
import re
from typing import Any

import numpy as np

from engine.errors import InputError
from engine.media.ffmpeg import _parse_duration, _run_ffmpeg
from engine.media.files import _check_file

# Audio limits.
MIN_AUDIO_SECONDS = 0.2
SILENCE_PEAK = 1e-4


def audio_info(path: str | os.PathLike) -> dict[str, Any]:
    """Container-level facts: duration_s (None if unknown), sample_rate, channels, codec."""
    p = _check_file(path, "Audio")
    stderr = _run_ffmpeg(["-i", str(p)]).stderr.decode("utf-8", "replace")
    m = re.search(r"Stream #\S+.*?: Audio: ([^,\s]+).*?, (\d+) Hz, ([^,]+)", stderr)
    if not m:
        raise InputError(f"{p.name} has no audio track or is not a media file ffmpeg can read.",
                         hint="Use a wav, mp3, m4a, ogg or flac file.")
    layout = m.group(3).strip().split("(")[0]
    channels = {"mono": 1, "stereo": 2, "2.1": 3, "quad": 4, "4.0": 4, "5.0": 5, "5.1": 6, "6.1": 7, "7.1": 8}.get(layout)
    if channels is None:
        cm = re.match(r"(\d+) channels", layout)
        channels = int(cm.group(1)) if cm else None
    return {"duration_s": _parse_duration(stderr), "sample_rate": int(m.group(2)),
            "channels": channels, "codec": m.group(1)}


def _fmt_seconds(s: float) -> str:
    return f"{s:.1f} s" if s < 120 else f"{int(s // 60)} min {s % 60:.0f} s"


def load_audio(path: str | os.PathLike, sr: int = 16000, max_seconds: float | None = None) -> np.ndarray:
    """Decode any audio (or the first audio track of a video) to float32 mono at `sr`.

    Raises InputError for a missing, unreadable, empty, silent, too short or too long clip.
    """
    p = _check_file(path, "Audio")
    name = p.name
    if p.stat().st_size == 0:
        raise InputError(f"The audio file {name} is empty (0 bytes).", hint="Record or export the clip again.")
    # Decode every channel and average them here: ffmpeg's own downmix scales stereo by 1/sqrt(2)
    # per channel, which can push a loud centered voice past full scale.
    try:
        channels = audio_info(p)["channels"] or 1
    except InputError:
        channels = 1  # let the decode below say what is wrong
    channels = max(1, min(int(channels), 8))
    args = ["-v", "error", "-i", str(p), "-map", "0:a:0", "-vn", "-ac", str(channels), "-ar", str(int(sr))]
    if max_seconds is not None:
        # Decode a little past the limit only: enough to know it is too long, without reading an hour.
        args += ["-t", f"{float(max_seconds) + 1.0:.3f}"]
    args += ["-f", "f32le", "-"]
    proc = _run_ffmpeg(args)
    err = proc.stderr.decode("utf-8", "replace")
    if proc.returncode != 0:
        if "matches no streams" in err or "does not contain any stream" in err:
            raise InputError(f"{name} has no audio track.", hint="Upload a voice clip (wav, mp3, m4a, ogg, flac).")
        raise InputError(f"Could not read {name}: it is not an audio file or it is damaged.",
                         hint="Export it again as wav or mp3.")
    wave = np.frombuffer(proc.stdout, dtype="<f4").astype(np.float32)
    if channels > 1:
        wave = wave[: wave.size // channels * channels].reshape(-1, channels).mean(axis=1)
    if wave.size == 0:
        raise InputError(f"The audio file {name} contains no sound samples.", hint="Record or export the clip again.")
    if not np.all(np.isfinite(wave)):
        wave = np.nan_to_num(wave, nan=0.0, posinf=1.0, neginf=-1.0)
    seconds = wave.size / sr
    if max_seconds is not None and seconds > max_seconds + 0.5 / sr:
        info_len = None
        try:
            info_len = audio_info(p)["duration_s"]
        except InputError:
            pass
        length = _fmt_seconds(info_len) if info_len else f"more than {_fmt_seconds(max_seconds)}"
        raise InputError(f"The audio is too long: {length}, the limit is {_fmt_seconds(max_seconds)}.",
                         hint="Trim it to the part you want and upload it again.")
    if seconds < MIN_AUDIO_SECONDS:
        raise InputError(f"The audio is too short: {seconds:.2f} s, it needs at least {MIN_AUDIO_SECONDS} s.",
                         hint="Upload a longer voice clip.")
    if float(np.max(np.abs(wave))) < SILENCE_PEAK:
        raise InputError(f"The audio in {name} is silent.", hint="Check the recording level and upload a clip with a voice.")
    return np.ascontiguousarray(wave)
