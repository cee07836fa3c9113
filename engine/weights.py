"""Find, download and verify checkpoint files.

The weights folder mirrors the official download commands, e.g.

    huggingface-cli download bytedance-research/HuMo --local-dir weights/HuMo
    huggingface-cli download Wan-AI/Wan2.1-T2V-1.3B --local-dir weights/Wan2.1-T2V-1.3B

so a folder made by hand and one made here look the same. Each variant needs a few
*components* (DiT, VAE, text encoder, tokenizer, audio encoder, optional vocal separator);
each component is a handful of files from one Hub repository.

`find` never touches the network: it looks in the weights folder, then in the Hugging Face
cache. `download` checks local files first, then fetches only what is missing with
huggingface_hub (so `HF_ENDPOINT`, tokens and Xet storage work as usual), checks the sizes
and the LFS sha256 the Hub publishes, and records them in `.humo-manifest.json` so later
checks can spot a truncated file without hashing it again.
"""
from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import struct
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from engine.errors import Cancelled, OutOfResources, WeightsError
from engine.variants import VARIANTS, Variant, get_variant

MANIFEST_NAME = ".humo-manifest.json"
DEFAULT_WEIGHTS_DIR = "weights"
WEIGHTS_DIR_ENV = "HUMO_WEIGHTS_DIR"

GB = 1000**3
MB = 1000**2

# Keep this much free on top of what a download needs (temporary files, other programs).
DISK_MARGIN_BYTES = 2 * 1024**3

# Sizes of the released files, in bytes. They are approximate (rounded from the Hub's file
# listings) and only used for planning and display: exact sizes come from the Hub at download
# time and from the manifest afterwards.
APPROX_BYTES = {
    "HuMo-1.7B/ema.pth": int(3.5 * GB),
    "HuMo-17B/shards": int(34.0 * GB),
    "Wan2.1_VAE.pth": int(508 * MB),
    "models_t5_umt5-xxl-enc-bf16.pth": int(11.4 * GB),
    "google/umt5-xxl": int(21.5 * MB),
    "whisper-large-v3/model.safetensors": int(3.09 * GB),
    "Kim_Vocal_2.onnx": int(66.8 * MB),
}

ProgressCallback = Callable[[str, str, int, "int | None"], None]
MessageCallback = Callable[[str], None]


# --------------------------------------------------------------------------------------------
# The component table
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Component:
    """A set of files from one Hub repository (or made locally when `repo_id` is None).

    `files` are paths inside the repository; they land under `<weights>/<local_dir>/`.
    An entry ending in "/" is a folder that must exist and hold at least one file (only used
    for locally made weights, whose folder contents belong to the tool that makes them).
    `index` names a safetensors index json (one of `files`) whose weight_map lists more files:
    the shards, which sit next to it.
    """

    key: str
    label: str
    repo_id: str | None
    local_dir: str
    files: tuple[str, ...]
    approx_bytes: int
    index: str | None = None
    optional: bool = False
    revision: str = "main"

    @property
    def allow_patterns(self) -> list[str]:
        """The same selection as `snapshot_download(allow_patterns=...)` patterns."""
        pats = list(self.files)
        if self.index:
            pats.append(f"{posix_dirname(self.index)}/*.safetensors" if "/" in self.index else "*.safetensors")
        return pats

    def local_rel(self, repo_path: str) -> str:
        """Path of a repository file relative to the weights folder."""
        return f"{self.local_dir}/{repo_path}" if self.local_dir else repo_path


def posix_dirname(path: str) -> str:
    return path.rsplit("/", 1)[0] if "/" in path else ""


HUMO_REPO = "bytedance-research/HuMo"
WAN_REPO = "Wan-AI/Wan2.1-T2V-1.3B"
WHISPER_REPO = "openai/whisper-large-v3"
SEPARATOR_REPO = "huangjackson/Kim_Vocal_2"

DIT_1_7B = Component(
    key="dit", label="HuMo-1.7B DiT", repo_id=HUMO_REPO, local_dir="HuMo",
    files=("HuMo-1.7B/ema.pth",), approx_bytes=APPROX_BYTES["HuMo-1.7B/ema.pth"])
# The index lists the shards; the zero_vae_*.pt files of the repo are not needed (the
# engine computes zero latents itself), nor the other model's folder.
DIT_17B = Component(
    key="dit", label="HuMo-17B DiT", repo_id=HUMO_REPO, local_dir="HuMo",
    files=("HuMo-17B/humo.safetensors.index.json",), index="HuMo-17B/humo.safetensors.index.json",
    approx_bytes=APPROX_BYTES["HuMo-17B/shards"])
