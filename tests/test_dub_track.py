"""The face track stage on real footage: boxes, largest face, gaps, no face, cache, given tracks."""
from __future__ import annotations

import json

import numpy as np
import pytest

from engine.dub.face.detect import HAAR_LABEL, HaarDetector
from engine.dub.face.track import build_track, face_track, load_track
from engine.errors import InputError
from engine.media.video_in import probe_video, read_frames
from tests.dub_fixtures import TALK_1080, clip, ffmpeg, one_line


@pytest.fixture(scope="module")
def talk(tmp_path_factory):
    """Two seconds (50 frames) of the 1080x1920 clip at half size."""
    return clip(TALK_1080, tmp_path_factory.mktemp("track") / "talk.mp4", 2.0, "-vf", "scale=540:960")


@pytest.fixture(scope="module")
def haar():
    return HaarDetector()


def _iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def test_every_frame_gets_a_box_near_a_full_resolution_detection(talk, haar):
    info = probe_video(talk)
    track = build_track(info, haar)
    assert len(track) == 50 and track.face_frames == 50 and track.detector == HAAR_LABEL
    assert any("offline fallback" in n for n in track.notices)
    frames = np.concatenate(list(read_frames(info, 25)))
    for i in (0, 7, 23, 49):        # keyframes and interpolated frames alike
        full = haar.detect(frames[i])
        assert full and _iou(track.box(i), full[0]) > 0.6, (i, track.box(i), full)


def test_two_faces_keep_the_largest_and_say_so(talk, haar, tmp_path):
    two = tmp_path / "two.mp4"
    ffmpeg("-i", str(talk), "-filter_complex",
           "[0:v]split[a][b];[b]hflip,scale=404:718,pad=540:960:68:121[s];[a][s]hstack", "-c:v", "libx264",
           "-preset", "ultrafast", str(two))
    info = probe_video(two)
    track = build_track(info, haar)
    assert track.face_frames == 50 and track.multi_face_frames > 0
    assert any("largest" in n for n in track.notices)
    # the big face is in the left half (Haar may take a false face for the largest on a keyframe or two)
    assert np.count_nonzero(track.boxes[:, 2] <= 540) >= 40
    track.save(tmp_path / "two.json")        # a track given back still says it kept the largest face
    given, how = face_track(info, cache_dir=None, detector=haar, track_file=tmp_path / "two.json")
    assert how == "given" and any("largest" in n for n in given.notices)


def test_short_gaps_are_bridged_and_long_ones_pass_through(talk, haar, tmp_path):
    short = tmp_path / "short.mp4"
    ffmpeg("-i", str(talk), "-vf", "drawbox=enable='between(n,9,11)':x=0:y=0:w=iw:h=ih:c=black:t=fill",
           "-c:v", "libx264", "-preset", "ultrafast", str(short))
    track = build_track(probe_video(short), haar)
    assert track.face_frames == 50 and track.bridged_frames > 0
    long = tmp_path / "long.mp4"
    ffmpeg("-i", str(talk), "-vf", "drawbox=enable='between(n,10,39)':x=0:y=0:w=iw:h=ih:c=black:t=fill",
           "-c:v", "libx264", "-preset", "ultrafast", str(long))
    track, how = face_track(probe_video(long), cache_dir=tmp_path / "cache", detector=haar)
    assert how == "detected" and track.box(0) is not None and track.box(49) is not None
    assert all(track.box(i) is None for i in range(15, 35))
    assert any("kept unchanged" in n for n in track.notices)
    again, how = face_track(probe_video(long), cache_dir=tmp_path / "cache", detector=haar)
    assert how == "cache"                    # a cached track tells the page the same about its frames
    faceless = [n for n in again.notices if "kept unchanged" in n]
    assert faceless and faceless == [n for n in track.notices if "kept unchanged" in n]


def test_no_face_anywhere_is_one_clear_error(tmp_path, haar):
    blank = tmp_path / "wall.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc=r=25:s=320x240", "-frames:v", "20", "-c:v", "libx264", str(blank))
    with pytest.raises(InputError) as err:
        build_track(probe_video(blank), haar)
    assert "No face was found" in one_line(err.value)


def test_a_video_damaged_after_it_was_opened_is_one_clear_error(talk, haar, tmp_path):
    video = tmp_path / "changing.mp4"
    video.write_bytes(talk.read_bytes())
    info = probe_video(video)
    data = bytearray(video.read_bytes())        # the picture data zeroed, the index (and its packets) kept
    at = data.find(b"mdat")
    data[at + 4: at - 4 + int.from_bytes(data[at - 4: at], "big")] = bytes(int.from_bytes(data[at - 4: at], "big") - 8)
    video.write_bytes(bytes(data))
    with pytest.raises(InputError) as err:
        build_track(info, haar)
    assert "changing.mp4 has no frames that can be decoded: it is damaged or was changed" in one_line(err.value)


def test_cache_and_given_track(talk, haar, tmp_path):
    info = probe_video(talk)
    cache = tmp_path / "cache"
    first, how = face_track(info, cache_dir=cache, detector=haar, settings={"bbox_shift": 0})
    assert how == "detected" and len(list(cache.glob("*.json"))) == 1
    again, how = face_track(info, cache_dir=cache, detector=haar, settings={"bbox_shift": 0})
    assert how == "cache" and np.allclose(again.boxes, first.boxes, atol=0.01)
    _, how = face_track(info, cache_dir=cache, detector=haar, settings={"bbox_shift": 5})
    assert how == "detected" and len(list(cache.glob("*.json"))) == 2

    data = first.to_json()
    data["boxes"] = [[10, 20, 110, 140]] * 50
    data["boxes"][3] = None
    given = tmp_path / "mine.json"
    given.write_text(json.dumps(data))
    track, how = face_track(info, cache_dir=cache, detector=haar, track_file=given)
    assert how == "given" and track.box(3) is None and list(track.box(4)) == [10, 20, 110, 140]

    # Two rows longer than the video: cut to its length, landmarks too; a face only in the cut rows is none.
    longer = {**data, "frames": info.frames + 2, "boxes": [[10, 20, 110, 140]] * (info.frames + 2),
              "landmarks": [[[50.0, 60.0]] * 68] * (info.frames + 2)}
    given.write_text(json.dumps(longer))
    track, _ = face_track(info, cache_dir=None, detector=haar, track_file=given)
    assert len(track) == info.frames and track.landmarks.shape == (info.frames, 68, 2)
    assert any("its last 2 are not used" in n for n in track.notices), track.notices
    longer["boxes"] = [None] * info.frames + [[10, 20, 110, 140]] * 2
    given.write_text(json.dumps(longer))
    with pytest.raises(InputError) as err:
        face_track(info, cache_dir=None, detector=haar, track_file=given)
    assert "no face in any frame" in one_line(err.value)

    data["width"] = 640
    given.write_text(json.dumps(data))
    with pytest.raises(InputError) as err:
        load_track(given, info)
    assert "540x960" in one_line(err.value)
    given.write_text("{not json")
    with pytest.raises(InputError) as err:
        load_track(given, info)
    assert "not a readable face track" in one_line(err.value)
