"""engine.media.separation: the voice stem, the background stem, and which method made them."""
from __future__ import annotations

import subprocess
import sys

import librosa
import numpy as np
import pytest

from engine import media
from engine.errors import InputError, WeightsError
from engine.media.separation import (MDX_COMPENSATE, METHOD_ONNX, METHOD_SPECTRAL, find_kim_vocal_model, mix,
                               separate_vocals)
from media_fixtures import speak, tone_mix, write_mdx_standin_onnx

SR = 16000


def corr(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-12))


def sdr(estimate: np.ndarray, reference: np.ndarray) -> float:
    return float(10 * np.log10(np.sum(reference ** 2) / np.sum((estimate - reference) ** 2)))


@pytest.fixture(scope="module")
def voice(tmp_path_factory) -> np.ndarray:
    d = tmp_path_factory.mktemp("voice")
    path = speak(d / "voice.wav", "The quick brown fox jumps over the lazy dog. "
                                  "She sells sea shells by the sea shore, every single day.")
    return media.load_audio(path, sr=SR)


@pytest.fixture(scope="module")
def music(voice) -> np.ndarray:
    return tone_mix(voice.size, SR, amp=0.2)


def test_spectral_separates_voice_from_tones(voice, music):
    mixture = voice + music
    sep = separate_vocals(mixture, SR)  # no models_dir: the spectral method
    assert sep.method == METHOD_SPECTRAL and "REPET-SIM" in sep.note and sep.sr == SR
    assert sep.vocals.shape == mixture.shape and sep.vocals.dtype == np.float32
    # the stems add up to the input
    assert np.allclose(sep.vocals + sep.background, mixture, atol=1e-5)
    # the voice went to the vocal stem, the tones to the background
    assert corr(sep.vocals, voice) > corr(sep.background, voice) + 0.3
    assert corr(sep.background, music) > corr(sep.vocals, music) + 0.3
    # and the vocal stem is closer to the clean voice than the mixture was
    assert sdr(sep.vocals, voice) > sdr(mixture, voice) + 3.0


def test_spectral_keeps_a_clean_voice(voice):
    sep = separate_vocals(voice, SR, method="spectral")
    assert corr(sep.vocals, voice) > 0.9
    assert np.linalg.norm(sep.vocals) > 0.7 * np.linalg.norm(voice)


def test_spectral_at_other_rates_and_stereo_input(voice, music):
    wave22 = librosa.resample(voice + music, orig_sr=SR, target_sr=22050)
    sep = separate_vocals(np.stack([wave22, wave22]), 22050, method="spectral")
    assert sep.vocals.shape == wave22.shape
    assert np.allclose(sep.vocals + sep.background, wave22, atol=1e-5)


def test_very_short_clip(voice):
    short = voice[: int(0.05 * SR)]
    sep = separate_vocals(short, SR)
    assert sep.vocals.shape == short.shape
    assert np.allclose(sep.vocals + sep.background, short, atol=1e-6)


def test_bad_arguments(voice):
    with pytest.raises(InputError):
        separate_vocals(np.zeros(0, np.float32), SR)
    with pytest.raises(InputError):
        separate_vocals(voice, SR, method="magic")


def test_mix_puts_the_background_back(voice, music):
    sep = separate_vocals(voice + music, SR)
    assert np.allclose(mix(sep.vocals, sep.background), voice + music, atol=1e-5)
    assert np.allclose(mix(sep.vocals, sep.background, gain=0.0), sep.vocals)
    quieter = mix(sep.vocals, sep.background, gain=0.5)
    assert np.allclose(quieter, sep.vocals + 0.5 * sep.background, atol=1e-6)
    loud = mix(np.full(10, 0.9, np.float32), np.full(6, 0.9, np.float32))
    assert loud.shape == (10,) and np.isclose(loud.max(), 1.0) and np.isclose(loud[-1], 0.5)


# --------------------------------------------------------------------------- ONNX path


def test_onnx_model_is_found_only_in_the_documented_places(tmp_path):
    assert find_kim_vocal_model(None) is None
    assert find_kim_vocal_model(tmp_path) is None
    path = write_mdx_standin_onnx(tmp_path / "audio_separator" / "Kim_Vocal_2.onnx")
    assert find_kim_vocal_model(tmp_path) == path


