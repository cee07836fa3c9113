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


class Run:
    """One click of Generate: its runs (a batch), who started it, and whether it was told to stop.

    Cancelling the engine stops the run that is going; the stop flag stops the runs after it,
    including when Cancel comes while one run is being saved and the next has not started.
    """

    def __init__(self, owner: str | None) -> None:
        self.owner = owner             # the page (session) that clicked Generate
        self._stop = threading.Event()
        self._ended = threading.Event()

    def stop(self) -> None:
        self._stop.set()

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    def end(self) -> None:
        self._ended.set()

    def wait_ended(self, timeout_s: float) -> bool:
        """Wait until the run's stream has sent its last status; False on timeout."""
        return self._ended.wait(timeout_s)


class RunSlot:
    """The Run going now (at most one: the Generate event has a concurrency limit of one)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._current: Run | None = None

    def begin(self, owner: str | None) -> Run:
        run = Run(owner)
        with self._lock:
            self._current = run
        return run

    def end(self, run: Run) -> None:
        run.end()
        # A cancelled run's handler may wind down after the next run began: it must not end that one.
        with self._lock:
            if self._current is run:
                self._current = None

    @property
    def current(self) -> Run | None:
        return self._current

    def stop_for(self, session: str | None) -> tuple[str, Run | None]:
        """Stop the going run if `session` started it: ("stopped", run), ("other", None) when another
        page started it (a request without a session owns nothing), or ("none", None)."""
        with self._lock:
            run = self._current
            if run is None:
                return "none", None
            if session is None or run.owner is None or run.owner != session:
                return "other", None
            run.stop()
            return "stopped", run


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
    window: int = 0                     # a long video: the context window being denoised in step `step` + 1
    windows: int = 0                    # and how many that step has (0: not in a window)
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
        if not self.total:
            return 0.0
        inside = (self.window - 1) / self.windows if self.window and self.windows else 0.0
        return (self.step + inside) / self.total


def _apply(state: RunState, event: Any) -> bool:
    """Fold one engine event into the state; True when a new preview arrived."""
    kind = getattr(event, "kind", None)
    if kind == "stage":
        state.stage, state.stage_message = event.stage, event.message
    elif kind == "notice":
        state.new_notices.append(event.message)
    elif kind == "step":
        state.step, state.total = event.step, event.total
        state.window, state.windows = getattr(event, "window", 0), getattr(event, "windows", 0)
        # Before the first window of the first step ends there is nothing to extrapolate from.
        started = event.step > 0 or state.window > 1
        state.elapsed_s, state.eta_s = event.elapsed_s, event.eta_s if started else None
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
