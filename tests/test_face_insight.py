"""The official LatentSync face finder (insightface's SCRFD + 106 landmarks, as ONNX through onnxruntime).

ONNX files in the released files' input / output layout report chosen boxes and points
(tests/face_onnx.py), so each step is checked against numbers worked out from the construction:
the resize into the detector's square, anchors, distances, suppression, LatentSync's size and
ratio rules, the landmark crop and its inverse, the channel order and pixel scale the models are
fed; then the face track, the first-frame check and a LatentSync dub with the finder in place.
"""
from __future__ import annotations

import shutil

import numpy as np
import pytest

from engine.dub.face.align import three_points
from engine.dub.face.insight import DETECTOR_FILE, LABEL, LANDMARK_FILE, InsightFace106, nms
from engine.dub.face.track import FaceTrack, load_track
from engine.dub.latentsync.model import alignment_points
from tests.dub_fixtures import SPEECH_9S, TALK_704, clip, prepared, wav_prefix
from tests.face_onnx import det_scale, points_grid, write_detector, write_landmarks

FRAME_HW = (1280, 720)
FACE = (200.0, 240.0, 440.0, 600.0)          # 240 x 360
OTHER = (320.0, 840.0, 480.0, 1080.0)        # 160 x 240, smaller, not overlapping
TINY = (600.0, 40.0, 640.0, 80.0)            # 40 x 40: under LatentSync's 50 x 80
WIDE = (20.0, 1150.0, 300.0, 1250.0)         # 280 x 100: wider than 1.5


def _finder(folder, frame_hw=FRAME_HW, faces=None, shift=0.0):
    faces = faces if faces is not None else [
        (FACE, 0.9, 16), (FACE, 0.8, 8),        # the same face twice: the weaker one is suppressed
        (TINY, 0.97, 8), (WIDE, 0.95, 16),      # best scores, but LatentSync does not take them
        (OTHER, 0.7, 32), ((0, 0, 700, 1200), 0.4, 32)]   # under the 0.5 score: not a detection
    write_detector(folder / DETECTOR_FILE, frame_hw, faces)
    write_landmarks(folder / LANDMARK_FILE, points_grid(), shift)
    return InsightFace106.find(folder)


def _expected_points(box, shift=0.0, channel0=0.0):
    x1, y1, x2, y2 = box
    s = 192 / (max(x2 - x1, y2 - y1) * 1.5)
    pts = points_grid().astype(np.float64) + shift * channel0
    return np.round(pts * 96 / s + [(x1 + x2) / 2, (y1 + y2) / 2])


def test_detections_decode_suppress_and_follow_latentsync_rules(tmp_path):
    finder = _finder(tmp_path)
    frame = np.zeros((*FRAME_HW, 3), np.uint8)
    rows = finder.detect(frame)
    assert rows[:, 4].tolist() == pytest.approx([0.97, 0.95, 0.9, 0.7])      # best first, 0.8 suppressed, 0.4 gone
    np.testing.assert_allclose(rows[:, :4], [TINY, WIDE, FACE, OTHER], atol=1e-3)
    faces = finder.faces(frame)
    np.testing.assert_allclose([b for b, _ in faces], [FACE, OTHER], atol=1e-3)   # largest accepted first
    assert faces[0][1].shape == (106, 2) and faces[1][1] is None
    assert det_scale(FRAME_HW) == pytest.approx(0.4)


def test_a_landscape_frame_and_no_face(tmp_path):
    box = (900.0, 100.0, 1100.0, 400.0)
    finder = _finder(tmp_path, (720, 1280), [(box, 0.8, 16)])
    rows = finder.detect(np.zeros((720, 1280, 3), np.uint8))
    np.testing.assert_allclose(rows[0, :4], box, atol=1e-3)
    empty = _finder(tmp_path / "none", faces=[])
    assert empty.faces(np.zeros((*FRAME_HW, 3), np.uint8)) == []


def test_landmarks_map_back_through_the_crop_fed_as_raw_bgr(tmp_path):
    finder = _finder(tmp_path, shift=0.001)
    frame = np.zeros((*FRAME_HW, 3), np.uint8)
    frame[..., 0], frame[..., 1] = 200, 30                 # BGR: the networks see blue as channel 0, unscaled
    (box, points), _ = finder.faces(frame)
    assert points.dtype == np.float32 and np.array_equal(points, np.round(points))
    np.testing.assert_array_equal(points, _expected_points(FACE, 0.001, 200.0))
    np.testing.assert_array_equal(alignment_points(points, box), three_points(points))


