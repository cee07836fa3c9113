"""What one browser session's gallery shows: its search, filters and how many runs are loaded.

The page keeps one `GalleryView` per session (`SessionViews`), so every event that redraws
the grid (a filter, "Load more", a finished run of a batch, a star) draws the same query, and a
click on the grid finds the entry id of the tile it hit. Nothing here imports gradio.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field

from .store import PAGE_SIZE, Gallery, search_terms

ALL = ""                            # the filters' value for "any"


@dataclass
class GalleryView:
    search: str = ""
    variant: str = ALL
    mode: str = ALL
    starred: bool = False
    shown: int = PAGE_SIZE          # grows by a page with every "Load more"
    ids: list[str] = field(default_factory=list)    # the entry ids of the grid's tiles, in order
    count_text: str = ""
    more: bool = False

    def set_filters(self, search, variant, mode, starred) -> bool:
        """Take the page's filter values; True (and back to the first page) when they changed."""
        new = (str(search or "").strip(), str(variant or ALL), str(mode or ALL), bool(starred))
        search_terms(new[0])     # a search the store refuses (InputError) is not kept: later redraws still work
        if new == (self.search, self.variant, self.mode, self.starred):
            return False
        self.search, self.variant, self.mode, self.starred = new
        self.shown = PAGE_SIZE
        return True

    @property
    def filtered(self) -> bool:
        return bool(self.search or self.variant or self.mode or self.starred)

    def render(self, gallery: Gallery, owner: str | None = None) -> list[tuple[str, str]]:
        """The grid's tiles (image or video path, caption) for this view; updates ids, count and more.
        `owner`: only that account's runs (None: every run)."""
        page = gallery.query(self.search, self.variant or None, self.mode or None, self.starred, limit=self.shown,
                             owner=owner)
        self.ids = [e.id for e in page.entries]
        self.more = page.more
        total_all = gallery.count(owner=owner) if self.filtered else page.total
        self.count_text = count_text(len(page.entries), page.total, total_all, self.filtered)
        return [(str(e.thumbnail if e.thumbnail is not None and e.thumbnail.is_file() else e.video), caption(e))
                for e in page.entries]


def caption(entry) -> str:
    return ("★ " if entry.starred else "") + f"{entry.title} · {entry.variant or ''} · seed {entry.seed}"


def count_text(shown: int, matching: int, total: int, filtered: bool) -> str:
    """"Showing 24 of 312 runs", or with a search/filter "… of 40 matching runs (312 in all)"."""
    def runs(n: int) -> str:
        return f"{n} run" if n == 1 else f"{n} runs"
    if total == 0:
        return "No runs yet: make one on the Create tab."
    if not filtered:
        return f"Showing {shown} of {runs(total)}"
    if matching == 0:
        return f"No run matches the search and filters ({runs(total)} in all)."
    return f"Showing {shown} of {matching} matching {'run' if matching == 1 else 'runs'} ({total} in all)"


class SessionViews:
    """One `GalleryView` per browser session (the most recent `cap` sessions are kept)."""

    def __init__(self, cap: int = 256):
        self.cap = cap
        self._views: OrderedDict[str, GalleryView] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, session: str | None) -> GalleryView:
        if not session:
            return GalleryView()          # an API call without a session: the default view
        with self._lock:
            view = self._views.pop(session, None) or GalleryView()
            self._views[session] = view
            while len(self._views) > self.cap:
                self._views.popitem(last=False)
            return view
