"""engine.media: writing MP4 files and reading them back (audio, metadata, atomic writes, failures), thumbnails."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from engine import media
from engine.errors import EngineError, InputError, OutOfResources
from media_common import SR, moving_frames, one_line


def sine(seconds: float, sr: int = SR) -> np.ndarray:
    t = np.arange(int(round(seconds * sr))) / sr
    return (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)


METADATA = {"prompt": "A woman sings; 'quotes', = signs, #hash, back\\slash\nand a new line. 你好",
            "seed": 1234, "steps": 50, "scales": [5.0, 5.5], "variant": "humo-1.7b", "nested": {"a": None}}


def test_mp4_round_trip_audio_shorter(tmp_path):
    out = media.write_mp4(moving_frames(50, 96, 128), tmp_path / "a.mp4", fps=25, audio=sine(1.3),
                          audio_sr=SR, metadata=METADATA)
    assert out == str(tmp_path / "a.mp4")
    info = media.probe_mp4(out)
    assert (info["width"], info["height"], info["fps"]) == (128, 96, 25.0)
    assert info["has_audio"]
    assert info["frames"] == 33  # ceil(1.3 s * 25)
    assert info["video_duration_s"] == pytest.approx(1.3, abs=1 / 25)
    assert info["audio_duration_s"] == pytest.approx(1.3, abs=1 / 25)
    assert info["duration_s"] == pytest.approx(1.3, abs=1 / 25 + 0.01)
    assert info["metadata"] == METADATA
    assert sorted(os.listdir(tmp_path)) == ["a.mp4"]


def test_mp4_very_long_metadata(tmp_path):
    # beyond what one command-line argument may carry
    meta = {"prompt": ("a long prompt; with = and # and \\ and\nlines " * 5000), "seed": 7}
    assert len(json.dumps(meta)) > 200_000
    out = media.write_mp4(moving_frames(6, 32, 32), tmp_path / "long.mp4", audio=sine(1.0), metadata=meta)
    info = media.probe_mp4(out)
    assert info["metadata"] == meta and info["frames"] == 6 and info["has_audio"]
    assert sorted(os.listdir(tmp_path)) == ["long.mp4"]


def test_mp4_round_trip_video_shorter(tmp_path):
    frames = moving_frames(20, 64, 64)
    out = media.write_mp4(frames, tmp_path / "b.mp4", audio=sine(2.0), audio_sr=SR)
    info = media.probe_mp4(out)
    assert info["frames"] == 20 and info["has_audio"]
    assert info["audio_duration_s"] == pytest.approx(0.8, abs=1 / 25)
    assert info["duration_s"] == pytest.approx(0.8, abs=1 / 25 + 0.01)
    assert info["metadata"] == {}
    decoded = media.read_video_frames(out)
    assert decoded.shape == frames.shape
    assert np.abs(decoded.astype(int) - frames.astype(int)).mean() < 6
    heard = media.read_mp4_audio(out, sr=SR)
    n = min(heard.size, int(0.8 * SR))
    assert abs(heard.size - 0.8 * SR) < 0.05 * SR
    ref = sine(0.8)[:n]
    assert np.corrcoef(heard[:n], ref)[0, 1] > 0.95


def test_mp4_without_audio_and_from_a_generator(tmp_path):
    frames = moving_frames(12, 48, 80)
    out = media.write_mp4((f for f in frames), tmp_path / "c.mp4", fps=25)
    info = media.probe_mp4(out)
    assert info["frames"] == 12 and not info["has_audio"] and info["audio_duration_s"] is None
    assert info["duration_s"] == pytest.approx(12 / 25, abs=0.01)


def test_mp4_odd_size_is_padded(tmp_path):
    out = media.write_mp4(moving_frames(5, 47, 63), tmp_path / "odd.mp4")
    info = media.probe_mp4(out)
    assert (info["width"], info["height"], info["frames"]) == (64, 48, 5)


def test_mp4_creates_the_folder(tmp_path):
    out = media.write_mp4(moving_frames(3, 32, 32), tmp_path / "new" / "deeper" / "d.mp4")
    assert Path(out).is_file()


def _leftovers(folder: Path) -> list[str]:
    return sorted(os.listdir(folder))


def test_replace_audio_track_keeps_video_and_settings(tmp_path):
    from studio.audio_tools import replace_audio
    from media_fixtures import write_wav

    video = media.write_mp4(moving_frames(25, 32, 48), tmp_path / "v.mp4", fps=25, audio=np.zeros(SR, np.float32),
                            metadata=METADATA)
    voice = write_wav(tmp_path / "voice.wav", sine(2.0), SR)
    replace_audio(video, str(voice))
    info = media.probe_mp4(video)
    assert info["frames"] == 25 and info["metadata"] == METADATA and info["has_audio"]
    heard = media.read_mp4_audio(video)
    assert np.corrcoef(heard[1000:SR - 1000], sine(1.0)[1000:SR - 1000])[0, 1] > 0.95
    assert _leftovers(tmp_path) == ["v.mp4", "voice.wav"]
    with pytest.raises(InputError, match="Could not mix the background"):
        replace_audio(video, str(tmp_path / "v.mp4.missing.wav"))
    assert _leftovers(tmp_path) == ["v.mp4", "voice.wav"] and media.probe_mp4(video)["frames"] == 25


def test_failing_ffmpeg_leaves_nothing(tmp_path):
    with pytest.raises(EngineError) as e:
        media.write_mp4(moving_frames(10, 32, 32), tmp_path / "x.mp4", audio=sine(0.4), preset="no-such-preset")
    assert "ffmpeg failed" in one_line(e.value)
    assert _leftovers(tmp_path) == []


def test_failing_frame_source_leaves_nothing(tmp_path):
    def frames():
        yield from moving_frames(4, 32, 32)
        raise RuntimeError("decoder crashed")

    with pytest.raises(RuntimeError):
        media.write_mp4(frames(), tmp_path / "y.mp4", audio=sine(1.0))
    assert _leftovers(tmp_path) == []


def test_failed_rewrite_keeps_the_old_file(tmp_path):
    path = tmp_path / "keep.mp4"
    media.write_mp4(moving_frames(8, 32, 32), path, metadata={"take": 1})
    before = path.read_bytes()
    bad = moving_frames(8, 32, 32)
    bad_list = list(bad[:4]) + [np.zeros((16, 16, 3), np.uint8)]  # a frame of the wrong size
    with pytest.raises(InputError) as e:
        media.write_mp4(bad_list, path, metadata={"take": 2})
    assert "same size" in one_line(e.value)
    assert path.read_bytes() == before and _leftovers(tmp_path) == ["keep.mp4"]
    assert media.probe_mp4(path)["metadata"] == {"take": 1}


def test_destination_that_is_a_folder(tmp_path):
    (tmp_path / "taken.mp4").mkdir()
    with pytest.raises(EngineError) as e:
        media.write_mp4(moving_frames(3, 32, 32), tmp_path / "taken.mp4")
    one_line(e.value)
    assert _leftovers(tmp_path) == ["taken.mp4"] and (tmp_path / "taken.mp4").is_dir()


def test_disk_full_from_ffmpeg_is_out_of_resources(tmp_path):
    # /dev/full answers every write with ENOSPC: the real message ffmpeg prints on a full disk.
    proc = subprocess.run([media.ffmpeg_exe(), "-v", "error", "-nostdin", "-y", "-f", "lavfi", "-i",
                           "testsrc=size=64x64:rate=25", "-t", "1", "-f", "rawvideo", "/dev/full"],
                          capture_output=True, text=True)
    assert proc.returncode != 0
    err = media.ffmpeg_failure(proc.stderr, tmp_path / "out.mp4")
    assert isinstance(err, OutOfResources)
    assert "Disk full while writing the video" in one_line(err) and "free some space" in str(err)
    other = media.ffmpeg_failure("Unknown encoder 'x'", tmp_path / "out.mp4")
    assert not isinstance(other, OutOfResources)


def test_bad_frame_array(tmp_path):
    with pytest.raises(InputError):
        media.write_mp4(np.zeros((0, 32, 32, 3), np.uint8), tmp_path / "e.mp4")
    with pytest.raises(InputError):
        media.write_mp4(np.zeros((3, 32, 32), np.uint8), tmp_path / "e.mp4")
    assert _leftovers(tmp_path) == []


def test_probe_not_a_video(tmp_path):
    p = tmp_path / "fake.mp4"
    p.write_bytes(b"\x00" * 100)
    with pytest.raises(InputError):
        media.probe_mp4(p)


# --------------------------------------------------------------------------- thumbnails


def test_thumbnail_from_frames_and_from_video(tmp_path):
    frames = np.zeros((9, 240, 320, 3), np.uint8)
    frames[4] = (200, 30, 30)  # the middle frame
    thumb = media.make_thumbnail(frames, tmp_path / "t.jpg")
    with Image.open(thumb) as im:
        assert im.format == "JPEG" and im.size == (256, 192)
        r, g, b = im.convert("RGB").getpixel((128, 96))
        assert r > 170 and g < 60
    video = media.write_mp4(frames, tmp_path / "v.mp4")
    thumb2 = media.make_thumbnail(video, tmp_path / "t.png", max_side=100)
    with Image.open(thumb2) as im:
        assert im.format == "PNG" and im.size == (100, 75)
        assert im.convert("RGB").getpixel((50, 37))[0] > 170
    assert sorted(os.listdir(tmp_path)) == ["t.jpg", "t.png", "v.mp4"]
