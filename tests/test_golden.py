"""Golden parity: the official implementation's outputs, reproduced through the real loaders."""
from __future__ import annotations

import subprocess
import sys

import pytest

from engine.tools.golden import TOLERANCE, discover, run_case
from tests.conftest import GOLDEN, ROOT

CASES = dict(discover(GOLDEN)) if GOLDEN.is_dir() else {}


def test_golden_folder_has_every_kind_of_case():
    kinds = {name.split(":")[0] for name in CASES}
    assert kinds >= {"dit", "sample", "t5", "vae", "unipc", "audio", "keys"}, kinds


@pytest.mark.parametrize("name", sorted(CASES))
def test_golden_case(name):
    result = run_case(name, CASES[name])
    assert result.error is None, result.error
    assert result.rel_error <= TOLERANCE, f"{name}: relative error {result.rel_error:.3e}"


def test_check_golden_cli_passes_and_reports_each_case():
    proc = subprocess.run([sys.executable, "-m", "engine", "check-golden", str(GOLDEN)], cwd=ROOT,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = [l for l in proc.stdout.splitlines() if l.startswith(("ok", "FAIL"))]
    assert len(lines) == len(CASES)
    assert f"{len(CASES)} passed, 0 failed" in proc.stdout


def test_check_golden_cli_fails_on_a_wrong_golden(tmp_path):
    """A golden folder whose expected output is wrong must make the command fail (exit 1)."""
    import json
    import shutil

    import torch
    from safetensors.torch import load_file, save_file

    for name in ("dit_t2v_tiny.json", "dit_t2v_tiny.pth"):
        shutil.copy(GOLDEN / name, tmp_path / name)
    io = load_file(str(GOLDEN / "dit_t2v_tiny.io.safetensors"))
    io["out"] = io["out"] + 1e-2 * torch.randn_like(io["out"])
    save_file(io, str(tmp_path / "dit_t2v_tiny.io.safetensors"))
    proc = subprocess.run([sys.executable, "-m", "engine", "check-golden", str(tmp_path)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert "FAIL dit:dit_t2v_tiny" in proc.stdout
    assert json.loads((tmp_path / "dit_t2v_tiny.json").read_text())["checkpoint"] == "dit_t2v_tiny.pth"
