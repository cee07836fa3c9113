"""Source frames in output order, with flat memory.

The first pass decodes the video in order, one batch at a time. When the plan shows frames
again (ping-pong cycling), each decoded frame and its VAE latents are also written to uint8 /
float32 memory maps in a temporary folder on disk, and read back from there: RAM holds one
batch whatever the length. "freeze" keeps only the last frame (and its latents).
"""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np

from engine.dub.lengths import OutputPlan
from engine.errors import OutOfResources
from engine.media.video_in import VideoInfo, read_frames

LATENT_SHAPE = (8, 32, 32)
DISK_MARGIN = 512 * 1024**2


class SourceFrames:
    def __init__(self, info: VideoInfo, plan: OutputPlan, batch: int, spill_dir: str | None = None):
        self.info, self.plan = info, plan
        self._reader = read_frames(info, max(batch, 1))
        self._pending: list[np.ndarray] = []
        self._next = 0                      # next source frame the decoder gives
        self._last: np.ndarray | None = None
        self._last_latent: np.ndarray | None = None
        self._tmp = None
        self._frames = self._latents = self._have = None
        if plan.cycles:
            self._open_spill(spill_dir)

    def _open_spill(self, spill_dir: str | None) -> None:
        n, h, w = self.plan.n_source, self.info.height, self.info.width
        need = n * (h * w * 3 + int(np.prod(LATENT_SHAPE)) * 4)
        self._tmp = tempfile.TemporaryDirectory(prefix="humo-dub-", dir=spill_dir)
        free = shutil.disk_usage(self._tmp.name).free
        if free < need + DISK_MARGIN:
            self.close()
            raise OutOfResources(f"Cycling the frames needs {need / 1e9:.1f} GB of temporary disk space and only "
                                 f"{free / 1e9:.1f} GB is free; free some space or choose 'freeze'.")
        folder = Path(self._tmp.name)
        self._frames = np.memmap(folder / "frames.u8", np.uint8, "w+", shape=(n, h, w, 3))
        self._latents = np.memmap(folder / "latents.f32", np.float32, "w+", shape=(n, *LATENT_SHAPE))
        self._have = np.zeros(n, bool)

    def _decode_next(self) -> np.ndarray:
        if not self._pending:
            chunk = next(self._reader, None)
            if chunk is None:           # fewer frames than counted: hold the last one (the reader
                self._pending = [self._last]    # refuses a video with no frame at all)
            else:
                self._pending = list(chunk)
        frame = self._pending.pop(0)
        s = self._next
        if self._frames is not None and s < self.plan.n_source:
            self._frames[s] = frame
        self._last = frame
        self._next += 1
        return frame

    def frame(self, s: int) -> np.ndarray:
        """Source frame s (uint8 BGR, read-only view or array)."""
        if s == self._next:
            return self._decode_next()
        if s == self._next - 1 and self._last is not None:
            return self._last
        if s < self._next and self._frames is not None:
            return np.asarray(self._frames[s])
        while s > self._next:           # not expected in output order; decode forward
            self._decode_next()
        return self._decode_next()

    def latent(self, s: int) -> np.ndarray | None:
        """Cached latents of source frame s, or None (first time it is seen)."""
        if self._have is not None:
            return np.asarray(self._latents[s]) if self._have[s] else None
        if s == self.plan.n_source - 1 and self.plan.when_audio_longer == "freeze":
            return self._last_latent
        return None

    def keep_latent(self, s: int, latent: np.ndarray) -> None:
        if self._have is not None:
            self._latents[s] = latent
            self._have[s] = True
        elif s == self.plan.n_source - 1:
            self._last_latent = np.array(latent)

    def close(self) -> None:
        self._reader.close()
        self._frames = self._latents = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None
