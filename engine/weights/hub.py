"""Talking to the Hub about one file: offline mode, the endpoint, its size and sha256, the transfer.

Transfers go through huggingface_hub (so `HF_ENDPOINT` and tokens work as usual); byte progress
is forwarded to a callback and a cancel event stops a transfer. By default a transfer resumes
across runs (see `engine.weights.resume`); `HUMO_DOWNLOAD=hub` uses plain `hf_hub_download`.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from engine.errors import Cancelled, WeightsError
from engine.weights.components import Component
from engine.weights.status import _list_paths

ProgressCallback = Callable[[str, str, int, "int | None"], None]
MessageCallback = Callable[[str], None]


def _env_true(name: str) -> bool:
    return os.environ.get(name, "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def is_offline() -> bool:
    """Offline mode, read from the environment at call time (HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE)."""
    return _env_true("HF_HUB_OFFLINE") or _env_true("TRANSFORMERS_OFFLINE")


def _endpoint() -> str:
    from huggingface_hub import constants

    return (os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")


@dataclass
class _Planned:
    comp: Component
    repo_path: str
    rel: str
    force: bool                   # the local copy is damaged: fetch it again from scratch
    size: int | None = None
    sha256: str | None = None
    commit: str | None = None
    etag: str | None = None


def _missing_error(st_label: str, paths: list[str], command: str, why: str) -> WeightsError:
    return WeightsError(f"Cannot download {st_label} weights ({why}); missing: {_list_paths(paths)}.",
                        hint=f"When online, run: {command}")


def _progress_bar_class(callback: ProgressCallback | None, component: str, rel: str,
                        known_total: int | None, cancel=None):
    """A tqdm stand-in that huggingface_hub drives (`tqdm_class=`); forwards bytes to `callback`.

    When `cancel` (a threading.Event) is set, the next update raises Cancelled, which stops the
    transfer; a resumable transfer keeps its partial file (huggingface_hub's own transfer
    removes its temporary file).
    """

    class _Bar:
        def __init__(self, *args, total=None, initial=0, **kwargs):
            self.total = total if total is not None else known_total
            self.n = initial or 0
            self.format_dict: dict = {}
            self._last = 0.0
            self._emit(force=True)

        def _emit(self, force: bool = False) -> None:
            if callback is None:
                return
            now = time.monotonic()
            if force or now - self._last >= 0.1 or (self.total and self.n >= self.total):
                self._last = now
                callback(component, rel, max(self.n, 0), self.total)

        def update(self, n: int | float | None = 1) -> None:
            if cancel is not None and cancel.is_set():
                raise Cancelled("Download cancelled.")
            self.n += int(n or 0)
            self._emit()

        def update_transfer(self, n: int | float | None = 1) -> None:
            pass  # network bytes (Xet); progress follows bytes written instead

        def set_postfix_str(self, *args, **kwargs) -> None:
            pass

        set_transfer_postfix_str = set_postfix_str
        set_description = set_postfix_str

        def refresh(self, *args, **kwargs) -> None:
            pass

        def close(self) -> None:
            self._emit(force=True)

        def __enter__(self):
            return self

        def __exit__(self, *exc) -> None:
            self.close()

    return _Bar


def _hub_metadata(plan: _Planned, endpoint: str, command: str, label: str, missing: list[str]) -> None:
    """Fill size / sha256 / commit from a HEAD request; fail fast when the Hub can't be reached."""
    import httpx2
    from huggingface_hub import get_hf_file_metadata, hf_hub_url
    from huggingface_hub.errors import (EntryNotFoundError, GatedRepoError, HfHubHTTPError,
                                        OfflineModeIsEnabled, RepositoryNotFoundError, RevisionNotFoundError)

    url = hf_hub_url(plan.comp.repo_id, plan.repo_path, revision=plan.comp.revision, endpoint=endpoint)
    try:
        meta = get_hf_file_metadata(url, timeout=10, endpoint=endpoint, retry_on_errors=False)
    except OfflineModeIsEnabled:
        raise _missing_error(label, missing, command, "offline mode is on") from None
    except (httpx2.ConnectError, httpx2.TimeoutException, httpx2.NetworkError) as err:
        raise _missing_error(label, missing, command, f"cannot reach {endpoint}: {type(err).__name__}") from None
    except GatedRepoError:
        raise WeightsError(f"{plan.comp.repo_id} is gated: accept its terms on the Hub and log in "
                           "(huggingface-cli login), then run the command again.") from None
    except RepositoryNotFoundError:
        raise WeightsError(f"Repository {plan.comp.repo_id} was not found at {endpoint}.",
                           hint="Check HF_ENDPOINT and your token.") from None
    except (EntryNotFoundError, RevisionNotFoundError):
        raise WeightsError(f"{plan.repo_path} was not found in {plan.comp.repo_id}.",
                           hint="The release layout may have changed; please report it.") from None
    except HfHubHTTPError as err:
        raise WeightsError(f"The Hub answered {err.response.status_code} for {plan.repo_path} "
                           f"({plan.comp.repo_id}).", hint="Try again later.") from None
    plan.size = meta.size
    plan.commit = meta.commit_hash
    plan.etag = meta.etag
    etag = (meta.etag or "").lower()
    plan.sha256 = etag if len(etag) == 64 and all(c in "0123456789abcdef" for c in etag) else None