VAE = Component(
    key="vae", label="Wan2.1 VAE", repo_id=WAN_REPO, local_dir="Wan2.1-T2V-1.3B",
    files=("Wan2.1_VAE.pth",), approx_bytes=APPROX_BYTES["Wan2.1_VAE.pth"])
T5 = Component(
    key="t5", label="umT5-XXL text encoder (bf16)", repo_id=WAN_REPO, local_dir="Wan2.1-T2V-1.3B",
    files=("models_t5_umt5-xxl-enc-bf16.pth",), approx_bytes=APPROX_BYTES["models_t5_umt5-xxl-enc-bf16.pth"])
TOKENIZER = Component(
    key="tokenizer", label="umT5 tokenizer", repo_id=WAN_REPO, local_dir="Wan2.1-T2V-1.3B",
    files=tuple(f"google/umt5-xxl/{n}" for n in
                ("special_tokens_map.json", "spiece.model", "tokenizer.json", "tokenizer_config.json")),
    approx_bytes=APPROX_BYTES["google/umt5-xxl"])
# Only what the audio encoder needs: no decoder-only extras, tokenizer or other weight formats.
WHISPER = Component(
    key="whisper", label="Whisper large-v3 (audio encoder)", repo_id=WHISPER_REPO, local_dir="whisper-large-v3",
    files=("config.json", "preprocessor_config.json", "model.safetensors"),
    approx_bytes=APPROX_BYTES["whisper-large-v3/model.safetensors"])
SEPARATOR = Component(
    key="separator", label="Kim_Vocal_2 vocal separator", repo_id=SEPARATOR_REPO, local_dir="audio_separator",
    files=("Kim_Vocal_2.onnx",), approx_bytes=APPROX_BYTES["Kim_Vocal_2.onnx"], optional=True)

SHARED = (VAE, T5, TOKENIZER, WHISPER)


def _tiny_components(v: Variant) -> tuple[Component, ...]:
    """The tiny variant's files are written by `python -m engine make-tiny DIR`, never downloaded."""
    return (
        Component("dit", "tiny DiT", None, "", tuple(v.dit_files), 0),
        Component("vae", "tiny VAE", None, "", (v.vae_file,), 0),
        Component("t5", "tiny text encoder", None, "", (v.t5_file,), 0),
        Component("tokenizer", "tiny tokenizer", None, "", (v.tokenizer_dir.rstrip("/") + "/",), 0),
        Component("whisper", "tiny audio encoder", None, "", (v.whisper_dir.rstrip("/") + "/",), 0),
    )


COMPONENTS: dict[str, tuple[Component, ...]] = {
    "humo-1.7b": (DIT_1_7B, *SHARED, SEPARATOR),
    "humo-17b": (DIT_17B, *SHARED, SEPARATOR),
    "tiny": _tiny_components(VARIANTS["tiny"]),
}


def components_for(variant: Variant | str, include_optional: bool = True) -> tuple[Component, ...]:
    v = _variant(variant)
    comps = COMPONENTS.get(v.name)
    if comps is None:
        comps = _tiny_components(v) if v.random_weights else ()
    return tuple(c for c in comps if include_optional or not c.optional)


def default_weights_dir() -> str:
    return os.environ.get(WEIGHTS_DIR_ENV) or DEFAULT_WEIGHTS_DIR


def fetch_command(variant: Variant | str, weights_dir: str | os.PathLike | None = None,
                  with_separator: bool = False) -> str:
    """The exact command that gets a variant's files into `weights_dir`."""
    v = _variant(variant)
    wd = shlex.quote(str(weights_dir if weights_dir is not None else default_weights_dir()))
    if v.random_weights:
        return f"python -m engine make-tiny {wd}"
    extra = " --with-separator" if with_separator else ""
    return f"python -m engine download --variant {v.name} --weights {wd}{extra}"


def _variant(variant: Variant | str) -> Variant:
    if isinstance(variant, Variant):
        return variant
    try:
        return get_variant(variant)
    except KeyError as err:
        raise WeightsError(str(err.args[0])) from None


# --------------------------------------------------------------------------------------------
# File checks (no network)
# --------------------------------------------------------------------------------------------

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


# --------------------------------------------------------------------------------------------
# Status
# --------------------------------------------------------------------------------------------

