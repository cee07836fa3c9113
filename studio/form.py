"""The Create form as data: its inputs in API order, their checks, and the request they make.

`FORM_KEYS` is the order of the `/generate` inputs. New inputs go at the end, with defaults,
so existing API callers keep working. Nothing here imports torch.
"""
from __future__ import annotations

import os
import random
from typing import Any

from engine.errors import InputError
from engine.request import GenerationRequest
from engine.variants import VARIANTS, get_variant

MODES = {"TA": "Text + Audio", "TIA": "Text + Image + Audio", "TI": "Text + Image"}
MODE_HELP = {
    "TA": "A person from the prompt alone, speaking your clip.",
    "TIA": "The person in your photo(s), speaking your clip. The usual choice.",
    "TI": "The person in your photo(s), no audio: movement follows the prompt.",
}
LIPS_ORIGINAL, LIPS_VOICE = "Original clip", "Isolated voice"
STANDARD_SIZES = ((832, 480), (480, 832), (1280, 720), (720, 1280))
CUSTOM = "custom"
MAX_SEED = 2**31 - 1
RANDOM_SEED = -1         # the seed box's value for "a random seed for every run"
MAX_RUNS = 16            # runs one Generate click can make (a batch)
MIN_SIDE, MAX_SIDE = 64, 2048
EXACT = "exact"          # the fast-mode value for exact mode (GenerationRequest.fast_mode = None)
AUTO = "auto"

# The generate inputs, in API order. The performance inputs (plan .. compile) came later, and the
# number of runs (a batch) last: callers that leave them out get their defaults.
FORM_KEYS = ("variant", "mode", "prompt", "negative_prompt", "images", "audio", "trim_start", "trim_end",
             "lips", "mix_background", "background_gain", "size", "width", "height", "match_audio", "frames",
             "steps", "shift", "scale_t", "scale_i", "scale_a", "seed",
             "plan", "fast_mode", "attention", "compile", "runs")
# Settings kept under metadata["studio"] (not fields of GenerationRequest).
STUDIO_EXTRAS = ("trim_start", "trim_end", "lips", "mix_background", "background_gain", "match_audio",
                 "steps", "plan", "attention", "compile")


def size_label(w: int, h: int) -> str:
    shape = "landscape" if w > h else "portrait" if h > w else "square"
    return f"{w}×{h} ({shape})"


def size_choices(variant: str) -> list[tuple[str, str]]:
    sizes = list(get_variant(variant).sizes)
    for s in STANDARD_SIZES:
        if s not in sizes:
            sizes.append(s)
    return [(size_label(w, h), f"{w}x{h}") for w, h in sizes] + [("Custom (multiples of 16)", CUSTOM)]


def all_size_choices() -> list[tuple[str, str]]:
    """Every size any variant offers: the server accepts these; the page lists the variant's own."""
    seen: dict[str, str] = {}
    for name in VARIANTS:
        for label, key in size_choices(name):
            seen.setdefault(key, label)
    return [(label, key) for key, label in seen.items() if key != CUSTOM] + [("Custom (multiples of 16)", CUSTOM)]


def size_key(w, h, variant: str) -> str:
    key = f"{int(w)}x{int(h)}" if w and h else CUSTOM
    return key if key in {v for _, v in size_choices(variant)} else CUSTOM


def uses_image(mode: str) -> bool:
    return mode in ("TIA", "TI")


def uses_audio(mode: str) -> bool:
    return mode in ("TA", "TIA")


def image_scale_applies(variant: str, mode: str) -> bool:
    return uses_image(mode) and get_variant(variant).defaults.scale_i is not None


def files_of(value) -> list[str]:
    """Paths from whatever a gr.File / API caller sends (paths, dicts, tuples, file objects)."""
    if not value:
        return []
    items = value if isinstance(value, (list, tuple)) else [value]
    out = []
    for item in items:
        if isinstance(item, dict):
            item = item.get("path") or item.get("name")
        elif isinstance(item, (list, tuple)):
            item = item[0]
        elif hasattr(item, "name") and not isinstance(item, str):
            item = item.name
        if item:
            out.append(str(item))
    return out


