"""DWPose's 68 face landmarks placed as MuseTalk's preprocessing places them (the whole frame as the
person box, padded by 1.25 and made 3:4; the flip test; SimCC peaks; mmpose's "not found" value),
on ONNX files in DWPose's layout whose outputs the test chooses; then a dub that crops from them."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

from engine.dub.face.detect import DWPOSE_FILE, DWPOSE_LABEL, FACE_MIRROR, DWPoseLandmarks
from tests.dub_fixtures import SPEECH_9S, TALK_704, clip, decode_all, prepared, wav_prefix
from tests.face_onnx import write_dwpose


def to_frame(bins: np.ndarray, frame_wh: tuple[int, int]) -> np.ndarray:
    """mmpose's decode of SimCC bins (2 per pixel of the 288x384 input) into frame pixels, for the whole
    frame as the box: its size padded by 1.25, then the shorter side grown to 3:4."""
    w, h = frame_wh
    size = np.array([w, h], np.float64) * 1.25
    if size[0] > size[1] * 0.75:
        size[1] = size[0] / 0.75
    else:
        size[0] = size[1] * 0.75
    return np.asarray(bins) / 2 / np.array([288, 384]) * size + np.array([w / 2, h / 2]) - size / 2


def symmetric_face() -> np.ndarray:
    """[68, 2] SimCC bins of a face symmetric about the input's middle column: after the flip test
    each point peaks where it was put only if its mirror partner is the right one."""
    side = {i: (round(60 * np.cos(np.pi * i / 16)), 280 + round(70 * np.sin(np.pi * i / 16))) for i in range(9)}
    side.update({i: (50 - 10 * j, 220) for j, i in enumerate(range(17, 22))})
    side.update({i: (0, 235 + 15 * j) for j, i in enumerate(range(27, 31))})
    side.update({31: (16, 300), 32: (8, 302), 33: (0, 305), 36: (44, 250), 37: (38, 245), 38: (30, 245),
                 39: (24, 250), 40: (30, 255), 41: (38, 255), 48: (30, 330), 49: (20, 322), 50: (10, 318),
                 51: (0, 320), 57: (0, 347), 58: (10, 345), 59: (20, 340), 60: (24, 330), 61: (10, 326),
                 62: (0, 326), 66: (0, 335), 67: (10, 334)})
    bins = np.full((68, 2), -1)
    for i, (d, y) in side.items():
        bins[i] = (287 - d, y)
        if FACE_MIRROR[i] != i:
            bins[FACE_MIRROR[i]] = (288 + d, y)
    assert (bins >= 0).all()
    return bins


def test_mirror_pairs_are_the_wholebody_flip_pairs():
    assert np.array_equal(FACE_MIRROR[FACE_MIRROR], np.arange(68))
    assert set(np.flatnonzero(FACE_MIRROR == np.arange(68))) == {8, 27, 28, 29, 30, 33, 51, 57, 62, 66}
    assert (FACE_MIRROR[0], FACE_MIRROR[17], FACE_MIRROR[36], FACE_MIRROR[40], FACE_MIRROR[48]) == (16, 26, 45, 47, 54)


def test_the_whole_frame_is_the_person_box_and_the_flip_test_is_undone(tmp_path):
    yy, xx = np.mgrid[:1920, :1080]
    # A light frame (its rows and columns outweigh the black border the warp adds) with a brighter
    # spot right of the middle.
    light = 230 + 25 * np.exp(-((xx - 800) ** 2 + (yy - 700) ** 2) / (2 * 40.0 ** 2))
    frame = np.repeat(light[..., None], 3, -1).astype(np.uint8)
    points = DWPoseLandmarks(write_dwpose(tmp_path / "profile.onnx")).landmarks(frame)
    assert points.shape == (68, 2) and points.dtype == np.float32
    # One input pixel is 6.25 frame pixels here; a flip test not undone would find the mirrored spot.
    assert np.abs(points - [800, 700]).max() <= 7, points[0]
    # No vector peaks above zero: every point is at mmpose's "not found" bin (-1).
    flat = DWPoseLandmarks(write_dwpose(tmp_path / "flat.onnx", symmetric_face(), peak=0.0))
    assert np.allclose(flat.landmarks(frame), to_frame([-1, -1], (1080, 1920)), atol=1e-3)


def test_points_come_back_where_the_model_put_them(tmp_path):
    bins = symmetric_face()
    frame = decode_all(clip(TALK_704, tmp_path / "one.mp4", 0.04), "bgr24")[0]
    points = DWPoseLandmarks(write_dwpose(tmp_path / "face.onnx", bins)).landmarks(frame)
    assert np.allclose(points, to_frame(bins, (704, 1216)), atol=1e-3)


@pytest.fixture(scope="module")
def dwpose_weights(musetalk_weights, tmp_path_factory):
    root = tmp_path_factory.mktemp("dwpose-weights")
    shutil.copytree(musetalk_weights, root, dirs_exist_ok=True)
    write_dwpose(root / "musetalk-1.5" / DWPOSE_FILE, symmetric_face())
    return root


def test_musetalk_crops_from_the_landmarks_of_every_frame(dwpose_weights, tmp_path):
    from engine.dub.blend import expanded_square
    from engine.dub.pipeline import Dubber, _crop_box
    from engine.dub.request import DubRequest

    video = clip(TALK_704, tmp_path / "five.mp4", 0.2)
    voice = wav_prefix(SPEECH_9S, tmp_path / "voice.wav", 0.2)
    dubber = Dubber(dwpose_weights, device="cpu", cache_dir=tmp_path / "tracks")
    request = DubRequest(video=str(video), audio=str(voice), out_path=str(tmp_path / "o.mp4"), batch_size=4)
    job, events = prepared(dubber, request)
    track = job.track
    assert track.detector == DWPOSE_LABEL and track.landmarks.shape == (5, 68, 2)
    assert track.checked_frames == 5                                 # landmarks on every frame
    expected = to_frame(symmetric_face(), (704, 1216))
    assert np.allclose(track.landmarks, expected, atol=0.01)
    box = _crop_box(track, 0, job.request, 1216)                     # the landmark box, not the detector's
    assert (box[0], box[2]) == (int(expected[:, 0].min()), int(expected[:, 0].max()))
    assert box[1] == 2 * int(expected[29, 1]) - int(expected[:, 1].max())
    assert not any("needs face landmarks" in getattr(e, "message", "") for e in events)
    source = decode_all(video, "bgr24")
    out = [f for _, frames in dubber.output_frames(job) for f in frames]
    assert len(out) == 5
    for i, frame in enumerate(out):
        x1, y1, x2, y2 = expanded_square(_crop_box(track, i, job.request, 1216))
        keep = np.ones(frame.shape[:2], bool)
        keep[max(0, y1):y2, max(0, x1):x2] = False
        assert np.array_equal(frame[keep], source[i][keep]) and not np.array_equal(frame, source[i])
