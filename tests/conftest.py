"""Shared fixtures: the golden folder beside the checkout and the tiny variant's weights."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = Path(os.environ.get("HUMO_GOLDEN_DIR", ROOT.parent / "shared" / "golden"))

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")


@pytest.fixture(scope="session")
def golden_dir() -> Path:
    assert GOLDEN.is_dir(), f"golden folder not found at {GOLDEN} (set HUMO_GOLDEN_DIR)"
    return GOLDEN


def _made_tiny(folder: Path, *model: str) -> Path:
    """Random-weight files written into `folder` by the real `make-tiny` command."""
    subprocess.run([sys.executable, "-m", "engine", "make-tiny", str(folder), *model], cwd=ROOT, check=True,
                   capture_output=True, text=True)
    return folder


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory) -> Path:
    """The tiny HuMo variant's complete weights folder."""
    return _made_tiny(tmp_path_factory.mktemp("weights"))


@pytest.fixture(scope="session")
def musetalk_weights(tmp_path_factory) -> Path:
    """Tiny MuseTalk 1.5 weights (`make-tiny --model musetalk-1.5`)."""
    return _made_tiny(tmp_path_factory.mktemp("dub-weights"), "--model", "musetalk-1.5")


@pytest.fixture(scope="session")
def latentsync_weights(tmp_path_factory) -> Path:
    """Tiny LatentSync 1.6 weights (`make-tiny --model latentsync-1.6`)."""
    return _made_tiny(tmp_path_factory.mktemp("latentsync-weights"), "--model", "latentsync-1.6")


@pytest.fixture(scope="session")
def track_cache(tmp_path_factory) -> Path:
    """One face-track cache for the dubbing tests: each real clip is tracked once per session."""
    return tmp_path_factory.mktemp("face-tracks")


def pytest_sessionfinish(session, exitstatus):
    """Stop any studio child a failed fixture left running (see conftest_ui.StudioProcess)."""
    ui = sys.modules.get("conftest_ui")
    if ui is not None:
        ui.stop_all_studios()
