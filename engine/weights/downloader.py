"""`download`: fetch what a variant still needs, check it, and record it in the manifest.

Local files are checked first, then the free disk space (less what partial downloads already
hold); each fetched file is verified (size, format, the Hub's sha256) before it is put in place
and counts, and a damaged one is removed. Transfers resume across runs: see `engine.weights.resume`.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Iterable

from engine.errors import Cancelled, OutOfResources, WeightsError
from engine.media.files import file_sha256
from engine.humo.variants import Variant
from engine.weights.checks import check_file
from engine.weights.components import Component, _variant, components_for, default_weights_dir, fetch_command
from engine.weights import resume
from engine.weights.hub import (MessageCallback, ProgressCallback, _endpoint, _fetch, _Fetched, _hub_metadata,
                                _missing_error, _Planned, is_offline)
from engine.weights.local import _component_status, _write_manifest, find, read_manifest
from engine.weights.status import Status, _list_paths, format_bytes

# Keep this much free on top of what a download needs (temporary files, other programs).
DISK_MARGIN_BYTES = 2 * 1024**3


def _free_bytes(folder: Path) -> int:
    p = folder.resolve()
    while not p.exists() and p != p.parent:
        p = p.parent
    return shutil.disk_usage(p).free


def check_disk_space(folder: str | os.PathLike, needed: int, what: str = "the download") -> None:
    """Raise OutOfResources unless `folder`'s disk has `needed` bytes plus a margin free."""
    free = _free_bytes(Path(folder))
    want = needed + DISK_MARGIN_BYTES
    if free < want:
        raise OutOfResources(
            f"Not enough disk space for {what}: it needs {format_bytes(want)} "
            f"({format_bytes(needed)} of files + {format_bytes(DISK_MARGIN_BYTES)} margin) "
            f"but {Path(folder)} has {format_bytes(free)} free.",
            hint="Free some space or choose another folder with --weights.")


def _verify(plan: _Planned, path: Path, progress: ProgressCallback | None) -> str | None:
    size = path.stat().st_size
    if plan.size is not None and size != plan.size:
        return f"its size is {size:,} bytes, the Hub says {plan.size:,}"
    problem = check_file(path, plan.size)
    if problem:
        return problem
    if plan.sha256:
        cb = (lambda done: progress(plan.comp.key, plan.rel + " (checking sha256)", done, size)) if progress else None
        digest = file_sha256(path, cb)
        if digest != plan.sha256:
            return f"its sha256 is {digest[:12]}…, the Hub says {plan.sha256[:12]}…"
    return None


def download(variant: Variant | str, weights_dir: str | os.PathLike | None = None, *,
             progress: ProgressCallback | None = None, include_optional: bool = False,
             include_restricted: bool = False, components: Iterable[Component] | None = None,
             on_message: MessageCallback | None = None, cancel=None) -> Status:
    """Fetch what `variant` still needs into `weights_dir`; return the final `find` status.

    Local files are checked first: a complete variant never touches the network. Otherwise
    this fails at once (no retry loop) when offline or when the Hub can't be reached, checks
    the free disk space against what is left to fetch, downloads with huggingface_hub
    (`progress(component, file, bytes_done, bytes_total)` follows each file), verifies sizes
    and the Hub's sha256, and records them in the manifest. Setting `cancel` (a threading.Event)
    stops it with Cancelled; files finished so far are kept. A component whose licence restricts
    use (`Component.licence`) is fetched only with `include_restricted`, and its licence is said first.

    Resuming: a dropped connection is resumed within the run (huggingface_hub retries with a
    Range request); a transfer stopped by Cancel, Ctrl-C, a lost connection or a killed process
    leaves its partial file, and the next run continues it from where it stopped (unless the file
    changed on the Hub meanwhile); files completed earlier are never fetched again.
    `HUMO_DOWNLOAD=hub` turns the cross-run resume off (plain hf_hub_download).
    """
    v = _variant(variant)
    wd = Path(weights_dir if weights_dir is not None else default_weights_dir())
    say = on_message or (lambda _msg: None)
    comps = tuple(components) if components is not None else tuple(
        c for c in components_for(v, include_optional) if include_restricted or not c.licence)
    command = fetch_command(v, wd, with_separator=include_optional and components is None)
    status = find(v, wd, components=comps)

    if v.random_weights:
        if status.complete:
            return status
        raise WeightsError(f"The tiny variant is made locally, not downloaded; {status.problem()}.",
                           hint=f"Run: {fetch_command(v, wd)}")

    todo_files = [f.path for c in status.components for f in c.files if f.state != "present"]
    if not todo_files:
        say(f"{v.label}: all files present in {wd}.")
        return status
    if is_offline():
        raise _missing_error(v.label, todo_files, command, "offline mode is on: HF_HUB_OFFLINE is set")

    mode = resume.download_mode()
    endpoint = _endpoint()
    plans = _plan(status, comps, wd, endpoint, command, v.label, todo_files, progress, say)

    total = sum(_planned_bytes(p) for p in plans)
    have = sum(_resumable(wd, p) for p in plans) if mode == "resume" else 0
    needed = total - have
    check_disk_space(wd, needed, f"{v.label} ({len(plans)} files)")
    for comp in comps:
        if comp.licence and any(p.comp is comp for p in plans):
            say(f"{comp.label}: {comp.licence}.")
    if plans:
        already = f" ({format_bytes(have)} of {format_bytes(total)} already here from before)" if have else ""
        say(f"Fetching {len(plans)} file(s), {format_bytes(needed)}, from {endpoint} into {wd}{already}.")

    for plan in plans:
        if cancel is not None and cancel.is_set():
            raise Cancelled("Download cancelled.")
        _fetch_checked(plan, wd, endpoint, progress, cancel, say, command)

    final = find(v, wd, components=comps)
    bad = [f.path for c in final.components for f in c.files if f.state != "present"]
    if bad:
        raise WeightsError(f"{v.label} is still incomplete after the download: {_list_paths(bad)}.",
                           hint=f"Run again: {command}")
    say(f"{v.label}: ready ({format_bytes(final.size_on_disk)}).")
    return final