def form_values(values) -> dict[str, Any]:
    """The handler's positional inputs as a dict; inputs an older caller left out get their defaults."""
    f = dict(zip(FORM_KEYS, values))
    f.setdefault("plan", AUTO)
    f.setdefault("fast_mode", EXACT)
    f.setdefault("attention", AUTO)
    f.setdefault("compile", False)
    f.setdefault("runs", 1)
    return f


def is_random_seed(seed) -> bool:
    """True for the seed box's "random" value (-1; any negative number counts)."""
    try:
        return seed not in (None, "") and int(seed) < 0
    except (TypeError, ValueError):
        return False


def batch_seeds(seed, runs: int, rng: random.Random | None = None) -> list[int]:
    """The seeds of a batch: seed, seed+1, ... (wrapping past MAX_SEED), or one random seed per run."""
    runs = int(runs)
    if is_random_seed(seed):
        rng = rng or random.SystemRandom()
        return [rng.randint(0, MAX_SEED) for _ in range(runs)]
    start = int(seed) if seed not in (None, "") else 0
    return [(start + i) % (MAX_SEED + 1) for i in range(runs)]


def fast_mode_value(value) -> str | None:
    """The dropdown's value as GenerationRequest.fast_mode: None for exact mode."""
    text = str(value or "").strip()
    return None if text.lower() in ("", EXACT, "off", "none", "exact (default)") else text


def _whole(value, default: int) -> int | None:
    """A whole number from a form value (empty: `default`); None when it is not one."""
    if value in (None, ""):
        return default
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return int(number) if number.is_integer() else None


def validate_form(f: dict[str, Any]) -> None:
    """Checks a person can fix at once, before any model work. Raises InputError."""
    variant, mode = f["variant"], f["mode"]
    runs = _whole(f.get("runs"), 1)
    if runs is None:
        raise InputError(f"Runs must be a whole number, not {f.get('runs')!r}.", hint=f"Use 1 to {MAX_RUNS}.")
    if not 1 <= runs <= MAX_RUNS:
        raise InputError(f"Runs must be 1 to {MAX_RUNS}, not {runs}.",
                         hint=f"Make up to {MAX_RUNS} videos per click; click again for more.")
    seed = _whole(f["seed"], 0)
    if seed is None:
        raise InputError(f"The seed must be a whole number, not {f['seed']!r}.",
                         hint=f"Use 0 to {MAX_SEED}, or {RANDOM_SEED} for a random seed.")
    if seed > MAX_SEED:
        raise InputError(f"The seed {seed} is too large.", hint=f"Use 0 to {MAX_SEED}, or {RANDOM_SEED} for random.")
    if variant not in VARIANTS:
        raise InputError(f"Unknown model {variant!r}.", hint=f"Pick one of: {', '.join(VARIANTS)}.")
    if mode not in MODES:
        raise InputError(f"Unknown mode {mode!r}.", hint="Use TA, TIA or TI.")
    if not str(f["prompt"] or "").strip():
        raise InputError("The prompt is empty.", hint="Describe the person, the scene and what they do.")
    if uses_image(mode) and not files_of(f["images"]):
        raise InputError(f"{MODES[mode]} needs a reference photo.",
                         hint="Add at least one photo, or use the Text + Audio tab.")
    if uses_audio(mode) and not f["audio"]:
        raise InputError(f"{MODES[mode]} needs a voice clip.",
                         hint="Upload or record a clip, or use the Text + Image tab.")
    try:
        w, h = int(f["width"]), int(f["height"])
    except (TypeError, ValueError):
        raise InputError("Width and height must be whole numbers.", hint="Pick a size preset.") from None
    if w % 16 or h % 16:
        fix = f"{max(16, round(w / 16) * 16)}×{max(16, round(h / 16) * 16)}"
        raise InputError(f"The size {w}×{h} is not a multiple of 16.", hint=f"Try {fix}.")
    if not (MIN_SIDE <= w <= MAX_SIDE and MIN_SIDE <= h <= MAX_SIDE):
        raise InputError(f"The size {w}×{h} is out of range.", hint=f"Use {MIN_SIDE} to {MAX_SIDE} pixels per side.")
    if not f["match_audio"] or not uses_audio(mode):
        frames = int(f["frames"] or 0)
        if frames < 1 or (frames - 1) % 4:
            raise InputError(f"Frames must be 4n+1 (e.g. 17, 97), not {frames}.", hint="Use the frames slider.")


