"""The studio's API through gradio_client, against the real app and engine (tiny variant):
a generation streams its progress and ends with a playable MP4 that lands in the gallery;
reuse_settings returns the run's settings; bad input is a readable message, not a crash."""
from __future__ import annotations

import time
from pathlib import Path

import pytest
from gradio_client import Client, handle_file

from conftest_ui import StudioProcess, portrait, spoken_clip

PROMPT = "A man with short brown hair speaks to the camera."


@pytest.fixture(scope="module")
def studio(tmp_path_factory):
    root = tmp_path_factory.mktemp("studio-api")
    # No weights at all: the studio must start anyway; the first test makes the tiny ones through the API.
    app = StudioProcess(root / "weights", root / "outputs", root / "app.log").start()
    client = Client(app.url, verbose=False, download_files=str(root / "downloads"))
    yield {"app": app, "client": client, "root": root,
           "photo": portrait(root / "portrait.png"), "voice": spoken_clip(root / "voice.wav", "Good morning!")}
    app.stop()


def generate_args(s, prompt=PROMPT, width=128, steps=6, seed=99):
    # The order of the `generate` inputs (see studio.app_ui.FORM_KEYS).
    return ["tiny", "TIA", prompt, "", [handle_file(str(s["photo"]))], handle_file(str(s["voice"])), 0, 0,
            "Original clip", False, 1.0, "128x96" if width == 128 else "custom", width, 96, False, 17, steps, 5.0, 7.0, 4.0, 7.5, seed]


def test_api_lists_every_action(studio):
    names = set(studio["client"].view_api(print_info=False, return_format="dict")["named_endpoints"])
    for name in ("/generate", "/cancel", "/isolate_voice", "/gallery_list", "/gallery_get", "/gallery_delete",
                 "/reuse_settings", "/weights_status", "/make_tiny_weights", "/download_weights",
                 "/apply_preset", "/random_seed"):
        assert name in names, f"{name} missing from {sorted(names)}"


def test_make_tiny_weights_from_the_studio(studio):
    client = studio["client"]
    assert "weights are not ready" in client.predict("tiny", api_name="/weights_status")
    status, _variant = client.predict("tiny", api_name="/make_tiny_weights")
    assert "weights present" in status, status
    assert (studio["root"] / "weights" / "tiny").is_dir()


def test_preset_fills_the_settings(studio):
    out = studio["client"].predict("Pipeline check (tiny)", "tiny", 128, 96, 17, 4, 5.0, 7.0, 4.0, 7.5,
                                   api_name="/apply_preset")
    size, width, height, frames, steps = out[:5]
    assert (size, width, height, frames, steps) == ("128x96", 128, 96, 9, 2)


def test_generate_streams_progress_and_returns_video(studio):
    client = studio["client"]
    job = client.submit(*generate_args(studio), api_name="/generate")
    while not job.done():
        time.sleep(0.05)
    outputs = job.outputs()
    assert len(outputs) >= 3, f"expected streamed updates, got {len(outputs)}"
    statuses = [o[0] for o in outputs if o and isinstance(o[0], str)]
    steps = [int(s.split('data-step="')[1].split('"')[0]) for s in statuses if 'data-step="' in s]
    assert steps and min(steps) < 6, statuses      # progress arrived while the run was going
    status, _preview, video, summary, _grid = outputs[-1]
    assert "Done:" in status, status
    video_path = video["video"] if isinstance(video, dict) else video
    data = Path(video_path).read_bytes()
    assert data[4:8] == b"ftyp" and len(data) > 1000
    assert "seed 99" in summary
    entry_id = status.split("Done:")[1].split("<")[0].strip()

    settings = client.predict(entry_id, api_name="/reuse_settings")
    assert settings[2] == PROMPT          # prompt
    assert settings[16] == 6 and settings[21] == 99   # steps, seed

    grid, count = client.predict(api_name="/gallery_list")
    assert "1 run" in count and len(grid) == 1
    from engine.media import probe_mp4
    info = probe_mp4(video_path)
    meta = info["metadata"]["humo_studio"]     # the settings travel inside the MP4
    assert meta["prompt"] == PROMPT and meta["seed"] == 99 and meta["steps"] == 6
    assert meta["metadata"]["studio"]["lips"] == "Original clip"
    assert info["has_audio"] and info["frames"] == 17


def test_bad_input_is_a_message_and_the_app_keeps_serving(studio):
    client = studio["client"]
    status = client.predict(*generate_args(studio, width=100), api_name="/generate")[0]
    assert "not a multiple of 16" in status and "Traceback" not in status
    status = client.predict(*generate_args(studio, prompt=""), api_name="/generate")[0]
    assert "prompt is empty" in status
    assert "weights present" in client.predict("tiny", api_name="/weights_status")