def test_onnx_pass_through_reconstructs_over_several_chunks(tmp_path, voice, music):
    # A stand-in with the Kim_Vocal_2 layout that returns its input: what comes out must be the
    # input times the compensation, which proves the STFT layout, chunking and overlap trimming.
    write_mdx_standin_onnx(tmp_path / "audio_separator" / "Kim_Vocal_2.onnx", scale=1.0)
    clip = np.concatenate([voice + music] * 3)  # ~18 s at 44.1 kHz: four model chunks
    ramp = np.hanning(2 * 320)[:320]  # soft ends: no step whose top octaves the model's 3072 bins would cut
    clip[:320] *= ramp
    clip[-320:] *= ramp[::-1]
    clip44 = librosa.resample(clip, orig_sr=SR, target_sr=44100)
    sep = separate_vocals(clip44, 44100, models_dir=tmp_path)
    assert sep.method == METHOD_ONNX and "Kim_Vocal_2" in sep.note
    assert np.abs(sep.vocals - clip44 * MDX_COMPENSATE).max() < 1e-4
    assert np.allclose(sep.vocals + sep.background, clip44, atol=1e-5)


def test_onnx_at_16k_and_a_silencing_model(tmp_path, voice):
    write_mdx_standin_onnx(tmp_path / "audio_separator" / "Kim_Vocal_2.onnx", scale=0.0)
    sep = separate_vocals(voice, SR, method="onnx", models_dir=tmp_path)
    assert sep.method == METHOD_ONNX and sep.vocals.shape == voice.shape
    assert np.abs(sep.vocals).max() < 1e-6
    assert np.allclose(sep.background, voice, atol=1e-6)


def test_onnx_channel_layout_is_left_re_left_im_right_re_right_im(tmp_path, voice):
    # Keeping channels 0 and 1 keeps exactly one whole stereo side (real and imaginary parts): the
    # mono voice, sent to both sides and averaged back, comes out at half level. Any other layout
    # would keep real parts only, or parts of both sides, and fail this.
    write_mdx_standin_onnx(tmp_path / "audio_separator" / "Kim_Vocal_2.onnx", scale=[1, 1, 0, 0])
    wave44 = librosa.resample(voice, orig_sr=SR, target_sr=44100)
    sep = separate_vocals(wave44, 44100, method="onnx", models_dir=tmp_path)
    assert np.abs(sep.vocals - 0.5 * MDX_COMPENSATE * wave44).max() < 1e-4


def test_onnx_requested_but_missing(tmp_path, voice):
    with pytest.raises(WeightsError) as e:
        separate_vocals(voice, SR, method="onnx", models_dir=tmp_path)
    assert "Kim_Vocal_2.onnx" in str(e.value) and "\n" not in str(e.value)


def test_damaged_onnx_falls_back_in_auto_mode(tmp_path, voice, music):
    bad = tmp_path / "audio_separator" / "Kim_Vocal_2.onnx"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"\x08\x07this is not a model" * 50)
    sep = separate_vocals(voice + music, SR, models_dir=tmp_path)
    assert sep.method == METHOD_SPECTRAL and "could not" in sep.note
    with pytest.raises(WeightsError) as e:
        separate_vocals(voice, SR, method="onnx", models_dir=tmp_path)
    assert "damaged" in str(e.value)


def test_wrong_layout_onnx_is_refused(tmp_path, voice):
    write_mdx_standin_onnx(tmp_path / "audio_separator" / "Kim_Vocal_2.onnx", dim_f=2048, dim_t=8)
    with pytest.raises(WeightsError):
        separate_vocals(voice, SR, method="onnx", models_dir=tmp_path)


def test_environment_still_imports_the_encoders():
    # The separator package is kept out on purpose: it pulls a torchvision that breaks transformers
    # on CPU torch. The encoders the engine needs must import in this environment.
    code = "from transformers import WhisperModel, UMT5EncoderModel; print('ok')"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stderr[-2000:]
