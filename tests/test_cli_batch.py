"""The headless CLI beyond one video: several seeds, jobs files, settings read back from an MP4, Ctrl-C."""
from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from engine.media import probe_mp4, read_video_frames
from tests.conftest import ROOT
from tests.media_fixtures import speak

BASE = ["--variant", "tiny", "--size", "128x96", "--steps", "2"]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli_inputs")
    voice = speak(d / "voice.wav", "Good morning.")
    img = Image.new("RGB", (200, 260), (70, 110, 180))
    for y in range(0, 260, 6):
        for x in range(200):
            img.putpixel((x, y), (210, 150 + x % 50, 120))
    img.save(d / "face.png")
    return {"dir": d, "voice": voice, "image": d / "face.png"}


def cli(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "engine", "generate", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


def test_runs_makes_one_video_per_seed_with_the_models_loaded_once(tiny_weights, inputs, tmp_path):
    out = tmp_path / "take.mp4"
    proc = cli(*BASE, "--weights", tiny_weights, "--prompt", "A man greets the camera", "--audio", inputs["voice"],
               "--image", inputs["image"], "--seed", 7, "--runs", 2, "--out", out)
    assert proc.returncode == 0, proc.stderr[-2000:]
    paths = [tmp_path / "take-seed7.mp4", tmp_path / "take-seed8.mp4"]
    assert [probe_mp4(p)["metadata"]["humo_studio"]["seed"] for p in paths] == [7, 8]
    a, b = (read_video_frames(p).astype(np.float32) for p in paths)
    assert a.shape == b.shape and np.abs(a - b).mean() > 1.0          # another seed, another video
    assert "2 of 2 videos written" in proc.stderr
    assert "[1/2] [loading]" in proc.stderr and "[2/2] [loading]" not in proc.stderr   # loaded once


@pytest.fixture(scope="module")
def first(tiny_weights, inputs, tmp_path_factory):
    d = tmp_path_factory.mktemp("first")
    voice = d / "voice.wav"
    shutil.copy(inputs["voice"], voice)
    out = d / "first.mp4"
    proc = cli(*BASE, "--weights", tiny_weights, "--prompt", "A woman laughs and talks", "--audio", voice,
               "--image", inputs["image"], "--seed", 3, "--scale-a", 6.5, "--out", out)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return {"video": out, "voice": voice}


def test_from_an_earlier_video_repeats_it_exactly_and_flags_override(tiny_weights, first, tmp_path):
    again = tmp_path / "again.mp4"
    proc = cli("--weights", tiny_weights, "--from", first["video"], "--out", again)
    assert proc.returncode == 0, proc.stderr[-2000:]
    old, new = probe_mp4(first["video"])["metadata"]["humo_studio"], probe_mp4(again)["metadata"]["humo_studio"]
    for key in ("prompt", "seed", "steps", "scale_a", "width", "height", "frames", "mode", "variant"):
        assert new[key] == old[key], key
    np.testing.assert_array_equal(read_video_frames(first["video"]), read_video_frames(again))  # same video

    changed = tmp_path / "seed5.mp4"
    proc = cli("--weights", tiny_weights, "--from", first["video"], "--seed", 5, "--steps", 3, "--out", changed)
    assert proc.returncode == 0, proc.stderr[-2000:]
    meta = probe_mp4(changed)["metadata"]["humo_studio"]
    assert (meta["seed"], meta["steps"], meta["prompt"], meta["scale_a"]) == (5, 3, old["prompt"], 6.5)


def test_from_a_video_whose_voice_clip_is_gone_uses_the_clip_inside_it(tiny_weights, first, tmp_path):
    moved = tmp_path / "moved.wav"
    first["voice"].rename(moved)
    try:
        again = tmp_path / "again.mp4"
        proc = cli("--weights", tiny_weights, "--from", first["video"], "--out", again)
    finally:
        moved.rename(first["voice"])
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "audio track of first.mp4" in proc.stderr
    info = probe_mp4(again)
    assert info["has_audio"] and info["metadata"]["humo_studio"]["audio"] == str(first["video"])


def test_from_a_file_without_settings_is_a_one_line_error(tmp_path):
    plain = tmp_path / "notes.json"
    plain.write_text(json.dumps({"hello": 1}))
    proc = cli("--from", plain, "--out", tmp_path / "x.mp4")
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "holds no HuMo Studio settings" in proc.stderr


def test_jobs_file_runs_every_job_and_reports_the_one_that_failed(tiny_weights, inputs, tmp_path):
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"RIFF not really a wave file" * 40)
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text("\n".join([
        "# one video per line",
        json.dumps({"prompt": "A chef explains a recipe", "audio": str(inputs["voice"]), "seed": 1, "out": "chef.mp4"}),
        json.dumps({"prompt": "A damaged clip", "audio": str(broken), "seed": 2}),
        "",
        json.dumps({"prompt": "A teacher talks", "audio": str(inputs["voice"]), "images": [str(inputs["image"])],
                    "seed": 4, "out": "teacher.mp4", "colour": "blue"}),
    ]))
    out = tmp_path / "outs"
    proc = cli(*BASE, "--weights", tiny_weights, "--jobs", jobs, "--out", out)
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert sorted(p.name for p in out.glob("*.mp4")) == ["chef.mp4", "teacher.mp4"]
    assert probe_mp4(out / "teacher.mp4")["metadata"]["humo_studio"]["mode"] == "TIA"
    assert probe_mp4(out / "chef.mp4")["metadata"]["humo_studio"]["mode"] == "TA"
    assert "error: [2/3]" in proc.stderr and "broken.wav" in proc.stderr
    assert "ignored unknown setting 'colour'" in proc.stderr
    assert "2 of 3 videos written; failed: job 2" in proc.stderr


