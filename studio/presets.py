"""Named settings ("Fast draft", "Final quality" ...) kept as data files in `presets/`.

One preset per file, JSON (or TOML)::

    {
      "name": "Fast draft",
      "description": "Fewer steps at 480p: check the framing and the lip sync quickly.",
      "applies_to": ["humo-1.7b", "humo-17b"],
      "order": 10,
      "steps": 20,
      "width": 832,
      "height": 480
    }

Long videos may also set their context windows: "window_length" and "window_overlap" (latent
frames) and "window_schedule" ("shifted" or "fixed"), checked by the engine's request rule.

A preset only overrides: the variant defaults live in `engine.humo.variants`, and every
setting a preset does not name is left as the user had it.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from engine.errors import InputError
from engine.options import VARIANTS

PRESETS_DIR = Path(__file__).resolve().parent.parent / "presets"

# The settings a preset may set, and their types.
INT_SETTINGS = ("steps", "width", "height", "frames")
FLOAT_SETTINGS = ("shift", "scale_t", "scale_i", "scale_a")
WINDOW_SETTINGS = ("window_length", "window_overlap", "window_schedule")   # long videos (checked by the engine's rule)
SETTING_KEYS = INT_SETTINGS + FLOAT_SETTINGS + WINDOW_SETTINGS
META_KEYS = ("name", "description", "applies_to", "order")
_SUFFIXES = (".json", ".toml")


class PresetError(ValueError):
    """A preset file that cannot be used; the message names the file and what is wrong."""


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    applies_to: tuple[str, ...]
    values: dict[str, Any] = field(default_factory=dict)   # only the settings this preset sets
    order: int = 100
    source: str | None = None                               # the file it came from

    def applies(self, variant: str) -> bool:
        return _norm(variant) in self.applies_to

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description, "applies_to": list(self.applies_to),
                "order": self.order, **self.values}


def parse_preset(data: Any, source: str = "<preset>") -> Preset:
    """Validate one preset's data. Raises PresetError naming `source`."""
    def fail(msg: str) -> PresetError:
        return PresetError(f"Preset file {source}: {msg}")

    if not isinstance(data, dict):
        raise fail("must hold one object with a name, a description, applies_to and settings.")
    unknown = sorted(set(data) - set(META_KEYS) - set(SETTING_KEYS))
    if unknown:
        raise fail(f"unknown key(s) {', '.join(map(repr, unknown))}; allowed: "
                   f"{', '.join(META_KEYS + SETTING_KEYS)}.")
    for key in ("name", "description", "applies_to"):
        if key not in data:
            raise fail(f"missing {key!r}.")

    name, description = data["name"], data["description"]
    if not isinstance(name, str) or not name.strip():
        raise fail("'name' must be a non-empty string.")
    if not isinstance(description, str):
        raise fail("'description' must be a string.")

    applies_to = data["applies_to"]
    if isinstance(applies_to, str) or not isinstance(applies_to, list) or not applies_to \
            or not all(isinstance(v, str) and v.strip() for v in applies_to):
        raise fail("'applies_to' must be a non-empty list of variant names.")
    variants = tuple(dict.fromkeys(_norm(v) for v in applies_to))
    missing = [v for v in variants if v not in VARIANTS]
    if missing:
        raise fail(f"unknown variant(s) {', '.join(map(repr, missing))} in 'applies_to'; "
                   f"known: {', '.join(VARIANTS)}.")

    order = data.get("order", 100)
    if not _is_int(order):
        raise fail("'order' must be an integer.")

    values: dict[str, Any] = {}
    for key in INT_SETTINGS:
        if key in data:
            value = data[key]
            if not _is_int(value) or value <= 0:
                raise fail(f"{key!r} must be a positive integer, not {value!r}.")
            values[key] = int(value)
    for key in FLOAT_SETTINGS:
        if key in data:
            value = data[key]
            if not _is_number(value) or value < 0:
                raise fail(f"{key!r} must be a non-negative number, not {value!r}.")
            values[key] = float(value)
    windows = {key: data[key] for key in WINDOW_SETTINGS if key in data}
    if windows:
        from engine.request import check_windows
        if any(isinstance(value, bool) for value in windows.values()):
            raise fail("the window settings are numbers (length, overlap) and shifted or fixed (schedule).")
        try:
            checked = dict(zip(WINDOW_SETTINGS, check_windows(windows)))
        except InputError as err:
            raise fail(str(err)) from None
        values.update({key: checked[key] for key in windows})
    if not values:
        raise fail(f"sets nothing; give at least one of {', '.join(SETTING_KEYS)}.")

    if ("width" in values) != ("height" in values):
        raise fail("give 'width' and 'height' together.")
    if "width" in values:
        size = (values["width"], values["height"])
        for v in variants:
            allowed = {tuple(s) for s in VARIANTS[v].sizes} | {tuple(s[::-1]) for s in VARIANTS[v].sizes}
            if size not in allowed:
                raise fail(f"size {size[0]}x{size[1]} is not one {v} supports "
                           f"({', '.join(f'{w}x{h}' for w, h in VARIANTS[v].sizes)}).")
    if "frames" in values and (values["frames"] - 1) % 4:
        raise fail(f"'frames' must be 4n+1 (e.g. 17, 97), not {values['frames']}.")
    if "scale_i" in values:
        no_image_scale = [v for v in variants if VARIANTS[v].defaults.scale_i is None]
        if no_image_scale:
            raise fail(f"'scale_i' does not apply to {', '.join(no_image_scale)} (it has no separate image scale).")

    return Preset(name=name.strip(), description=description.strip(), applies_to=variants,
                  values=values, order=int(order), source=source)


