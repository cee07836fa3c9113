"""What is on disk, as data: the status of each file, component and variant, and byte sizes for people."""
from __future__ import annotations

from dataclasses import dataclass, field

from engine.weights.components import GB, MB, fetch_command


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
    partial_size: int | None = None  # bytes of an unfinished download waiting to be resumed (not counted as present)

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
            partial = sum(f.partial_size or 0 for f in c.files if f.state != "present")
            if known and len(known) == len(c.files):
                total += sum(f.expected_size for f in known if f.state != "present") - partial
            else:
                total += max(c.approx_bytes - c.size_on_disk - partial, 0)
        return total

    @property
    def partial_files(self) -> dict[str, int]:
        """Unfinished downloads of required files: path -> bytes already fetched."""
        return {f.path: f.partial_size for c in self.required for f in c.files
                if f.state != "present" and f.partial_size}

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
                "partial": self.partial_files,
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


def format_bytes(n: int | None) -> str:
    if n is None:
        return "?"
    for unit, scale in (("GB", GB), ("MB", MB), ("kB", 1000)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"
