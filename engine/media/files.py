"""Files in and out: checking a given input path, and the one way every output is written.

`atomic_write` is the rule for outputs: the bytes go to a temporary file beside the
destination, are flushed to disk, and only then renamed onto the destination in one step,
so a crash or a full disk never leaves a half-written file where a finished one belongs.
`is_disk_full` and `disk_full_error` are the one place that recognises a full disk and says
so in one line.
"""
from __future__ import annotations

import errno
import hashlib
import os
import sqlite3
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from engine.errors import InputError, OutOfResources

_DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC), errno.EFBIG})
_DISK_FULL_TEXTS = ("no space left on device", "enospc", "disk is full", "disk quota exceeded")


def _check_file(path: str | os.PathLike | None, kind: str) -> Path:
    if path is None or str(path).strip() == "":
        raise InputError(f"No {kind.lower()} file was given.", hint=f"Choose or upload a {kind.lower()} file.")
    p = Path(path)
    if not p.exists():
        raise InputError(f"{kind} file not found: {p.name}.", hint="Check the path or upload the file again.")
    if p.is_dir():
        raise InputError(f"{p.name} is a folder, not {kind.lower()} file.", hint=f"Choose a {kind.lower()} file.")
    return p


def file_sha256(path: str | os.PathLike, on_bytes: Callable[[int], None] | None = None) -> str:
    """The file's sha256 (hex), read in 1 MiB pieces; `on_bytes(done)` after each."""
    h = hashlib.sha256()
    done = 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
            done += len(chunk)
            if on_bytes:
                on_bytes(done)
    return h.hexdigest()


def is_disk_full(err: BaseException | str) -> bool:
    """True when an error (an OSError, an sqlite error) or a tool's message says the disk is full."""
    if isinstance(err, OSError) and err.errno is not None:
        return err.errno in _DISK_FULL_ERRNOS
    if isinstance(err, sqlite3.Error) and getattr(err, "sqlite_errorname", "") == "SQLITE_FULL":
        return True
    if isinstance(err, (str, sqlite3.Error)):
        text = str(err).lower()
        return any(t in text for t in _DISK_FULL_TEXTS)
    return False


def disk_full_error(path: str | os.PathLike, what: str = "the file", *, hint: str | None = None) -> OutOfResources:
    """The one-line error for a full disk while writing `what` at `path` (a file or a folder)."""
    p = Path(os.path.abspath(path))
    folder = p if p.is_dir() else p.parent
    from engine.redact import shown_path
    return OutOfResources(f"Disk full while writing {what} in {shown_path(folder)}: free some space and try again.",
                          hint=hint)


def temp_path_beside(path: str | os.PathLike, suffix: str | None = None) -> Path:
    """A fresh hidden name in the destination's folder (so the final rename stays on one disk)."""
    path = Path(path)
    return path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.part{path.suffix if suffix is None else suffix}")


def remove_quietly(p: str | os.PathLike | None) -> None:
    if p is None:
        return
    try:
        Path(p).unlink()
    except OSError:
        pass


def fsync_dir(path: str | os.PathLike) -> None:
    """Flush a folder's entries (a rename inside it) to disk; a no-op where folders cannot be opened."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextmanager
def atomic_write(path: str | os.PathLike, *, what: str = "the file", suffix: str | None = None,
                 hint: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside `path` to write; when the block ends without an error the file is
    flushed to disk and renamed onto `path` in one step.

    On any error the temporary file is removed and `path` is left as it was; a full disk becomes
    `OutOfResources` naming `what` (with `hint` after it). `suffix` is the temporary file's ending
    (default: the destination's), for writers that pick a format by the file name.
    """
    path = Path(path)
    tmp = temp_path_beside(path, suffix)
    try:
        yield tmp
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except OSError as err:
        if is_disk_full(err):
            raise disk_full_error(path, what, hint=hint) from err
        raise
    finally:
        remove_quietly(tmp)