def load_preset_file(path: str | os.PathLike) -> Preset:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise PresetError(f"Preset file {path.name}: cannot be read ({err}).") from None
    try:
        if path.suffix.lower() == ".toml":
            import tomllib
            data = tomllib.loads(text)
        else:
            data = json.loads(text)
    except ValueError as err:      # json.JSONDecodeError and tomllib.TOMLDecodeError are ValueErrors
        raise PresetError(f"Preset file {path.name}: not valid {path.suffix.lstrip('.').upper()} ({err}).") from None
    return parse_preset(data, source=path.name)


def load_presets(directory: str | os.PathLike | None = None) -> list[Preset]:
    """Every preset in `directory` (default: the project's presets/ folder), in display order.

    Raises PresetError for the first invalid file, or when two files use the same name.
    """
    directory = Path(directory) if directory is not None else PRESETS_DIR
    if not directory.is_dir():
        return []
    presets: list[Preset] = []
    seen: dict[str, str] = {}
    for path in sorted(directory.iterdir()):
        if path.suffix.lower() not in _SUFFIXES or path.name.startswith(".") or not path.is_file():
            continue
        preset = load_preset_file(path)
        key = preset.name.casefold()
        if key in seen:
            raise PresetError(f"Preset file {path.name}: the name {preset.name!r} is already used by {seen[key]}.")
        seen[key] = path.name
        presets.append(preset)
    presets.sort(key=lambda p: (p.order, p.name.casefold()))
    return presets


def presets_for(variant: str, presets: Iterable[Preset] | None = None) -> list[Preset]:
    """The presets that apply to this variant (from `presets`, default: the shipped ones)."""
    pool = load_presets() if presets is None else list(presets)
    return [p for p in pool if p.applies(variant)]


def get_preset(name: str, presets: Iterable[Preset] | None = None) -> Preset:
    pool = load_presets() if presets is None else list(presets)
    for preset in pool:
        if preset.name.casefold() == str(name).strip().casefold():
            return preset
    raise KeyError(f"No preset named {name!r}; choose one of: {', '.join(p.name for p in pool)}.")


def apply(preset: Preset, current_settings: dict[str, Any]) -> dict[str, Any]:
    """A copy of `current_settings` with the preset's values set.

    A preset size keeps the current orientation: a portrait form stays portrait.
    Raises InputError when the form's variant is not one the preset is for.
    """
    out = dict(current_settings)
    variant = out.get("variant")
    if variant and not preset.applies(str(variant)):
        raise InputError(f"The preset {preset.name!r} is for {', '.join(preset.applies_to)}, not {variant}.",
                         hint="Pick a preset listed for the selected model.")
    values = dict(preset.values)
    if "width" in values:
        cur_w, cur_h = out.get("width"), out.get("height")
        if _is_int(cur_w) and _is_int(cur_h) and cur_w != cur_h and values["width"] != values["height"] \
                and (cur_h > cur_w) != (values["height"] > values["width"]):
            values["width"], values["height"] = values["height"], values["width"]
    out.update(values)
    return out


def _norm(variant: str) -> str:
    return str(variant).strip().lower()


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == value
