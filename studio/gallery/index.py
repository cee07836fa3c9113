"""The SQLite index over the run folders: schema, migrations, and recovery.

`GalleryIndex` owns the connection (WAL mode, one lock for all threads). Opening it
checks the file's integrity; a corrupt index is moved aside (with its WAL) and rebuilt
from the run folders, and on every open the index is reconciled with the folders, so
the folders stay the source of truth. `Gallery` builds its public API on top of it.
"""
from __future__ import annotations

import json
import os
import sqlite3
import threading
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Iterable, TypeVar

from engine.errors import EngineError, OutOfResources
from engine.media import fsync_dir, is_disk_full
from engine.redact import shown_path

from .folders import (DISK_FULL_HINT, clean_leftovers, is_writable, not_writable, os_error, scan_orphan_folders)
from .records import Entry, inputs_from_record, inputs_to_record, resolved_value

DB_NAME = "gallery.sqlite3"
SCHEMA_VERSION = 3

_CORRUPT_ERRORS = {"SQLITE_CORRUPT", "SQLITE_NOTADB"}

# The tables as a new index gets them (the newest version). An older index keeps its tables
# here (IF NOT EXISTS) and is brought up to date by _MIGRATIONS.
_SCHEMA = """
CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS entries (
    id          TEXT PRIMARY KEY,
    created_at  TEXT NOT NULL,
    title       TEXT NOT NULL,
    variant     TEXT,
    seed        INTEGER,
    duration    REAL,
    video       TEXT NOT NULL,
    thumbnail   TEXT,
    settings    TEXT NOT NULL,
    timings     TEXT NOT NULL,
    inputs      TEXT NOT NULL DEFAULT '{}',
    mode        TEXT,
    prompt_fold TEXT NOT NULL DEFAULT '',
    starred     INTEGER NOT NULL DEFAULT 0,
    missing     INTEGER NOT NULL DEFAULT 0,
    owner       TEXT
);
CREATE INDEX IF NOT EXISTS entries_created ON entries (created_at DESC, id DESC);
"""

# Indexes on columns that older versions lack: created after the migrations ran.
# The gallery lists newest first within a filter, so each filter column leads a (created_at, id) index.
_INDEXES = """
CREATE INDEX IF NOT EXISTS entries_shown ON entries (missing, created_at DESC, id DESC);
CREATE INDEX IF NOT EXISTS entries_starred ON entries (starred, created_at DESC, id DESC);
CREATE INDEX IF NOT EXISTS entries_variant ON entries (variant, created_at DESC, id DESC);
CREATE INDEX IF NOT EXISTS entries_mode ON entries (mode, created_at DESC, id DESC);
CREATE INDEX IF NOT EXISTS entries_owner ON entries (owner, created_at DESC, id DESC);
"""

COLUMNS = ("id", "created_at", "title", "variant", "seed", "duration", "video", "thumbnail", "settings", "timings",
           "inputs", "mode", "prompt_fold", "starred", "owner")


def fold(text: Any) -> str:
    """Text as the search compares it: case-folded (Unicode, not only ASCII), spaces collapsed."""
    return " ".join(str(text or "").casefold().split())


def _migrate_1_to_2(conn: sqlite3.Connection) -> None:
    """Version 2: mode, folded prompt (search), starred, missing-video flag. Existing rows are
    filled in from their stored settings, so an old gallery keeps every run and can be searched."""
    have = {row[1] for row in conn.execute("PRAGMA table_info(entries)")}
    for column, decl in (("mode", "TEXT"), ("prompt_fold", "TEXT NOT NULL DEFAULT ''"),
                         ("starred", "INTEGER NOT NULL DEFAULT 0"), ("missing", "INTEGER NOT NULL DEFAULT 0")):
        if column not in have:
            conn.execute(f"ALTER TABLE entries ADD COLUMN {column} {decl}")
    rows = conn.execute("SELECT id, settings FROM entries").fetchall()
    for entry_id, settings_json in rows:
        try:
            settings = json.loads(settings_json)
            settings = settings if isinstance(settings, dict) else {}
        except ValueError:
            settings = {}
        mode = resolved_value(settings, "mode")
        conn.execute("UPDATE entries SET mode = ?, prompt_fold = ? WHERE id = ?",
                     (None if mode is None else str(mode), fold(settings.get("prompt")), entry_id))


