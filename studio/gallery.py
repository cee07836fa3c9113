"""The gallery: every finished run, kept on disk with the settings that made it.

Layout of the outputs folder::

    outputs/
      gallery.sqlite3                 the index (WAL mode); rebuildable at any time
      20250101-120000-123-1a2b3c/      one folder per run, named by the entry id
        20250101-120000-123-1a2b3c.mp4
        thumbnail.png                 (when one was given)
        settings.json                 the record: settings, timings, title, created time

The folder of a run is the source of truth; the SQLite file is an index over the
folders. A run folder is staged under a hidden name, every file in it is written
to a temporary name, fsynced and renamed, and only then is the folder renamed into
place inside the same transaction that inserts the row. So after a crash or a full
disk either the whole run is there or none of it is, and a lost or corrupt index is
rebuilt from the `settings.json` files.

Settings are a plain dict: the `GenerationRequest.to_dict()` of the run, optionally
with a ``"resolved"`` dict of the values the engine actually used (steps, size,
frames, seed, fps, duration_s ...). Resolved values win when both are present.
"""
from __future__ import annotations

import errno
import json
import os
import shutil
import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, TypeVar

from engine.errors import EngineError, InputError, OutOfResources
from engine.request import GenerationRequest

DB_NAME = "gallery.sqlite3"
RECORD_NAME = "settings.json"
RECORD_FORMAT = "humo-studio-run"
RECORD_VERSION = 1
SCHEMA_VERSION = 1
DEFAULT_FPS = 25.0                 # HuMo renders at 25 frames per second

_STAGING_PREFIX = ".staging-"
_TRASH_PREFIX = ".trash-"
_STALE_STAGING_S = 3600.0          # a staging folder this old belongs to a crashed add
_TITLE_WORDS = 8
_TITLE_CHARS = 60
_DISK_FULL_ERRNOS = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC), errno.EFBIG}
_CORRUPT_ERRORS = {"SQLITE_CORRUPT", "SQLITE_NOTADB"}

_SCHEMA = """
CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS entries (
    id         TEXT PRIMARY KEY,
    created_at TEXT NOT NULL,
    title      TEXT NOT NULL,
    variant    TEXT,
    seed       INTEGER,
    duration   REAL,
    video      TEXT NOT NULL,
    thumbnail  TEXT,
    settings   TEXT NOT NULL,
    timings    TEXT NOT NULL,
    inputs     TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS entries_created ON entries (created_at DESC, id DESC);
"""

# Migrations from version N to N+1, applied in order inside one transaction.
_MIGRATIONS: dict[int, Callable[[sqlite3.Connection], None]] = {}

T = TypeVar("T")


@dataclass
class Entry:
    id: str
    created_at: str                    # ISO 8601, UTC
    video: Path                        # absolute path of the video file
    thumbnail: Path | None
    settings: dict[str, Any]
    timings: dict[str, Any]
    title: str
    variant: str | None
    seed: int | None
    duration: float | None             # length of the video in seconds, when known
    inputs: dict[str, Any] = field(default_factory=dict)  # kept copies: audio, audio_source (Path|None), images

    @property
    def folder(self) -> Path:
        return self.video.parent

    @property
    def available(self) -> bool:
        return self.video.is_file()

    @property
    def prompt(self) -> str:
        return str(self.settings.get("prompt") or "")


@dataclass
class CheckReport:
    """What `Gallery.check()` found. `ok` is true when nothing needs attention."""
    missing_videos: list[str] = field(default_factory=list)      # entry ids whose video is gone
    missing_thumbnails: list[str] = field(default_factory=list)  # entry ids whose thumbnail is gone
    unreadable_records: list[str] = field(default_factory=list)  # run folders with a broken settings.json
    recovered: list[str] = field(default_factory=list)           # ids re-indexed from their folders
    corrupt_backup: str | None = None                            # where a corrupt index was moved

    @property
    def ok(self) -> bool:
        return not (self.missing_videos or self.missing_thumbnails or self.unreadable_records)


