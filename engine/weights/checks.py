"""File checks without the network: does a checkpoint file on disk look whole?"""
from __future__ import annotations

import json
import os
import struct
import zipfile
from pathlib import Path

from engine.weights.components import MB


def check_file(path: str | os.PathLike, expected_size: int | None = None) -> str | None:
    """Return None when the file looks whole, else a short reason ("truncated: ...").

    Checks the expected size when known, then the format: a safetensors header must parse and
    its data must fill the file exactly; a zip-format .pth must have a readable central
    directory (it is written last, so a cut-off file has none); json must parse.
    """
    p = Path(path)
    try:
        size = p.stat().st_size
    except OSError as err:
        return f"unreadable ({err.strerror or err})"
    if expected_size is not None and size != expected_size:
        what = "truncated" if size < expected_size else "wrong size"
        return f"{what}: {size:,} of {expected_size:,} bytes"
    if size == 0:
        return "empty file"
    name = p.name.lower()
    try:
        if name.endswith(".safetensors"):
            return _check_safetensors(p, size)
        if name.endswith((".pth", ".pt", ".bin", ".ckpt")):
            return _check_torch_file(p)
        if name.endswith(".json") and size < 64 * MB:
            with open(p, "rb") as f:
                json.loads(f.read())
            return None
    except (OSError, ValueError) as err:
        return f"unreadable ({err})"
    return None


def _check_safetensors(p: Path, size: int) -> str | None:
    if size < 8:
        return f"truncated: {size} bytes, no safetensors header"
    with open(p, "rb") as f:
        (header_len,) = struct.unpack("<Q", f.read(8))
        if header_len > size - 8 or header_len > 100 * MB:
            return f"truncated: header of {header_len:,} bytes does not fit in {size:,} bytes"
        try:
            header = json.loads(f.read(header_len))
        except ValueError:
            return "damaged safetensors header"
    end = 0
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            end = max(end, int(info["data_offsets"][1]))
        except (KeyError, TypeError, IndexError, ValueError):
            return "damaged safetensors header"
    want = 8 + header_len + end
    if size < want:
        return f"truncated: {size:,} of {want:,} bytes"
    if size > want:
        return f"wrong size: {size:,} bytes, header says {want:,}"
    return None


def _check_torch_file(p: Path) -> str | None:
    with open(p, "rb") as f:
        magic = f.read(4)
    if magic != b"PK\x03\x04":
        return None  # legacy (pickle) format: nothing cheap to check beyond the size
    try:
        with zipfile.ZipFile(p) as z:
            infos = z.infolist()
    except zipfile.BadZipFile:
        return "truncated: the zip directory at the end of the file is missing"
    if not infos:
        return "damaged: empty archive"
    return None
