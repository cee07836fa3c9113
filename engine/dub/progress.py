"""A stage's work in a worker thread whose progress comes out as stage events (face tracking)."""
from __future__ import annotations

import threading
import time
from typing import Iterator

from engine.errors import Cancelled
from engine.events import StageEvent


def with_progress(work, stage: str, words: str, every_s: float = 1.0) -> Iterator:
    """Run `work(on_progress)` in a worker thread; its progress (done, total) comes out as stage
    events ("<words>: frame N of M, about T s left"), at most one per `every_s`. Returns (`yield
    from`) what `work` returns and raises what it raises (a cancel checked inside it included).
    When the caller stops listening (the run's generator is closed: a client gone without a cancel),
    the worker stops at its next progress report instead of working on for nobody."""
    import queue

    updates: queue.Queue = queue.Queue()
    outcome: dict = {}
    abandoned = threading.Event()

    def report(done, total):
        if abandoned.is_set():
            raise Cancelled("Nobody is waiting for this run any more.")
        updates.put((done, total))

    def run():
        try:
            outcome["value"] = work(report)
        except BaseException as err:  # handed to the caller's thread below
            outcome["error"] = err
        finally:
            updates.put(None)

    worker = threading.Thread(target=run, name=f"humo-{stage}", daemon=True)
    t0 = last = time.monotonic()
    worker.start()
    try:
        while (update := updates.get()) is not None:
            done, total = update
            now = time.monotonic()
            if now - last >= every_s and 0 < done < total:
                last = now
                left = (now - t0) / done * (total - done)
                yield StageEvent(stage, f"{words}: frame {done} of {total}, about {left:.0f} s left")
    finally:
        abandoned.set()
    worker.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]