def _migrate_2_to_3(conn: sqlite3.Connection) -> None:
    """Version 3: the account that made each run. Older runs were made without accounts (NULL)."""
    have = {row[1] for row in conn.execute("PRAGMA table_info(entries)")}
    if "owner" not in have:
        conn.execute("ALTER TABLE entries ADD COLUMN owner TEXT")


# Migrations from version N to N+1, applied in order inside one transaction.
_MIGRATIONS: dict[int, Callable[[sqlite3.Connection], None]] = {1: _migrate_1_to_2, 2: _migrate_2_to_3}

INSERT = (f"INSERT INTO entries ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})")
INSERT_OR_IGNORE = INSERT.replace("INSERT", "INSERT OR IGNORE", 1)

T = TypeVar("T")


class _Corrupt(Exception):
    pass


class GalleryIndex:
    """The index half of `Gallery`: opening, recovery and row conversions. Safe to share between threads."""

    def __init__(self, outputs_dir: str | os.PathLike, *, timeout: float = 30.0):
        self.timeout = float(timeout)       # seconds to wait for another writer (another process)
        self.root = Path(outputs_dir).resolve()
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise os_error(err, f"Cannot create the outputs folder {shown_path(self.root)}") from None
        # A folder the studio cannot write to still shows its runs: the index is read into memory
        # (or rebuilt there from the run folders) and every change is refused with a message.
        self.read_only = not is_writable(self.root)
        self.db_path = self.root / DB_NAME
        self._lock = threading.RLock()
        self._conn: sqlite3.Connection | None = None
        self.recovered: list[str] = []
        self.unreadable_records: list[str] = []
        self.corrupt_backup: Path | None = None
        with self._lock:
            self._open()

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                try:
                    self._conn.close()
                finally:
                    self._conn = None

    # ------------------------------------------------------------------ opening and recovery

    def _open(self) -> None:
        """Open the index, moving a corrupt one aside, then index run folders it does not know."""
        try:
            if self.read_only:
                self._conn = self._connect_read_only()
            else:
                try:
                    self._conn = self._connect_checked()
                except _Corrupt:
                    self._move_corrupt_aside()
                    self._conn = self._connect_checked()
            self._reconcile()
        except sqlite3.Error as err:
            self.close()
            raise db_error(err, f"Cannot open the gallery index {shown_path(self.db_path)}") from None

    def _connect_read_only(self) -> sqlite3.Connection:
        """An in-memory copy of the index, opened read-only (an unusable one is left out: the run
        folders fill the copy in `_reconcile`). Changes to it are never written back."""
        conn = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
        conn.row_factory = sqlite3.Row
        if self.db_path.is_file():
            # mode=ro reads the WAL too; immutable=1 also works when the WAL's shared memory file
            # cannot be made in a read-only folder.
            for flags in ("mode=ro", "mode=ro&immutable=1"):
                try:
                    src = sqlite3.connect(f"{self.db_path.as_uri()}?{flags}", uri=True, timeout=self.timeout)
                    try:
                        if src.execute("PRAGMA quick_check").fetchone()[0] == "ok":
                            src.backup(conn)
                            break
                    finally:
                        src.close()
                except sqlite3.Error:
                    continue
        try:
            self._migrate(conn)
        except sqlite3.DatabaseError:
            conn.close()                      # a copy that cannot be migrated: start empty, from the folders
            conn = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
            conn.row_factory = sqlite3.Row
            self._migrate(conn)
        return conn

    def check_writable(self, what: str) -> None:
        """EngineError saying the outputs folder is not writable, when it is not."""
        if self.read_only:
            raise not_writable(self.root, what)

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
            for statement in _split_sql(_INDEXES):
                conn.execute(statement)
            conn.execute("COMMIT")
        except BaseException:
            rollback(conn)
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
        if self.read_only:
            raise sqlite3.DatabaseError("the gallery index is damaged")
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
            if not self.read_only:
                clean_leftovers(self.root, known)
            found, self.unreadable_records = scan_orphan_folders(self.root, known)
            for entry in found:
                conn.execute(INSERT_OR_IGNORE, self._row_values(entry))
            self._mark_missing(conn, conn.execute("SELECT id, video, missing FROM entries").fetchall())
            conn.execute("COMMIT")
        except BaseException:
            rollback(conn)
            raise
        self.recovered = [entry.id for entry in found]

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
                conn.execute(INSERT_OR_IGNORE, self._row_values(entry))
            else:
                conn.execute(INSERT, self._row_values(entry))
                os.replace(staging, final)
            fsync_dir(self.root)
            conn.execute("COMMIT")
        except BaseException:
            rollback(conn)
            raise

    def _mark_missing(self, conn: sqlite3.Connection, rows: Iterable[sqlite3.Row]) -> list[str]:
        """Set the missing-video flag of these rows (id, video, missing) to what is on disk now.

        Listing and counting read the flag, not the disk: the flag is refreshed when the index
        opens, by `check()`, and for the rows of every page that is listed. Returns the ids
        that turned missing.
        """
        gone = []
        for row in rows:
            missing = 0 if (self.root / row["video"]).is_file() else 1
            if missing != row["missing"]:
                conn.execute("UPDATE entries SET missing = ? WHERE id = ?", (missing, row["id"]))
                if missing:
                    gone.append(row["id"])
        return gone

    def _iter_entries(self) -> Iterable[Entry]:
        rows = self._with_db(lambda conn: conn.execute(
            "SELECT * FROM entries ORDER BY created_at DESC, id DESC").fetchall())
        for row in rows:
            yield self._entry_from_row(row)

    def _row_values(self, entry: Entry) -> tuple:
        return (entry.id, entry.created_at, entry.title, entry.variant, entry.seed, entry.duration,
                entry.video.relative_to(self.root).as_posix(),
                entry.thumbnail.relative_to(self.root).as_posix() if entry.thumbnail else None,
                json.dumps(entry.settings, ensure_ascii=False, allow_nan=False),
                json.dumps(entry.timings, ensure_ascii=False, allow_nan=False),
                json.dumps(inputs_to_record(entry.inputs, entry.folder)), entry.mode, fold(entry.prompt),
                int(bool(entry.starred)), entry.owner)

    def _entry_from_row(self, row: sqlite3.Row) -> Entry:
        return Entry(
            id=row["id"], created_at=row["created_at"],
            video=self.root / row["video"],
            thumbnail=(self.root / row["thumbnail"]) if row["thumbnail"] else None,
            settings=json.loads(row["settings"]), timings=json.loads(row["timings"]),
            title=row["title"], variant=row["variant"], seed=row["seed"], duration=row["duration"],
            inputs=inputs_from_record(json.loads(row["inputs"] or "{}"), self.root / row["id"]),
            starred=bool(row["starred"]), owner=row["owner"])


def rollback(conn: sqlite3.Connection) -> None:
    try:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
    except sqlite3.Error:
        pass


def db_error(err: sqlite3.Error, what: str) -> EngineError:
    if is_disk_full(err):
        return OutOfResources(f"{what}: the disk is full.", hint=DISK_FULL_HINT)
    if "readonly" in str(err).lower() or getattr(err, "sqlite_errorname", "").startswith("SQLITE_READONLY"):
        return EngineError(f"{what}: the gallery index is read-only.",
                           hint="Make the outputs folder and its gallery.sqlite3 writable, then restart the studio.")
    return EngineError(f"{what}: {err}.", hint="Restart the studio; the gallery index is rebuilt from the run folders.")


def _split_sql(script: str) -> list[str]:
    return [s.strip() for s in script.split(";") if s.strip()]


def _is_corrupt(err: sqlite3.Error) -> bool:
    name = getattr(err, "sqlite_errorname", "") or ""
    if name in _CORRUPT_ERRORS:
        return True
    text = str(err).lower()
    return "malformed" in text or "not a database" in text
