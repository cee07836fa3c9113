"""Downloads that resume across runs: partial files kept in the weights folder, continued with Range.

Why: huggingface_hub (2.x) writes each file to a per-process `<name>.<id>.incomplete` file and
deletes it when the transfer fails, so once its in-run retries are spent, a lost connection,
Ctrl-C, Cancel or a reboot throws away everything fetched so far. The HuMo-17B shards are about
10 GB each; starting them again from zero is not acceptable.

How (the default, `HUMO_DOWNLOAD=resume`):
- Every file of a variant takes this path, small ones too: one code path, one layout, and the
  cost for a small file is one JSON write. The bytes still come through huggingface_hub
  (`hf_hub_url`, `build_hf_headers`, `file_download.http_get`), so tokens, `HF_ENDPOINT` and its
  in-run retries (which already continue a dropped stream with a Range request) work as usual.
- Bytes go to `<weights>/.partial/<local path>.part`, next to a sidecar `<...>.part.json` that
  records the repository, the path, the Hub's ETag, the size, the sha256 and the commit.
- A later run whose sidecar names the same file with the same ETag and size continues from the
  partial's size (`Range: bytes=N-`) and says so ("resuming X at 3.2 GB of 9.9 GB"). Anything
  else (the file changed on the Hub, no sidecar, a partial longer than the file) starts that file
  again from zero, and says why.
- When the bytes are all there the caller verifies them (size, format, the Hub's sha256); only
  then is the file moved into place with an atomic rename, so `find` never sees a partial or an
  unchecked file. A resumed file that fails the check (the partial was damaged) is fetched once
  more from zero.
- Cancel, Ctrl-C, a lost connection or a killed process keep the partial file; a lock file next
  to it stops two downloads from writing the same partial at once.
- Power loss or a reboot can leave the end of a file that was still in the page cache as zeros
  or garbage, which only the final sha256 would catch (and then the whole file would be fetched
  again). So the partial is flushed to disk (fsync) every `CHECKPOINT_BYTES` and when a transfer
  stops, and the sidecar records that durable size and the boot it was written in. In the same
  boot every byte on disk is trusted; after a restart only the durable size is, so a reboot costs
  at most one checkpoint interval.
- Xet: repositories on the Hub are Xet-backed, and their resolve URL still serves the bytes
  (after a redirect) with Range support, so they resume too. This path does not use hf_xet's
  parallel transfer; `HUMO_DOWNLOAD=hub` goes back to plain `hf_hub_download` (Xet transfers,
  a per-process temporary file, no resume across runs).
"""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from engine.errors import WeightsError
from engine.media.files import atomic_write

PARTIAL_DIR = ".partial"
PART_SUFFIX = ".part"
SIDECAR_SUFFIX = ".part.json"
DOWNLOAD_MODE_ENV = "HUMO_DOWNLOAD"
MODES = ("resume", "hub")
# Flush the partial file to disk this often: what a power loss or reboot can cost at most.
CHECKPOINT_BYTES = 256 * 1024 * 1024
# huggingface_hub reads the response in chunks of `constants.DOWNLOAD_CHUNK_SIZE` (10 MB) and
# reports progress once per chunk: a file under 10 MB would sit at 0 % until done, and Stop would
# wait for the next 10 MB. Half a MiB keeps both responsive at a negligible cost per chunk.
READ_CHUNK_BYTES = 512 * 1024


