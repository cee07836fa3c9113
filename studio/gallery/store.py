"""The `Gallery` facade: keep, list, fetch, delete and reuse finished runs.

The public operations live here; the connection, recovery and row conversions come
from `GalleryIndex` (index.py), the file handling from folders.py and the record
format from records.py.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.errors import InputError
from engine.redact import redact_settings, settings_json

from .folders import (STAGING_PREFIX, TRASH_PREFIX, atomic_copy, atomic_write_text, check_free_space,
                      os_error)
from .index import GalleryIndex, db_error, fold, rollback
from .records import (RECORD_FORMAT, RECORD_NAME, RECORD_VERSION, CheckReport, Entry, entry_from_record,
                      creation_stamp, is_safe_id, jsonable, make_title, new_id, no_inputs, plan_inputs, settings_for_form)


PAGE_SIZE = 24                     # runs per gallery page
MAX_SEARCH_CHARS = 200             # a search is a few words or a phrase of a prompt


@dataclass
class GalleryPage:
    """One page of a gallery query: its entries and how many entries match in all."""
    entries: list[Entry]
    total: int
    offset: int = 0
    limit: int = PAGE_SIZE

    @property
    def more(self) -> bool:
        """True when entries after this page match too."""
        return self.offset + len(self.entries) < self.total


def _filters(search: str, variant: str | None, mode: str | None, starred: bool,
             owner: str | None = None) -> tuple[str, list[Any]]:
    """The WHERE clause (and its arguments) of a gallery query; `owner`: only that account's runs."""
    where, args = ["missing = 0"], []
    if owner is not None:
        where.append("owner = ?")
        args.append(str(owner))
    for term in search_terms(search):
        where.append("instr(prompt_fold, ?) > 0")     # a substring test: no LIKE wildcards to escape
        args.append(term)
    if variant:
        where.append("variant = ?")
        args.append(str(variant))
    if mode:
        where.append("mode = ?")
        args.append(str(mode))
    if starred:
        where.append("starred = 1")
    return " AND ".join(where), args


def search_terms(search: str) -> list[str]:
    """What a search asks for: its words, or "quoted phrases", case-folded. All must appear.
    InputError for a search longer than MAX_SEARCH_CHARS."""
    text = str(search or "")
    if len(text) > MAX_SEARCH_CHARS:
        raise InputError(f"The search is too long ({len(text)} characters): use at most {MAX_SEARCH_CHARS} "
                         "characters, a few words or a phrase from the prompt.")
    terms = []
    for phrase, word in re.findall(r'"([^"]*)"|(\S+)', text):
        term = fold(phrase if phrase else word.strip('"'))
        if term:
            terms.append(term)
    return terms


