"""A media file's facts from its container headers (PyAV): streams, sizes, rates, durations
and tags, read as metadata without decoding anything and without parsing a tool's output."""
from __future__ import annotations

import os
from contextlib import contextmanager
from fractions import Fraction
from pathlib import Path
from typing import Iterator

import av


@contextmanager
def open_container(path: str | os.PathLike) -> Iterator["av.container.InputContainer | None"]:
    """The opened container, or None when the file is not a media file PyAV can read."""
    try:
        container = av.open(str(Path(path)), mode="r")
    except (av.FFmpegError, UnicodeDecodeError, ValueError):
        yield None
        return
    try:
        yield container
    finally:
        container.close()


def seconds(value: int | None, time_base: Fraction | None) -> float | None:
    """A stream timestamp or duration in seconds (None when unknown)."""
    if value is None or time_base is None:
        return None
    return float(value * time_base)


def container_seconds(container) -> float | None:
    """The container's own duration (the longest stream), in seconds."""
    return None if container.duration is None else container.duration / av.time_base


def packet_count(container, stream) -> int:
    """Frames of a stream whose header does not say (e.g. WebM): count its packets, decoding nothing."""
    return sum(1 for packet in container.demux(stream) if packet.size)
