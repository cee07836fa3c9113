"""engine.media: decoding voice clips (formats, resampling, channel layouts, bad and out-of-range inputs)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from engine import media
from engine.errors import InputError
from media_common import SR, moving_frames, one_line
from media_fixtures import convert, speak, tone_mix, write_wav


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("clips")
    wav = speak(d / "speech.wav", "Good morning. This clip checks that every format decodes the same way.")
    out = {"wav": wav}
    out["mp3"] = convert(wav, d / "speech.mp3")
    out["m4a"] = convert(wav, d / "speech.m4a", "-c:a", "aac")
    out["ogg"] = convert(wav, d / "speech.ogg", "-c:a", "libvorbis")
    out["flac"] = convert(wav, d / "speech.flac")
    out["stereo48k"] = convert(wav, d / "speech_48k_stereo.wav", "-ac", "2", "-ar", "48000")
    out["aac_in_mp4"] = convert(wav, d / "speech_video_container.mp4", "-c:a", "aac")
    return out


@pytest.fixture(scope="module")
def reference_wave(clips) -> np.ndarray:
    return media.load_audio(clips["wav"])


@pytest.mark.parametrize("kind", ["wav", "mp3", "m4a", "ogg", "flac", "stereo48k", "aac_in_mp4"])
def test_load_audio_formats(clips, reference_wave, kind):
    wave = media.load_audio(clips[kind])
    assert wave.dtype == np.float32 and wave.ndim == 1
    # same clip, same length at 16 kHz (codecs may add or drop a few ms)
    assert abs(wave.size - reference_wave.size) < 0.06 * SR
    n = min(wave.size, reference_wave.size)
    corr = np.corrcoef(wave[:n], reference_wave[:n])[0, 1]
    assert corr > (0.999 if kind in ("wav", "flac", "stereo48k") else 0.9), corr
    assert 0.1 < np.max(np.abs(wave)) <= 1.5


def test_load_audio_resamples_to_requested_rate(clips, reference_wave):
    wave = media.load_audio(clips["stereo48k"], sr=24000)
    assert abs(wave.size - reference_wave.size * 1.5) < 0.01 * 24000


def test_stereo_is_averaged_to_mono(tmp_path):
    n = SR
    t = np.arange(n) / SR
    left = 0.5 * np.sin(2 * np.pi * 300 * t)
    right = -0.5 * np.sin(2 * np.pi * 300 * t) + 0.3 * np.sin(2 * np.pi * 700 * t)
    path = write_wav(tmp_path / "lr.wav", np.stack([left, right], axis=1), SR)
    wave = media.load_audio(path)
    expected = 0.15 * np.sin(2 * np.pi * 700 * t)  # the 300 Hz parts cancel
    assert np.abs(wave - expected).max() < 2e-3


def test_surround_and_video_sources(tmp_path, clips, reference_wave):
    surround = convert(clips["wav"], tmp_path / "speech51.flac", "-af", "pan=5.1(side)|FL=c0|FR=c0|FC=c0|LFE=c0|SL=c0|SR=c0")
    assert media.audio_info(surround)["channels"] == 6
    wave = media.load_audio(surround)
    n = min(wave.size, reference_wave.size)
    assert np.abs(wave[:n] - reference_wave[:n]).max() < 1e-3  # six equal channels average to the voice
    video = media.write_mp4(moving_frames(90, 32, 32), tmp_path / "talk.mp4", audio=reference_wave[: 3 * SR])
    heard = media.load_audio(video)
    assert abs(heard.size - 3 * SR) < 0.05 * SR
    assert np.corrcoef(heard[: 2 * SR], reference_wave[: 2 * SR])[0, 1] > 0.9


def test_audio_info(clips):
    info = media.audio_info(clips["stereo48k"])
    assert info["sample_rate"] == 48000 and info["channels"] == 2
    assert info["duration_s"] == pytest.approx(media.load_audio(clips["wav"]).size / SR, abs=0.05)


@pytest.mark.parametrize("value", [None, "", "  "])
def test_no_audio_path(value):
    with pytest.raises(InputError) as e:
        media.load_audio(value)
    assert "No audio file" in one_line(e.value)


def test_missing_audio(tmp_path):
    with pytest.raises(InputError) as e:
        media.load_audio(tmp_path / "nope.wav")
    assert "not found" in one_line(e.value) and "nope.wav" in str(e.value)


def test_corrupt_audio(tmp_path):
    bad = tmp_path / "broken.mp3"
    bad.write_bytes(np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8).tobytes())
    with pytest.raises(InputError) as e:
        media.load_audio(bad)
    assert "not an audio file or it is damaged" in one_line(e.value)


def test_image_given_as_audio(tmp_path):
    img = tmp_path / "photo.wav"
    Image.new("RGB", (32, 32), (1, 2, 3)).save(img, format="PNG")
    with pytest.raises(InputError) as e:
        media.load_audio(img)
    assert "no audio track" in one_line(e.value)


def test_empty_audio_file(tmp_path):
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    with pytest.raises(InputError) as e:
        media.load_audio(empty)
    assert "empty" in one_line(e.value)


def test_audio_with_zero_samples(tmp_path):
    path = write_wav(tmp_path / "zero.wav", np.zeros(0), SR)
    with pytest.raises(InputError) as e:
        media.load_audio(path)
    assert "no sound samples" in one_line(e.value)


@pytest.mark.parametrize("level", [0.0, 2e-5])
def test_silent_audio(tmp_path, level):
    path = write_wav(tmp_path / "quiet.wav", np.full(SR, level), SR)
    with pytest.raises(InputError) as e:
        media.load_audio(path)
    assert "silent" in one_line(e.value)


def test_too_short_audio(tmp_path):
    path = write_wav(tmp_path / "blip.wav", tone_mix(int(0.1 * SR), SR, amp=0.5), SR)
    with pytest.raises(InputError) as e:
        media.load_audio(path)
    msg = one_line(e.value)
    assert "too short" in msg and "0.10 s" in msg and "0.2 s" in msg


def test_too_long_audio(tmp_path):
    path = write_wav(tmp_path / "long.wav", tone_mix(5 * SR, SR, amp=0.5), SR)
    with pytest.raises(InputError) as e:
        media.load_audio(path, max_seconds=3)
    msg = one_line(e.value)
    assert "too long" in msg and "5.0 s" in msg and "3.0 s" in msg and "Trim" in msg
    ok = media.load_audio(path, max_seconds=5.5)
    assert ok.size == 5 * SR
