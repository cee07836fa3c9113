"""One typed generation request, and the ONE rule that turns raw settings into it.

Every front end (studio form, performance panel, API, `python -m engine generate|plan|bench`)
hands its raw values to `resolve_request` (or, for the parts it has, to `resolve_shape`,
`check_number`, `check_runs`): each value is accepted, snapped with a notice that says so, or
refused with one sentence, here and nowhere else. Nothing here imports torch.
"""
from __future__ import annotations

import math
import numbers
import random
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Mapping

from engine.errors import InputError

MODES = ("TA", "TIA", "TI")
MODE_NAMES = {"TA": "Text + Audio", "TIA": "Text + Image + Audio", "TI": "Text + Image"}
MIN_SIDE, MAX_SIDE, SIDE_STEP = 32, 2048, 16
MAX_STEPS = 200
MAX_SEED = 2**31 - 1
RANDOM_SEED = -1          # "a random seed for every run"
MAX_RUNS = 16             # videos one request (a batch) makes
MAX_SHIFT = 100.0
MAX_SCALE = 30.0
MAX_TRIM_S = 3600.0
MAX_BACKGROUND_GAIN = 4.0
AUTO_FRAMES = ("", "auto")
FPS = 25
AUDIO_SAMPLES_PER_FRAME = 16000 // FPS   # the engine hears 16 kHz audio (engine.humo.audio)
MAX_WINDOW = 200          # latent frames per context window
DEFAULT_WINDOW = 25       # engine.humo.windows.DEFAULT_LENGTH: 97 frames, the trained length
WINDOW_SCHEDULES = ("shifted", "fixed")


@dataclass
class GenerationRequest:
    prompt: str
    variant: str                         # always given: there is no silent default model
    mode: str = "TIA"                    # TA: text+audio, TIA: text+image+audio, TI: text+image
    images: list[str] = field(default_factory=list)
    audio: str | None = None
    negative_prompt: str | None = None   # None: Wan's standard negative prompt
    frames: int | None = None            # None: follow the audio length (or the variant default)
    width: int | None = None             # None: the variant default
    height: int | None = None
    steps: int | None = None
    shift: float | None = None
    scale_t: float | None = None
    scale_i: float | None = None
    scale_a: float | None = None
    seed: int = 0
    out_path: str | None = None          # None: a temporary file
    preview: bool = True                 # yield per-step previews
    preview_max_side: int = 160          # previews are small on purpose
    fast_mode: str | None = None         # None: exact; else an approximate cache preset
    window_length: int | None = None     # context window in latent frames (None: 25, the trained 97 frames)
    window_overlap: int | None = None    # latent frames shared by neighbouring windows (None: 6)
    window_schedule: str | None = None   # "shifted" (None) or "fixed"; see engine.humo.windows
    metadata: dict[str, Any] = field(default_factory=dict)  # extra settings to embed in the MP4

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "GenerationRequest":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


# ----------------------------------------------------------------------------- one value

def _given(value) -> bool:
    return value is not None and not (isinstance(value, str) and not value.strip())


def _number(label: str, value, hint: str) -> float:
    """A finite float from a raw value, or an InputError naming the field."""
    if isinstance(value, bool) or not isinstance(value, (numbers.Real, str)):
        raise InputError(f"{label} {value!r} is not a number: {hint}.")
    try:
        number = float(value.strip() if isinstance(value, str) else value)
    except (ValueError, OverflowError):
        raise InputError(f"{label} {value!r} is not a number: {hint}.") from None
    if not math.isfinite(number):
        raise InputError(f"{label} must be a finite number, not {_show(value)}: {hint}.")
    return number


def _show(value) -> str:
    """A value as a person typed it, the same whether it came as text (CLI) or as a number (form)."""
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            return repr(value.strip())
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _round_half_up(number: float) -> int:
    return int(math.floor(number + 0.5))


