"""MP4 in: `probe_mp4` reads back what `write_mp4` wrote (sizes, durations, metadata);
decoding its frames and its audio track."""
from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from engine.errors import InputError
from engine.media.ffmpeg import _parse_duration, _run_ffmpeg, ffmpeg_failure
from engine.media.mp4_write import _METADATA_TAG


def _parse_ffmetadata(text: str) -> dict[str, str]:
    """Parse ffmpeg's ffmetadata format (global section only), undoing its backslash escapes."""
    tags: dict[str, str] = {}
    lines = text.split("\n")
    i = 0
    while i < len(lines):
        line = lines[i]
        i += 1
        if not line or line.startswith(";") or line.startswith("#"):
            continue
        if line.startswith("["):
            break  # a stream or chapter section: the global tags are done
        while line.endswith("\\") and not line.endswith("\\\\") and i < len(lines):
            line = line[:-1] + "\n" + lines[i]
            i += 1
        key, out, esc = [], [], False
        target = key
        for ch in line:
            if esc:
                target.append(ch)
                esc = False
            elif ch == "\\":
                esc = True
            elif ch == "=" and target is key:
                target = out
            else:
                target.append(ch)
        if target is out:
            tags["".join(key)] = "".join(out)
    return tags


def _progress_value(text: str, key: str) -> str | None:
    vals = re.findall(rf"^{key}=(\S+)$", text, flags=re.M)
    return vals[-1] if vals else None


def _stream_duration(path: Path, selector: str) -> tuple[int | None, float | None]:
    """(packets/frames, seconds) of one stream, by remuxing it to nothing."""
    proc = _run_ffmpeg(["-v", "error", "-i", str(path), "-map", selector, "-c", "copy",
                        "-f", "null", "-", "-progress", "pipe:1", "-nostats"])
    if proc.returncode != 0:
        return None, None
    out = proc.stdout.decode("utf-8", "replace")
    frames = _progress_value(out, "frame")
    us = _progress_value(out, "out_time_us")
    n = int(frames) if frames and frames.isdigit() else None
    secs = int(us) / 1e6 if us and us.lstrip("-").isdigit() and int(us) >= 0 else None
    return n, secs


def probe_mp4(path: str | os.PathLike) -> dict[str, Any]:
    """Read back what `write_mp4` wrote: frames, fps, width, height, duration_s, has_audio,
    audio_duration_s and the metadata dict (empty when the file has none)."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"Video file not found: {p.name}.")
    proc = _run_ffmpeg(["-i", str(p), "-f", "ffmetadata", "-"])
    stderr = proc.stderr.decode("utf-8", "replace")
    vm = re.search(r"Stream #\S+.*?: Video: (.*)", stderr)
    if proc.returncode != 0 or not vm:
        raise InputError(f"Could not read the video {p.name}: it is damaged or not a video.")
    vline = vm.group(1)
    size = re.search(r"\b(\d{2,5})x(\d{2,5})\b", vline)
    fps_m = re.search(r"([\d.]+)(k?) fps", vline)
    fps = float(fps_m.group(1)) * (1000 if fps_m and fps_m.group(2) else 1) if fps_m else None
    tags = _parse_ffmetadata(proc.stdout.decode("utf-8", "replace"))
    metadata: dict = {}
    raw = tags.get(_METADATA_TAG)
    if raw:
        try:
            loaded = json.loads(raw)
            metadata = loaded if isinstance(loaded, dict) else {"value": loaded}
        except json.JSONDecodeError:
            metadata = {"comment": raw}
    has_audio = re.search(r"Stream #\S+.*?: Audio: ", stderr) is not None
    n_frames, _ = _stream_duration(p, "0:v:0")
    audio_s = _stream_duration(p, "0:a:0")[1] if has_audio else None
    video_s = n_frames / fps if (n_frames and fps) else None
    return {
        "frames": n_frames,
        "fps": fps,
        "width": int(size.group(1)) if size else None,
        "height": int(size.group(2)) if size else None,
        "duration_s": _parse_duration(stderr),
        "video_duration_s": video_s,
        "has_audio": has_audio,
        "audio_duration_s": audio_s,
        "metadata": metadata,
    }


def read_video_frames(path: str | os.PathLike, max_frames: int | None = None) -> np.ndarray:
    """Decode a video to uint8 RGB frames [N, H, W, 3]."""
    info = probe_mp4(path)
    w, h = info["width"], info["height"]
    args = ["-v", "error", "-i", str(path), "-map", "0:v:0"]
    if max_frames is not None:
        args += ["-frames:v", str(int(max_frames))]
    args += ["-f", "rawvideo", "-pix_fmt", "rgb24", "-"]
    proc = _run_ffmpeg(args)
    if proc.returncode != 0:
        raise ffmpeg_failure(proc.stderr.decode("utf-8", "replace"), path, "reading the video")
    data = np.frombuffer(proc.stdout, dtype=np.uint8)
    return data[: data.size // (h * w * 3) * (h * w * 3)].reshape(-1, h, w, 3)


def read_mp4_audio(path: str | os.PathLike, sr: int = 16000) -> np.ndarray:
    """The audio track of a video as float32 mono at `sr` (empty if it has none)."""
    proc = _run_ffmpeg(["-v", "error", "-i", str(path), "-map", "0:a:0", "-ac", "1", "-ar", str(int(sr)),
                        "-f", "f32le", "-"])
    if proc.returncode != 0:
        return np.zeros(0, np.float32)
    return np.frombuffer(proc.stdout, dtype="<f4").astype(np.float32)
