"""The gallery: every finished run, kept on disk with the settings that made it.

Layout of the outputs folder::

    outputs/
      gallery.sqlite3                 the index (WAL mode); rebuildable at any time
      20250101-120000-123-1a2b3c/      one folder per run, named by the entry id
        20250101-120000-123-1a2b3c.mp4
        thumbnail.png                 (when one was given)
        settings.json                 the record: settings, timings, title, created time, star

The folder of a run is the source of truth; the SQLite file is an index over the
folders. A run folder is staged under a hidden name, every file in it is written
to a temporary name, fsynced and renamed, and only then is the folder renamed into
place inside the same transaction that inserts the row. So after a crash or a full
disk either the whole run is there or none of it is, and a lost or corrupt index is
rebuilt from the `settings.json` files.

Settings are a plain dict: the `GenerationRequest.to_dict()` of the run, optionally
with a ``"resolved"`` dict of the values the engine actually used (steps, size,
frames, seed, fps, duration_s ...). Resolved values win when both are present.

The package, by part:

- ``records``: `Entry`, `CheckReport`, the `settings.json` record and settings helpers
- ``folders``: run folders on disk: crash-safe writes, leftovers of crashes, disk errors
- ``index``:   the SQLite index (`GalleryIndex`): schema, migrations, corruption recovery
- ``store``:   `Gallery`, the public API built on the index: add, query (search, filters,
               paging, counts in SQLite), star, delete, reuse
"""
from __future__ import annotations

from .index import DB_NAME, SCHEMA_VERSION, GalleryIndex
from .records import (DEFAULT_FPS, RECORD_FORMAT, RECORD_NAME, RECORD_VERSION, CheckReport, Entry, make_title,
                      resolved_value, settings_for_form, video_duration)
from .store import PAGE_SIZE, Gallery, GalleryPage

__all__ = [
    "DB_NAME", "DEFAULT_FPS", "RECORD_FORMAT", "RECORD_NAME", "RECORD_VERSION", "SCHEMA_VERSION",
    "PAGE_SIZE", "CheckReport", "Entry", "Gallery", "GalleryIndex", "GalleryPage",
    "make_title", "resolved_value", "settings_for_form", "video_duration",
]