def check_number(label: str, value, lo: float, hi: float, *, whole: bool = False, snap: bool = True,
                 above_lo: bool = False, notices: list[str] | None = None) -> float | int:
    """`value` as a number in [lo, hi] (or (lo, hi] with `above_lo`). A whole number that came as a
    fraction is rounded with a notice when `snap`, else refused."""
    rng = f"more than {_show(lo)} and at most {_show(hi)}" if above_lo else f"between {_show(lo)} and {_show(hi)}"
    hint = f"use a {'whole ' if whole else ''}number {rng}"
    if whole and isinstance(value, numbers.Integral) and not isinstance(value, bool):
        exact = int(value)                 # exact: a large seed must not pass through a float
        if exact < lo or exact > hi or (above_lo and exact <= lo):
            raise InputError(f"{label} must be {rng}, not {exact}.")
        return exact
    number = _number(label, value, hint)
    if whole and not number.is_integer():
        if not snap:
            raise InputError(f"{label} must be a whole number, not {_show(value)}: {hint}.")
        rounded = _round_half_up(number)
        if notices is not None:
            notices.append(f"{label} {_show(value)} was rounded to {rounded}.")
        number = float(rounded)
    if number < lo or number > hi or (above_lo and number <= lo):
        raise InputError(f"{label} must be {rng}, not {_show(number)}.")
    return int(number) if whole else number


def check_side(label: str, value, notices: list[str]) -> int:
    """A width or height: snapped to the nearest multiple of 16 (with a notice), 64 to 2048 pixels."""
    hint = f"use a multiple of {SIDE_STEP} from {MIN_SIDE} to {MAX_SIDE}"
    number = _number(label, value, hint)
    snapped = max(SIDE_STEP, _round_half_up(number / SIDE_STEP) * SIDE_STEP)
    if not MIN_SIDE <= snapped <= MAX_SIDE:
        raise InputError(f"{label} must be between {MIN_SIDE} and {MAX_SIDE} pixels, not {_show(number)}.")
    if snapped != number:
        notices.append(f"{label} {_show(value)} was rounded to {snapped} (a multiple of {SIDE_STEP}).")
    return snapped


