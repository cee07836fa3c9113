"""The Gallery tab's events: search, filters, paging, stars, play, delete and "reuse settings",
with the /gallery_* API endpoints. Each browser tab keeps its own search, filters and page.
With accounts, each account sees and changes only its own runs (an admin sees every run):
another account's run is answered as if it did not exist."""
from __future__ import annotations

import gradio as gr

from engine.errors import EngineError
from engine.redact import redact_settings
from studio.accounts import Accounts
from studio.config import StudioConfig
from studio.form import values_from_settings
from studio.gallery.store import PAGE_SIZE
from studio.gallery.view import ALL, SessionViews
from studio.layout import STAR_OFF, STAR_ON
from studio.runtime import Runtime
from studio.status import esc, friendly


def wire_gallery(demo, ui, rt: Runtime, config: StudioConfig, start_variant: str, views: SessionViews):
    """The Gallery tab: search, filters, pages, stars, details. Returns `render(session)` for the
    Generate handler, which redraws the grid as each run of a batch finishes."""
    filters = ui.gallery_filters
    accounts = Accounts(config.auth)

    def session_of(request) -> str | None:
        return getattr(request, "session_hash", None)

    def owner_of(request) -> str | None:
        """Whose runs this request may see and change (None: every run)."""
        return accounts.gallery_owner(getattr(request, "username", None))

    def render(session: str | None, user: str | None = None) -> list:
        return views.get(session).render(rt.gallery, accounts.gallery_owner(user))

    def draw(view, request) -> tuple:
        """(grid, count, load-more button) for a view; a readable line when the index fails."""
        try:
            items = view.render(rt.gallery, owner_of(request))
        except Exception as err:
            msg = friendly(err)
            gr.Warning(msg)
            return [], f"**Problem:** {esc(msg)}", gr.update(visible=False)
        return items, view.count_text, gr.update(visible=view.more)

    def gallery_list(search=None, variant=ALL, mode=ALL, starred_only=False, request: gr.Request = None):
        """The newest finished runs matching a search and filters, as (thumbnail, caption) pairs, and a
        count line ("Showing 24 of 312 runs"). search: prompt words or "a phrase", any case; variant:
        a model name or "" for all; mode: TA, TIA, TI or "" for all; starred_only: only starred runs."""
        return filtered(request, search, variant, mode, starred_only)[:2]

    def on_filters(search, variant, mode, starred_only, request: gr.Request):
        return filtered(request, search, variant, mode, starred_only)

    def load_more(search, variant, mode, starred_only, request: gr.Request):
        return filtered(request, search, variant, mode, starred_only, more=True)

    def filtered(request, search, variant, mode, starred_only, more: bool = False):
        """Take the page's filters (a refused search is said and not kept) and draw; `more`: one more page."""
        view = views.get(session_of(request))
        try:
            changed = view.set_filters(search, variant, mode, starred_only)
        except EngineError as err:
            msg = friendly(err)
            gr.Warning(msg)
            return [], f"**Problem:** {esc(msg)}", gr.update(visible=False)
        if more and not changed:
            view.shown += PAGE_SIZE
        return draw(view, request)

    def after_grid_change(request: gr.Request):
        """The count and "Load more" follow the grid when a finished run redrew it."""
        view = views.get(session_of(request))
        return view.count_text, gr.update(visible=view.more)

    grid_out = [ui.grid, ui.gallery_count, ui.more_btn]
    ui.refresh_btn.click(gallery_list, filters, [ui.grid, ui.gallery_count], api_name="gallery_list",
                         queue=False).then(after_grid_change, None, [ui.gallery_count, ui.more_btn],
                                           api_visibility="private", queue=False)
    gr.on([ui.gallery_tab.select, demo.load, ui.gallery_variant.change, ui.gallery_mode.change,
           ui.gallery_starred.change, ui.gallery_search.submit],
          on_filters, filters, grid_out, api_visibility="private", queue=False)
    ui.gallery_search.input(on_filters, filters, grid_out, api_visibility="private", queue=False,
                            trigger_mode="always_last")
    ui.more_btn.click(load_more, filters, grid_out, api_visibility="private", queue=False)
    ui.grid.change(after_grid_change, None, [ui.gallery_count, ui.more_btn], api_visibility="private",
                   queue=False)

    def star_label(entry) -> dict:
        if entry is None:
            return gr.update(value=STAR_OFF, interactive=False)
        return gr.update(value=STAR_ON if entry.starred else STAR_OFF, interactive=True)

    def find(eid: str, request):
        """(the run `eid` as this request may see it, None when there is none; why not, when it could
        not be read)."""
        try:
            return (rt.gallery.get(eid, owner_of(request)) if eid else None), None
        except EngineError as err:
            return None, friendly(err)

    def gallery_get(eid, request: gr.Request = None):
        """One run by id: its video, a download, a summary and its settings."""
        eid = (eid or "").strip()
        entry, problem = find(eid, request)
        if entry is None:
            if eid:
                problem = problem or f"No gallery entry {eid!r}."
                gr.Warning(problem)
            return None, gr.update(visible=False, value=None), f"**Problem:** {esc(problem)}" if problem else "", None
        t = entry.timings or {}
        total = t.get("total_s") or t.get("total")
        info = (f"**{'★ ' if entry.starred else ''}{esc(entry.title)}**  \n"
                f"{entry.created_at[:19].replace('T', ' ')} UTC · {entry.variant} · {entry.mode or '?'} · "
                f"seed {entry.seed}" + (f" · {entry.duration:.1f} s" if entry.duration else "")
                + (f" · made in {float(total):.1f} s" if isinstance(total, (int, float)) else ""))
        vid = str(entry.video) if entry.available else None
        return vid, gr.update(value=vid, visible=bool(vid)), info, redact_settings(entry.settings)

    def entry_star(eid, request: gr.Request = None):
        eid = (eid or "").strip()
        return star_label(find(eid, request)[0])

    def on_select(evt: gr.SelectData, request: gr.Request):
        ids = views.get(session_of(request)).ids
        eid = ids[evt.index] if evt is not None and isinstance(evt.index, int) and evt.index < len(ids) else ""
        return (eid, *gallery_get(eid, request), entry_star(eid, request))

    entry_outputs = [ui.entry_video, ui.entry_download, ui.entry_md, ui.entry_settings]
    ui.grid.select(on_select, None, [ui.entry_id, *entry_outputs, ui.star_btn], api_visibility="private",
                   queue=False)
    ui.entry_id.submit(gallery_get, ui.entry_id, entry_outputs, api_name="gallery_get", queue=False).then(
        entry_star, ui.entry_id, ui.star_btn, api_visibility="private", queue=False)

    def toggle_star(eid, request: gr.Request):
        eid = (eid or "").strip()
        try:
            starred = rt.gallery.toggle_star(eid, owner_of(request)) if eid else None
        except Exception as err:
            gr.Warning(friendly(err))
            return (gr.skip(),) * 5
        if starred is None:
            gr.Warning(f"No gallery entry {eid!r}: select a run first.")
            return (gr.skip(),) * 5
        view = views.get(session_of(request))
        return (entry_star(eid, request), gallery_get(eid, request)[2], *draw(view, request))

    ui.star_btn.click(toggle_star, ui.entry_id, [ui.star_btn, ui.entry_md, *grid_out], api_visibility="private",
                      queue=False)

    def gallery_star(entry_id: str, starred: bool | None = None, request: gr.Request = None) -> dict:
        """Star (starred=True) or unstar (False) a run; leave `starred` out to flip it.
        Returns {"id", "starred"}."""
        owner = owner_of(request)
        try:
            entry = rt.gallery.get(str(entry_id or "").strip(), owner)
            if entry is None:
                raise gr.Error(f"No gallery entry {entry_id!r}: take an id from /gallery_search or /gallery_list.")
            new = (not entry.starred) if starred is None else bool(starred)
            rt.gallery.set_starred(entry.id, new, owner)
        except EngineError as err:
            raise gr.Error(friendly(err)) from None
        return {"id": entry.id, "starred": new}

    gr.api(gallery_star, api_name="gallery_star")

    def gallery_search(search: str = "", variant: str = "", mode: str = "", starred_only: bool = False,
                       limit: int = PAGE_SIZE, offset: int = 0, request: gr.Request = None) -> dict:
        """Finished runs as data, newest first: {"total", "offset", "entries": [{id, title, prompt, variant,
        mode, seed, starred, created_at, duration}]}. search: prompt words or "a phrase", any case."""
        try:
            page = rt.gallery.query(search, variant or None, mode or None, bool(starred_only),
                                    limit=max(0, min(int(limit), 500)), offset=int(offset), owner=owner_of(request))
        except EngineError as err:
            raise gr.Error(friendly(err)) from None
        return {"total": page.total, "offset": page.offset, "more": page.more, "entries": [
            {"id": e.id, "title": e.title, "prompt": e.prompt, "variant": e.variant, "mode": e.mode,
             "seed": e.seed, "starred": e.starred, "created_at": e.created_at, "duration": e.duration}
            for e in page.entries]}

    gr.api(gallery_search, api_name="gallery_search")

    def gallery_delete(eid, request: gr.Request):
        """Delete a run (its video, thumbnail and settings) from the gallery."""
        eid = (eid or "").strip()
        try:
            ok = bool(eid) and rt.gallery.delete(eid, owner_of(request))
            msg = f"Deleted {eid}." if ok else f"No gallery entry {eid!r} to delete."
        except EngineError as err:
            ok, msg = False, friendly(err)
        (gr.Info if ok else gr.Warning)(msg)
        note = esc(msg) if ok else f"**Problem:** {esc(msg)}"    # also in the page (and the API's answer)
        items, count, _more = draw(views.get(session_of(request)), request)
        return items, count, "", None, gr.update(visible=False, value=None), note, None

    def after_delete(request: gr.Request):
        return (*after_grid_change(request), star_label(None))

    ui.delete_btn.click(gallery_delete, ui.entry_id, [ui.grid, ui.gallery_count, ui.entry_id, *entry_outputs],
                        api_name="gallery_delete", queue=False).then(
        after_delete, None, [ui.gallery_count, ui.more_btn, ui.star_btn], api_visibility="private", queue=False)

    def reuse_settings(eid, request: gr.Request = None):
        """Fill the Create form with a finished run's settings (and switch to it); for a dub, the Dub
        tab's model and settings (the video and voice are chosen again)."""
        from studio.dub_tab import dub_values_from_settings

        eid = (eid or "").strip()
        unchanged = [gr.update()] * (len(ui.form) + 2 + len(ui.dub.settings))
        try:
            entry = rt.gallery.get(eid, owner_of(request)) if eid else None
            if entry is not None and entry.settings.get("mode") == "dub":
                gr.Info("The dub's model and settings are filled in: choose the video and the voice.")
                return unchanged[:len(ui.form) + 1] + [gr.Tabs(selected="dub")] + \
                    dub_values_from_settings(entry.settings)
            s = rt.gallery.reuse_settings(eid, owner_of(request))
        except KeyError:
            gr.Warning(f"No gallery entry {eid!r}: select a run first.")
            return unchanged
        except EngineError as err:
            gr.Warning(friendly(err))
            return unchanged
        return values_from_settings(s, start_variant, keep=gr.update()) + [
            gr.Tabs(selected=s.get("mode") or "TIA"), gr.Tabs(selected="create")] + unchanged[:len(ui.dub.settings)]

    ui.reuse_btn.click(reuse_settings, ui.entry_id, ui.form + [ui.mode_tabs, ui.main_tabs] + ui.dub.settings,
                       api_name="reuse_settings", queue=False)
    return render
