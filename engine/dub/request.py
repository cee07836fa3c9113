"""One typed dubbing request, and the one function that checks it (torch-free).

Every front end (CLI, studio, API) builds a `DubRequest` and the pipeline calls
`validate_dub_request` before anything heavy runs: a bad value is refused with one sentence.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from engine.errors import InputError
from engine.request import MAX_SEED, check_number

DUB_MODELS = ("musetalk-1.5", "latentsync-1.6")
LATENTSYNC = "latentsync-1.6"
FPS_RULES = ("exact", "official")
PARSING_MODES = ("jaw", "raw", "neck")
WHEN_AUDIO_LONGER = ("pingpong", "bounce", "freeze")
WHEN_VIDEO_LONGER = ("cut", "keep")
BBOX_SHIFT_RANGE = (-100, 100)
EXTRA_MARGIN_RANGE = (0, 200)
CHEEK_RANGE = (0, 256)
BATCH_RANGE = (1, 256)
SEED_RANGE = (0, MAX_SEED)                 # as Create's seeds
# LatentSync 1.6 (the official value of each fix option is its other choice; see engine.dub.latentsync)
STEPS_RANGE = (1, 100)
GUIDANCE_RANGE = (1.0, 10.0)
WHISPER_PADS = ("silence", "zeros")
WHISPER_FLOORS = ("file", "window")
WHISPER_WINDOWS = ("overlap", "cut")
FACE_SMOOTHING = ("official", "pixels", "off")
ROUNDINGS = ("round", "truncate")
FRAME_COUNTS = ("audio", "official")
LATENTSYNC_ONLY = ("steps", "guidance", "deepcache", "whisper_pad", "whisper_floor", "whisper_windows", "face_smoothing", "rounding",
                   "frame_count")
MUSETALK_ONLY = ("fps_rule", "bbox_shift", "extra_margin", "parsing_mode", "cheek_left", "cheek_right", "batch_size")


@dataclass
class DubRequest:
    video: str
    audio: str
    out_path: str | None = None          # None: a temporary file
    model: str = "musetalk-1.5"
    fps_rule: str = "exact"              # exact: windows by exact frame time; official: int(fps) as MuseTalk does
    bbox_shift: int = 0
    extra_margin: int = 10
    parsing_mode: str = "jaw"
    cheek_left: int = 90
    cheek_right: int = 90
    batch_size: int = 8
    when_audio_longer: str = "pingpong"  # pingpong: cycle the frames forward-backward, the turning frames shown twice
                                         # (official); bounce: each shown once; freeze: hold the last
    when_video_longer: str = "cut"       # cut: end with the audio; keep: the rest of the video with its own sound
    seed: int = 0
    face_track: str | None = None        # a track file to use instead of detecting faces
    sound: str | None = None             # the dubbed part's sound (None: the voice itself), e.g. the voice with its
                                         # music when the lips follow a voice isolated from it
    preview: bool = True
    metadata: dict | None = None         # extra settings to embed in the MP4
    # LatentSync 1.6 only
    steps: int = 20                      # DDIM steps
    guidance: float = 1.5                # audio guidance; 1.0 skips the unconditional pass
    deepcache: bool = True               # reuse deep UNet features on 2 of 3 steps (approximate; official app: on)
    whisper_pad: str = "silence"         # silence: last 30 s window padded with silence; zeros: official (loud, flat)
    whisper_floor: str = "file"          # file: official log-mel floor from the whole voice; window: per 30 s
    whisper_windows: str = "overlap"     # overlap: no jump at each 30 s boundary; cut: official windows
    face_smoothing: str = "official"     # official | pixels | off: temporal smoothing of the alignment
    rounding: str = "round"              # round: warped/pasted pixels rounded; truncate: official (-0.5 level)
    frame_count: str = "audio"           # audio: as many frames as the voice lasts; official: rows // 2 + 2

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "DubRequest":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    def settings(self) -> dict[str, Any]:
        """What is stored in the MP4 and returned with the result (no paths of this machine)."""
        data = self.to_dict()
        other = LATENTSYNC_ONLY if self.model != LATENTSYNC else MUSETALK_ONLY
        for key in ("out_path", "preview", "metadata", *other):
            data.pop(key, None)
        for key in ("video", "audio", "face_track", "sound"):
            if data[key]:
                data[key] = str(data[key]).replace("\\", "/").rsplit("/", 1)[-1]
        if not data["sound"]:
            del data["sound"]                # the voice is the sound: nothing more to say
        return {**(self.metadata or {}), **data, "mode": "dub"}


def _choice(name: str, value, choices: tuple[str, ...]) -> str:
    text = str(value).strip().lower() if value is not None else ""
    if text not in choices:
        raise InputError(f"{name} must be one of {', '.join(choices)}; got {value!r}.")
    return text


def validate_dub_request(req: DubRequest) -> DubRequest:
    """Check every field; return a copy with normalised values. One `InputError` sentence per problem."""
    for name in ("video", "audio"):
        value = getattr(req, name)
        if value is None or str(value).strip() == "":
            raise InputError(f"No {name} file was given.", hint=f"Choose the {name} to use for dubbing.")
    data = req.to_dict()
    if req.sound is not None and str(req.sound).strip() == "":
        data["sound"] = None
    data["model"] = _choice("model", req.model, DUB_MODELS)
    data["fps_rule"] = _choice("fps_rule", req.fps_rule, FPS_RULES)
    data["parsing_mode"] = _choice("parsing_mode", req.parsing_mode, PARSING_MODES)
    data["when_audio_longer"] = _choice("when_audio_longer", req.when_audio_longer, WHEN_AUDIO_LONGER)
    data["when_video_longer"] = _choice("when_video_longer", req.when_video_longer, WHEN_VIDEO_LONGER)
    data["bbox_shift"] = check_number("bbox_shift", req.bbox_shift, *BBOX_SHIFT_RANGE, whole=True, snap=False)
    data["extra_margin"] = check_number("extra_margin", req.extra_margin, *EXTRA_MARGIN_RANGE, whole=True, snap=False)
    data["cheek_left"] = check_number("cheek_left", req.cheek_left, *CHEEK_RANGE, whole=True, snap=False)
    data["cheek_right"] = check_number("cheek_right", req.cheek_right, *CHEEK_RANGE, whole=True, snap=False)
    data["batch_size"] = check_number("batch_size", req.batch_size, *BATCH_RANGE, whole=True, snap=False)
    data["seed"] = check_number("seed", req.seed, *SEED_RANGE, whole=True, snap=False)
    data["steps"] = check_number("steps", req.steps, *STEPS_RANGE, whole=True, snap=False)
    data["guidance"] = check_number("guidance", req.guidance, *GUIDANCE_RANGE)
    if not isinstance(req.deepcache, bool):
        raise InputError(f"deepcache must be true or false, got {req.deepcache!r}.")
    data["whisper_pad"] = _choice("whisper_pad", req.whisper_pad, WHISPER_PADS)
    data["whisper_floor"] = _choice("whisper_floor", req.whisper_floor, WHISPER_FLOORS)
    data["whisper_windows"] = _choice("whisper_windows", req.whisper_windows, WHISPER_WINDOWS)
    data["face_smoothing"] = _choice("face_smoothing", req.face_smoothing, FACE_SMOOTHING)
    data["rounding"] = _choice("rounding", req.rounding, ROUNDINGS)
    data["frame_count"] = _choice("frame_count", req.frame_count, FRAME_COUNTS)
    if req.metadata is not None and not isinstance(req.metadata, dict):
        raise InputError("metadata must be a dictionary of settings.")
    return DubRequest(**data)
