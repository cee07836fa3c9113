"""The bundled ffmpeg binary: finding it, running it, and turning its failures into errors."""
from __future__ import annotations

import os
import re
import subprocess

from engine.errors import EngineError, OutOfResources


def ffmpeg_exe() -> str:
    """Path of the bundled ffmpeg binary (or $HUMO_FFMPEG when set)."""
    override = os.environ.get("HUMO_FFMPEG")
    if override:
        return override
    try:
        import imageio_ffmpeg
    except ImportError as err:  # pragma: no cover - a broken install
        raise EngineError("The imageio-ffmpeg package is missing.",
                          hint="Reinstall the requirements (./launch.sh installs them).") from err
    try:
        return imageio_ffmpeg.get_ffmpeg_exe()
    except RuntimeError as err:  # pragma: no cover - a broken install
        raise EngineError("No ffmpeg binary found.",
                          hint="Reinstall imageio-ffmpeg or set HUMO_FFMPEG to an ffmpeg binary.") from err


def _run_ffmpeg(args: list[str], *, input_bytes: bytes | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([ffmpeg_exe(), "-hide_banner", "-nostdin", *args],
                          input=input_bytes, capture_output=True, check=False)


def _is_disk_full(text: str) -> bool:
    return "No space left on device" in text or "ENOSPC" in text


def _disk_full_error(path: str | os.PathLike) -> OutOfResources:
    folder = os.path.dirname(os.path.abspath(path)) or "."
    return OutOfResources(f"Disk full while writing the video to {folder}: free some space and try again.")


def ffmpeg_failure(stderr: str, path: str | os.PathLike, what: str = "writing the video") -> EngineError:
    """Turn ffmpeg's error output into the error a person should see."""
    if _is_disk_full(stderr):
        return _disk_full_error(path)
    last = next((ln.strip() for ln in reversed(stderr.strip().splitlines()) if ln.strip()), "unknown error")
    return EngineError(f"ffmpeg failed while {what}: {last[:300]}")


def _parse_duration(stderr: str) -> float | None:
    m = re.search(r"Duration:\s*(\d+):(\d+):(\d+(?:\.\d+)?)", stderr)
    if not m:
        return None
    h, mnt, s = m.groups()
    return int(h) * 3600 + int(mnt) * 60 + float(s)
