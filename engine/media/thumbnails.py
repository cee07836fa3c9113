"""Thumbnails: a small still of the middle frame of a clip, written atomically."""
from __future__ import annotations

import os
from pathlib import Path

from PIL import Image

from engine.errors import InputError
from engine.media.files import atomic_write
from engine.media.images import to_rgb
from engine.media.mp4_read import probe_mp4, read_video_frames
from engine.media.mp4_write import _as_uint8


def make_thumbnail(frames_or_video, path: str | os.PathLike, max_side: int = 256) -> str:
    """Write a small still (JPEG/PNG/WebP by extension) of the middle frame of a clip.

    Accepts a video path, frames [N, H, W, 3], one frame [H, W, 3] or a PIL image.
    """
    src = frames_or_video
    if isinstance(src, Image.Image):
        img = to_rgb(src).copy()
    elif isinstance(src, (str, os.PathLike)):
        info = probe_mp4(src)
        n = info["frames"] or 1
        frames = read_video_frames(src, max_frames=n // 2 + 1)
        if frames.shape[0] == 0:
            raise InputError(f"The video {Path(src).name} has no frames to make a thumbnail from.")
        img = Image.fromarray(frames[-1])
    else:
        arr = _as_uint8(src)
        if arr.ndim == 4:
            arr = arr[arr.shape[0] // 2]
        if arr.ndim != 3 or arr.shape[2] != 3:
            raise InputError(f"A thumbnail needs RGB frames, got shape {tuple(arr.shape)}.")
        img = Image.fromarray(arr)
    img.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".webp": "WEBP"}.get(path.suffix.lower(), "JPEG")
    with atomic_write(path, what="the thumbnail") as tmp:
        img.save(tmp, format=fmt, **({"quality": 88} if fmt in ("JPEG", "WEBP") else {}))
    return str(path)
