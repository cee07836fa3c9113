"""`python -m engine dub` end to end on tiny MuseTalk weights: playable MP4s of the voice's length at the
source's size and rate, cycling, cancel, and one line (and no file) for each bad input."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from engine.__main__ import main
from engine.dub.blend import expanded_square
from engine.dub.face.track import load_track, track_key
from engine.media.files import file_sha256
from engine.dub.pipeline import _crop_box
from engine.dub.request import DubRequest
from engine.errors import Cancelled
from engine.media.mp4_read import probe_mp4
from engine.media.video_in import probe_video, read_frames
from tests.dub_fixtures import ROOT, SPEECH_9S, SPEECH_60S, TALK_704, TALK_1080, clip, ffmpeg, wav_prefix


def _dub_cli(cache, weights, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HUMO_TRACK_CACHE": str(cache)}
    return subprocess.run([sys.executable, "-m", "engine", "dub", "--weights", str(weights), *args], cwd=ROOT,
                          capture_output=True, text=True, env=env, timeout=900)


def test_dub_the_1080x1920_clip(musetalk_weights, track_cache, tmp_path):
    voice = wav_prefix(SPEECH_9S, tmp_path / "voice.wav", 0.2)
    out = tmp_path / "o.mp4"
    proc = _dub_cli(track_cache, musetalk_weights, "--video", str(TALK_1080), "--audio", str(voice), "--out", str(out),
                    "--batch-size", "3")
    assert proc.returncode == 0, proc.stderr
    assert "wrote" in proc.stdout and "1080x1920" in proc.stdout
    info = probe_mp4(out)
    assert (info["frames"], info["width"], info["height"], info["fps"]) == (5, 1080, 1920, 25)
    assert info["has_audio"] and info["audio_duration_s"] == pytest.approx(0.2, abs=0.05)
    settings = info["metadata"]
    assert settings["mode"] == "dub" and settings["model"] == "musetalk-1.5" and settings["fps"] == "25"
    assert settings["weights"] == "tiny (random)" and settings["video"] == TALK_1080.name

    # Outside the face the pixels are the source's, up to the H.264 re-encode.
    key = track_key(file_sha256(TALK_1080), "haar", {})    # crop settings do not change the track
    track = load_track(track_cache / f"{key}.json")               # the track the run cached
    ours = np.concatenate(list(read_frames(probe_video(out), 5, pix_fmt="rgb24")))
    source = np.concatenate(list(read_frames(probe_video(TALK_1080), 5, pix_fmt="rgb24", max_frames=5)))
    request = DubRequest(video="v", audio="a")
    for i in range(5):
        keep = np.ones((1920, 1080), bool)
        x1, y1, x2, y2 = expanded_square(_crop_box(track, i, request, 1920))
        keep[max(0, y1):y2, max(0, x1):x2] = False
        diff = np.abs(ours[i].astype(int) - source[i])
        assert diff[keep].mean() < 3.0, f"frame {i}: the re-encode changed more than compression would"
        assert diff[~keep].mean() > diff[keep].mean(), f"frame {i}: the face was not replaced"


def test_a_longer_voice_cycles_the_704x1216_frames(musetalk_weights, track_cache, tmp_path):
    video = clip(TALK_704, tmp_path / "five.mp4", 0.2)
    voice = wav_prefix(SPEECH_60S, tmp_path / "voice.wav", 0.4)
    out = tmp_path / "o.mp4"
    proc = _dub_cli(track_cache, musetalk_weights, "--video", str(video), "--audio", str(voice), "--out", str(out),
                    "--batch-size", "5")
    assert proc.returncode == 0, proc.stderr
    assert "cycled forward and backward" in proc.stderr
    info = probe_mp4(out)
    assert (info["frames"], info["width"], info["height"], info["fps"]) == (10, 704, 1216, 25)
    assert info["audio_duration_s"] == pytest.approx(0.4, abs=0.05)


def test_the_video_can_sound_other_than_the_voice_that_moves_the_lips(musetalk_weights, track_cache, tmp_path):
    import soundfile as sf

    from engine.media.mp4_read import read_mp4_audio

    video = clip(TALK_704, tmp_path / "five.mp4", 0.2)
    voice = wav_prefix(SPEECH_9S, tmp_path / "voice.wav", 0.2, start=0.5)
    sr = 44100
    tone = tmp_path / "mix.wav"                  # stands for the full mix the voice was isolated from
    sf.write(str(tone), (0.3 * np.sin(2 * np.pi * 440 * np.arange(int(0.2 * sr)) / sr)).astype(np.float32), sr)
    out = tmp_path / "o.mp4"
    proc = _dub_cli(track_cache, musetalk_weights, "--video", str(video), "--audio", str(voice), "--sound",
                    str(tone), "--out", str(out), "--batch-size", "5")
    assert proc.returncode == 0, proc.stderr
    info = probe_mp4(out)
    assert info["metadata"]["sound"] == "mix.wav" and info["metadata"]["audio"] == "voice.wav"
    assert info["frames"] == 5 and info["audio_duration_s"] == pytest.approx(0.2, abs=0.05)
    heard = read_mp4_audio(out, sr)
    spectrum = np.abs(np.fft.rfft(heard * np.hanning(len(heard))))
    assert abs(np.argmax(spectrum) * sr / len(heard) - 440) < 15, "the MP4 should carry the given sound"


def test_engine_dub_cancels_between_batches_and_writes_nothing(musetalk_weights, tmp_path, monkeypatch):
    from engine import Engine

    monkeypatch.setenv("HUMO_TRACK_CACHE", str(tmp_path / "tracks"))
    video = clip(TALK_704, tmp_path / "ten.mp4", 0.4)
    voice = wav_prefix(SPEECH_60S, tmp_path / "voice.wav", 0.4)
    out = tmp_path / "out" / "o.mp4"
    engine = Engine(musetalk_weights, device="cpu")
    steps = 0
    with pytest.raises(Cancelled):
        for ev in engine.dub(DubRequest(video=str(video), audio=str(voice), out_path=str(out), batch_size=2)):
            if ev.kind == "step":
                steps += 1
                engine.cancel()
    assert steps == 1 and not out.exists()
    assert list(out.parent.iterdir()) == []                         # no temporary file left either


def _bad_input(tmp_path, case: str):
    video, audio = TALK_704, wav_prefix(SPEECH_9S, tmp_path / "voice.wav", 0.3)
    if case == "audio_only":
        video = SPEECH_9S
    elif case == "no_frames":
        video = tmp_path / "empty.mp4"
        ffmpeg("-f", "lavfi", "-i", "color=s=64x64", "-frames:v", "0", "-c:v", "libx264", str(video))
    elif case == "image":
        video = tmp_path / "face.jpg"
        ffmpeg("-i", str(TALK_704), "-frames:v", "1", str(video))
    elif case == "corrupt":
        video = tmp_path / "cut.mp4"
        video.write_bytes(TALK_704.read_bytes()[:30000])
    elif case == "no_face":
        video = tmp_path / "wall.mp4"
        ffmpeg("-f", "lavfi", "-i", "testsrc=r=25:s=320x240", "-frames:v", "10", "-c:v", "libx264", str(video))
    elif case == "silent_audio":
        audio = wav_prefix(SPEECH_9S, tmp_path / "silence.wav", 0.3, start=0.0)
    elif case == "audio_too_short":
        audio = wav_prefix(SPEECH_9S, tmp_path / "blip.wav", 0.03)
    elif case == "audio_not_audio":
        audio = tmp_path / "notes.wav"
        audio.write_text("hello\n" * 100)
    return video, audio


@pytest.mark.parametrize("case,words", [
    ("audio_only", "audio file"), ("no_frames", "no video stream"), ("image", "still image"),
    ("corrupt", "damaged"), ("no_face", "No face"), ("silent_audio", "silent"), ("audio_too_short", "too short"),
    ("audio_not_audio", "not an audio file"),
])
def test_bad_input_is_one_line_and_no_file(musetalk_weights, tmp_path, capsys, monkeypatch, case, words):
    monkeypatch.setenv("HUMO_TRACK_CACHE", str(tmp_path / "tracks"))
    video, audio = _bad_input(tmp_path, case)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    code = main(["dub", "--weights", str(musetalk_weights), "--video", str(video), "--audio", str(audio),
                 "--out", str(out_dir / "o.mp4"), "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and err[0].startswith("error: ") and words in err[0], err
    assert list(out_dir.iterdir()) == []


def test_missing_weights_name_the_command(tmp_path, capsys):
    code = main(["dub", "--weights", str(tmp_path / "none"), "--video", str(TALK_704), "--audio", str(SPEECH_9S),
                 "--out", str(tmp_path / "o.mp4"), "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert "python -m engine download --model musetalk-1.5" in err[0]


def test_weights_table_knows_musetalk(musetalk_weights, capsys):
    assert main(["status", "--model", "musetalk-1.5", "--weights", str(musetalk_weights), "--json"]) == 0
    status = json.loads(capsys.readouterr().out)["variants"][0]
    assert status["variant"] == "musetalk-1.5" and status["complete"]
    parts = {c["key"]: c for c in status["components"]}
    assert parts["unet"]["repo_id"] == "TMElyralab/MuseTalk" and parts["dwpose"]["optional"]
    assert parts["dwpose"]["state"] == "missing"                     # tiny weights: the Haar cascade is used


def test_bench_dub_refuses_a_bad_length(capsys):
    assert main(["bench", "--dub", "--minutes", "0"]) == 2
    assert "--minutes must be between 0 and 120" in capsys.readouterr().err
