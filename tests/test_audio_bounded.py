"""Long clips: a clip over the limit is refused from its header, before any decoding; a trim decodes
only the kept part; decoding streams, so memory holds little more than the mono result. Memory is
measured with tracemalloc (numpy and bytes allocations are traced)."""
from __future__ import annotations

import time
import tracemalloc

import numpy as np
import pytest
import soundfile as sf

from engine.errors import InputError
from engine.media import MAX_AUDIO_SECONDS, load_audio
from studio import audio_tools

SR = 16000


def write_tone(path, seconds: float, sr: int = SR, channels: int = 1):
    """A quiet tone written in blocks (the file, not this process, holds the length)."""
    t_block = np.arange(sr * 10) / sr
    block = (0.2 * np.sin(2 * np.pi * 220 * t_block)).astype(np.float32)
    if channels > 1:
        block = np.repeat(block[:, None], channels, axis=1)
    with sf.SoundFile(str(path), "w", samplerate=sr, channels=channels, subtype="PCM_16") as fh:
        left = int(seconds * sr)
        while left > 0:
            fh.write(block[:min(left, len(block))])
            left -= len(block)
    return path


@pytest.fixture(scope="module")
def long_clip(tmp_path_factory):
    """20 minutes: over the 15-minute limit (38 MB of 16-bit samples, 77 MB decoded as float32)."""
    return write_tone(tmp_path_factory.mktemp("long") / "long.wav", 20 * 60)


def peak_bytes(fn):
    tracemalloc.start()
    try:
        t0 = time.perf_counter()
        result = fn()
        return result, tracemalloc.get_traced_memory()[1], time.perf_counter() - t0
    finally:
        tracemalloc.stop()


def test_a_clip_over_the_limit_is_refused_before_decoding(long_clip):
    def refuse():
        with pytest.raises(InputError) as info:
            load_audio(long_clip, sr=SR, max_seconds=MAX_AUDIO_SECONDS)
        return str(info.value)

    message, peak, seconds = peak_bytes(refuse)
    assert "too long: 20 min 0 s, the limit is 15 min 0 s" in message, message
    assert peak < 5 * 2**20, f"{peak / 2**20:.0f} MB allocated to refuse a clip by its length"


def test_the_studio_refuses_a_long_upload_before_decoding(long_clip, tmp_path):
    """The studio read clips with no limit at all: the whole file was decoded (at 44.1 kHz) first."""
    def refuse():
        with pytest.raises(InputError) as info:
            audio_tools.trimmed_clip(str(long_clip), 0, 0, tmp_path)
        return str(info.value)

    message, peak, _ = peak_bytes(refuse)
    assert "too long" in message
    assert peak < 5 * 2**20, f"{peak / 2**20:.0f} MB allocated to refuse a clip by its length"


def test_a_trim_decodes_only_the_kept_part(long_clip, tmp_path):
    (path, wave, sr), peak, _ = peak_bytes(lambda: audio_tools.trimmed_clip(str(long_clip), 600, 605, tmp_path))
    assert sr == audio_tools.STUDIO_SR and abs(wave.size - 5 * sr) <= sr // 100
    assert peak < 4 * wave.nbytes + 8 * 2**20, f"{peak / 2**20:.0f} MB to cut 5 s out of 20 min"
    assert sf.info(path).duration == pytest.approx(5.0, abs=0.02)


def test_decoding_streams_into_the_mono_result(tmp_path):
    """Five minutes of stereo: the peak stays near the mono result, not the interleaved float32 output."""
    clip = write_tone(tmp_path / "stereo.wav", 300, sr=SR, channels=2)
    wave, peak, _ = peak_bytes(lambda: load_audio(clip, sr=SR, max_seconds=MAX_AUDIO_SECONDS))
    assert wave.dtype == np.float32 and abs(wave.size - 300 * SR) <= SR // 100
    assert peak < 2.5 * wave.nbytes, f"peak {peak / 2**20:.0f} MB for a {wave.nbytes / 2**20:.0f} MB result"
    reference = sf.read(str(clip), dtype="float32")[0].mean(axis=1)
    assert np.abs(wave[:SR] - reference[:SR]).max() < 1e-3