def test_bad_jobs_fail_before_loading_anything(tiny_weights, inputs, tmp_path):
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text(json.dumps({"prompt": "fine", "audio": str(inputs["voice"])}) + "\n{not json\n")
    proc = cli("--weights", tiny_weights, "--jobs", jobs)
    assert proc.returncode == 2 and "line 2 is not valid JSON" in proc.stderr

    good = {"prompt": "ok", "audio": str(inputs["voice"])}
    jobs.write_text(json.dumps([good, {"prompt": "  ", "audio": str(inputs["voice"])}, {**good, "steps": 999},
                                {**good, "audio": str(tmp_path / "nope.wav")}, good]))
    proc = cli("--variant", "tiny", "--weights", tiny_weights, "--jobs", jobs, "--out", tmp_path / "o")
    assert proc.returncode == 2
    assert "job 2: The prompt is empty" in proc.stderr and "job 3: Steps must be between 1 and 200" in proc.stderr
    assert "job 4: The voice clip" in proc.stderr and "nope.wav does not exist" in proc.stderr
    assert "3 of 5 jobs have problems; nothing was made" in proc.stderr
    assert "[loading]" not in proc.stderr and not (tmp_path / "o").exists()


def test_ctrl_c_cancels_the_video_and_skips_the_rest(tiny_weights, inputs, tmp_path):
    out = tmp_path / "long.mp4"
    proc = subprocess.Popen([sys.executable, "-m", "engine", "generate", "--variant", "tiny", "--weights",
                             str(tiny_weights), "--size", "128x96", "--steps", "200", "--runs", "3",
                             "--prompt", "A long take", "--audio", str(inputs["voice"]), "--out", str(out)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen = ""
    deadline = time.monotonic() + 120
    while "denoising" not in seen and time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        seen += line
    assert "denoising" in seen, seen
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr[-2000:]
    assert "cancelled: 0 of 3 videos written" in stderr
    assert not list(tmp_path.glob("long*.mp4"))


def test_missing_weights_stop_the_whole_jobs_file_with_one_message(inputs, tmp_path):
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text("\n".join(json.dumps({"prompt": p, "audio": str(inputs["voice"])}) for p in ("one", "two")))
    proc = cli("--variant", "tiny", "--weights", tmp_path / "empty", "--jobs", jobs, "--out", tmp_path / "o")
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.count("weights are not ready") == 1 and "make-tiny" in proc.stderr
    assert "[2/2]" not in proc.stderr
