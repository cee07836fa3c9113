"""Run one generation on a worker thread and hand the UI only the newest state.

The engine yields events as fast as it computes them; a browser on a slow link cannot take
every preview. The worker puts events in a queue; the consumer drains whatever is waiting
and keeps only the newest preview, so the page never falls behind the model.
"""
from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterable, Iterator

# One engine, one run at a time: a new run waits here until a cancelled one has wound down.
ENGINE_LOCK = threading.Lock()


class BatchControl:
    """Stops a batch (several runs from one click) between its runs.

    Cancelling the engine stops the run that is going; this flag stops the runs after it,
    including when Cancel comes while one run is being saved and the next has not started.
    One batch runs at a time (the Generate event has a concurrency limit of one).
    """

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._current: object | None = None
        self._idle = threading.Event()
        self._idle.set()
        self.owner: str | None = None      # the page (session) that started the batch going now

    def begin(self, owner: str | None = None) -> object:
        """A new batch starts (from the page `owner`); returns its token for `end`."""
        token = object()
        with self._lock:
            self._stop.clear()
            self._current = token
            self.owner = owner
            self._idle.clear()
        return token

    def owned_by_another(self, session: str | None) -> bool:
        """True when a batch is going and it was started from another page than `session`."""
        with self._lock:
            return self._current is not None and None not in (self.owner, session) and self.owner != session

    def end(self, token: object) -> None:
        # A cancelled batch's handler may wind down after the next batch began: it must not end that one.
        with self._lock:
            if self._current is token:
                self._current, self.owner = None, None
                self._idle.set()

    def wait_idle(self, timeout_s: float) -> bool:
        """Wait until no batch is going (its stream has sent its last status); False on timeout."""
        return self._idle.wait(timeout_s)

    def stop(self) -> bool:
        """Ask the batch to stop; True when one was going."""
        with self._lock:
            self._stop.set()           # harmless when none is going: the next batch clears it
            return self._current is not None

    @property
    def active(self) -> bool:
        return self._current is not None

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()


BATCH = BatchControl()

_DONE = object()


@dataclass
class _Failure:
    error: BaseException


@dataclass
class RunState:
    """What the page shows about a run; a fresh copy is yielded on every change."""
    stage: str = "queued"
    stage_message: str = ""
    step: int = 0
    total: int = 0
    elapsed_s: float = 0.0
    eta_s: float | None = None
    preview: Any = None                 # uint8 [F, h, w, 3] of the newest preview
    preview_step: int = 0
    previews_seen: int = 0              # previews produced by the engine
    previews_shown: int = 0             # previews handed to the page (stale ones are dropped)
    new_notices: list[str] = field(default_factory=list)
    result: Any = None                  # engine.events.ResultEvent
    error: BaseException | None = None
    finished: bool = False
    started_at: float = field(default_factory=time.monotonic)

    @property
    def fraction(self) -> float:
        if self.result is not None:
            return 1.0
        return self.step / self.total if self.total else 0.0


def _apply(state: RunState, event: Any) -> bool:
    """Fold one engine event into the state; True when a new preview arrived."""
    kind = getattr(event, "kind", None)
    if kind == "stage":
        state.stage, state.stage_message = event.stage, event.message
    elif kind == "notice":
        state.new_notices.append(event.message)
    elif kind == "step":
        state.step, state.total = event.step, event.total
        state.elapsed_s, state.eta_s = event.elapsed_s, event.eta_s
        state.stage = "denoising"
    elif kind == "preview":
        state.preview, state.preview_step = event.frames, event.step
        state.previews_seen += 1
        return True
    elif kind == "result":
        state.result = event
        state.stage = "done"
    return False


def stream_run(events: Callable[[], Iterable[Any]], cancel: Callable[[], None],
               lock: threading.Lock = ENGINE_LOCK, heartbeat_s: float = 0.5) -> Iterator[RunState]:
    """Yield RunState snapshots while `events()` runs on a worker thread.

    Snapshots skip previews that were superseded before the consumer asked again.
    If the consumer stops early (the page cancelled or went away), the run is cancelled.
    """
    q: queue.Queue = queue.Queue()

    def worker():
        with lock:
            try:
                for ev in events():
                    q.put(ev)
                q.put(_DONE)
            except BaseException as err:  # handed to the consumer, who turns it into a message
                q.put(_Failure(err))

    thread = threading.Thread(target=worker, name="humo-generate", daemon=True)
    state = RunState()
    thread.start()
    try:
        while True:
            try:
                batch = [q.get(timeout=heartbeat_s)]
            except queue.Empty:
                yield replace(state, new_notices=[])   # keeps the elapsed clock moving in the page
                continue
            while True:
                try:
                    batch.append(q.get_nowait())
                except queue.Empty:
                    break
            preview_arrived = False
            for item in batch:
                if item is _DONE:
                    state.finished = True
                elif isinstance(item, _Failure):
                    state.error, state.finished = item.error, True
                else:
                    preview_arrived |= _apply(state, item)
            if preview_arrived:
                state.previews_shown += 1
            yield replace(state, new_notices=list(state.new_notices))
            state.new_notices.clear()
            if state.finished:
                return
    finally:
        if thread.is_alive():
            cancel()