def _planned_bytes(plan: _Planned) -> int:
    return plan.size if plan.size is not None else plan.comp.approx_bytes // max(len(plan.comp.files), 1)


def _resumable(wd: Path, plan: _Planned) -> int:
    return resume.reusable_bytes(wd, plan.rel, plan.comp.repo_id, plan.repo_path, plan.etag, plan.size)


def _fetch_checked(plan: _Planned, wd: Path, endpoint: str, progress: ProgressCallback | None, cancel,
                   say: MessageCallback, command: str) -> Path:
    """Fetch one file, verify it, put it in place and record it; return its final path.

    A resumed file that fails the check is fetched once more from zero (the old partial was
    damaged); a file fetched from zero that fails it is removed and reported.
    """
    got: _Fetched = _fetch(plan, wd, endpoint, progress, cancel, say)
    problem = _verify(plan, got.path, progress)
    if problem and got.resumed_from:
        say(f"{plan.rel} failed its check after resuming ({problem}): the partial download was damaged; "
            "fetching it again from zero.")
        got.discard()
        got = _fetch(plan, wd, endpoint, progress, cancel, say)
        problem = _verify(plan, got.path, progress)
    if problem:
        got.discard()
        raise WeightsError(f"{plan.rel} is damaged after download: {problem}.",
                           hint=f"It was removed; run again: {command}")
    path = got.finish()
    _record(wd, plan, path)
    return path


def _record(wd: Path, plan: _Planned, path: Path) -> None:
    manifest = read_manifest(wd)
    manifest["files"][plan.rel] = {"size": path.stat().st_size, "sha256": plan.sha256,
                                   "repo_id": plan.comp.repo_id, "repo_path": plan.repo_path,
                                   "commit": plan.commit}
    _write_manifest(wd, manifest)


def _plan(status: Status, comps: tuple[Component, ...], wd: Path, endpoint: str, command: str,
          label: str, todo_files: list[str], progress: ProgressCallback | None,
          say: MessageCallback) -> list[_Planned]:
    """The files to fetch, with their Hub sizes and hashes. A missing shard index is fetched here."""
    plans: list[_Planned] = []
    by_key = {c.key: c for c in comps}
    for cs in status.components:
        comp = by_key[cs.key]
        if comp.repo_id is None:
            continue
        if comp.index:
            idx = next(f for f in cs.files if f.repo_path == comp.index)
            if idx.state != "present":
                plan = _Planned(comp, comp.index, idx.path, force=idx.state == "incomplete")
                _hub_metadata(plan, endpoint, command, label, todo_files)
                say(f"Reading the shard list {idx.path}.")
                _fetch_checked(plan, wd, endpoint, progress, None, say, command)
                cs = _component_status(comp, wd, read_manifest(wd))  # now with its shards
        for fs in cs.files:
            if fs.state == "present" or fs.repo_path is None:
                continue
            plan = _Planned(comp, fs.repo_path, fs.path, force=fs.state == "incomplete")
            _hub_metadata(plan, endpoint, command, label, todo_files)
            plans.append(plan)
    return plans