def _write_star(record_path: Path, starred: bool) -> None:
    try:
        record = json.loads(record_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return                          # a row whose folder is gone: the index alone carries the star
    except ValueError:
        return                          # an unreadable record is reported by check(), not rewritten here
    if isinstance(record, dict) and record.get("starred", False) != starred:
        record["starred"] = starred
        atomic_write_text(record_path, settings_json(record, indent=2))


def _visible(entry: Entry | None, owner: str | None) -> Entry | None:
    """The entry when the viewer may see it: `owner` None sees every run, an account only its own."""
    if entry is None or owner is None or entry.owner == owner:
        return entry
    return None


class Gallery(GalleryIndex):
    """The store behind the studio's gallery. Safe to share between threads.

    Runs belong to the account that made them (`owner`). Every read and change takes an
    `owner`: None sees and changes every run (no accounts, or an admin), an account name only
    that account's runs; another account's run is answered as if it did not exist.
    """

    def add(self, video_path: str | os.PathLike, settings: dict[str, Any], timings: dict[str, Any] | None = None,
            thumbnail_path: str | os.PathLike | None = None, title: str | None = None, *,
            move: bool = False, keep_inputs: bool = True, owner: str | None = None) -> Entry:
        """Keep a finished run. Copies (or, with `move=True`, moves) the files into the gallery.

        With `keep_inputs` the reference images and the voice clip named in `settings` are
        copied too (into `inputs/`), so "reuse these settings" still works after the upload
        cache is cleaned.

        `owner`: the account that made the run (None without accounts).
        The record keeps the input files' names, not where they were on this machine.

        Raises InputError when the video is missing, OutOfResources when the disk is full;
        in both cases nothing is left behind and the gallery is unchanged.
        """
        self.check_writable("Could not save the video to the gallery")
        src = Path(video_path)
        if not src.is_file():
            raise InputError(f"Cannot add to the gallery: the video file {src.name} does not exist.")
        thumb_src = Path(thumbnail_path) if thumbnail_path else None
        if thumb_src is not None and not thumb_src.is_file():
            thumb_src = None           # a missing thumbnail must not cost the user the video
        settings = jsonable(dict(settings or {}))
        timings = jsonable(dict(timings or {}))
        kept_inputs, input_copies = plan_inputs(settings) if keep_inputs else (no_inputs(), [])
        check_free_space(self.root, src, thumb_src, *(path for path, _ in input_copies))

        stamp = creation_stamp()
        entry_id = new_id(stamp)
        created_at = stamp.isoformat(timespec="milliseconds")
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
            "settings": redact_settings(settings),
            "timings": redact_settings(timings),
            "inputs": kept_inputs,
        }
        if owner is not None:
            record["owner"] = str(owner)

        staging = self.root / (STAGING_PREFIX + entry_id)
        final = self.root / entry_id
        try:
            staging.mkdir()
            atomic_copy(src, staging / video_name)
            if thumb_src is not None:
                atomic_copy(thumb_src, staging / thumb_name)
            for path, name in input_copies:
                (staging / name).parent.mkdir(exist_ok=True)
                atomic_copy(path, staging / name)
            atomic_write_text(staging / RECORD_NAME, settings_json(record, indent=2))
        except BaseException as err:
            shutil.rmtree(staging, ignore_errors=True)
            if isinstance(err, FileNotFoundError):
                raise InputError(f"Cannot add to the gallery: the file {err.filename} disappeared while "
                                 "it was being copied. Generate the video again.") from None
            if isinstance(err, OSError):
                raise os_error(err, "Could not save the video to the gallery") from None
            raise

        entry = entry_from_record(record, final)
        try:
            self._with_db(lambda conn: self._insert_and_place(conn, entry, staging, final))
        except BaseException as err:
            shutil.rmtree(staging, ignore_errors=True)
            shutil.rmtree(final, ignore_errors=True)
            if isinstance(err, sqlite3.Error):
                raise db_error(err, "Could not add the video to the gallery index") from None
            if isinstance(err, OSError):
                raise os_error(err, "Could not save the video to the gallery") from None
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
                   title: str | None = None, *, move: bool = False, owner: str | None = None) -> Entry:
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
                        thumbnail_path=thumbnail_path, title=title, move=move, owner=owner)

    def query(self, search: str = "", variant: str | None = None, mode: str | None = None,
              starred: bool = False, limit: int = PAGE_SIZE, offset: int = 0, owner: str | None = None) -> GalleryPage:
        """One page of entries, newest first, and how many match in all.

        `search`: words (or "quoted phrases") that must all appear in the prompt, case-insensitive;
        `variant`, `mode`: exact values (None or "" for any); `starred`: only starred runs;
        `owner`: only that account's runs (None: every run).
        Filtering, ordering, counting and paging happen in SQLite. Entries whose video is gone
        are left out (their rows on the page are checked, and flagged for later queries).
        """
        limit, offset = max(int(limit), 0), max(int(offset), 0)
        where, args = _filters(search, variant, mode, starred, owner)
        page_sql = (f"SELECT * FROM entries WHERE {where} ORDER BY created_at DESC, id DESC LIMIT ? OFFSET ?")
        count_sql = f"SELECT COUNT(*) FROM entries WHERE {where}"

        def run(conn: sqlite3.Connection) -> GalleryPage:
            while True:
                rows = conn.execute(page_sql, (*args, limit, offset)).fetchall() if limit else []
                if not self._mark_missing(conn, rows):
                    break              # every video on the page is there (else flagged: ask again)
            total = conn.execute(count_sql, args).fetchone()[0]
            return GalleryPage([self._entry_from_row(row) for row in rows], total, offset, limit)

        try:
            return self._with_db(run)
        except sqlite3.Error as err:
            raise db_error(err, "Could not read the gallery index") from None

    def list(self, limit: int = 100, offset: int = 0) -> list[Entry]:
        """Entries newest first, skipping those whose video file is gone (see `check()`)."""
        return self.query(limit=limit, offset=offset).entries

    def count(self, search: str = "", variant: str | None = None, mode: str | None = None,
              starred: bool = False, owner: str | None = None) -> int:
        """How many entries `query()` can show with these filters (those whose video is there)."""
        return self.query(search, variant, mode, starred, limit=0, owner=owner).total

    def variants(self) -> list[str]:
        """The model variants that made the runs in the gallery (for a filter's choices)."""
        rows = self._with_db(lambda conn: conn.execute(
            "SELECT DISTINCT variant FROM entries WHERE variant IS NOT NULL AND missing = 0 ORDER BY variant"
        ).fetchall())
        return [row[0] for row in rows]

    def set_starred(self, entry_id: str, starred: bool = True, owner: str | None = None) -> bool:
        """Star (or unstar) a run. False when there is no such entry (that `owner` may see).

        The star lives in the index and in the run's record, so a rebuilt index keeps it.
        """
        entry_id, starred = str(entry_id), bool(starred)
        if not is_safe_id(entry_id) or self.get(entry_id, owner) is None:
            return False
        self.check_writable("Could not star the gallery entry")
        record_path = self.root / entry_id / RECORD_NAME

        def update(conn: sqlite3.Connection) -> bool:
            conn.execute("BEGIN IMMEDIATE")
            try:
                found = conn.execute("UPDATE entries SET starred = ? WHERE id = ?",
                                     (int(starred), entry_id)).rowcount > 0
                if found:
                    _write_star(record_path, starred)
                conn.execute("COMMIT")
            except BaseException:
                rollback(conn)
                raise
            return found

        try:
            return self._with_db(update)
        except sqlite3.Error as err:
            raise db_error(err, "Could not star the gallery entry") from None
        except OSError as err:
            raise os_error(err, "Could not star the gallery entry") from None

    def toggle_star(self, entry_id: str, owner: str | None = None) -> bool | None:
        """Flip the star of a run; its new state, or None when there is no such entry."""
        entry = self.get(entry_id, owner)
        if entry is None:
            return None
        self.set_starred(entry.id, not entry.starred, owner)
        return not entry.starred

    def gradio_items(self, limit: int = 100, offset: int = 0) -> list[tuple[str, str]]:
        """(image or video path, caption) pairs, the value a `gr.Gallery` takes."""
        return [(str(e.thumbnail if e.thumbnail is not None and e.thumbnail.is_file() else e.video), e.title)
                for e in self.list(limit, offset)]

    def get(self, entry_id: str, owner: str | None = None) -> Entry | None:
        """The entry with this id (even if its video is gone: its settings are still useful);
        None when there is none that `owner` may see."""
        try:
            rows = self._with_db(lambda conn: conn.execute("SELECT * FROM entries WHERE id = ?",
                                                           (str(entry_id),)).fetchall())
        except sqlite3.Error as err:
            raise db_error(err, "Could not read the gallery index") from None
        return _visible(self._entry_from_row(rows[0]), owner) if rows else None

    def delete(self, entry_id: str, owner: str | None = None) -> bool:
        """Remove a run (its index row and its folder). False when there is no such run that `owner`
        may see: only folders of indexed runs are ever removed."""
        entry_id = str(entry_id)
        if not is_safe_id(entry_id) or self.get(entry_id, owner) is None:
            return False
        self.check_writable("Could not delete the gallery entry")
        folder = self.root / entry_id
        trash = self.root / (TRASH_PREFIX + entry_id)

        def remove(conn: sqlite3.Connection) -> bool:
            conn.execute("BEGIN IMMEDIATE")
            try:
                found = conn.execute("DELETE FROM entries WHERE id = ?", (entry_id,)).rowcount > 0
                moved = False
                if found and folder.is_dir():
                    os.replace(folder, trash)
                    moved = True
                try:
                    conn.execute("COMMIT")
                except BaseException:
                    if moved:
                        os.replace(trash, folder)
                    raise
            except BaseException:
                rollback(conn)
                raise
            return found

        try:
            found = self._with_db(remove)
        except sqlite3.Error as err:
            raise db_error(err, "Could not delete the gallery entry") from None
        except OSError as err:
            raise os_error(err, "Could not delete the gallery entry") from None
        shutil.rmtree(trash, ignore_errors=True)
        return found

    def reuse_settings(self, entry_id: str, owner: str | None = None) -> dict[str, Any]:
        """The settings to fill the form with, to make the same video again.

        A `GenerationRequest`-shaped dict: what the user asked for, with the values the
        engine actually used filled in (so a random seed becomes the seed that ran).
        `out_path` is dropped so a new run never overwrites the kept video.
        Raises KeyError for an unknown id (or one `owner` may not see).
        """
        entry = self.get(entry_id, owner)
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
        if not is_safe_id(entry_id):
            raise KeyError(f"Not a gallery entry id: {entry_id!r}.")
        return self.root / entry_id

    def check(self, repair: bool = False) -> CheckReport:
        """Report entries whose files are gone. With `repair=True`, drop entries without a video."""
        report = CheckReport(recovered=list(self.recovered),
                             unreadable_records=list(self.unreadable_records),
                             corrupt_backup=str(self.corrupt_backup) if self.corrupt_backup else None)
        self._with_db(lambda conn: self._mark_missing(
            conn, conn.execute("SELECT id, video, missing FROM entries").fetchall()))
        for entry in self._iter_entries():
            if not entry.available:
                report.missing_videos.append(entry.id)
            elif entry.thumbnail is not None and not entry.thumbnail.is_file():
                report.missing_thumbnails.append(entry.id)
        if repair:
            for entry_id in report.missing_videos:
                self.delete(entry_id)
        return report

    def __enter__(self) -> "Gallery":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __len__(self) -> int:
        return self.count()