def boot_id() -> str | None:
    """This boot of the machine (Linux), so a partial written before a restart can be told apart."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip() or None
    except OSError:
        return None


def download_mode() -> str:
    """"resume" (default: partial files survive the process) or "hub" (plain hf_hub_download)."""
    mode = os.environ.get(DOWNLOAD_MODE_ENV, "").strip().lower() or "resume"
    if mode not in MODES:
        raise WeightsError(f"{DOWNLOAD_MODE_ENV} is {mode!r}; it must be 'resume' (the default) or 'hub'.",
                           hint=f"Unset {DOWNLOAD_MODE_ENV} or set it to one of those.")
    return mode


def partial_path(weights_dir: Path, rel: str) -> Path:
    """Where the bytes of `rel` (a path relative to the weights folder) wait until they are complete."""
    return Path(weights_dir) / PARTIAL_DIR / (rel + PART_SUFFIX)


def sidecar_path(weights_dir: Path, rel: str) -> Path:
    return Path(weights_dir) / PARTIAL_DIR / (rel + SIDECAR_SUFFIX)


@dataclass
class Partial:
    """A partial file on disk and what its sidecar says it is part of."""

    rel: str
    size: int                      # bytes on disk
    record: dict                   # the sidecar ({} when missing or unreadable)

    @property
    def total(self) -> int | None:
        total = self.record.get("size")
        return total if isinstance(total, int) else None

    @property
    def trusted(self) -> int:
        """Bytes that can be continued from: all of them in the boot that wrote them, else the durable part."""
        this_boot = boot_id()
        if this_boot is not None and self.record.get("boot_id") == this_boot:
            return self.size
        durable = self.record.get("durable")
        return min(self.size, durable) if isinstance(durable, int) and durable >= 0 else 0


def read_partial(weights_dir: Path, rel: str) -> Partial | None:
    """The partial download of `rel`, if there is one (never uses the network)."""
    part = partial_path(weights_dir, rel)
    try:
        size = part.stat().st_size
    except OSError:
        return None
    try:
        record = json.loads(sidecar_path(weights_dir, rel).read_text())
    except (OSError, ValueError):
        record = {}
    return Partial(rel, size, record if isinstance(record, dict) else {})


def _identity(repo_id: str, repo_path: str, etag: str | None, size: int | None) -> dict:
    return {"repo_id": repo_id, "repo_path": repo_path, "etag": etag, "size": size}


def mismatch(partial: Partial, repo_id: str, repo_path: str, etag: str | None, size: int | None) -> str | None:
    """Why `partial` cannot be continued for this file as the Hub has it now, or None when it can."""
    if size is None or not etag:
        return "the Hub gave no size or ETag to check it against"
    rec = partial.record
    if not rec:
        return "there is no record of what it was"
    if (rec.get("repo_id"), rec.get("repo_path")) != (repo_id, repo_path):
        return "it belongs to another file"
    if rec.get("etag") != etag or rec.get("size") != size:
        return "the file changed on the Hub since"
    if partial.size > size:
        return "it is longer than the file"
    return None


def reusable_bytes(weights_dir: Path, rel: str, repo_id: str, repo_path: str, etag: str | None,
                   size: int | None) -> int:
    """Bytes of `rel` already on disk that the next transfer will continue from (0 if none)."""
    partial = read_partial(weights_dir, rel)
    if partial is None or mismatch(partial, repo_id, repo_path, etag, size):
        return 0
    return partial.trusted


def discard(weights_dir: Path, rel: str) -> None:
    """Delete the partial of `rel`, its sidecar and lock, and the folders left empty."""
    for p in (partial_path(weights_dir, rel), sidecar_path(weights_dir, rel), _lock_path(weights_dir, rel)):
        try:
            p.unlink()
        except FileNotFoundError:
            pass
    _prune(Path(weights_dir), partial_path(weights_dir, rel).parent)


def finish(weights_dir: Path, rel: str) -> Path:
    """Move the complete (and verified) partial of `rel` into place; return the final path."""
    wd = Path(weights_dir)
    part, final = partial_path(wd, rel), wd / rel
    final.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.replace(part, final)
    except OSError:
        shutil.move(str(part), str(final))  # the weights folder spans file systems (a linked subfolder)
    discard(wd, rel)
    return final


def _lock_path(weights_dir: Path, rel: str) -> Path:
    return Path(weights_dir) / PARTIAL_DIR / (rel + ".part.lock")


def _prune(weights_dir: Path, folder: Path) -> None:
    top = weights_dir / PARTIAL_DIR
    while folder == top or top in folder.parents:
        try:
            folder.rmdir()
        except OSError:
            return
        folder = folder.parent


@dataclass
class Transfer:
    """What `fetch` needs to know about one file."""

    repo_id: str
    repo_path: str
    rel: str
    url: str                       # the resolve URL, pinned to a commit when known
    etag: str | None
    size: int | None
    sha256: str | None
    commit: str | None


def fetch(t: Transfer, weights_dir: Path, headers: dict, tqdm_class, say: Callable[[str], None]) -> int:
    """Bring the partial of `t.rel` to its full size; return the offset it resumed from (0 = from zero).

    Raises what `http_get` raises (the partial file stays for the next run), and Cancelled or
    KeyboardInterrupt from the progress bar or the user (the partial stays too).
    """
    from filelock import FileLock, Timeout
    from huggingface_hub.file_download import http_get

    from engine.weights.status import format_bytes

    wd = Path(weights_dir)
    part = partial_path(wd, t.rel)
    part.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(_lock_path(wd, t.rel)), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise WeightsError(f"Another download of {t.rel} is running into {wd}.",
                           hint="Wait for it to finish, or stop it first.") from None
    try:
        offset, record = _start(t, wd, say, format_bytes)
        with open(part, "r+b" if offset else "wb") as raw:
            raw.seek(offset)
            raw.truncate()
            f = _CheckpointedFile(raw, lambda durable: _write_sidecar(wd, t.rel, {**record, "durable": durable}))
            from huggingface_hub import constants

            constants.DOWNLOAD_CHUNK_SIZE = min(constants.DOWNLOAD_CHUNK_SIZE, READ_CHUNK_BYTES)
            try:
                http_get(t.url, f, resume_size=offset, headers=headers, expected_size=t.size,
                         displayed_filename=t.rel, tqdm_class=tqdm_class)
            finally:
                f.checkpoint()
        return offset
    finally:
        lock.release()


def _start(t: Transfer, wd: Path, say: Callable[[str], None], format_bytes) -> tuple[int, dict]:
    """Continue a matching partial, or start over (saying why); the sidecar for this run, written."""
    partial = read_partial(wd, t.rel)
    offset = 0
    if partial is not None:
        why = mismatch(partial, t.repo_id, t.repo_path, t.etag, t.size)
        if why is None:
            offset = partial.trusted
            if offset < partial.size:
                say(f"Resuming {t.rel} at {format_bytes(offset)} of {format_bytes(t.size)}: the last "
                    f"{format_bytes(partial.size - offset)} were written before the machine restarted "
                    "and are fetched again.")
            elif offset:
                say(f"Resuming {t.rel} at {format_bytes(offset)} of {format_bytes(t.size)}.")
        elif partial.size:
            say(f"Starting {t.rel} again from zero: a partial download of {format_bytes(partial.size)} "
                f"was there, but {why}.")
    if not offset:
        # Old bytes go before the new sidecar is written: a sidecar must never vouch for another file's bytes.
        partial_path(wd, t.rel).unlink(missing_ok=True)
    record = {"version": 1, **_identity(t.repo_id, t.repo_path, t.etag, t.size), "sha256": t.sha256,
              "commit": t.commit, "url": t.url, "boot_id": boot_id()}
    _write_sidecar(wd, t.rel, {**record, "durable": offset})
    return offset, record


def _write_sidecar(wd: Path, rel: str, record: dict) -> None:
    with atomic_write(sidecar_path(wd, rel), what="the download record") as tmp:
        tmp.write_text(json.dumps(record, indent=1, sort_keys=True))


class _CheckpointedFile:
    """The partial file as `http_get` writes it, flushed to disk every CHECKPOINT_BYTES.

    After each flush `on_durable(size)` records how much of the file is surely on disk; a
    truncation (the server ignored the Range request) records the shorter size at once.
    """

    def __init__(self, f, on_durable: Callable[[int], None]):
        self._f = f
        self._on_durable = on_durable
        self._pending = 0

    def write(self, data) -> int:
        n = self._f.write(data)
        self._pending += n
        if self._pending >= CHECKPOINT_BYTES:
            self.checkpoint()
        return n

    def checkpoint(self) -> None:
        self._f.flush()
        os.fsync(self._f.fileno())
        self._pending = 0
        self._on_durable(self._f.tell())

    def truncate(self, size: int | None = None) -> int:
        out = self._f.truncate(size)
        self.checkpoint()
        return out

    def seek(self, *args) -> int:
        return self._f.seek(*args)

    def tell(self) -> int:
        return self._f.tell()

    def flush(self) -> None:
        self._f.flush()
