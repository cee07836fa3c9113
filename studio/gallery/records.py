"""Run records: the `Entry` and `CheckReport` types and the `settings.json` of a run.

Everything here is pure data handling: what a record holds, how an `Entry` is built
from one, which input files of a run are kept, and how stored settings turn back into
form values. Nothing here touches the SQLite index.
"""
from __future__ import annotations

import json
import os
import threading
import uuid
from dataclasses import dataclass, field, fields
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from engine.request import GenerationRequest

RECORD_NAME = "settings.json"
RECORD_FORMAT = "humo-studio-run"
RECORD_VERSION = 1
DEFAULT_FPS = 25.0                 # HuMo renders at 25 frames per second

_TITLE_WORDS = 8
_TITLE_CHARS = 60


@dataclass
class Entry:
    id: str
    created_at: str                    # ISO 8601, UTC
    video: Path                        # absolute path of the video file
    thumbnail: Path | None
    settings: dict[str, Any]
    timings: dict[str, Any]
    title: str
    variant: str | None
    seed: int | None
    duration: float | None             # length of the video in seconds, when known
    inputs: dict[str, Any] = field(default_factory=dict)  # kept copies: audio, audio_source (Path|None), images
    starred: bool = False
    owner: str | None = None           # the account that made the run (None: made without accounts)

    @property
    def folder(self) -> Path:
        return self.video.parent

    @property
    def available(self) -> bool:
        return self.video.is_file()

    @property
    def prompt(self) -> str:
        return str(self.settings.get("prompt") or "")

    @property
    def mode(self) -> str | None:
        """TA, TIA or TI (None for a record that does not say)."""
        return _as_str(resolved_value(self.settings, "mode"))


@dataclass
class CheckReport:
    """What `Gallery.check()` found. `ok` is true when nothing needs attention."""
    missing_videos: list[str] = field(default_factory=list)      # entry ids whose video is gone
    missing_thumbnails: list[str] = field(default_factory=list)  # entry ids whose thumbnail is gone
    unreadable_records: list[str] = field(default_factory=list)  # run folders with a broken settings.json
    recovered: list[str] = field(default_factory=list)           # ids re-indexed from their folders
    corrupt_backup: str | None = None                            # where a corrupt index was moved

    @property
    def ok(self) -> bool:
        return not (self.missing_videos or self.missing_thumbnails or self.unreadable_records)


def entry_from_record(record: dict[str, Any], folder: Path) -> Entry:
    """The entry a run record describes, its files inside `folder`. ValueError for a bad record."""
    settings = dict(record.get("settings") or {})
    video_name, thumb_name = str(record["video"]), record.get("thumbnail")
    if Path(video_name).name != video_name or (thumb_name and Path(thumb_name).name != thumb_name):
        raise ValueError("file names in a run record must be plain names")
    return Entry(
        id=str(record["id"]),
        created_at=str(record["created_at"]),
        video=folder / video_name,
        thumbnail=(folder / str(thumb_name)) if thumb_name else None,
        settings=settings,
        timings=dict(record.get("timings") or {}),
        title=str(record.get("title") or make_title(settings.get("prompt"))),
        variant=_as_str(resolved_value(settings, "variant")),
        seed=_as_int(resolved_value(settings, "seed")),
        duration=video_duration(settings),
        inputs=inputs_from_record(record.get("inputs") or {}, folder),
        starred=record.get("starred") is True,
        owner=_as_str(record.get("owner")),
    )


# ---------------------------------------------------------------------- settings helpers

def resolved_value(settings: dict[str, Any], key: str) -> Any:
    """The value the run used for `key`: the resolved one when present, else the requested one."""
    resolved = settings.get("resolved")
    if isinstance(resolved, dict) and resolved.get(key) is not None:
        return resolved[key]
    return settings.get(key)


def video_duration(settings: dict[str, Any]) -> float | None:
    """Video length in seconds: as recorded, else frames / fps."""
    for key in ("duration_s", "duration"):
        value = resolved_value(settings, key)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0:
            return float(value)
    frames = resolved_value(settings, "frames")
    fps = resolved_value(settings, "fps") or DEFAULT_FPS
    if isinstance(frames, int) and not isinstance(frames, bool) and isinstance(fps, (int, float)) and fps > 0:
        return round(frames / float(fps), 3)
    return None


def settings_for_form(settings: dict[str, Any]) -> dict[str, Any]:
    """A `GenerationRequest`-shaped dict from stored settings, resolved values filled in."""
    names = [f.name for f in fields(GenerationRequest)]
    out = {name: resolved_value(settings, name) for name in names if name in settings
           or isinstance(settings.get("resolved"), dict) and name in settings["resolved"]}
    out.pop("out_path", None)
    return json.loads(json.dumps(out))      # a deep copy: callers may edit it freely


