"""Long videos through the studio's API (gradio_client, the real app and engine, tiny variant):
a clip longer than one context window, with the window settings given by name, makes a video
of the clip's length; the status names the window being denoised; the MP4's settings and
"reuse settings" carry the windows; a window setting the request rule refuses is a message."""
from __future__ import annotations

import numpy as np
import pytest
from gradio_client import Client, handle_file

from conftest_ui import StudioProcess, make_tiny_weights
from engine.request import snap_frames

CLIP_S = 3.2                   # 80 frames -> 77 (4k+1) -> 20 latent frames: 7 windows of 4 (overlap 1)


def tone_clip(path, seconds: float, sr: int = 16000):
    import soundfile as sf
    t = np.arange(int(seconds * sr)) / sr
    sf.write(str(path), (0.2 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), sr)
    return path


@pytest.fixture(scope="module")
def studio(tmp_path_factory):
    root = tmp_path_factory.mktemp("studio-windows")
    with StudioProcess(make_tiny_weights(root / "weights"), root / "outputs", root / "app.log") as app:
        client = Client(app.url, verbose=False, download_files=str(root / "downloads"))
        yield {"app": app, "client": client, "clip": tone_clip(root / "clip.wav", CLIP_S)}


def test_a_long_clip_runs_in_windows_set_over_the_api(studio):
    from engine.media import probe_mp4

    client = studio["client"]
    job = client.submit(variant="tiny", mode="TA", prompt="A long take in windows.",
                        audio=handle_file(str(studio["clip"])), match_audio=True, steps=6, seed=3,
                        width=128, height=96, window_length=4, window_overlap=1, window_schedule="fixed",
                        api_name="/generate")
    job.result(timeout=240)
    statuses = [str(o[0]) for o in job.outputs() if o]
    windows = [s for s in statuses if 'data-window="' in s]
    assert windows, statuses[-5:]
    assert any("window" in s and " of 7" in s for s in windows), windows[:3]
    status, _preview, video, summary, _grid = job.outputs()[-1]
    assert "Done:" in status, status

    frames = snap_frames(int(CLIP_S * 25))
    info = probe_mp4(video["video"] if isinstance(video, dict) else video)
    assert info["frames"] == frames == 77, info
    assert f"{frames} frames" in summary and "context windows of 13 frames (fixed)" in summary, summary
    meta = info["metadata"]["humo_studio"]
    assert (meta["window_length"], meta["window_overlap"], meta["window_schedule"]) == (4, 1, "fixed"), meta

    entry_id = status.split("Done:")[1].split("<")[0].strip()
    settings = client.predict(entry_id, api_name="/reuse_settings")
    assert list(settings[27:30]) == [4, 1, "fixed"], settings[27:30]
    assert settings[14] is True          # match the audio length


def test_window_settings_are_checked_by_the_request_rule(studio):
    client = studio["client"]
    status = client.predict(variant="tiny", mode="TA", prompt="Bad windows.", audio=handle_file(str(studio["clip"])),
                            window_length=4, window_overlap=4, api_name="/generate")[0]
    assert "Window overlap must be between 1 and 3, not 4." in status and "Traceback" not in status, status
    status = client.predict(variant="tiny", mode="TA", prompt="Bad windows.", audio=handle_file(str(studio["clip"])),
                            window_length=500, api_name="/generate")[0]
    assert "Window length must be between 2 and 200, not 500." in status, status


def test_a_preset_sets_the_windows(studio, tmp_path):
    """/apply_preset's window inputs and outputs come last: an older caller's ten inputs still work."""
    out = studio["client"].predict("Pipeline check (tiny)", "tiny", 128, 96, 17, 4, 5.0, 7.0, 4.0, 7.5,
                                   api_name="/apply_preset")
    assert tuple(out[:5]) == ("128x96", 128, 96, 9, 2)
    assert list(out[9:]) == [None, None, "shifted"], out        # the preset leaves the windows as they were
