"""The engine's public face: the studio imports only it, and it answers what the studio asks."""
from __future__ import annotations

import ast

import pytest

from engine import options
from engine.errors import InputError
from tests.conftest import ROOT

PUBLIC = {"engine", "engine.errors", "engine.events", "engine.media", "engine.options", "engine.request",
          "engine.weights", "engine.redact",
          # dubbing's own public face: its request, its pipeline and the pieces the first-frame check draws
          "engine.dub.request", "engine.dub.pipeline", "engine.dub.blend", "engine.dub.face.parsing",
          "engine.dub.face.track", "engine.media.video_in"}


def _engine_imports(path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "engine":
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "engine"}
    return found


def test_studio_uses_only_the_public_face():
    files = sorted((ROOT / "studio").rglob("*.py")) + [ROOT / "app.py"]
    reached = {f"{p.relative_to(ROOT)}: {m}" for p in files for m in _engine_imports(p) if m not in PUBLIC}
    assert not reached, f"internals imported by the studio: {sorted(reached)}"


def test_options_answer_on_this_machine():
    assert options.plan_names("tiny", on="cpu")[0] == "auto" and "cpu" in options.plan_names("tiny", on="cpu")
    assert "cpu" not in options.plan_names("tiny", on="cuda")
    names = [m.name for m in options.fast_modes()]
    assert "fast" in names and all("pproximate" in m.label for m in options.fast_modes())
    assert options.fast_mode("exact") is None and options.fast_mode("fast").name == "fast"
    with pytest.raises(InputError, match="Unknown fast mode"):
        options.fast_mode("warp")
    assert options.attention_backends("cpu")[:2] == ["native", "_native_math"]
    assert not options.attention_is_approximate("native") and options.attention_is_approximate("sage")
    options.check_attention("auto")
    with pytest.raises(InputError, match="cannot run here"):
        options.check_attention("flash")
    options.check_plan("auto")
    with pytest.raises(InputError, match="no-such-plan"):
        options.check_plan("no-such-plan")


def test_auto_plan_for_a_gpu_size_and_a_hand_picked_estimate():
    roomy = options.auto_plan("humo-1.7b", 832, 480, 97, "TIA", vram_gb=80)
    assert roomy["plan"] == "full" and roomy["device"] == "cuda" and roomy["estimate"]["peak_bytes"] > 0
    none_fit = options.auto_plan("humo-1.7b", 832, 480, 97, "TIA", vram_gb=1)
    assert none_fit["plan"] is None and "No memory plan fits" in none_fit["error"]
    snapped = options.auto_plan("humo-1.7b", 830, 470, 90, "TIA", vram_gb=80)
    # The one request rule: sizes round to the nearest multiple of 16, frames down to 4k+1, with notices.
    assert (snapped["width"], snapped["height"], snapped["frames"]) == (832, 464, 89)
    assert any("830" in n for n in snapped["notices"]), snapped["notices"]
    est = options.plan_estimate("cpu", "tiny", 128, 96, 9, "TA")
    assert est["peak_bytes"] > 0
    with pytest.raises(InputError):
        options.auto_plan("no-such-variant", 832, 480, 97)
