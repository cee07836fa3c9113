"""The whole engine on the tiny variant: real loaders, real files, real MP4s."""
from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from engine import Engine, GenerationRequest
from engine.errors import Cancelled, InputError, WeightsError
from engine.media import probe_mp4, read_video_frames
from tests.conftest import ROOT
from tests.media_fixtures import convert, speak, tone_mix, write_wav

FAST = dict(steps=2, width=128, height=96)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    d = tmp_path_factory.mktemp("inputs")
    voice = speak(d / "voice.wav", "Hello there.")
    img = Image.new("RGB", (240, 320), (90, 120, 200))
    for y in range(320):
        for x in range(0, 240, 8):
            img.putpixel((x, y), (200, 160 + y % 60, 140))
    img.save(d / "face.png")
    return {"dir": d, "voice": voice, "image": d / "face.png"}


@pytest.fixture(scope="module")
def engine(tiny_weights):
    return Engine(tiny_weights)


def run(engine, **kw):
    events = list(engine.generate(GenerationRequest(**kw)))
    return events, events[-1]


def test_cli_make_tiny_then_generate_makes_a_playable_mp4(tiny_weights, inputs, tmp_path):
    out = tmp_path / "cli.mp4"
    proc = subprocess.run(
        [sys.executable, "-m", "engine", "generate", "--variant", "tiny", "--weights", str(tiny_weights),
         "--prompt", "A woman talks to the camera", "--image", str(inputs["image"]), "--audio", str(inputs["voice"]),
         "--out", str(out), "--steps", "3", "--seed", "7"],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    from engine.media import load_audio

    samples = len(load_audio(inputs["voice"]))
    expected_frames = 4 * ((samples // 640 - 1) // 4) + 1          # frames follow the audio (SPEC §3)
    info = probe_mp4(out)
    assert (info["width"], info["height"]) == (128, 96)
    assert info["fps"] == 25
    assert info["frames"] == min(expected_frames, int(np.ceil(samples / 16000 * 25)))
    assert info["has_audio"]
    from engine.media import audio_info

    assert audio_info(out)["sample_rate"] == 44100  # the clip at listening quality, not the 16 kHz features
    assert abs(info["duration_s"] - min(expected_frames / 25, samples / 16000)) <= 0.08
    assert info["metadata"]["humo_studio"]["seed"] == 7
    assert f"wrote {out}" in proc.stdout


def test_events_stream_in_order_with_previews_before_the_result(engine, inputs, tmp_path):
    events, result = run(engine, prompt="A man speaks", variant="tiny", mode="TIA", images=[str(inputs["image"])],
                         audio=str(inputs["voice"]), frames=9, out_path=str(tmp_path / "a.mp4"), **FAST)
    kinds = [e.kind for e in events]
    stages = [e.stage for e in events if e.kind == "stage"]
    order = ["encoding_text", "encoding_audio", "encoding_image", "denoising", "decoding", "done"]   # decode streams into the writer
    assert [s for s in stages if s in order] == order
    steps = [e for e in events if e.kind == "step"]
    assert [s.step for s in steps] == [1, 2] and all(s.total == 2 for s in steps)
    previews = [e for e in events if e.kind == "preview"]
    assert previews and kinds.index("preview") < kinds.index("result")
    frames = previews[-1].frames
    assert frames.dtype == np.uint8 and frames.shape[0] == 3 and frames.shape[-1] == 3  # 3 latent frames, refs dropped
    assert result.kind == "result" and result.frames == 9
    assert read_video_frames(result.video_path).shape == (9, 96, 128, 3)


def test_same_seed_same_video_other_seed_other_video(engine, inputs, tmp_path):
    def video(seed, name):
        _, res = run(engine, prompt="A man speaks", variant="tiny", mode="TA", audio=str(inputs["voice"]), frames=5,
                     seed=seed, out_path=str(tmp_path / name), preview=False, **FAST)
        return read_video_frames(res.video_path).astype(int)

    a, b, c = video(3, "a.mp4"), video(3, "b.mp4"), video(4, "c.mp4")
    assert np.array_equal(a, b)
    assert np.abs(a - c).mean() > 1.0


@pytest.mark.parametrize("mode", ["TA", "TI"])
def test_other_modes_run(engine, inputs, tmp_path, mode):
    kw = dict(audio=str(inputs["voice"])) if mode == "TA" else dict(images=[str(inputs["image"])])
    _, res = run(engine, prompt="A person", variant="tiny", mode=mode, frames=5, out_path=str(tmp_path / "m.mp4"),
                 preview=False, **FAST, **kw)
    info = probe_mp4(res.video_path)
    assert info["frames"] == 5 and info["has_audio"] == (mode == "TA")


def test_17b_layout_runs_end_to_end_with_two_reference_images(tiny_weights, inputs, tmp_path):
    eng = Engine(tiny_weights)
    _, res = run(eng, prompt="Two photos", variant="tiny-17b", mode="TIA",
                 images=[str(inputs["image"]), str(inputs["image"])], audio=str(inputs["voice"]), frames=5,
                 out_path=str(tmp_path / "c.mp4"), preview=False, **FAST)
    assert probe_mp4(res.video_path)["frames"] == 5
    assert res.settings["scale_t"] == 5.0 and res.settings["scale_i"] is None  # the 17B has no image scale


def test_cancel_stops_within_a_pass_and_the_engine_stays_usable(engine, inputs, tmp_path):
    got = []

    def consume():
        try:
            for ev in engine.generate(GenerationRequest(prompt="Cancel me", variant="tiny", mode="TA",
                                                        audio=str(inputs["voice"]), frames=5, steps=200,
                                                        out_path=str(tmp_path / "never.mp4"))):
                got.append(ev)
                if ev.kind == "step":
                    engine.cancel()
        except Cancelled as err:
            got.append(err)

    th = threading.Thread(target=consume)
    th.start()
    th.join(timeout=120)
    assert not th.is_alive()
    assert isinstance(got[-1], Cancelled)
    assert max(e.step for e in got if getattr(e, "kind", "") == "step") < 5
    assert not (tmp_path / "never.mp4").exists()
    _, res = run(engine, prompt="After cancel", variant="tiny", mode="TA", audio=str(inputs["voice"]), frames=5,
                 out_path=str(tmp_path / "after.mp4"), preview=False, **FAST)
    assert Path(res.video_path).is_file()


def test_notices_for_rounded_size_and_frames_and_long_prompt(engine, inputs, tmp_path):
    events, res = run(engine, prompt="talking " * 700, variant="tiny", mode="TA", audio=str(inputs["voice"]),
                      frames=7, width=120, height=90, steps=2, out_path=str(tmp_path / "n.mp4"), preview=False)
    notes = " ".join(e.message for e in events if e.kind == "notice")
    assert "Width 120 was rounded to 128 (a multiple of 16)" in notes and "Height 90 was rounded to 96" in notes
    assert "4k+1" in notes and res.frames == 5
    assert "only the first 512" in notes


def bad(engine, tmp_path, **kw):
    base = dict(prompt="A person talks", variant="tiny", mode="TA", frames=5, out_path=str(tmp_path / "bad.mp4"), **FAST)
    base.update(kw)
    with pytest.raises((InputError, WeightsError)) as info:
        list(engine.generate(GenerationRequest(**base)))
    msg = str(info.value)
    assert "\n" not in msg and "Traceback" not in msg and len(msg) < 400
    assert not (tmp_path / "bad.mp4").exists()
    return msg


def test_bad_audio_is_refused_with_a_clear_message(engine, tmp_path):
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF\x00\x00garbage" * 50)
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    silent = write_wav(tmp_path / "silent.wav", np.zeros(16000, np.float32), 16000)
    short = write_wav(tmp_path / "short.wav", tone_mix(800, 16000), 16000)
    # Past the 15-minute ceiling (a 10-minute clip is a long video now, in context windows).
    long = write_wav(tmp_path / "long.wav", tone_mix(16000 * 960, 16000, amp=0.05), 16000)
    assert "not found" in bad(engine, tmp_path, audio=str(tmp_path / "nope.wav")).lower() or "missing" in \
        bad(engine, tmp_path, audio=str(tmp_path / "nope.wav")).lower()
    assert bad(engine, tmp_path, audio=str(corrupt))
    assert "empty" in bad(engine, tmp_path, audio=str(empty)).lower()
    assert "silent" in bad(engine, tmp_path, audio=str(silent)).lower()
    assert "short" in bad(engine, tmp_path, audio=str(short)).lower()
    msg = bad(engine, tmp_path, audio=str(long), frames=None)
    assert "too long" in msg and "16 min" in msg, msg
    assert "text + audio needs a voice clip" in bad(engine, tmp_path, audio=None).lower()


def test_audio_formats_work(engine, inputs, tmp_path):
    src = inputs["voice"]
    m4a = convert(src, tmp_path / "v.m4a", "-ac", "2", "-ar", "48000")
    _, res = run(engine, prompt="A person", variant="tiny", mode="TA", audio=str(m4a), frames=5,
                 out_path=str(tmp_path / "f.mp4"), preview=False, **FAST)
    assert probe_mp4(res.video_path)["has_audio"]


def test_odd_images_work_and_non_images_are_refused(engine, inputs, tmp_path):
    cmyk = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (64, 48), (0, 100, 200, 10)).save(cmyk)
    small = tmp_path / "small.png"
    Image.new("L", (16, 16), 128).save(small)
    events, res = run(engine, prompt="A person", variant="tiny", mode="TI", images=[str(cmyk), str(small)], frames=5,
                      out_path=str(tmp_path / "img.mp4"), preview=False, **FAST)
    assert any("upscaled" in e.message for e in events if e.kind == "notice")
    text = tmp_path / "notes.png"
    text.write_text("this is not an image")
    assert "image" in bad(engine, tmp_path, mode="TI", images=[str(text)]).lower()
    assert "needs a reference photo" in bad(engine, tmp_path, mode="TIA", images=[], audio=str(inputs["voice"])).lower()


def test_bad_settings_are_refused(engine, inputs, tmp_path):
    voice = str(inputs["voice"])
    assert "prompt is empty" in bad(engine, tmp_path, prompt="   ", audio=voice)
    assert "Width must be between 32 and 2048 pixels, not 8000" in bad(engine, tmp_path, audio=voice, width=8000)
    assert "unknown model" in bad(engine, tmp_path, audio=voice, variant="humo-99b").lower()
    assert "steps" in bad(engine, tmp_path, audio=voice, steps=5000).lower()


def test_missing_and_truncated_weights_name_the_file_and_the_fix(tiny_weights, inputs, tmp_path):
    import shutil

    copy = tmp_path / "w"
    shutil.copytree(tiny_weights, copy)
    (copy / "tiny" / "dit" / "ema.pth").unlink()
    msg = bad(Engine(copy), tmp_path, audio=str(inputs["voice"]))
    assert "ema.pth" in msg and "make-tiny" in msg or "ema.pth" in msg and "engine" in msg
    shutil.copy(tiny_weights / "tiny" / "dit" / "ema.pth", copy / "tiny" / "dit" / "ema.pth")
    vae = copy / "tiny" / "vae" / "Wan2.1_VAE.pth"
    vae.write_bytes(vae.read_bytes()[: vae.stat().st_size // 2])
    msg = bad(Engine(copy), tmp_path, audio=str(inputs["voice"]))
    assert "Wan2.1_VAE.pth" in msg and ("truncated" in msg or "corrupt" in msg or "incomplete" in msg)


def test_cli_error_is_one_line_without_traceback(tiny_weights, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "engine", "generate", "--variant", "tiny", "--weights",
                           str(tiny_weights), "--prompt", "", "--audio", str(tmp_path / "missing.wav"),
                           "--out", str(tmp_path / "x.mp4")], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().startswith("error:") and len(proc.stderr.strip().splitlines()) == 1
