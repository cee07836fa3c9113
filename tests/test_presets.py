"""Presets: the shipped files, validation of bad files, and applying a preset to the form."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.errors import InputError
from engine.request import GenerationRequest
from engine.humo.variants import VARIANTS
from studio.presets import (PRESETS_DIR, SETTING_KEYS, Preset, PresetError, apply, get_preset, load_preset_file,
                            load_presets, presets_for)

SHIPPED_FILES = sorted(p for p in PRESETS_DIR.iterdir() if p.suffix in (".json", ".toml"))


def write(folder: Path, name: str, data) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


GOOD = {"name": "Quick", "description": "fast", "applies_to": ["humo-1.7b"], "steps": 10}


def test_shipped_presets_are_valid_and_name_real_variants():
    assert len(SHIPPED_FILES) >= 5
    for path in SHIPPED_FILES:
        preset = load_preset_file(path)
        assert preset.source == path.name
        assert preset.applies_to and all(v in VARIANTS for v in preset.applies_to), path.name
        assert set(preset.values) <= set(SETTING_KEYS) and preset.values
        assert preset.description
        raw = json.loads(path.read_text())
        assert set(raw) - {"name", "description", "applies_to", "order"} == set(preset.values)
        # Every value is one a GenerationRequest takes.
        GenerationRequest(prompt="x", variant=preset.applies_to[0], **preset.values)
    names = [p.name for p in load_presets()]
    assert len(names) == len(SHIPPED_FILES) and len(set(names)) == len(names)


def test_shipped_presets_cover_the_brief():
    presets = {p.name: p for p in load_presets()}
    fast, final, p720, tiny = (presets["Fast draft"], presets["Final quality"], presets["720p final"],
                               presets["Pipeline check (tiny)"])
    assert "Balanced" in presets
    assert 20 <= fast.values["steps"] <= 25 and fast.values["height"] == 480
    assert final.values["steps"] == 50
    assert p720.applies_to == ("humo-17b",) and (p720.values["width"], p720.values["height"]) == (1280, 720)
    assert tiny.applies_to == ("tiny",)
    # Fewer steps for the draft than for the balanced and final presets.
    assert fast.values["steps"] < presets["Balanced"].values["steps"] < final.values["steps"]


def test_presets_for_each_variant():
    for name in VARIANTS:
        matching = presets_for(name)
        assert matching, f"no preset for {name}"
        assert all(name in p.applies_to for p in matching)
    assert [p.name for p in presets_for("tiny")] == ["Pipeline check (tiny)"]
    assert "720p final" in [p.name for p in presets_for(" HuMo-17B ")]
    assert "720p final" not in [p.name for p in presets_for("humo-1.7b")]
    assert presets_for("no-such-variant") == []


def test_load_orders_and_reads_toml(tmp_path):
    write(tmp_path, "b.json", {**GOOD, "name": "Second", "order": 2})
    write(tmp_path, "a.json", {**GOOD, "name": "Third", "order": 3})
    write(tmp_path, "c.toml", 'name = "First"\ndescription = "from toml"\napplies_to = ["tiny"]\n'
                              'order = 1\nsteps = 3\nshift = 4\nframes = 9\n')
    write(tmp_path, "notes.txt", "not a preset")
    presets = load_presets(tmp_path)
    assert [p.name for p in presets] == ["First", "Second", "Third"]
    assert presets[0].values == {"steps": 3, "shift": 4.0, "frames": 9}
    assert isinstance(presets[0].values["shift"], float)
    assert load_presets(tmp_path / "absent") == []
    assert [p.name for p in presets_for("tiny", presets)] == ["First"]
    assert get_preset("second", presets).name == "Second"
    with pytest.raises(KeyError, match="First"):
        get_preset("nope", presets)


@pytest.mark.parametrize("data, message", [
    ({**GOOD, "stepz": 10}, "unknown key(s) 'stepz'"),
    ({**GOOD, "steps": "20"}, "'steps' must be a positive integer"),
    ({**GOOD, "steps": 2.5}, "'steps' must be a positive integer"),
    ({**GOOD, "steps": True}, "'steps' must be a positive integer"),
    ({**GOOD, "steps": 0}, "'steps' must be a positive integer"),
    ({**GOOD, "shift": "5"}, "'shift' must be a non-negative number"),
    ({**GOOD, "scale_a": -1}, "'scale_a' must be a non-negative number"),
    ({**GOOD, "applies_to": "humo-1.7b"}, "'applies_to' must be a non-empty list"),
    ({**GOOD, "applies_to": []}, "'applies_to' must be a non-empty list"),
    ({**GOOD, "applies_to": ["humo-3b"]}, "unknown variant(s) 'humo-3b'"),
    ({k: v for k, v in GOOD.items() if k != "name"}, "missing 'name'"),
    ({k: v for k, v in GOOD.items() if k != "applies_to"}, "missing 'applies_to'"),
    ({**GOOD, "name": "  "}, "'name' must be a non-empty string"),
    ({"name": "Empty", "description": "", "applies_to": ["tiny"]}, "sets nothing"),
    ({**GOOD, "width": 832}, "give 'width' and 'height' together"),
    ({**GOOD, "width": 1000, "height": 500}, "size 1000x500 is not one humo-1.7b supports"),
    ({**GOOD, "frames": 96}, "'frames' must be 4n+1"),
    ({**GOOD, "applies_to": ["humo-17b"], "scale_i": 3.0}, "'scale_i' does not apply to humo-17b"),
    ({**GOOD, "order": "first"}, "'order' must be an integer"),
    (["a", "list"], "must hold one object"),
])
def test_bad_files_are_rejected_naming_the_file(tmp_path, data, message):
    write(tmp_path, "ok.json", {**GOOD, "name": "Fine"})
    write(tmp_path, "broken-preset.json", data)
    with pytest.raises(PresetError) as info:
        load_presets(tmp_path)
    text = str(info.value)
    assert "broken-preset.json" in text and message in text, text
    assert "\n" not in text


def test_unparsable_files_and_duplicate_names(tmp_path):
    write(tmp_path / "a", "bad.json", "{ not json")
    with pytest.raises(PresetError, match=r"bad\.json: not valid JSON"):
        load_presets(tmp_path / "a")
    write(tmp_path / "b", "bad.toml", "name = ")
    with pytest.raises(PresetError, match=r"bad\.toml: not valid TOML"):
        load_presets(tmp_path / "b")
    write(tmp_path / "c", "one.json", GOOD)
    write(tmp_path / "c", "two.json", {**GOOD, "name": "quick"})
    with pytest.raises(PresetError, match=r"two\.json: the name 'quick' is already used by one\.json"):
        load_presets(tmp_path / "c")


def test_apply_overrides_only_what_the_preset_sets():
    final = get_preset("Final quality")
    form = GenerationRequest(prompt="hi", variant="humo-1.7b", steps=20, scale_a=6.0, width=832, height=480,
                             seed=9).to_dict()
    out = apply(final, form)
    assert out is not form and form["steps"] == 20, "the input is not changed"
    assert out["steps"] == 50
    assert {k: v for k, v in out.items() if k != "steps"} == {k: v for k, v in form.items() if k != "steps"}
    GenerationRequest.from_dict(out)


def test_apply_keeps_orientation_and_checks_variant():
    fast = get_preset("Fast draft")
    portrait = apply(fast, {"variant": "humo-17b", "width": 720, "height": 1280, "steps": 50})
    assert (portrait["width"], portrait["height"], portrait["steps"]) == (480, 832, 20)
    landscape = apply(fast, {"variant": "humo-17b", "width": 1280, "height": 720})
    assert (landscape["width"], landscape["height"]) == (832, 480)
    unset = apply(fast, {"variant": "humo-1.7b", "width": None, "height": None})
    assert (unset["width"], unset["height"]) == (832, 480)
    with pytest.raises(InputError, match="is for humo-17b, not tiny"):
        apply(get_preset("720p final"), {"variant": "tiny"})
    # A form without a variant yet takes the preset as is.
    assert apply(get_preset("Pipeline check (tiny)"), {})["frames"] == 9


def test_preset_round_trips_through_its_dict(tmp_path):
    for preset in load_presets():
        path = write(tmp_path, "p.json", preset.to_dict())
        again = load_preset_file(path)
        assert isinstance(again, Preset)
        assert (again.name, again.description, again.applies_to, again.values, again.order) == \
            (preset.name, preset.description, preset.applies_to, preset.values, preset.order)
