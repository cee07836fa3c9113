"""The studio's /dub and /dub_check endpoints over gradio_client, against the real app in a child
process with tiny (random) HuMo and MuseTalk 1.5 weights in one weights folder."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from gradio_client import Client, handle_file

from tests.conftest_ui import ROOT, StudioProcess, child_env, make_tiny_weights, portrait, silent_clip
from tests.dub_fixtures import SPEECH_9S, TALK_704, ffmpeg


def short_voice(dst, seconds: float = 0.8, start: float = 0.4):
    """A short spoken prefix of speech_9s (its first 0.4 s are silence)."""
    wave, sr = sf.read(str(SPEECH_9S), dtype="float32")
    sf.write(str(dst), wave[int(start * sr): int((start + seconds) * sr)], sr)
    return dst


def add_tiny_musetalk(weights_dir):
    proc = subprocess.run([sys.executable, "-m", "engine", "make-tiny", str(weights_dir), "--model", "musetalk-1.5"],
                          cwd=ROOT, env=child_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return weights_dir


@pytest.fixture(scope="module")
def dub_studio(tmp_path_factory):
    root = tmp_path_factory.mktemp("dub-api")
    weights = add_tiny_musetalk(make_tiny_weights(root / "weights"))
    app = StudioProcess(weights, root / "outputs", root / "studio.log",
                        env={"HUMO_TRACK_CACHE": str(root / "tracks")})
    with app:
        yield {"app": app, "root": root, "voice": short_voice(root / "voice.wav"),
               "client": Client(app.url, verbose=False, download_files=str(root / "downloads"))}


def video_arg(path):
    return handle_file(str(path))


def test_dub_check_draws_box_and_mask(dub_studio):
    image, text = dub_studio["client"].predict(video=video_arg(TALK_704), audio=handle_file(str(dub_studio["voice"])),
                                               api_name="/dub_check")
    assert "Crop box" in text and "Face detector" in text, text
    import cv2
    drawn = cv2.imread(image)[:, :, ::-1]
    assert drawn.shape == (1216, 704, 3)
    green = (drawn[..., 1] == 255) & (drawn[..., 0] == 0) & (drawn[..., 2] == 0)
    assert green.sum() > 500, "no crop box outline"
    pink = (drawn[..., 0].astype(int) - drawn[..., 1] > 60) & (drawn[..., 2].astype(int) - drawn[..., 1] > 30)
    assert pink.sum() > 200, "no blend mask tint"


def test_dub_check_for_latentsync_draws_its_crop_and_mouth(dub_studio):
    image, text = dub_studio["client"].predict(video=video_arg(TALK_704), audio=handle_file(str(dub_studio["voice"])),
                                               model="latentsync-1.6", api_name="/dub_check")
    assert "Crop box" in text and "aligned from its box" in text, text
    import cv2
    drawn = cv2.imread(image)[:, :, ::-1]
    green = (drawn[..., 1] == 255) & (drawn[..., 0] == 0) & (drawn[..., 2] == 0)
    pink = (drawn[..., 0].astype(int) - drawn[..., 1] > 60) & (drawn[..., 2].astype(int) - drawn[..., 1] > 30)
    assert green.sum() > 500 and pink.sum() > 200
    ys, xs = np.nonzero(pink)
    assert ys.mean() > np.nonzero(green)[0].mean(), "the mouth mask should sit in the lower part of the crop"


def test_dub_runs_and_lands_in_gallery(dub_studio):
    client = dub_studio["client"]
    status, _preview, video, summary, _grid = client.predict(
        video=video_arg(TALK_704), audio=handle_file(str(dub_studio["voice"])), batch_size=4, api_name="/dub")
    assert "Done:" in status, status
    path = video["video"] if isinstance(video, dict) else video
    from engine.media.video_in import probe_video
    info = probe_video(path)
    assert (info.width, info.height) == (704, 1216)
    assert 18 <= info.frames <= 22, info.frames      # 0.8 s of voice at 25 fps, the video cut there
    found = client.predict(mode="dub", variant="musetalk-1.5", api_name="/gallery_search")
    entry_id = status.split("Done:")[1].split("<")[0].strip()
    assert entry_id in [e["id"] for e in found["entries"]], found
    assert all(e["mode"] == "dub" for e in found["entries"])
    # Reuse settings on a dub fills the Dub tab's settings (after the create form and the two tabs).
    from studio.dub_tab import INPUT_NAMES

    reused = client.predict(entry_id, api_name="/reuse_settings")
    dub_values = dict(zip(INPUT_NAMES[4:], reused[-len(INPUT_NAMES[4:]):]))
    assert dub_values["model"] == "musetalk-1.5" and dub_values["batch_size"] == 4, dub_values


def test_lips_can_follow_the_isolated_voice_and_the_video_keep_its_music(dub_studio):
    from engine.media.mp4_read import probe_mp4, read_mp4_audio
    from studio.dub_tab import INPUT_NAMES

    client, root = dub_studio["client"], dub_studio["root"]
    wave, sr = sf.read(str(dub_studio["voice"]), dtype="float32")
    music = (0.2 * np.sin(2 * np.pi * 220 * np.arange(wave.size) / sr)).astype(np.float32)
    sf.write(str(root / "with_music.wav"), wave + music, sr)
    # Listened to first: the two stems, and the run then uses that same voice stem.
    vocals, background, method = client.predict(handle_file(str(root / "with_music.wav")), 0, 0,
                                                api_name="/dub_isolate_voice")
    assert method.startswith("**Method:"), method
    heard_vocals, _ = sf.read(vocals, dtype="float32")
    heard_background, _ = sf.read(background, dtype="float32")
    assert heard_vocals.size == heard_background.size > 0.9 * wave.size / sr * 44100
    status, _preview, video, _summary, _grid = client.predict(
        video=video_arg(TALK_704), audio=handle_file(str(root / "with_music.wav")), batch_size=4, seed=7,
        lips="Isolated voice", mix_background=True, background_gain=1.0, api_name="/dub")
    assert "Done:" in status, status
    path = video["video"] if isinstance(video, dict) else video
    settings = probe_mp4(path)["metadata"]
    assert settings["audio"] == Path(vocals).name and settings["sound"].startswith("mix-"), settings
    assert settings["separation"] and settings["audio_source"] == "with_music.wav"
    # The voice and the music mixed back at level 1.0 are the clip again: the tone is heard as loud as it was.
    heard = read_mp4_audio(path, sr)[: wave.size]

    def tone_level(x):
        return np.abs(np.fft.rfft(x * np.hanning(x.size)))[int(round(220 * x.size / sr))] / x.size
    assert tone_level(heard) == pytest.approx(tone_level((wave + music)[: heard.size]), rel=0.25)
    entry_id = status.split("Done:")[1].split("<")[0].strip()
    reused = client.predict(entry_id, api_name="/reuse_settings")
    values = dict(zip(INPUT_NAMES[4:], reused[-len(INPUT_NAMES[4:]):]))
    assert (values["lips"], values["mix_background"], values["seed"]) == ("Isolated voice", True, 7), values


def test_dub_bad_inputs_give_one_line(dub_studio):
    root, client = dub_studio["root"], dub_studio["client"]
    voice = handle_file(str(dub_studio["voice"]))
    noface = root / "noface.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=320x240:rate=25", "-t", "1", "-pix_fmt", "yuv420p", str(noface))
    corrupt = root / "corrupt.mp4"
    corrupt.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 20)
    audio_only = root / "audio_only.mp4"
    ffmpeg("-i", str(SPEECH_9S), "-t", "1", "-c:a", "aac", str(audio_only))
    photo = portrait(root / "photo.png")
    cases = {"image as video": (photo, voice), "no face": (noface, voice), "corrupt": (corrupt, voice),
             "no video stream": (audio_only, voice),
             "silent voice": (TALK_704, handle_file(str(silent_clip(root / "silent.wav"))))}
    for name, (video, audio) in cases.items():
        status = client.predict(video=video_arg(video), audio=audio, batch_size=4, api_name="/dub")[0]
        assert "Problem:" in status and "Traceback" not in status, (name, status)
        assert status.count("<div") == 1, (name, status)
        _img, text = client.predict(video=video_arg(video), audio=audio, api_name="/dub_check")
        assert text.startswith("**Problem:**") and "\n" not in text, (name, text)
        print(f"{name}: {text}")
    assert dub_studio["app"].alive()
