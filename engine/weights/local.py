"""Finding a variant's files locally: the weights folder, its manifest and the Hugging Face cache.

Nothing here uses the network. `find` says what is present, missing or incomplete; `require`
and `locate` turn a complete variant into real paths, or raise with the command that fixes it.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterable

from engine.errors import WeightsError
from engine.media.files import atomic_write
from engine.humo.variants import VARIANTS, Variant
from engine.weights.checks import check_file
from engine.weights.components import Component, _variant, components_for, default_weights_dir, posix_dirname
from engine.weights.resume import read_partial
from engine.weights.status import ComponentStatus, FileStatus, Status

MANIFEST_NAME = ".humo-manifest.json"


def _hub_cache_dir() -> str:
    """The Hugging Face cache folder, read from the environment at call time."""
    env = os.environ
    if env.get("HF_HUB_CACHE"):
        return os.path.expanduser(env["HF_HUB_CACHE"])
    if env.get("HUGGINGFACE_HUB_CACHE"):
        return os.path.expanduser(env["HUGGINGFACE_HUB_CACHE"])
    home = env.get("HF_HOME") or os.path.join(env.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"),
                                               "huggingface")
    return os.path.join(os.path.expanduser(home), "hub")


def _from_cache(repo_id: str, repo_path: str, revision: str) -> str | None:
    from huggingface_hub import try_to_load_from_cache

    try:
        found = try_to_load_from_cache(repo_id, repo_path, cache_dir=_hub_cache_dir(), revision=revision)
    except Exception:  # a damaged cache folder must not stop the local check
        return None
    return found if isinstance(found, str) and os.path.isfile(found) else None


def read_manifest(weights_dir: str | os.PathLike) -> dict:
    p = Path(weights_dir) / MANIFEST_NAME
    try:
        data = json.loads(p.read_text())
    except (OSError, ValueError):
        return {"version": 1, "files": {}}
    if not isinstance(data, dict) or not isinstance(data.get("files"), dict):
        return {"version": 1, "files": {}}
    return data


def _write_manifest(weights_dir: Path, manifest: dict) -> None:
    weights_dir.mkdir(parents=True, exist_ok=True)
    with atomic_write(weights_dir / MANIFEST_NAME, what="the weights manifest") as tmp:
        tmp.write_text(json.dumps(manifest, indent=1, sort_keys=True))


def _file_status(comp: Component, repo_path: str, weights_dir: Path, manifest: dict) -> FileStatus:
    fs = _file_status_at(comp, repo_path, weights_dir, manifest)
    fs.repo_path = repo_path if comp.repo_id else None
    if fs.state != "present" and comp.repo_id:
        _note_partial(fs, weights_dir)
    return fs


def _note_partial(fs: FileStatus, weights_dir: Path) -> None:
    """An unfinished download of the file (`.partial/`) is reported, never counted as the file."""
    partial = read_partial(weights_dir, fs.path)
    if partial is None or not partial.trusted:
        return
    fs.partial_size = partial.trusted
    if fs.expected_size is None:
        fs.expected_size = partial.total


def _file_status_at(comp: Component, repo_path: str, weights_dir: Path, manifest: dict) -> FileStatus:
    rel = comp.local_rel(repo_path)
    if rel.endswith("/"):
        folder = weights_dir / rel
        files = [p for p in folder.rglob("*") if p.is_file()] if folder.is_dir() else []
        if not files:
            return FileStatus(rel, "missing")
        return FileStatus(rel, "present", str(folder), "weights", sum(p.stat().st_size for p in files))
    entry = manifest["files"].get(rel) or {}
    expected = entry.get("size") if isinstance(entry.get("size"), int) else None
    local = weights_dir / rel
    if local.is_file():
        source, location = "weights", str(local)
    elif comp.repo_id and (cached := _from_cache(comp.repo_id, repo_path, comp.revision)):
        source, location, expected = "cache", cached, None  # the manifest describes the weights folder only
    else:
        return FileStatus(rel, "missing", expected_size=expected)
    size = os.path.getsize(location)
    problem = check_file(location, expected)
    return FileStatus(rel, "incomplete" if problem else "present", location, source, size, expected,
                      problem or "")


def _index_shards(index_location: str) -> list[str]:
    with open(index_location, "rb") as f:
        index = json.loads(f.read())
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict) or not weight_map:
        raise ValueError("no weight_map")
    return sorted({str(v) for v in weight_map.values()})


def _component_status(comp: Component, weights_dir: Path, manifest: dict) -> ComponentStatus:
    cs = ComponentStatus(comp.key, comp.label, comp.optional, comp.repo_id, approx_bytes=comp.approx_bytes)
    for repo_path in comp.files:
        fs = _file_status(comp, repo_path, weights_dir, manifest)
        cs.files.append(fs)
        if repo_path == comp.index and fs.state == "missing":
            fs.detail = "the shard list; the shards it names are needed too"
        if repo_path == comp.index and fs.state == "present":
            try:
                shards = _index_shards(fs.location)
            except (OSError, ValueError):
                fs.state, fs.detail = "incomplete", "the index lists no shards"
                continue
            folder = posix_dirname(repo_path)
            for shard in shards:
                shard_repo_path = f"{folder}/{shard}" if folder else shard
                if fs.source == "cache":
                    # shards sit next to the index in the same cached snapshot
                    shard_loc = os.path.join(os.path.dirname(fs.location), shard)
                    rel = comp.local_rel(shard_repo_path)
                    if os.path.isfile(weights_dir / rel):
                        cs.files.append(_file_status(comp, shard_repo_path, weights_dir, manifest))
                    elif os.path.isfile(shard_loc):
                        problem = check_file(shard_loc)
                        cs.files.append(FileStatus(rel, "incomplete" if problem else "present", shard_loc,
                                                   "cache", os.path.getsize(shard_loc), None, problem or "",
                                                   shard_repo_path))
                    else:
                        cs.files.append(FileStatus(rel, "missing", repo_path=shard_repo_path))
                else:
                    cs.files.append(_file_status(comp, shard_repo_path, weights_dir, manifest))
    return cs


def find(variant: Variant | str, weights_dir: str | os.PathLike | None = None,
         include_optional: bool = True, components: Iterable[Component] | None = None) -> Status:
    """What is on disk for `variant`: each component's files, present / missing / incomplete.

    Looks in the weights folder first, then in the Hugging Face cache; never uses the network.
    Optional components are listed but do not count towards `complete`.
    """
    v = _variant(variant)
    wd = Path(weights_dir if weights_dir is not None else default_weights_dir())
    comps = tuple(components) if components is not None else components_for(v, include_optional)
    manifest = read_manifest(wd)
    return Status(v.name, v.label, str(wd), [_component_status(c, wd, manifest) for c in comps],
                  v.random_weights)


def require(variant: Variant | str, weights_dir: str | os.PathLike | None = None) -> Status:
    """`find`, raising WeightsError (with the command that fixes it) unless the variant is complete."""
    st = find(variant, weights_dir)
    if not st.complete:
        raise WeightsError(f"{st.label} weights are not ready in {st.weights_dir}: {st.problem()}.",
                           hint=f"Run: {st.command}")
    return st


def locate(variant: Variant | str, weights_dir: str | os.PathLike | None = None) -> dict:
    """Real paths for a complete variant, keyed like the Variant's fields.

    {"dit_files": [...], "vae_file", "t5_file", "tokenizer_dir", "whisper_dir", "separator"}: files
    may live in the weights folder or in the Hugging Face cache; "separator" is None when the
    optional vocal separator is absent. Raises WeightsError (with the fix) when incomplete.
    """
    v = _variant(variant)
    st = require(v, weights_dir)
    where = st.paths()

    def one(rel: str) -> str:
        rel = rel.rstrip("/")
        for key in (rel, rel + "/"):
            if key in where:
                return where[key]
        inside = sorted(p for p in where if p.startswith(rel + "/"))
        if not inside:
            raise WeightsError(f"{rel} is not part of the {v.label} files.")
        # the folder that holds the files (weights folder or cached snapshot)
        first = inside[0]
        loc = Path(where[first])
        for _ in range(first[len(rel) + 1:].count("/") + (0 if loc.is_dir() else 1)):
            loc = loc.parent
        return str(loc)

    sep = next((c for c in st.components if c.key == "separator"), None)
    return {
        "dit_files": [one(p) for p in v.dit_files],
        "vae_file": one(v.vae_file),
        "t5_file": one(v.t5_file),
        "tokenizer_dir": one(v.tokenizer_dir),
        "whisper_dir": one(v.whisper_dir),
        "separator": sep.files[0].location if sep is not None and sep.state == "present" else None,
    }


def weights_summary(weights_dir: str | os.PathLike | None = None) -> list[dict]:
    """Per variant, what the studio's variant picker shows: present?, size, what is missing, the fix."""
    out = []
    for name in VARIANTS:
        st = find(name, weights_dir)
        out.append({
            "variant": st.variant,
            "label": st.label,
            "random_weights": st.random_weights,
            "complete": st.complete,
            "size_on_disk": st.size_on_disk,
            "bytes_to_download": 0 if st.complete else st.bytes_to_download,
            "missing": st.missing_files,
            "incomplete": st.incomplete_files,
            "partial": st.partial_files,
            "separator": next((c.state for c in st.components if c.key == "separator"), None),
            "command": st.command,
        })
    return out
