"""Files in and out: checking a given input path, and the temporary file beside a destination
that is renamed into place only once complete."""
from __future__ import annotations

import os
import uuid
from pathlib import Path

from engine.errors import InputError


def _check_file(path: str | os.PathLike | None, kind: str) -> Path:
    if path is None or str(path).strip() == "":
        raise InputError(f"No {kind.lower()} file was given.", hint=f"Choose or upload a {kind.lower()} file.")
    p = Path(path)
    if not p.exists():
        raise InputError(f"{kind} file not found: {p.name}.", hint="Check the path or upload the file again.")
    if p.is_dir():
        raise InputError(f"{p.name} is a folder, not {kind.lower()} file.", hint=f"Choose a {kind.lower()} file.")
    return p


def _temp_path_beside(path: Path, suffix: str) -> Path:
    return path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.part{suffix}")


def _remove_quietly(p: Path | None) -> None:
    if p is None:
        return
    try:
        p.unlink()
    except FileNotFoundError:
        pass
    except OSError:
        pass
