"""Video in for dubbing: probing (exact rate, rotation, VFR, 4K), streamed frames, bad inputs."""
from __future__ import annotations

from fractions import Fraction

import cv2
import numpy as np
import pytest

from engine.errors import InputError
from engine.media.video_in import probe_video, read_frames
from tests.dub_fixtures import SPEECH_9S, TALK_704, TALK_1080, ffmpeg, one_line


def test_probe_real_clips():
    big = probe_video(TALK_1080)
    assert (big.width, big.height, big.fps, big.frames, big.rotation) == (1080, 1920, Fraction(25), 250, 0)
    assert big.has_audio and big.codec == "hevc" and not big.variable_rate and big.notices == []
    assert big.duration_s == pytest.approx(10.0)
    small = probe_video(TALK_704)
    assert (small.width, small.height, small.frames, small.has_audio) == (704, 1216, 268, False)


def test_frames_stream_in_batches_and_match_a_full_decode():
    info = probe_video(TALK_704)
    batches = list(read_frames(info, 7, max_frames=30))
    assert [len(b) for b in batches] == [7, 7, 7, 7, 2]
    frames = np.concatenate(batches)
    assert frames.shape == (30, 1216, 704, 3) and frames.dtype == np.uint8
    cap = cv2.VideoCapture(str(TALK_704))
    ok, first = cap.read()
    cap.release()
    assert ok and np.abs(first.astype(int) - frames[0].astype(int)).mean() < 2.0   # BGR, same picture
    rgb = next(read_frames(info, 1, pix_fmt="rgb24"))[0]
    assert np.array_equal(rgb, frames[0][:, :, ::-1])
    assert sum(len(b) for b in read_frames(info, 64)) == 268


def test_exact_fractional_rate_and_rotation(tmp_path):
    ntsc = tmp_path / "ntsc.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc=r=30000/1001:s=96x64", "-frames:v", "12", "-c:v", "libx264", str(ntsc))
    info = probe_video(ntsc)
    assert info.fps == Fraction(30000, 1001) and info.frames == 12
    rotated = tmp_path / "rotated.mp4"
    ffmpeg("-display_rotation", "90", "-i", str(ntsc), "-c", "copy", str(rotated))
    info = probe_video(rotated)
    assert (info.width, info.height, info.rotation) == (64, 96, 270)
    frames = np.concatenate(list(read_frames(info, 5)))
    assert frames.shape == (12, 96, 64, 3)      # upright, as a player shows it


def test_variable_rate_is_read_at_the_average_rate(tmp_path):
    vfr = tmp_path / "vfr.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc=r=25:s=64x64", "-frames:v", "50",
           "-vf", "setpts='if(lt(N,25),N/25/TB,(25+(N-25)*2)/25/TB)'", "-fps_mode", "vfr", "-c:v", "libx264", str(vfr))
    info = probe_video(vfr)
    assert info.variable_rate and float(info.fps) == pytest.approx(50 / 2.96, rel=1e-3)
    assert len(info.notices) == 1 and "variable frame rate" in info.notices[0]
    assert sum(len(b) for b in read_frames(info, 16)) == info.frames


def test_4k_is_accepted_with_a_notice(tmp_path):
    uhd = tmp_path / "uhd.mp4"
    ffmpeg("-f", "lavfi", "-i", "color=c=gray:s=3840x2160:r=25", "-frames:v", "2", "-c:v", "libx264",
           "-preset", "ultrafast", str(uhd))
    info = probe_video(uhd)
    assert (info.width, info.height) == (3840, 2160)
    assert any("4K" in n and "slow" in n for n in info.notices)


@pytest.mark.parametrize("case", ["audio_only", "image", "corrupt", "empty", "no_frames", "missing", "text"])
def test_bad_videos_give_one_line(tmp_path, case):
    path = tmp_path / f"{case}.mp4"
    if case == "audio_only":
        path = SPEECH_9S
    elif case == "image":
        path = tmp_path / "face.png"
        cv2.imwrite(str(path), np.full((64, 48, 3), 128, np.uint8))
    elif case == "corrupt":
        path.write_bytes(TALK_704.read_bytes()[:20000])
    elif case == "empty":
        path.write_bytes(b"")
    elif case == "no_frames":
        ffmpeg("-f", "lavfi", "-i", "color=s=64x64", "-frames:v", "0", "-c:v", "libx264", str(path))
    elif case == "text":
        path.write_text("not a video at all\n" * 50)
    with pytest.raises(InputError) as err:
        probe_video(path)
    text = one_line(err.value)
    expected = {"audio_only": "audio file", "image": "still image", "corrupt": "damaged", "empty": "empty",
                "no_frames": "no video stream", "missing": "not found", "text": "not a video"}[case]
    assert expected in text