@dataclass
class FileStatus:
    path: str                       # relative to the weights folder
    state: str                      # "present" | "missing" | "incomplete"
    location: str | None = None     # where it was found (weights folder or HF cache)
    source: str | None = None       # "weights" | "cache"
    size: int | None = None         # bytes on disk
    expected_size: int | None = None
    detail: str = ""
    repo_path: str | None = None    # path inside the Hub repository, when it comes from one

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class ComponentStatus:
    key: str
    label: str
    optional: bool
    repo_id: str | None
    files: list[FileStatus] = field(default_factory=list)
    approx_bytes: int = 0

    @property
    def state(self) -> str:
        states = {f.state for f in self.files}
        if states == {"present"}:
            return "present"
        if "incomplete" in states:
            return "incomplete"
        return "missing"

    @property
    def size_on_disk(self) -> int:
        return sum(f.size or 0 for f in self.files if f.state != "missing")

    def to_dict(self) -> dict:
        return {"key": self.key, "label": self.label, "optional": self.optional, "repo_id": self.repo_id,
                "state": self.state, "size_on_disk": self.size_on_disk, "approx_bytes": self.approx_bytes,
                "files": [f.to_dict() for f in self.files]}


@dataclass
class Status:
    variant: str
    label: str
    weights_dir: str
    components: list[ComponentStatus]
    random_weights: bool = False

    @property
    def required(self) -> list[ComponentStatus]:
        return [c for c in self.components if not c.optional]

    @property
    def complete(self) -> bool:
        return all(c.state == "present" for c in self.required)

    @property
    def missing_files(self) -> list[str]:
        return [f.path for c in self.required for f in c.files if f.state == "missing"]

    @property
    def incomplete_files(self) -> list[str]:
        return [f.path for c in self.required for f in c.files if f.state == "incomplete"]

    @property
    def size_on_disk(self) -> int:
        return sum(c.size_on_disk for c in self.components)

    @property
    def bytes_to_download(self) -> int:
        """Approximate bytes still to fetch for the required components."""
        total = 0
        for c in self.required:
            if c.state == "present":
                continue
            known = [f for f in c.files if f.expected_size]
            if known and len(known) == len(c.files):
                total += sum(f.expected_size for f in known if f.state != "present")
            else:
                total += max(c.approx_bytes - c.size_on_disk, 0)
        return total

    @property
    def command(self) -> str | None:
        return None if self.complete else fetch_command(self.variant, self.weights_dir)

    def paths(self) -> dict[str, str]:
        """Where each present file is, keyed by its path relative to the weights folder."""
        return {f.path: f.location for c in self.components for f in c.files
                if f.state == "present" and f.location}

    def to_dict(self) -> dict:
        return {"variant": self.variant, "label": self.label, "weights_dir": self.weights_dir,
                "random_weights": self.random_weights, "complete": self.complete,
                "size_on_disk": self.size_on_disk, "bytes_to_download": self.bytes_to_download,
                "missing": self.missing_files, "incomplete": self.incomplete_files,
                "command": self.command, "components": [c.to_dict() for c in self.components]}

    def problem(self) -> str:
        """One sentence naming what is wrong (for error messages)."""
        parts = []
        if self.missing_files:
            parts.append("missing " + _list_paths(self.missing_files))
        if self.incomplete_files:
            parts.append("incomplete " + _list_paths(self.incomplete_files))
        return "; ".join(parts)


def _list_paths(paths: list[str], limit: int = 6) -> str:
    shown = ", ".join(paths[:limit])
    return shown + (f" and {len(paths) - limit} more" if len(paths) > limit else "")


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
    tmp = weights_dir / (MANIFEST_NAME + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=1, sort_keys=True))
    os.replace(tmp, weights_dir / MANIFEST_NAME)


def _file_status(comp: Component, repo_path: str, weights_dir: Path, manifest: dict) -> FileStatus:
    fs = _file_status_at(comp, repo_path, weights_dir, manifest)
    fs.repo_path = repo_path if comp.repo_id else None
    return fs


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
            "separator": next((c.state for c in st.components if c.key == "separator"), None),
            "command": st.command,
        })
    return out