class Gallery:
    """The store behind the studio's gallery. Safe to share between threads."""

    def __init__(self, outputs_dir: str | os.PathLike, *, timeout: float = 30.0):
        self.timeout = float(timeout)       # seconds to wait for another writer (another process)
        self.root = Path(outputs_dir).resolve()
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise _os_error(err, f"Cannot create the outputs folder {self.root}") from None
        self.db_path = self.root / DB_NAME
        self._lock = threading.RLock()
        self._conn: sqlite3.Connection | None = None
        self.recovered: list[str] = []
        self.unreadable_records: list[str] = []
        self.corrupt_backup: Path | None = None
        with self._lock:
            self._open()

    # ------------------------------------------------------------------ public API

    def add(self, video_path: str | os.PathLike, settings: dict[str, Any], timings: dict[str, Any] | None = None,
            thumbnail_path: str | os.PathLike | None = None, title: str | None = None, *,
            move: bool = False, keep_inputs: bool = True) -> Entry:
        """Keep a finished run. Copies (or, with `move=True`, moves) the files into the gallery.

        With `keep_inputs` the reference images and the voice clip named in `settings` are
        copied too (into `inputs/`), so "reuse these settings" still works after the upload
        cache is cleaned.

        Raises InputError when the video is missing, OutOfResources when the disk is full;
        in both cases nothing is left behind and the gallery is unchanged.
        """
        src = Path(video_path)
        if not src.is_file():
            raise InputError(f"Cannot add to the gallery: the video file {src} does not exist.")
        thumb_src = Path(thumbnail_path) if thumbnail_path else None
        if thumb_src is not None and not thumb_src.is_file():
            thumb_src = None           # a missing thumbnail must not cost the user the video
        settings = _jsonable(dict(settings or {}))
        timings = _jsonable(dict(timings or {}))
        kept_inputs, input_copies = _plan_inputs(settings) if keep_inputs else (_no_inputs(), [])
        self._check_free_space(src, thumb_src, *(path for path, _ in input_copies))

        entry_id = _new_id()
        created_at = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
        video_name = entry_id + (src.suffix.lower() or ".mp4")
        thumb_name = ("thumbnail" + (thumb_src.suffix.lower() or ".png")) if thumb_src else None
        record = {
            "format": RECORD_FORMAT,
            "version": RECORD_VERSION,
            "id": entry_id,
            "created_at": created_at,
            "title": (title or "").strip() or make_title(settings.get("prompt")),
            "video": video_name,
            "thumbnail": thumb_name,
            "settings": settings,
            "timings": timings,
            "inputs": kept_inputs,
        }

        staging = self.root / (_STAGING_PREFIX + entry_id)
        final = self.root / entry_id
        try:
            staging.mkdir()
            _atomic_copy(src, staging / video_name)
            if thumb_src is not None:
                _atomic_copy(thumb_src, staging / thumb_name)
            for path, name in input_copies:
                (staging / name).parent.mkdir(exist_ok=True)
                _atomic_copy(path, staging / name)
            _atomic_write_text(staging / RECORD_NAME, json.dumps(record, indent=2, ensure_ascii=False))
        except BaseException as err:
            shutil.rmtree(staging, ignore_errors=True)
            if isinstance(err, FileNotFoundError):
                raise InputError(f"Cannot add to the gallery: the file {err.filename} disappeared while "
                                 "it was being copied. Generate the video again.") from None
            if isinstance(err, OSError):
                raise _os_error(err, "Could not save the video to the gallery") from None
            raise

        entry = self._entry_from_record(record, final)
        try:
            self._with_db(lambda conn: self._insert_and_place(conn, entry, staging, final))
        except BaseException as err:
            shutil.rmtree(staging, ignore_errors=True)
            shutil.rmtree(final, ignore_errors=True)
            if isinstance(err, sqlite3.Error):
                raise _db_error(err, "Could not add the video to the gallery index") from None
            if isinstance(err, OSError):
                raise _os_error(err, "Could not save the video to the gallery") from None
            raise
        if move:
            for path in (src, thumb_src):
                if path is not None:
                    try:
                        path.unlink()
                    except OSError:
                        pass           # the copy is safe in the gallery; a leftover source is harmless
        return entry

    def add_result(self, result: Any, thumbnail_path: str | os.PathLike | None = None,
                   title: str | None = None, *, move: bool = False) -> Entry:
        """Keep the run described by an `engine.events.ResultEvent`.

        The video length comes from its frames and fps (`duration_s` is not used: it is not
        documented whether that is the video length or the time the run took).
        """
        settings = dict(getattr(result, "settings", None) or {})
        resolved = dict(settings.get("resolved") or {})
        for key in ("frames", "width", "height", "fps", "seed"):
            value = getattr(result, key, None)
            if value is not None:
                resolved[key] = value
        settings["resolved"] = resolved
        return self.add(result.video_path, settings, dict(getattr(result, "timings", None) or {}),
                        thumbnail_path=thumbnail_path, title=title, move=move)

    def list(self, limit: int = 100, offset: int = 0) -> list[Entry]:
        """Entries newest first, skipping those whose video file is gone (see `check()`)."""
        limit, offset = max(int(limit), 0), max(int(offset), 0)
        ids = self._available_ids()[offset:offset + limit]
        if not ids:
            return []
        marks = ",".join("?" * len(ids))
        rows = self._with_db(lambda conn: conn.execute(
            f"SELECT * FROM entries WHERE id IN ({marks})", ids).fetchall())
        by_id = {row["id"]: self._entry_from_row(row) for row in rows}
        return [by_id[i] for i in ids if i in by_id]

    def count(self) -> int:
        """How many entries `list()` can show (those whose video exists)."""
        return len(self._available_ids())

    def gradio_items(self, limit: int = 100, offset: int = 0) -> list[tuple[str, str]]:
        """(image or video path, caption) pairs, the value a `gr.Gallery` takes."""
        return [(str(e.thumbnail if e.thumbnail is not None and e.thumbnail.is_file() else e.video), e.title)
                for e in self.list(limit, offset)]

    def get(self, entry_id: str) -> Entry | None:
        """The entry with this id (even if its video is gone: its settings are still useful)."""
        rows = self._with_db(lambda conn: conn.execute("SELECT * FROM entries WHERE id = ?",
                                                       (str(entry_id),)).fetchall())
        return self._entry_from_row(rows[0]) if rows else None

    def delete(self, entry_id: str) -> bool:
        """Remove the entry and its files. False when there was no such entry."""
        entry_id = str(entry_id)
        if not _is_safe_id(entry_id):
            return False
        folder = self.root / entry_id
        trash = self.root / (_TRASH_PREFIX + entry_id)

        def remove(conn: sqlite3.Connection) -> bool:
            conn.execute("BEGIN IMMEDIATE")
            try:
                found = conn.execute("DELETE FROM entries WHERE id = ?", (entry_id,)).rowcount > 0
                moved = False
                if folder.is_dir():
                    os.replace(folder, trash)
                    moved = True
                try:
                    conn.execute("COMMIT")
                except BaseException:
                    if moved:
                        os.replace(trash, folder)
                    raise
            except BaseException:
                _rollback(conn)
                raise
            return found or moved

        try:
            found = self._with_db(remove)
        except sqlite3.Error as err:
            raise _db_error(err, "Could not delete the gallery entry") from None
        shutil.rmtree(trash, ignore_errors=True)
        return found

    def reuse_settings(self, entry_id: str) -> dict[str, Any]:
        """The settings to fill the form with, to make the same video again.

        A `GenerationRequest`-shaped dict: what the user asked for, with the values the
        engine actually used filled in (so a random seed becomes the seed that ran).
        `out_path` is dropped so a new run never overwrites the kept video.
        Raises KeyError for an unknown id.
        """
        entry = self.get(entry_id)
        if entry is None:
            raise KeyError(f"No gallery entry {entry_id!r}.")
        form = settings_for_form(entry.settings)
        audio = entry.inputs.get("audio")
        if audio is not None and audio.is_file():
            form["audio"] = str(audio)
        images = list(form.get("images") or [])
        for i, kept in enumerate(entry.inputs.get("images") or []):
            if kept is not None and kept.is_file() and i < len(images):
                images[i] = str(kept)
        if "images" in form:
            form["images"] = images
        source = entry.inputs.get("audio_source")
        studio = (form.get("metadata") or {}).get("studio")
        if source is not None and source.is_file() and isinstance(studio, dict):
            studio["audio_source"] = str(source)
        return form

    def path_for(self, entry: Entry | str) -> Path:
        """The folder that holds the files of this entry (or entry id)."""
        entry_id = entry.id if isinstance(entry, Entry) else str(entry)
        if not _is_safe_id(entry_id):
            raise KeyError(f"Not a gallery entry id: {entry_id!r}.")
        return self.root / entry_id

    def check(self, repair: bool = False) -> CheckReport:
        """Report entries whose files are gone. With `repair=True`, drop entries without a video."""
        report = CheckReport(recovered=list(self.recovered),
                             unreadable_records=list(self.unreadable_records),
                             corrupt_backup=str(self.corrupt_backup) if self.corrupt_backup else None)
        for entry in self._iter_entries():
            if not entry.available:
                report.missing_videos.append(entry.id)
            elif entry.thumbnail is not None and not entry.thumbnail.is_file():
                report.missing_thumbnails.append(entry.id)
        if repair:
            for entry_id in report.missing_videos:
                self.delete(entry_id)
        return report

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                try:
                    self._conn.close()
                finally:
                    self._conn = None

    def __enter__(self) -> "Gallery":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __len__(self) -> int:
        return self.count()

    # ------------------------------------------------------------------ opening and recovery

    def _open(self) -> None:
        """Open the index, moving a corrupt one aside, then index run folders it does not know."""
        try:
            try:
                self._conn = self._connect_checked()
            except _Corrupt:
                self._move_corrupt_aside()
                self._conn = self._connect_checked()
            self._reconcile()
        except sqlite3.Error as err:
            self.close()
            raise _db_error(err, f"Cannot open the gallery index {self.db_path}") from None

    def _connect_checked(self) -> sqlite3.Connection:
        conn = None
        try:
            conn = sqlite3.connect(self.db_path, timeout=self.timeout, isolation_level=None,
                                   check_same_thread=False)
            conn.row_factory = sqlite3.Row
            conn.execute(f"PRAGMA busy_timeout = {int(self.timeout * 1000)}")
            result = conn.execute("PRAGMA integrity_check").fetchone()
            if result is None or result[0] != "ok":
                raise _Corrupt(str(result[0]) if result else "integrity check returned nothing")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = FULL")
            self._migrate(conn)
            return conn
        except sqlite3.DatabaseError as err:
            if conn is not None:
                conn.close()
            if _is_corrupt(err):
                raise _Corrupt(str(err)) from None
            raise
        except BaseException:
            if conn is not None:
                conn.close()
            raise

    def _migrate(self, conn: sqlite3.Connection) -> None:
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in _split_sql(_SCHEMA):
                conn.execute(statement)
            row = conn.execute("SELECT version FROM schema_version").fetchone()
            version = row[0] if row else None
            if version is None:
                conn.execute("INSERT INTO schema_version (version) VALUES (?)", (SCHEMA_VERSION,))
            elif version > SCHEMA_VERSION:
                raise EngineError(f"The gallery in {self.root} was written by a newer version of the studio "
                                  f"(index version {version}).", hint="Update the studio to open it.")
            else:
                while version < SCHEMA_VERSION:
                    _MIGRATIONS[version](conn)
                    version += 1
                conn.execute("UPDATE schema_version SET version = ?", (version,))
            conn.execute("COMMIT")
        except BaseException:
            _rollback(conn)
            raise

    def _move_corrupt_aside(self) -> None:
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        backup = self.root / f"{DB_NAME}.corrupt-{stamp}"
        n = 1
        while backup.exists():
            backup = self.root / f"{DB_NAME}.corrupt-{stamp}-{n}"
            n += 1
        for suffix in ("", "-wal", "-shm", "-journal"):
            path = Path(str(self.db_path) + suffix)
            if path.exists():
                # The WAL goes with the file it belongs to: replayed into a fresh index it would corrupt it.
                os.replace(path, Path(str(backup) + suffix))
        self.corrupt_backup = backup

    def _recover(self) -> None:
        """The index went bad while open: move it aside and rebuild it from the run folders."""
        self.close()
        self._move_corrupt_aside()
        self._conn = self._connect_checked()
        self._reconcile()

    def _reconcile(self) -> None:
        """Make the index and the run folders agree again after a crash or a lost index.

        Runs inside one write transaction, so another process in the middle of an add or a
        delete finishes first and its folders are never mistaken for leftovers.
        """
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            known = {row[0] for row in conn.execute("SELECT id FROM entries")}
            self._clean_leftovers(known)
            found, self.unreadable_records = self._scan_orphan_folders(known)
            for entry in found:
                conn.execute(_INSERT_OR_IGNORE, self._row_values(entry))
            conn.execute("COMMIT")
        except BaseException:
            _rollback(conn)
            raise
        self.recovered = [entry.id for entry in found]

    def _clean_leftovers(self, known: set[str]) -> None:
        """Finish what a crash interrupted: stale staging folders and half-done deletes."""
        now = time.time()
        for path in self.root.iterdir():
            name = path.name
            if not path.is_dir():
                continue
            if name.startswith(_STAGING_PREFIX):
                try:
                    stale = now - path.stat().st_mtime > _STALE_STAGING_S
                except OSError:
                    continue
                if stale:
                    shutil.rmtree(path, ignore_errors=True)
            elif name.startswith(_TRASH_PREFIX):
                entry_id = name[len(_TRASH_PREFIX):]
                if entry_id in known and not (self.root / entry_id).exists():
                    os.replace(path, self.root / entry_id)     # the delete never committed
                else:
                    shutil.rmtree(path, ignore_errors=True)

    def _scan_orphan_folders(self, known: set[str]) -> tuple[list[Entry], list[str]]:
        """Entries for run folders the index does not know, and the folders whose record is unreadable."""
        found: list[Entry] = []
        unreadable: list[str] = []
        for folder in sorted(self.root.iterdir()):
            if folder.name in known or not _is_safe_id(folder.name) or not folder.is_dir():
                continue
            record_path = folder / RECORD_NAME
            if not record_path.is_file():
                continue
            try:
                record = json.loads(record_path.read_text(encoding="utf-8"))
                if record.get("format") != RECORD_FORMAT or record.get("id") != folder.name:
                    raise ValueError("not a run record")
                found.append(self._entry_from_record(record, folder))
            except (OSError, ValueError, TypeError, KeyError, AttributeError):
                unreadable.append(folder.name)
        return found, unreadable

    # ------------------------------------------------------------------ database helpers

    def _with_db(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fn` under the lock; if the index turns out corrupt, rebuild it and try once more."""
        with self._lock:
            if self._conn is None:
                self._open()
            try:
                return fn(self._conn)
            except sqlite3.DatabaseError as err:
                if not _is_corrupt(err):
                    raise
            self._recover()
            return fn(self._conn)

    def _insert_and_place(self, conn: sqlite3.Connection, entry: Entry, staging: Path, final: Path) -> None:
        conn.execute("BEGIN IMMEDIATE")
        try:
            if not staging.exists() and final.is_dir():
                # A retry after the index was rebuilt: the folder is placed and may be indexed already.
                conn.execute(_INSERT_OR_IGNORE, self._row_values(entry))
            else:
                conn.execute(_INSERT, self._row_values(entry))
                os.replace(staging, final)
            _fsync_dir(self.root)
            conn.execute("COMMIT")
        except BaseException:
            _rollback(conn)
            raise

    def _available_ids(self) -> list[str]:
        rows = self._with_db(lambda conn: conn.execute(
            "SELECT id, video FROM entries ORDER BY created_at DESC, id DESC").fetchall())
        return [row["id"] for row in rows if (self.root / row["video"]).is_file()]

    def _iter_entries(self) -> Iterable[Entry]:
        rows = self._with_db(lambda conn: conn.execute(
            "SELECT * FROM entries ORDER BY created_at DESC, id DESC").fetchall())
        for row in rows:
            yield self._entry_from_row(row)

    def _row_values(self, entry: Entry) -> tuple:
        return (entry.id, entry.created_at, entry.title, entry.variant, entry.seed, entry.duration,
                entry.video.relative_to(self.root).as_posix(),
                entry.thumbnail.relative_to(self.root).as_posix() if entry.thumbnail else None,
                json.dumps(entry.settings, ensure_ascii=False), json.dumps(entry.timings, ensure_ascii=False),
                json.dumps(_inputs_to_record(entry.inputs, entry.folder)))

    def _entry_from_row(self, row: sqlite3.Row) -> Entry:
        return Entry(
            id=row["id"], created_at=row["created_at"],
            video=self.root / row["video"],
            thumbnail=(self.root / row["thumbnail"]) if row["thumbnail"] else None,
            settings=json.loads(row["settings"]), timings=json.loads(row["timings"]),
            title=row["title"], variant=row["variant"], seed=row["seed"], duration=row["duration"],
            inputs=_inputs_from_record(json.loads(row["inputs"] or "{}"), self.root / row["id"]))

    def _entry_from_record(self, record: dict[str, Any], folder: Path) -> Entry:
        settings = dict(record.get("settings") or {})
        video_name, thumb_name = str(record["video"]), record.get("thumbnail")
        if Path(video_name).name != video_name or (thumb_name and Path(thumb_name).name != thumb_name):
            raise ValueError("file names in a run record must be plain names")
        return Entry(
            id=str(record["id"]),
            created_at=str(record["created_at"]),
            video=folder / video_name,
            thumbnail=(folder / str(thumb_name)) if thumb_name else None,
            settings=settings,
            timings=dict(record.get("timings") or {}),
            title=str(record.get("title") or make_title(settings.get("prompt"))),
            variant=_as_str(resolved_value(settings, "variant")),
            seed=_as_int(resolved_value(settings, "seed")),
            duration=video_duration(settings),
            inputs=_inputs_from_record(record.get("inputs") or {}, folder),
        )

    def _check_free_space(self, *paths: Path | None) -> None:
        need = sum(p.stat().st_size for p in paths if p is not None) + 1024 * 1024
        try:
            free = shutil.disk_usage(self.root).free
        except OSError:
            return
        if free < need:
            raise OutOfResources(
                f"Not enough disk space to keep the video in the gallery ({_mb(free)} free in {self.root}, "
                f"{_mb(need)} needed).", hint="Free some disk space or delete old gallery entries, then try again.")


_INSERT = ("INSERT INTO entries (id, created_at, title, variant, seed, duration, video, thumbnail, settings, timings, "
           "inputs) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")


_INSERT_OR_IGNORE = _INSERT.replace("INSERT", "INSERT OR IGNORE", 1)


class _Corrupt(Exception):
    pass


# ---------------------------------------------------------------------- settings helpers

def resolved_value(settings: dict[str, Any], key: str) -> Any:
    """The value the run used for `key`: the resolved one when present, else the requested one."""
    resolved = settings.get("resolved")
    if isinstance(resolved, dict) and resolved.get(key) is not None:
        return resolved[key]
    return settings.get(key)


def video_duration(settings: dict[str, Any]) -> float | None:
    """Video length in seconds: as recorded, else frames / fps."""
    for key in ("duration_s", "duration"):
        value = resolved_value(settings, key)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0:
            return float(value)
    frames = resolved_value(settings, "frames")
    fps = resolved_value(settings, "fps") or DEFAULT_FPS
    if isinstance(frames, int) and not isinstance(frames, bool) and isinstance(fps, (int, float)) and fps > 0:
        return round(frames / float(fps), 3)
    return None


def settings_for_form(settings: dict[str, Any]) -> dict[str, Any]:
    """A `GenerationRequest`-shaped dict from stored settings, resolved values filled in."""
    names = [f.name for f in fields(GenerationRequest)]
    out = {name: resolved_value(settings, name) for name in names if name in settings
           or isinstance(settings.get("resolved"), dict) and name in settings["resolved"]}
    out.pop("out_path", None)
    return json.loads(json.dumps(out))      # a deep copy: callers may edit it freely


def make_title(prompt: Any) -> str:
    """The first words of the prompt, short enough for a gallery caption."""
    words = str(prompt or "").split()
    if not words:
        return "Untitled"
    title = " ".join(words[:_TITLE_WORDS])
    if len(title) > _TITLE_CHARS:
        title = title[:_TITLE_CHARS].rsplit(" ", 1)[0] or title[:_TITLE_CHARS]
    return title + ("…" if title != " ".join(words) else "")


# ---------------------------------------------------------------------- file helpers

def _no_inputs() -> dict[str, Any]:
    # audio: the clip that drove the lips; audio_source: the studio's original upload
    # (metadata["studio"]["audio_source"]) when it differs, e.g. before trimming or vocal isolation.
    return {"audio": None, "audio_source": None, "images": []}


def _plan_inputs(settings: dict[str, Any]) -> tuple[dict[str, Any], list[tuple[Path, str]]]:
    """Which input files to keep: (the record's "inputs", [(source, name in the run folder)])."""
    record, copies = _no_inputs(), []
    audio = settings.get("audio")
    if isinstance(audio, str) and audio and Path(audio).is_file():
        name = f"inputs/audio{Path(audio).suffix.lower()}"
        record["audio"] = name
        copies.append((Path(audio), name))
    studio = (settings.get("metadata") or {}).get("studio") if isinstance(settings.get("metadata"), dict) else None
    source = studio.get("audio_source") if isinstance(studio, dict) else None
    if isinstance(source, str) and source and source != audio and Path(source).is_file():
        name = f"inputs/audio-source{Path(source).suffix.lower()}"
        record["audio_source"] = name
        copies.append((Path(source), name))
    images = settings.get("images")
    for i, image in enumerate(images if isinstance(images, list) else []):
        name = None
        if isinstance(image, str) and image and Path(image).is_file():
            name = f"inputs/image-{i}{Path(image).suffix.lower()}"
            copies.append((Path(image), name))
        record["images"].append(name)
    return record, copies


def _inputs_from_record(record: dict[str, Any], folder: Path) -> dict[str, Any]:
    def resolve(name: Any) -> Path | None:
        if not isinstance(name, str) or not name or ".." in Path(name).parts or Path(name).is_absolute():
            return None
        return folder / name
    images = record.get("images") if isinstance(record.get("images"), list) else []
    return {"audio": resolve(record.get("audio")), "audio_source": resolve(record.get("audio_source")),
            "images": [resolve(name) for name in images]}


def _inputs_to_record(inputs: dict[str, Any], folder: Path) -> dict[str, Any]:
    def rel(path: Path | None) -> str | None:
        return None if path is None else path.relative_to(folder).as_posix()
    return {"audio": rel(inputs.get("audio")), "audio_source": rel(inputs.get("audio_source")),
            "images": [rel(p) for p in inputs.get("images") or []]}


def _new_id() -> str:
    now = datetime.now()
    return f"{now:%Y%m%d-%H%M%S}-{now.microsecond // 1000:03d}-{uuid.uuid4().hex[:6]}"


def _is_safe_id(name: str) -> bool:
    return bool(name) and not name.startswith(".") and "/" not in name and "\\" not in name \
        and name not in ("..",) and all(c.isalnum() or c in "-_" for c in name)


def _atomic_copy(src: Path, dst: Path) -> None:
    tmp = dst.with_name(f".{dst.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(src, "rb") as fin, open(tmp, "wb") as fout:
            shutil.copyfileobj(fin, fout, 1024 * 1024)
            fout.flush()
            os.fsync(fout.fileno())
        os.replace(tmp, dst)
    except BaseException:
        try:
            tmp.unlink()
        except OSError:
            pass
        raise


def _atomic_write_text(dst: Path, text: str) -> None:
    tmp = dst.with_name(f".{dst.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as fout:
            fout.write(text)
            fout.flush()
            os.fsync(fout.fileno())
        os.replace(tmp, dst)
        _fsync_dir(dst.parent)
    except BaseException:
        try:
            tmp.unlink()
        except OSError:
            pass
        raise


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return                         # e.g. Windows: directories cannot be opened
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _rollback(conn: sqlite3.Connection) -> None:
    try:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
    except sqlite3.Error:
        pass


def _split_sql(script: str) -> list[str]:
    return [s.strip() for s in script.split(";") if s.strip()]


def _is_corrupt(err: sqlite3.Error) -> bool:
    name = getattr(err, "sqlite_errorname", "") or ""
    if name in _CORRUPT_ERRORS:
        return True
    text = str(err).lower()
    return "malformed" in text or "not a database" in text


def _is_disk_full(err: BaseException) -> bool:
    if isinstance(err, OSError):
        return err.errno in _DISK_FULL_ERRNOS
    if isinstance(err, sqlite3.Error):
        return (getattr(err, "sqlite_errorname", "") == "SQLITE_FULL") or "disk is full" in str(err).lower()
    return False


def _os_error(err: OSError, what: str) -> EngineError:
    if _is_disk_full(err):
        return OutOfResources(f"{what}: the disk is full.",
                              hint="Free some disk space or delete old gallery entries, then try again.")
    return EngineError(f"{what}: {err.strerror or err}.", hint="Check that the outputs folder is writable.")


def _db_error(err: sqlite3.Error, what: str) -> EngineError:
    if _is_disk_full(err):
        return OutOfResources(f"{what}: the disk is full.",
                              hint="Free some disk space or delete old gallery entries, then try again.")
    return EngineError(f"{what}: {err}.", hint="Restart the studio; the gallery index is rebuilt from the run folders.")


def _jsonable(value: Any) -> Any:
    """A JSON round trip, turning paths, tuples and numpy scalars into plain values."""
    def default(obj: Any) -> Any:
        if isinstance(obj, os.PathLike):
            return os.fspath(obj)
        if isinstance(obj, (set, frozenset, tuple)):
            return list(obj)
        if hasattr(obj, "item") and callable(obj.item):
            try:
                return obj.item()
            except (TypeError, ValueError):
                pass
        if hasattr(obj, "tolist") and callable(obj.tolist):
            return obj.tolist()
        return str(obj)
    return json.loads(json.dumps(value, default=default, ensure_ascii=False))


def _as_str(value: Any) -> str | None:
    return None if value is None else str(value)


def _as_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    try:
        return None if value is None else int(value)
    except (TypeError, ValueError):
        return None


def _mb(n: int) -> str:
    return f"{n / (1024 * 1024):.1f} MB"