def snap_frames(n: int) -> int:
    """The 4k+1 grid: N' = 4·⌊(N−1)/4⌋ + 1."""
    return 4 * ((max(int(n), 1) - 1) // 4) + 1


def check_frames(value, max_frames: int, notices: list[str]) -> int:
    """A frame count: 1 to `max_frames`, moved down onto the 4k+1 grid with a notice."""
    wanted = check_number("Frames", value, 1, max_frames, whole=True, notices=notices)
    frames = snap_frames(wanted)
    if frames != wanted:
        notices.append(f"Frames {wanted} was rounded to {frames} (frame counts are 4k+1: 17, 21, ..., 97).")
    return frames


def check_steps(value, notices: list[str]) -> int:
    """Denoising steps: a whole number from 1 to 200 (a fraction is rounded, with a notice)."""
    return check_number("Steps", value, 1, MAX_STEPS, whole=True, notices=notices)


def check_runs(value) -> int:
    """How many videos one request makes: 1 to 16 (empty: 1)."""
    if not _given(value):
        return 1
    return check_number("Runs", value, 1, MAX_RUNS, whole=True, snap=False)


def check_seed(value) -> int:
    """0 to 2**31-1, or -1 for a random seed per run (empty: 0)."""
    if not _given(value):
        return 0
    return check_number("Seed", value, RANDOM_SEED, MAX_SEED, whole=True, snap=False)


def check_windows(raw: Mapping[str, Any]) -> tuple[int | None, int | None, str | None]:
    """`window_length` (2 to 200 latent frames), `window_overlap` (1 to length - 1) and
    `window_schedule` (shifted, fixed) of `raw`; each None when not given (the defaults of
    engine.humo.windows: 25, 6, shifted)."""
    length = overlap = schedule = None
    if _given(raw.get("window_length")):
        length = int(check_number("Window length", raw["window_length"], 2, MAX_WINDOW, whole=True))
    if _given(raw.get("window_overlap")):
        overlap = int(check_number("Window overlap", raw["window_overlap"], 1, (length or DEFAULT_WINDOW) - 1,
                                   whole=True))
    if _given(raw.get("window_schedule")):
        schedule = str(raw["window_schedule"]).strip().lower()
        if schedule not in WINDOW_SCHEDULES:
            raise InputError(f"Window schedule {raw['window_schedule']!r} is not one of: shifted, fixed.")
    return length, overlap, schedule


def frames_for_audio(samples: int, max_frames: int) -> int:
    """The frame count that follows a 16 kHz clip of `samples` (on the 4k+1 grid, at least 1);
    a clip longer than `max_frames` is refused with a sentence."""
    frames = snap_frames(max(int(samples) // AUDIO_SAMPLES_PER_FRAME, 1))
    if frames > max_frames:
        raise InputError(f"The clip covers {frames} frames ({frames / FPS / 60:.1f} min), longer than the "
                         f"studio makes (up to {(max_frames - 1) / FPS / 60:.0f} min).",
                         hint="Trim the audio or set a frame count.")
    return frames


def batch_seeds(seed: int, runs: int, rng: random.Random | None = None) -> list[int]:
    """The seeds of a batch: seed, seed+1, ... (wrapping past MAX_SEED), or one random seed per run."""
    if seed == RANDOM_SEED:
        rng = rng or random.SystemRandom()
        return [rng.randint(0, MAX_SEED) for _ in range(runs)]
    return [(seed + i) % (MAX_SEED + 1) for i in range(runs)]


def check_variant(value):
    from engine.humo.variants import VARIANTS, get_variant

    if not _given(value):
        raise InputError(f"No model was chosen: pick one of {', '.join(VARIANTS)}.")
    try:
        return get_variant(str(value))
    except KeyError:
        raise InputError(f"Unknown model {str(value)!r}: pick one of {', '.join(VARIANTS)}.") from None


def check_mode(value, images=None, audio=None) -> str:
    """TA, TIA or TI (any case); when not given, what the inputs allow (images and audio: TIA)."""
    if not _given(value):
        return "TIA" if images and audio else "TA" if audio else "TI"
    mode = str(value).strip().upper()
    if mode not in MODES:
        raise InputError(f"Unknown mode {str(value)!r}: use TA, TIA or TI.")
    return mode


def uses_image(mode: str) -> bool:
    return mode in ("TIA", "TI")


def uses_audio(mode: str) -> bool:
    return mode in ("TA", "TIA")


def _paths(value) -> list[str]:
    if not value:
        return []
    items = value if isinstance(value, (list, tuple)) else [value]
    return [str(p) for p in items if p]


# ----------------------------------------------------------------------------- shapes (panel, plan, bench)

@dataclass
class Shape:
    width: int
    height: int
    frames: int | None          # None: follows the audio
    notices: list[str]


def resolve_shape(variant, width=None, height=None, frames=None, *, audio_frames: bool = False) -> Shape:
    """Size and frame count for a variant (empty values: its defaults). `frames` None/"auto" follows
    the audio when `audio_frames`, else it is the variant's default."""
    v = check_variant(variant) if not hasattr(variant, "defaults") else variant
    d = v.defaults
    notices: list[str] = []
    w = check_side("Width", width, notices) if _given(width) else d.width
    h = check_side("Height", height, notices) if _given(height) else d.height
    if not _given(frames) or (isinstance(frames, str) and frames.strip().lower() in AUTO_FRAMES):
        n = None if audio_frames else d.frames
    else:
        n = check_frames(frames, d.max_frames, notices)
    return Shape(w, h, n, notices)


def parse_size(text) -> tuple[str | None, str | None]:
    """'WxH' (or W×H) as two raw values for `resolve_shape`; empty: (None, None)."""
    if not _given(text):
        return None, None
    parts = str(text).lower().replace("×", "x").split("x")
    if len(parts) != 2:
        raise InputError(f"Size {str(text)!r} is not WxH: write it like 832x480.")
    return parts[0], parts[1]


# ----------------------------------------------------------------------------- the whole request

class Resolved:
    """What `resolve_request` returns: the request (the first of a batch), the notices, and the
    batch. Unpacks as `request, notices = resolve_request(raw)`."""

    def __init__(self, request: GenerationRequest, notices: list[str], runs: int, seeds: list[int],
                 random_seed: bool, extras: dict[str, Any]):
        self.request, self.notices, self.runs, self.seeds = request, notices, runs, seeds
        self.random_seed, self.extras = random_seed, extras

    def __iter__(self):
        return iter((self.request, self.notices))

    def requests(self) -> list[GenerationRequest]:
        """One request per run of the batch, each with its own seed."""
        out = []
        for seed in self.seeds:
            r = GenerationRequest.from_dict(self.request.to_dict())
            r.seed = seed
            out.append(r)
        return out


def fast_mode_value(value) -> str | None:
    """A fast-mode choice as GenerationRequest.fast_mode: None for exact mode."""
    text = str(value or "").strip()
    return None if text.lower() in ("", "exact", "off", "none", "exact (default)") else text


def resolve_request(raw: Mapping[str, Any], *, rng: random.Random | None = None) -> Resolved:
    """Check every setting of `raw` (GenerationRequest fields, plus `runs`, `size` "WxH",
    frames "auto", and the studio's `trim_start`, `trim_end`, `background_gain`) and fill the
    variant's defaults. Raises InputError with one sentence; returns the request and its notices."""
    variant = check_variant(raw.get("variant"))
    d = variant.defaults
    images, audio = _paths(raw.get("images")), raw.get("audio") or None
    mode = check_mode(raw.get("mode"), images, audio)
    prompt = str(raw.get("prompt") or "").strip()
    if not prompt:
        raise InputError("The prompt is empty: describe the person, the scene and what happens.")
    if uses_image(mode) and not images:
        raise InputError(f"{MODE_NAMES[mode]} needs a reference photo: add one, or use Text + Audio.")
    if uses_audio(mode) and not audio:
        raise InputError(f"{MODE_NAMES[mode]} needs a voice clip: upload or record one, or use Text + Image.")

    width, height = raw.get("width"), raw.get("height")
    if not (_given(width) or _given(height)) and _given(raw.get("size")):
        width, height = parse_size(raw["size"])
    shape = resolve_shape(variant, width, height, raw.get("frames"), audio_frames=uses_audio(mode))
    notices = list(shape.notices)

    def given(key, default):
        return raw.get(key) if _given(raw.get(key)) else default

    steps = check_steps(given("steps", d.steps), notices)
    shift = check_number("Shift", given("shift", d.shift), 0, MAX_SHIFT, above_lo=True)
    scale_t = check_number("Text guidance", given("scale_t", d.scale_t), 0, MAX_SCALE)
    scale_i = None
    if uses_image(mode) and d.scale_i is not None:
        scale_i = check_number("Image guidance", given("scale_i", d.scale_i), 0, MAX_SCALE)
    scale_a = check_number("Audio guidance", given("scale_a", d.scale_a), 0, MAX_SCALE) if uses_audio(mode) else None
    seed = check_seed(raw.get("seed"))
    runs = check_runs(raw.get("runs"))
    extras = {}
    for key, label, hi in (("trim_start", "Trim start", MAX_TRIM_S), ("trim_end", "Trim end", MAX_TRIM_S),
                           ("background_gain", "Background level", MAX_BACKGROUND_GAIN)):
        if key in raw:
            extras[key] = check_number(label, given(key, 1.0 if key == "background_gain" else 0.0), 0, hi)
    seeds = batch_seeds(seed, runs, rng)
    negative = str(raw.get("negative_prompt") or "").strip() or None
    window_length, window_overlap, window_schedule = check_windows(raw)
    request = GenerationRequest(
        prompt=prompt, variant=variant.name, mode=mode,
        images=images if uses_image(mode) else [], audio=str(audio) if uses_audio(mode) else None,
        negative_prompt=negative, frames=shape.frames, width=shape.width, height=shape.height,
        steps=steps, shift=shift, scale_t=scale_t, scale_i=scale_i, scale_a=scale_a, seed=seeds[0],
        out_path=raw.get("out_path") or None, preview=bool(raw.get("preview", True)),
        preview_max_side=int(raw.get("preview_max_side") or 160), fast_mode=fast_mode_value(raw.get("fast_mode")),
        window_length=window_length, window_overlap=window_overlap, window_schedule=window_schedule,
        metadata=dict(raw.get("metadata") or {}))
    return Resolved(request, notices, runs, seeds, seed == RANDOM_SEED, extras)