def make_title(prompt: Any) -> str:
    """The first words of the prompt, short enough for a gallery caption."""
    words = str(prompt or "").split()
    if not words:
        return "Untitled"
    title = " ".join(words[:_TITLE_WORDS])
    if len(title) > _TITLE_CHARS:
        title = title[:_TITLE_CHARS].rsplit(" ", 1)[0] or title[:_TITLE_CHARS]
    return title + ("…" if title != " ".join(words) else "")


# ---------------------------------------------------------------------- kept input files

def no_inputs() -> dict[str, Any]:
    # audio: the clip that drove the lips; audio_source: the studio's original upload
    # (metadata["studio"]["audio_source"]) when it differs, e.g. before trimming or vocal isolation.
    return {"audio": None, "audio_source": None, "images": []}


def plan_inputs(settings: dict[str, Any]) -> tuple[dict[str, Any], list[tuple[Path, str]]]:
    """Which input files to keep: (the record's "inputs", [(source, name in the run folder)])."""
    record, copies = no_inputs(), []
    audio = settings.get("audio")
    if isinstance(audio, str) and audio and Path(audio).is_file():
        name = f"inputs/audio{Path(audio).suffix.lower()}"
        record["audio"] = name
        copies.append((Path(audio), name))
    studio = (settings.get("metadata") or {}).get("studio") if isinstance(settings.get("metadata"), dict) else None
    source = studio.get("audio_source") if isinstance(studio, dict) else None
    if isinstance(source, str) and source and source != audio and Path(source).is_file():
        name = f"inputs/audio-source{Path(source).suffix.lower()}"
        record["audio_source"] = name
        copies.append((Path(source), name))
    images = settings.get("images")
    for i, image in enumerate(images if isinstance(images, list) else []):
        name = None
        if isinstance(image, str) and image and Path(image).is_file():
            name = f"inputs/image-{i}{Path(image).suffix.lower()}"
            copies.append((Path(image), name))
        record["images"].append(name)
    return record, copies


def inputs_from_record(record: dict[str, Any], folder: Path) -> dict[str, Any]:
    def resolve(name: Any) -> Path | None:
        if not isinstance(name, str) or not name or ".." in Path(name).parts or Path(name).is_absolute():
            return None
        return folder / name
    images = record.get("images") if isinstance(record.get("images"), list) else []
    return {"audio": resolve(record.get("audio")), "audio_source": resolve(record.get("audio_source")),
            "images": [resolve(name) for name in images]}


def inputs_to_record(inputs: dict[str, Any], folder: Path) -> dict[str, Any]:
    def rel(path: Path | None) -> str | None:
        return None if path is None else path.relative_to(folder).as_posix()
    return {"audio": rel(inputs.get("audio")), "audio_source": rel(inputs.get("audio_source")),
            "images": [rel(p) for p in inputs.get("images") or []]}


# ---------------------------------------------------------------------- ids and values

_last_stamp: list[datetime] = []
_stamp_lock = threading.Lock()


def creation_stamp() -> datetime:
    """Now (UTC, whole milliseconds), strictly later than the previous stamp of this process, so
    runs saved within one millisecond still keep their order in the gallery."""
    with _stamp_lock:
        now = datetime.now(timezone.utc)
        now = now.replace(microsecond=now.microsecond // 1000 * 1000)
        if _last_stamp and now <= _last_stamp[0]:
            now = _last_stamp[0] + timedelta(milliseconds=1)
        _last_stamp[:] = [now]
        return now


def new_id(stamp: datetime | None = None) -> str:
    now = (stamp or creation_stamp()).astimezone()
    return f"{now:%Y%m%d-%H%M%S}-{now.microsecond // 1000:03d}-{uuid.uuid4().hex[:6]}"


def is_safe_id(name: str) -> bool:
    return bool(name) and not name.startswith(".") and "/" not in name and "\\" not in name \
        and name not in ("..",) and all(c.isalnum() or c in "-_" for c in name)


def jsonable(value: Any) -> Any:
    """A JSON round trip, turning paths, tuples and numpy scalars into plain values."""
    def default(obj: Any) -> Any:
        if isinstance(obj, os.PathLike):
            return os.fspath(obj)
        if isinstance(obj, (set, frozenset, tuple)):
            return list(obj)
        if hasattr(obj, "item") and callable(obj.item):
            try:
                return obj.item()
            except (TypeError, ValueError):
                pass
        if hasattr(obj, "tolist") and callable(obj.tolist):
            return obj.tolist()
        return str(obj)
    return json.loads(json.dumps(value, default=default, ensure_ascii=False))


def _as_str(value: Any) -> str | None:
    return None if value is None else str(value)


def _as_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    try:
        return None if value is None else int(value)
    except (TypeError, ValueError):
        return None
