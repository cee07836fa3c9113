"""Waiting on a condition with a deadline (never a fixed sleep used as synchronisation)."""
from __future__ import annotations

import threading
import time
from typing import Callable, TypeVar

T = TypeVar("T")


def wait_until(condition: Callable[[], T], timeout_s: float, what: str = "the condition",
               interval_s: float = 0.05) -> T:
    """Poll `condition()` until it returns something true and return that; fail after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    pause = threading.Event()
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")
        pause.wait(interval_s)