def build_request(f: dict[str, Any], audio_path: str | None, out_path: str, extras: dict[str, Any]) -> GenerationRequest:
    variant, mode = f["variant"], f["mode"]
    frames = None if (uses_audio(mode) and f["match_audio"]) else int(f["frames"])
    seed = int(f["seed"]) if f["seed"] not in (None, "") else 0
    return GenerationRequest(
        prompt=str(f["prompt"]).strip(),
        variant=variant,
        mode=mode,
        images=files_of(f["images"]) if uses_image(mode) else [],
        audio=audio_path if uses_audio(mode) else None,
        negative_prompt=(str(f["negative_prompt"]).strip() or None) if f["negative_prompt"] else None,
        frames=frames,
        width=int(f["width"]),
        height=int(f["height"]),
        steps=int(f["steps"]),
        shift=float(f["shift"]),
        scale_t=float(f["scale_t"]),
        scale_i=float(f["scale_i"]) if image_scale_applies(variant, mode) else None,
        scale_a=float(f["scale_a"]) if uses_audio(mode) else None,
        seed=max(0, min(seed, MAX_SEED)),
        fast_mode=fast_mode_value(f.get("fast_mode")),
        out_path=out_path,
        metadata={"studio": extras},
    )


def values_from_settings(s: dict[str, Any], default_variant: str, keep=None) -> list:
    """A finished run's settings (gallery.reuse_settings) as form values, in FORM_KEYS order.

    `keep` stands for "leave this input as it is" (e.g. a photo that is no longer on disk).
    """
    v = s.get("variant") if s.get("variant") in VARIANTS else default_variant
    dd = get_variant(v).defaults
    m = s.get("mode") if s.get("mode") in MODES else "TIA"
    extras = (s.get("metadata") or {}).get("studio") or {}
    w, h = s.get("width") or dd.width, s.get("height") or dd.height
    imgs = [p for p in (s.get("images") or []) if p and os.path.isfile(p)]
    src_audio = extras.get("audio_source") or s.get("audio")
    src_audio = src_audio if src_audio and os.path.isfile(src_audio) else None
    val = {
        "variant": v, "mode": m, "prompt": s.get("prompt") or "",
        "negative_prompt": s.get("negative_prompt") or "",
        "images": imgs or keep, "audio": src_audio or keep,
        "trim_start": extras.get("trim_start", 0), "trim_end": extras.get("trim_end", 0),
        "lips": extras.get("lips", LIPS_ORIGINAL), "mix_background": bool(extras.get("mix_background")),
        "background_gain": extras.get("background_gain", 1.0),
        "size": size_key(w, h, v), "width": w, "height": h,
        "match_audio": bool(extras.get("match_audio", s.get("frames") is None)),
        "frames": s.get("frames") or dd.frames,
        # The steps asked for: with a fast mode that drops steps the engine records the ones it ran.
        "steps": extras.get("steps") or s.get("steps") or dd.steps, "shift": s.get("shift") or dd.shift,
        "scale_t": s.get("scale_t") if s.get("scale_t") is not None else dd.scale_t,
        "scale_i": s.get("scale_i") if s.get("scale_i") is not None else (dd.scale_i or 0),
        "scale_a": s.get("scale_a") if s.get("scale_a") is not None else dd.scale_a,
        "seed": s.get("seed", 0),
        "plan": extras.get("plan") or AUTO,
        "fast_mode": s.get("fast_mode") or EXACT,
        "attention": extras.get("attention") or AUTO,
        "compile": bool(extras.get("compile", False)),
        "runs": 1,              # one run: the same video again (its seed is the one that ran)
    }
    return [val[k] for k in FORM_KEYS]
