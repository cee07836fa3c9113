"""The MP4 writer on its own thread, fed frame batches while the pipeline keeps yielding events.

`write_mp4` pulls frames from an iterator; the dub pipeline is itself a generator of events,
so frames cross one bounded queue to a writer thread. Stopping early (cancel, an error) makes
the iterator raise inside `write_mp4`, which removes its temporary file: nothing half-written.
"""
from __future__ import annotations

import queue
import threading

import numpy as np

from engine.errors import Cancelled
from engine.media.mp4_write import write_mp4

_END = object()
_WAIT_S = 0.5


class _Abort:
    def __init__(self, error: BaseException):
        self.error = error


class BackgroundWriter:
    def __init__(self, path, fps, audio: np.ndarray | None, audio_sr: int, metadata: dict, depth: int = 16):
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self.path: str | None = None
        self._thread = threading.Thread(target=self._run, args=(path, fps, audio, audio_sr, metadata),
                                        name="dub-mp4-writer", daemon=True)
        self._thread.start()

    def _frames(self):
        while True:
            item = self._queue.get()
            if item is _END:
                return
            if isinstance(item, _Abort):
                raise item.error
            yield item

    def _run(self, path, fps, audio, audio_sr, metadata) -> None:
        try:
            self.path = write_mp4(self._frames(), path, fps=fps, audio=audio, audio_sr=audio_sr, metadata=metadata)
        except BaseException as err:          # handed to the pipeline's thread in put()/finish()
            self._error = err
            while True:                       # unblock a producer waiting on a full queue
                try:
                    self._queue.get_nowait()
                except queue.Empty:
                    break

    def _put(self, item) -> None:
        while True:
            if self._error is not None:
                raise self._error
            if not self._thread.is_alive() and item is not _END:
                raise RuntimeError("the video writer stopped unexpectedly")
            try:
                self._queue.put(item, timeout=_WAIT_S)
                return
            except queue.Full:
                continue

    def put(self, frame_rgb: np.ndarray) -> None:
        self._put(frame_rgb)

    def finish(self) -> str:
        """Wait for the file to be complete at its path; return the path."""
        self._put(_END)
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self.path

    def abort(self, error: BaseException | None = None) -> None:
        """Stop writing and remove the temporary file (the destination is never touched)."""
        if self._thread.is_alive():
            try:
                self._queue.put(_Abort(error or Cancelled("Dubbing cancelled.")), timeout=5)
            except queue.Full:
                pass
            self._thread.join(timeout=30)
