"""The Create form as data: its inputs in API order, their checks, and the request they make.

`FORM_KEYS` is the order of the `/generate` inputs. New inputs go at the end, with defaults,
so existing API callers keep working. Nothing here imports torch.
"""
from __future__ import annotations

import os
from typing import Any

from engine.errors import InputError
from engine.request import (MAX_RUNS, MAX_SEED, RANDOM_SEED, GenerationRequest, Resolved, batch_seeds,  # noqa: F401
                            check_seed, fast_mode_value, resolve_request, uses_audio, uses_image)
from engine.options import VARIANTS, get_variant

MODES = {"TA": "Text + Audio", "TIA": "Text + Image + Audio", "TI": "Text + Image"}
MODE_HELP = {
    "TA": "A person from the prompt alone, speaking your clip.",
    "TIA": "The person in your photo(s), speaking your clip. The usual choice.",
    "TI": "The person in your photo(s), no audio: movement follows the prompt.",
}
LIPS_ORIGINAL, LIPS_VOICE = "Original clip", "Isolated voice"
STANDARD_SIZES = ((832, 480), (480, 832), (1280, 720), (720, 1280))
CUSTOM = "custom"
EXACT = "exact"          # the fast-mode value for exact mode (GenerationRequest.fast_mode = None)
AUTO = "auto"

# The generate inputs, in API order. The performance inputs (plan .. compile) came later, then the
# number of runs (a batch), then the context windows of long videos: callers that leave them out
# get their defaults.
FORM_KEYS = ("variant", "mode", "prompt", "negative_prompt", "images", "audio", "trim_start", "trim_end",
             "lips", "mix_background", "background_gain", "size", "width", "height", "match_audio", "frames",
             "steps", "shift", "scale_t", "scale_i", "scale_a", "seed",
             "plan", "fast_mode", "attention", "compile", "runs",
             "window_length", "window_overlap", "window_schedule")
WINDOW_KEYS = ("window_length", "window_overlap", "window_schedule")
SCHEDULE_CHOICES = [("shifted (seams move every other step)", "shifted"), ("fixed", "fixed")]
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


# What an API caller who names only some inputs gets for the rest (None: the model's default).
API_DEFAULTS: dict[str, Any] = {
    "negative_prompt": "", "images": None, "audio": None, "trim_start": 0, "trim_end": 0,
    "lips": LIPS_ORIGINAL, "mix_background": False, "background_gain": 1.0, "size": None, "width": None,
    "height": None, "match_audio": True, "frames": None, "steps": None, "shift": None, "scale_t": None,
    "scale_i": None, "scale_a": None, "seed": 0, "plan": AUTO, "fast_mode": EXACT, "attention": AUTO,
    "compile": False, "runs": 1, "window_length": None, "window_overlap": None, "window_schedule": None,
}
# Inputs that take the model's default when left out or None.
VARIANT_DEFAULTS = ("width", "height", "frames", "steps", "shift", "scale_t", "scale_i", "scale_a")


def form_values(values) -> dict[str, Any]:
    """The handler's inputs (positional, in FORM_KEYS order) as a dict. Inputs a caller left out
    (an older positional caller, or a named call that gives only some) get API_DEFAULTS, and the
    model's own defaults where those say None."""
    f = dict(zip(FORM_KEYS, values))
    for key, default in API_DEFAULTS.items():
        if f.get(key) is None:
            f[key] = default
    try:
        d = get_variant(f.get("variant")).defaults
    except Exception:
        return f                          # an unknown model is refused by the checks, with a message
    for key in VARIANT_DEFAULTS:
        if f.get(key) is None:
            f[key] = getattr(d, key) if getattr(d, key) is not None else 0.0
    if f.get("size") is None:
        f["size"] = f"{f['width']}x{f['height']}"
    if f.get("mode") is None:
        f["mode"] = d.mode
    return f


def is_random_seed(seed) -> bool:
    """True for the seed box's "random" value (-1)."""
    try:
        return check_seed(seed) == RANDOM_SEED
    except InputError:
        return False


def raw_request(f: dict[str, Any]) -> dict[str, Any]:
    """The form's values as the raw settings the one rule (engine.request.resolve_request) reads."""
    raw = {k: f.get(k) for k in ("variant", "mode", "prompt", "negative_prompt", "audio", "width", "height",
                                 "steps", "shift", "scale_t", "scale_i", "scale_a", "seed", "runs",
                                 "trim_start", "trim_end", "background_gain", "fast_mode", *WINDOW_KEYS)}
    raw["images"] = files_of(f.get("images"))
    raw["size"] = None if f.get("size") == CUSTOM else f.get("size")
    follow_audio = bool(f.get("match_audio")) and str(f.get("mode") or "").upper() in ("TA", "TIA")
    raw["frames"] = "auto" if follow_audio else f.get("frames")
    return raw


def resolve_form(f: dict[str, Any]) -> Resolved:
    """The studio's form handler: every value checked by the one rule. Raises InputError."""
    return resolve_request(raw_request(f))


validate_form = resolve_form


def build_request(resolved: Resolved, seed: int, audio_path: str | None, out_path: str,
                  extras: dict[str, Any]) -> GenerationRequest:
    """The checked request of one run: its seed, the clip that drives the lips, where it goes."""
    request = GenerationRequest.from_dict(resolved.request.to_dict())
    request.seed = seed
    request.audio = audio_path if uses_audio(request.mode) else None
    request.out_path = out_path
    request.metadata = {"studio": extras}
    return request


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
        # The windows that ran (a video that fit one window keeps what was asked: often empty).
        "window_length": s.get("window_length"), "window_overlap": s.get("window_overlap"),
        "window_schedule": s.get("window_schedule") or "shifted",
    }
    return [val[k] for k in FORM_KEYS]
