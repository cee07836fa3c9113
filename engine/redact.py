"""What may leave the machine: file names, never the server's absolute paths.

A studio's settings travel inside every MP4 it makes (the comment tag) and a gallery's
`settings.json`; its messages go to whoever uses it. Both keep the names of the files a run
used, and drop the folders they sat in (upload caches, home folders, the outputs folder's
location). A path inside the folder the program runs from is shown relative to it
(``outputs/run-1.mp4``), any other as its file name. Settings written to a file are strict
JSON: non-finite numbers turn into null, since JSON has no NaN.
"""
from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path
from typing import Any

# An absolute POSIX path inside free text: "/" not preceded by a word character, a dot, a colon or
# another slash (so "http://host/x", "a/b" and "./x" are left alone), with at least two parts (so
# an API name such as "/gallery_search" is too).
_PART = r"[^\s'\"`<>|,;()\[\]{}*?/]+"
_ABS_PATH = re.compile(rf"(?<![\w.:/~-])/{_PART}/(?:{_PART}/?)*")


def shown_path(path: str | os.PathLike, base: str | os.PathLike | None = None) -> str:
    """How a path is shown to people: relative to `base` (default: the working folder) when it
    is inside it, else its last component alone."""
    p = Path(path)
    if not p.is_absolute():
        return p.as_posix()
    root = Path(base) if base is not None else Path.cwd()
    try:
        rel = p.resolve().relative_to(root.resolve())
    except (ValueError, OSError):
        return p.name or p.as_posix()
    return rel.as_posix() if rel.parts else "."


def redact_text(text: str, base: str | os.PathLike | None = None) -> str:
    """`text` with every absolute path replaced by `shown_path` of it."""
    return _ABS_PATH.sub(lambda m: _shown_match(m.group(0), base), str(text))


def _shown_match(raw: str, base) -> str:
    trail = ""
    while raw and raw[-1] in ".:":          # the end of a sentence, not of the path
        raw, trail = raw[:-1], raw[-1] + trail
    if not raw or raw == "/":
        return raw + trail
    return shown_path(raw, base) + trail


# Values that are a person's words, never paths, even when they start with "/".
_TEXT_KEYS = frozenset({"prompt", "negative_prompt", "title"})


def redact_settings(value: Any, names_only: bool = True) -> Any:
    """A copy of settings (dicts, lists, scalars) with non-finite floats turned into None and (with
    `names_only`) absolute paths reduced to file names: safe to write into a file that leaves the machine."""
    if isinstance(value, dict):
        return {str(k): v if k in _TEXT_KEYS and isinstance(v, str) else redact_settings(v, names_only)
                for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact_settings(v, names_only) for v in value]
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if names_only and isinstance(value, str) and os.path.isabs(value) and "\n" not in value:
        return Path(value).name
    return value


def settings_json(settings: Any, names_only: bool = True, **dump_options: Any) -> str:
    """Settings as strict JSON (no NaN/Infinity), by default without server paths."""
    return json.dumps(redact_settings(settings, names_only), allow_nan=False, ensure_ascii=False, default=str,
                      **dump_options)