def test_nms_keeps_the_best_of_overlapping_boxes():
    dets = np.array([[0, 0, 10, 10, 0.6], [1, 1, 11, 11, 0.9], [20, 20, 30, 30, 0.5], [0, 0, 10, 10.5, 0.3]],
                    np.float32)
    assert nms(dets) == [1, 2]
    assert nms(dets, iou=0.99) == [1, 0, 2, 3]


def test_a_106_point_track_round_trips_and_musetalk_uses_its_box(tmp_path):
    from engine.dub.pipeline import _crop_box
    from engine.dub.request import DubRequest

    pts = _expected_points(FACE).astype(np.float32)
    track = FaceTrack(boxes=np.array([FACE, [np.nan] * 4], np.float32), width=720, height=1280, detector=LABEL,
                      landmarks=np.stack([pts, np.full_like(pts, np.nan)]))
    back = load_track(track.save(tmp_path / "t.json"))
    assert back.landmarks.shape == (2, 106, 2) and np.array_equal(back.landmarks_at(0), pts)
    assert back.landmarks_at(1) is None and back.detector == LABEL
    req = DubRequest(video="v", audio="a", extra_margin=0)           # no chin margin: the box itself
    assert _crop_box(back, 0, req, 1280) == (200, 240, 440, 600)


@pytest.fixture(scope="module")
def finder_weights(latentsync_weights, tmp_path_factory):
    """The tiny LatentSync files plus finder files that place a face on the 704x1216 clip."""
    root = tmp_path_factory.mktemp("insight-weights")
    shutil.copytree(latentsync_weights, root, dirs_exist_ok=True)
    _finder(root / "latentsync-1.6", (1216, 704), [((190.0, 250.0, 450.0, 560.0), 0.9, 16)])
    return root


def test_latentsync_tracks_every_frame_with_the_official_finder_and_dubs(finder_weights, tmp_path):
    from engine.dub.pipeline import Dubber
    from engine.dub.request import DubRequest
    from studio.dub_check import check_first_frame

    video = clip(TALK_704, tmp_path / "six.mp4", 0.24)
    voice = wav_prefix(SPEECH_9S, tmp_path / "voice.wav", 0.24)
    dubber = Dubber(finder_weights, device="cpu", cache_dir=tmp_path / "tracks")
    request = DubRequest(video=str(video), audio=str(voice), out_path=str(tmp_path / "o.mp4"),
                         model="latentsync-1.6", steps=1)
    job, events = prepared(dubber, request)
    assert job.track.detector == LABEL and job.settings["face_detector"] == LABEL
    assert job.track.landmarks.shape == (6, 106, 2) and job.track.face_frames == 6
    expected = _expected_points((190.0, 250.0, 450.0, 560.0))
    assert all(np.array_equal(job.track.landmarks_at(i), expected) for i in range(6))
    notices = [e.message for e in events if e.kind == "notice"]
    assert not any("No face landmarks" in n for n in notices) and any("non-commercial" in n for n in notices)
    out = [f for _, frames in dubber.output_frames(job) for f in frames]
    assert len(out) == 6
    check = check_first_frame(dubber, request)
    assert any(LABEL in n for n in check.notices)
    # MuseTalk keeps its own finder: the Haar boxes, even with the insightface files present.
    detector, landmarker = dubber.face_finder("musetalk-1.5")
    assert detector.name == "haar" and landmarker is None


def test_the_dub_tab_names_the_licence_where_it_offers_the_files(finder_weights, latentsync_weights):
    from studio.dub_tab import weights_markdown

    absent = weights_markdown(str(latentsync_weights), "latentsync-1.6")
    assert "--with-insightface" in absent and "non-commercial research use only" in absent
    present = weights_markdown(str(finder_weights), "latentsync-1.6")
    assert "present" in present and "non-commercial research use only" in present
    assert "--with-insightface" not in present
    assert "insightface" not in weights_markdown(str(latentsync_weights), "musetalk-1.5")
