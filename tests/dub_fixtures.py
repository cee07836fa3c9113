"""Pieces shared by the dubbing tests: the real media folder and small clips made from it."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import numpy as np

from engine.media.ffmpeg import ffmpeg_exe

ROOT = Path(__file__).resolve().parents[1]
MEDIA = Path(os.environ.get("HUMO_MEDIA_DIR", ROOT.parent / "shared" / "media"))
TALK_1080 = MEDIA / "talk_1080x1920_25fps.mp4"
TALK_704 = MEDIA / "talk_704x1216_25fps.mp4"
SPEECH_9S = MEDIA / "speech_9s_16k.wav"
SPEECH_60S = MEDIA / "speech_60s_16k.wav"


def ffmpeg(*args: str) -> None:
    proc = subprocess.run([ffmpeg_exe(), "-hide_banner", "-nostdin", "-v", "error", "-y", *args],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def clip(src: Path, dst: Path, seconds: float, *extra: str) -> Path:
    """The first `seconds` of a video, re-encoded (every frame kept, same size and rate)."""
    ffmpeg("-i", str(src), "-t", f"{seconds}", *extra, "-c:v", "libx264", "-preset", "ultrafast",
           "-crf", "12", "-c:a", "aac", str(dst))
    return dst


def wav_prefix(src: Path, dst: Path, seconds: float, start: float | None = None) -> Path:
    """`seconds` of a voice clip (from `start`; by default where speech_9s's leading silence ends)."""
    if start is None:
        start = 0.4 if src == SPEECH_9S else 0.0
    ffmpeg("-ss", f"{start}", "-i", str(src), "-t", f"{seconds}", "-c:a", "pcm_s16le", str(dst))
    return dst


def prepared(dubber, request):
    """Run `dubber.prepare(request)`: (the DubJob, the events it sent)."""
    events = []
    gen = dubber.prepare(request)
    while True:
        try:
            events.append(next(gen))
        except StopIteration as stop:
            return stop.value, events


def one_line(err: BaseException) -> str:
    text = str(err)
    assert "\n" not in text and text.strip(), f"not one line: {text!r}"
    return text


def decode_all(path: Path, pix_fmt: str = "rgb24") -> np.ndarray:
    from engine.media.video_in import probe_video, read_frames

    return np.concatenate(list(read_frames(probe_video(path), 32, pix_fmt=pix_fmt)))
