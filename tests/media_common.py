"""Pieces shared by the engine.media tests (test_media_audio, test_media_images, test_media_video)."""
from __future__ import annotations

import numpy as np

SR = 16000


def one_line(err: Exception) -> str:
    msg = str(err)
    assert msg and "\n" not in msg and "Traceback" not in msg
    return msg


def moving_frames(n: int, h: int, w: int) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    frames = np.empty((n, h, w, 3), np.uint8)
    for i in range(n):
        frames[i, ..., 0] = (x * 255 // max(1, w - 1) + 3 * i) % 256
        frames[i, ..., 1] = y * 255 // max(1, h - 1)
        frames[i, ..., 2] = 128
    return frames