def format_bytes(n: int | None) -> str:
    if n is None:
        return "?"
    for unit, scale in (("GB", GB), ("MB", MB), ("kB", 1000)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


# --------------------------------------------------------------------------------------------
# Download
# --------------------------------------------------------------------------------------------

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


def _missing_error(st_label: str, paths: list[str], command: str, why: str) -> WeightsError:
    return WeightsError(f"Cannot download {st_label} weights ({why}); missing: {_list_paths(paths)}.",
                        hint=f"When online, run: {command}")


def _progress_bar_class(callback: ProgressCallback | None, component: str, rel: str,
                        known_total: int | None, cancel=None):
    """A tqdm stand-in that huggingface_hub drives (`tqdm_class=`); forwards bytes to `callback`.

    When `cancel` (a threading.Event) is set, the next update raises Cancelled, which stops the
    transfer; huggingface_hub then removes its temporary file.
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


def _sha256_of(path: Path, on_bytes: Callable[[int], None] | None = None) -> str:
    h = hashlib.sha256()
    done = 0
    with open(path, "rb") as f:
        while chunk := f.read(8 * 1024 * 1024):
            h.update(chunk)
            done += len(chunk)
            if on_bytes:
                on_bytes(done)
    return h.hexdigest()


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
    etag = (meta.etag or "").lower()
    plan.sha256 = etag if len(etag) == 64 and all(c in "0123456789abcdef" for c in etag) else None


def _fetch(plan: _Planned, weights_dir: Path, endpoint: str, progress: ProgressCallback | None,
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


def _verify(plan: _Planned, path: Path, progress: ProgressCallback | None) -> str | None:
    size = path.stat().st_size
    if plan.size is not None and size != plan.size:
        return f"its size is {size:,} bytes, the Hub says {plan.size:,}"
    problem = check_file(path, plan.size)
    if problem:
        return problem
    if plan.sha256:
        cb = (lambda done: progress(plan.comp.key, plan.rel + " (checking sha256)", done, size)) if progress else None
        digest = _sha256_of(path, cb)
        if digest != plan.sha256:
            return f"its sha256 is {digest[:12]}…, the Hub says {plan.sha256[:12]}…"
    return None


def download(variant: Variant | str, weights_dir: str | os.PathLike | None = None, *,
             progress: ProgressCallback | None = None, include_optional: bool = False,
             components: Iterable[Component] | None = None,
             on_message: MessageCallback | None = None, cancel=None) -> Status:
    """Fetch what `variant` still needs into `weights_dir`; return the final `find` status.

    Local files are checked first: a complete variant never touches the network. Otherwise
    this fails at once (no retry loop) when offline or when the Hub can't be reached, checks
    the free disk space against what is left to fetch, downloads with huggingface_hub
    (`progress(component, file, bytes_done, bytes_total)` follows each file), verifies sizes
    and the Hub's sha256, and records them in the manifest. Setting `cancel` (a threading.Event)
    stops it with Cancelled; files finished so far are kept.

    Resuming: a dropped connection is resumed within the run (huggingface_hub retries with a
    Range request); files completed by an earlier run are kept and never fetched again.
    """
    v = _variant(variant)
    wd = Path(weights_dir if weights_dir is not None else default_weights_dir())
    say = on_message or (lambda _msg: None)
    comps = tuple(components) if components is not None else components_for(v, include_optional)
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

    endpoint = _endpoint()
    plans = _plan(status, comps, wd, endpoint, command, v.label, todo_files, progress, say)

    needed = sum(p.size if p.size is not None else p.comp.approx_bytes // max(len(p.comp.files), 1)
                 for p in plans)
    check_disk_space(wd, needed, f"{v.label} ({len(plans)} files)")
    if plans:
        say(f"Fetching {len(plans)} file(s), {format_bytes(needed)}, from {endpoint} into {wd}.")

    for plan in plans:
        if cancel is not None and cancel.is_set():
            raise Cancelled("Download cancelled.")
        path = _fetch(plan, wd, endpoint, progress, cancel)
        problem = _verify(plan, path, progress)
        if problem:
            _forget_download(wd, plan, path)
            raise WeightsError(f"{plan.rel} is damaged after download: {problem}.",
                               hint=f"It was removed; run again: {command}")
        _record(wd, plan, path)

    final = find(v, wd, components=comps)
    bad = [f.path for c in final.components for f in c.files if f.state != "present"]
    if bad:
        raise WeightsError(f"{v.label} is still incomplete after the download: {_list_paths(bad)}.",
                           hint=f"Run again: {command}")
    say(f"{v.label}: ready ({format_bytes(final.size_on_disk)}).")
    return final


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
                path = _fetch(plan, wd, endpoint, progress)
                if _verify(plan, path, None):
                    _forget_download(wd, plan, path)
                    raise WeightsError(f"{idx.path} is damaged after download.", hint=f"Run again: {command}")
                _record(wd, plan, path)
                cs = _component_status(comp, wd, read_manifest(wd))  # now with its shards
        for fs in cs.files:
            if fs.state == "present" or fs.repo_path is None:
                continue
            plan = _Planned(comp, fs.repo_path, fs.path, force=fs.state == "incomplete")
            _hub_metadata(plan, endpoint, command, label, todo_files)
            plans.append(plan)
    return plans
