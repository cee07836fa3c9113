"""What keeps a long-running studio's disk and memory flat: the work folder's leftovers, the
Gradio temp folder's age limit, and handing freed memory back to the system after a run."""
from __future__ import annotations

import ctypes
import gc
import logging
import time
from pathlib import Path

log = logging.getLogger("humo.studio")

# Gradio's temp folder (uploads, previews): every CACHE_SWEEP_S, files older than CACHE_MAX_AGE_S go.
# Finished videos and thumbnails are served from the outputs folder, never copied there.
CACHE_SWEEP_S, CACHE_MAX_AGE_S = 300, 1800
# Clips cut, isolated and mixed in the work folder are a cache: the newest are kept for reuse.
KEEP_CACHED_CLIPS = 24
CACHED_CLIP_PREFIXES = ("trim-", "vocals-", "background-", "stems-", "mix-")


def clean_workdir(workdir: str | Path) -> int:
    """At start: remove what an earlier process left in the work folder (partial files of a crash,
    finished runs that never reached the gallery, cached clips). Returns how many files went."""
    folder = Path(workdir)
    if not folder.is_dir():
        return 0
    removed = 0
    for path in folder.iterdir():
        if path.is_file() or path.is_symlink():
            try:
                path.unlink()
                removed += 1
            except OSError as err:
                log.warning("could not remove %s: %s", path, err)
    if removed:
        log.info("removed %d leftover file(s) from %s", removed, folder)
    return removed


def prune_workdir(workdir: str | Path, keep: int = KEEP_CACHED_CLIPS, min_age_s: float = 60.0) -> int:
    """After a run: keep only the newest `keep` cached clips (older than `min_age_s`, so a clip
    another request is about to use stays). Returns how many files went."""
    folder = Path(workdir)
    if not folder.is_dir():
        return 0
    now = time.time()
    clips = []
    for path in folder.iterdir():
        if path.is_file() and path.name.startswith(CACHED_CLIP_PREFIXES):
            try:
                clips.append((path.stat().st_mtime, path))
            except OSError:
                pass
    clips.sort(reverse=True)
    removed = 0
    for mtime, path in clips[keep:]:
        if now - mtime >= min_age_s:
            try:
                path.unlink()
                removed += 1
            except OSError:
                pass
    return removed


KEEP_PREVIEWS = 8


def preview_file(image, folder: str | Path) -> str:
    """A preview image as a PNG in the work folder (served from there, so Gradio keeps no copy);
    only the newest few previews stay."""
    import uuid

    from PIL import Image

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"preview-{uuid.uuid4().hex[:12]}.png"
    tmp = folder / f".part.{path.name}"
    Image.fromarray(image).save(tmp, format="PNG")
    tmp.replace(path)
    previews = sorted(folder.glob("preview-*.png"), key=lambda p: p.stat().st_mtime if p.exists() else 0)
    for old in previews[:-KEEP_PREVIEWS]:
        old.unlink(missing_ok=True)
    return str(path)


def sweep_upload_leftovers(folder: str | Path | None = None, min_age_s: float = 60.0) -> int:
    """Remove the empty `tmp*` files Gradio's upload parser leaves in its temp folder (a refused or
    duplicate upload); Gradio's own cache sweep does not know them. Returns how many went."""
    if folder is None:
        from gradio.utils import get_upload_folder

        folder = get_upload_folder()
    root = Path(folder)
    if not root.is_dir():
        return 0
    now, removed = time.time(), 0
    for path in root.glob("tmp*"):
        try:
            st = path.stat()
            if path.is_file() and st.st_size == 0 and now - st.st_mtime >= min_age_s:
                path.unlink()
                removed += 1
        except OSError:
            pass
    return removed


def release_memory() -> None:
    """Collect garbage and hand freed heap pages back to the system (glibc keeps them otherwise,
    so a server's memory only grows with each run's temporary arrays)."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass                 # not glibc: nothing to hand back this way
