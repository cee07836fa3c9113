"""Helpers of the gallery tests: fake run videos, settings, and the source/outputs folders."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from engine.request import GenerationRequest


def fake_video(folder: Path, name: str = "run.mp4", size: int = 4096) -> Path:
    """The store never decodes video: any bytes under an .mp4 name will do."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_bytes(os.urandom(size))
    return path


def settings_for(prompt: str, seed: int = 0, used_seed: int | None = None) -> dict:
    request = GenerationRequest(prompt=prompt, variant="tiny", seed=seed, audio="/somewhere/voice.wav",
                                out_path="/tmp/out.mp4")
    data = request.to_dict()
    data["resolved"] = {"steps": 4, "width": 128, "height": 96, "frames": 17, "fps": 25,
                        "seed": seed if used_seed is None else used_seed}
    return data


def run_folders(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.is_dir())


def stray_files(root: Path) -> list[str]:
    """Staging folders, trash folders and temporary files that a finished operation must not leave."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")
                  if p.name.startswith((".staging-", ".trash-")) or p.name.endswith(".tmp"))


@pytest.fixture
def src(tmp_path):
    return tmp_path / "src"


@pytest.fixture
def outputs(tmp_path):
    return tmp_path / "outputs"