@dataclass
class _Fetched:
    """A file whose bytes are all on disk, not yet checked.

    `path` is where they are; `resumed_from` the offset a resumed transfer started at (0 when
    fetched from zero). After the check, `finish()` puts the file in place and returns its path;
    `discard()` deletes it so the next transfer starts from zero.
    """

    plan: _Planned
    weights_dir: Path
    path: Path
    resumed_from: int = 0
    resumable: bool = False

    def finish(self) -> Path:
        if self.resumable:
            from engine.weights import resume

            self.path = resume.finish(self.weights_dir, self.plan.rel)
        return self.path

    def discard(self) -> None:
        if self.resumable:
            from engine.weights import resume

            resume.discard(self.weights_dir, self.plan.rel)
        else:
            _forget_download(self.weights_dir, self.plan, self.path)


def _fetch(plan: _Planned, weights_dir: Path, endpoint: str, progress: ProgressCallback | None,
           cancel=None, say: MessageCallback | None = None) -> _Fetched:
    """Transfer one file: resumable across runs by default, or plain hf_hub_download (HUMO_DOWNLOAD=hub)."""
    from engine.weights import resume

    if resume.download_mode() == "hub":
        return _Fetched(plan, weights_dir, _fetch_with_hub(plan, weights_dir, endpoint, progress, cancel))
    return _fetch_resumable(plan, weights_dir, endpoint, progress, cancel, say or (lambda _m: None))


def _fetch_resumable(plan: _Planned, weights_dir: Path, endpoint: str, progress: ProgressCallback | None,
                     cancel, say: MessageCallback) -> _Fetched:
    import httpx2
    from huggingface_hub import hf_hub_url
    from huggingface_hub.utils import build_hf_headers
    from huggingface_hub.errors import HfHubHTTPError

    from engine.weights import resume
    from engine.weights.status import format_bytes

    url = hf_hub_url(plan.comp.repo_id, plan.repo_path, revision=plan.commit or plan.comp.revision,
                     endpoint=endpoint)
    # identity: byte offsets must be offsets in the file itself, not in a compressed stream
    headers = build_hf_headers(headers={"Accept-Encoding": "identity"})
    t = resume.Transfer(plan.comp.repo_id, plan.repo_path, plan.rel, url, plan.etag, plan.size,
                        plan.sha256, plan.commit)
    bar = _progress_bar_class(progress, plan.comp.key, plan.rel, plan.size, cancel)

    def kept() -> str:
        got = resume.read_partial(weights_dir, plan.rel)
        if got is None or not got.size:
            return "Run the same command again."
        return (f"The {format_bytes(got.size)} fetched so far are kept; "
                "run the same command again to resume.")

    try:
        offset = resume.fetch(t, weights_dir, headers, bar, say)
    except (httpx2.HTTPError, HfHubHTTPError) as err:
        raise WeightsError(f"Downloading {plan.rel} failed ({type(err).__name__}).",
                           hint="Check the connection. " + kept()) from None
    except OSError as err:
        if "Consistency check failed" in str(err):
            raise WeightsError(f"Downloading {plan.rel} was cut short (the connection dropped).",
                               hint=kept()) from None
        raise WeightsError(f"Cannot write {plan.rel}: {err}.", hint="Check the folder and free space.") from None
    return _Fetched(plan, weights_dir, resume.partial_path(weights_dir, plan.rel), offset, resumable=True)


def _fetch_with_hub(plan: _Planned, weights_dir: Path, endpoint: str, progress: ProgressCallback | None,
                    cancel=None) -> Path:
    import httpx2
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, OfflineModeIsEnabled

    local_root = weights_dir / plan.comp.local_dir if plan.comp.local_dir else weights_dir
    bar = _progress_bar_class(progress, plan.comp.key, plan.rel, plan.size, cancel)
    try:
        path = hf_hub_download(plan.comp.repo_id, plan.repo_path, revision=plan.commit or plan.comp.revision,
                               local_dir=str(local_root), endpoint=endpoint, tqdm_class=bar,
                               force_download=plan.force, etag_timeout=10)
    except (OfflineModeIsEnabled, LocalEntryNotFoundError, httpx2.HTTPError, HfHubHTTPError) as err:
        raise WeightsError(f"Downloading {plan.rel} failed ({type(err).__name__}).",
                           hint="Check the connection and run the same command again.") from None
    except OSError as err:
        if "Consistency check failed" in str(err):
            raise WeightsError(f"Downloading {plan.rel} was cut short (the connection dropped).",
                               hint="Run the same command again.") from None
        raise WeightsError(f"Cannot write {plan.rel}: {err}.", hint="Check the folder and free space.") from None
    return Path(path)


def _forget_download(weights_dir: Path, plan: _Planned, path: Path) -> None:
    """Delete a bad file and huggingface_hub's note about it, so the next run fetches it again."""
    path.unlink(missing_ok=True)
    local_root = weights_dir / plan.comp.local_dir if plan.comp.local_dir else weights_dir
    meta = local_root / ".cache" / "huggingface" / "download" / (plan.repo_path + ".metadata")
    meta.unlink(missing_ok=True)
