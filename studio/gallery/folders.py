"""Run folders on disk: crash-safe file writes, leftovers of interrupted runs, disk errors.

A run folder is staged under a hidden name (`STAGING_PREFIX`), every file in it is
written to a temporary name, fsynced and renamed; a deleted folder is first renamed
to a `TRASH_PREFIX` name. `clean_leftovers` finishes or undoes what a crash left in
between, and `scan_orphan_folders` reads back the run folders the index does not know.
"""
from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
import time
import uuid
from pathlib import Path

from engine.errors import EngineError, OutOfResources
from engine.media import fsync_dir, is_disk_full
from engine.redact import shown_path

from .records import RECORD_FORMAT, RECORD_NAME, Entry, entry_from_record, is_safe_id

STAGING_PREFIX = ".staging-"
TRASH_PREFIX = ".trash-"
_STALE_STAGING_S = 3600.0          # a staging folder this old belongs to a crashed add
DISK_FULL_HINT = "Free some disk space or delete old gallery entries, then try again."


# ---------------------------------------------------------------------- crash-safe writes

def atomic_copy(src: Path, dst: Path) -> None:
    tmp = dst.with_name(f".{dst.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(src, "rb") as fin, open(tmp, "wb") as fout:
            shutil.copyfileobj(fin, fout, 1024 * 1024)
            fout.flush()
            os.fsync(fout.fileno())
        os.replace(tmp, dst)
    except BaseException:
        _unlink_quietly(tmp)
        raise


def atomic_write_text(dst: Path, text: str) -> None:
    tmp = dst.with_name(f".{dst.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as fout:
            fout.write(text)
            fout.flush()
            os.fsync(fout.fileno())
        os.replace(tmp, dst)
        fsync_dir(dst.parent)
    except BaseException:
        _unlink_quietly(tmp)
        raise


def _unlink_quietly(path: Path) -> None:
    try:
        path.unlink()
    except OSError:
        pass


def is_writable(folder: Path) -> bool:
    """True when a file can be made in `folder` (tried for real: permissions, read-only mounts and
    immutable folders all count, for root too)."""
    try:
        fd, name = tempfile.mkstemp(prefix=".write-check-", dir=folder)
    except OSError:
        return False
    os.close(fd)
    _unlink_quietly(Path(name))
    return True


def not_writable(folder: Path, what: str) -> EngineError:
    """The message for a change refused because the outputs folder cannot be written."""
    return EngineError(f"{what}: the outputs folder {shown_path(folder)} is not writable.",
                       hint="Make it writable (or start the studio with --outputs-dir set to a writable folder), "
                            "then restart the studio.")


def check_free_space(root: Path, *paths: Path | None) -> None:
    """OutOfResources unless `root` has room for copies of `paths` (plus a margin)."""
    need = sum(p.stat().st_size for p in paths if p is not None) + 1024 * 1024
    try:
        free = shutil.disk_usage(root).free
    except OSError:
        return
    if free < need:
        raise OutOfResources(
            f"Not enough disk space to keep the video in the gallery ({_mb(free)} free in {shown_path(root)}, "
            f"{_mb(need)} needed).", hint=DISK_FULL_HINT)


# ---------------------------------------------------------------------- leftovers and orphans

def clean_leftovers(root: Path, known: set[str]) -> None:
    """Finish what a crash interrupted: stale staging folders and half-done deletes."""
    now = time.time()
    for path in root.iterdir():
        name = path.name
        if not path.is_dir():
            continue
        if name.startswith(STAGING_PREFIX):
            try:
                stale = now - path.stat().st_mtime > _STALE_STAGING_S
            except OSError:
                continue
            if stale:
                shutil.rmtree(path, ignore_errors=True)
        elif name.startswith(TRASH_PREFIX):
            entry_id = name[len(TRASH_PREFIX):]
            if entry_id in known and not (root / entry_id).exists():
                os.replace(path, root / entry_id)     # the delete never committed
            else:
                shutil.rmtree(path, ignore_errors=True)


def scan_orphan_folders(root: Path, known: set[str]) -> tuple[list[Entry], list[str]]:
    """Entries for run folders the index does not know, and the folders whose record is unreadable."""
    found: list[Entry] = []
    unreadable: list[str] = []
    for folder in sorted(root.iterdir()):
        if folder.name in known or not is_safe_id(folder.name) or not folder.is_dir():
            continue
        record_path = folder / RECORD_NAME
        if not record_path.is_file():
            continue
        try:
            record = json.loads(record_path.read_text(encoding="utf-8"))
            if record.get("format") != RECORD_FORMAT or record.get("id") != folder.name:
                raise ValueError("not a run record")
            found.append(entry_from_record(record, folder))
        except (OSError, ValueError, TypeError, KeyError, AttributeError):
            unreadable.append(folder.name)
    return found, unreadable


# ---------------------------------------------------------------------- errors

def os_error(err: OSError, what: str) -> EngineError:
    if is_disk_full(err):
        return OutOfResources(f"{what}: the disk is full.", hint=DISK_FULL_HINT)
    if err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        folder = Path(err.filename).parent if err.filename else None
        return EngineError(f"{what}: {err.strerror} ({shown_path(folder) if folder else 'the outputs folder'} "
                           "is not writable).", hint="Make the outputs folder writable, then try again.")
    return EngineError(f"{what}: {err.strerror or err}.", hint="Check that the outputs folder is writable.")


def _mb(n: int) -> str:
    return f"{n / (1024 * 1024):.1f} MB"
