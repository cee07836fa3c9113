"""LatentSync 1.6 in the streaming dub pipeline, on tiny random weights and the real clips.

The points: the tiny files have the released layout and load through the real loaders; the voice
is encoded window by window with exactly the whole-file numbers; dubbed frames differ from the
source only around the face; faceless frames pass through; the CLI writes playable MP4s of the
voice's length at the source's size and rate for both clips.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from engine.dub.latentsync.audio import FeatureStream, WhisperStates, frame_chunks, log_mel
from engine.dub.latentsync.model import LatentSync, alignment_points
from engine.dub.pipeline import Dubber
from engine.dub.request import DubRequest, validate_dub_request
from engine.errors import InputError
from engine.media.audio import load_audio
from engine.media.mp4_read import probe_mp4
from engine.media.video_in import probe_video, read_frames
from tests.dub_fixtures import ROOT, SPEECH_9S, SPEECH_60S, TALK_704, TALK_1080, clip, decode_all, prepared, wav_prefix

STEPS = 2


def _keys(path, inner, prefix=""):
    data = torch.load(path, map_location="cpu", weights_only=True)[inner]
    return {k: tuple(v.shape) for k, v in data.items() if k.startswith(prefix)}


def test_tiny_files_have_the_released_layout_and_load(latentsync_weights, golden_dir):
    ours, ref = latentsync_weights / "latentsync-1.6", golden_dir / "latentsync"
    assert _keys(ours / "latentsync_unet.pt", "state_dict") == _keys(ref / "latentsync_unet.pt", "state_dict")
    # whisper: the encoder as released (the decoder, which nothing reads, is left out of the tiny file)
    assert _keys(ours / "whisper/tiny.pt", "model_state_dict") == \
        _keys(ref / "whisper/tiny.pt", "model_state_dict", "encoder.")
    model = LatentSync.load(ours)
    assert model.resolution == 256 and model.unet.config.unet["in_channels"] == 13


def test_the_voice_is_encoded_window_by_window_with_the_whole_file_numbers(golden_dir):
    wave = load_audio(SPEECH_60S, 16000)[: 16000 * 33]               # two encoder windows, the second partial
    whisper = WhisperStates(golden_dir / "latentsync" / "whisper" / "tiny.pt")
    stream = FeatureStream(whisper, wave)
    whole = log_mel(wave, floor=False)
    assert len(stream.windows) == 2
    assert torch.equal(torch.cat([stream._raw(a, b) for a, b in stream.windows], dim=1), whole)
    assert stream.loudest == float(whole.max())
    features = whisper.features(wave)
    frames = [0, 1, 373, 374, 375, 376, 824]                       # around the 30 s boundary (frame 375) and the end
    assert torch.equal(stream.frame_chunks(frames), frame_chunks(features, frames=frames))
    assert len(stream._kept) <= FeatureStream.KEEP
    assert stream.frame_count(25) == 825 and stream.frame_count(25, "official") == features.shape[0] // 2 + 2


def test_alignment_points_from_landmarks_or_the_box():
    marks = np.zeros((68, 2))
    marks[17:22] = (100, 50)
    marks[22:27] = (180, 50)
    marks[[30, 31, 33, 35]] = (140, 90)
    assert alignment_points(marks, None).tolist() == [[100, 50], [180, 50], [140, 90]]
    left, right, nose = alignment_points(None, (100, 100, 300, 300))
    assert left[1] == right[1] < nose[1] and left[0] < nose[0] < right[0]
    assert alignment_points(None, None) is None and alignment_points(None, (0, 0, 4, 4)) is None


def test_request_checks_the_latentsync_settings():
    ok = validate_dub_request(DubRequest(video="v", audio="a", model="LatentSync-1.6", guidance="2"))
    assert ok.model == "latentsync-1.6" and ok.guidance == 2.0 and ok.steps == 20 and ok.deepcache is True
    assert "parsing_mode" not in ok.settings() and ok.settings()["whisper_pad"] == "silence"
    assert "steps" not in validate_dub_request(DubRequest(video="v", audio="a")).settings()
    for field, value, words in (("steps", 0, "between 1"), ("guidance", float("nan"), "between 1"),
                                ("guidance", 0.5, "between 1"), ("deepcache", "yes", "true or false"),
                                ("whisper_pad", "noise", "one of"), ("rounding", None, "one of")):
        with pytest.raises(InputError, match=words):
            validate_dub_request(DubRequest(video="v", audio="a", model="latentsync-1.6", **{field: value}))


def _run(dubber, **fields):
    job, events = prepared(dubber, DubRequest(model="latentsync-1.6", steps=STEPS, **fields))
    outputs = []
    for indices, frames in dubber.output_frames(job):
        assert len(frames) == len(indices) <= 16
        outputs += frames
    return job, outputs, events


def _around_face(track, s, shape) -> np.ndarray:
    """True outside twice the face box around its centre: the aligned crop lies inside it."""
    keep = np.ones(shape[:2], bool)
    box = track.box(s)
    if box is not None:
        x1, y1, x2, y2 = (float(v) for v in box)
        cx, cy, half = (x1 + x2) / 2, (y1 + y2) / 2, max(x2 - x1, y2 - y1)
        keep[max(0, int(cy - half)):int(cy + half), max(0, int(cx - half)):int(cx + half)] = False
    return keep


@pytest.fixture(scope="module")
def dubber(latentsync_weights, track_cache):
    return Dubber(latentsync_weights, device="cpu", cache_dir=track_cache)


def test_only_the_face_changes_and_a_chunk_is_16_frames(dubber, tmp_path):
    voice = wav_prefix(SPEECH_9S, tmp_path / "voice.wav", 0.72)       # 18 frames: a chunk of 16, then 2
    job, outputs, events = _run(dubber, video=str(TALK_704), audio=str(voice), out_path=str(tmp_path / "o.mp4"))
    assert job.plan.n_out == 18 and len(outputs) == 18
    assert any(e.kind == "notice" and "No face landmarks" in e.message for e in events)  # no DWPose in the tiny set
    source = np.concatenate(list(read_frames(probe_video(TALK_704), 18, max_frames=18, pix_fmt="bgr24")))
    for i, (out, src) in enumerate(zip(outputs, source)):
        assert out.shape == (1216, 704, 3) and out.dtype == np.uint8
        keep = _around_face(job.track, i, out.shape)
        assert keep.mean() > 0.6
        if job.track.box(i) is not None:
            assert np.array_equal(out[keep], src[keep]), f"frame {i} changed away from the face"
            assert not np.array_equal(out, src), f"frame {i} was not dubbed"


def test_faceless_frames_pass_through_and_cycled_frames_reuse_their_alignment(dubber, tmp_path):
    short = clip(TALK_704, tmp_path / "four.mp4", 0.16)
    track = {"format": "humo-face-track", "version": 1, "detector": "given", "width": 704, "height": 1216,
             "frames": 4, "boxes": [[190, 260, 440, 510], None, [200, 266, 430, 500], [200, 266, 430, 500]]}
    path = tmp_path / "track.json"
    path.write_text(json.dumps(track))
    voice = wav_prefix(SPEECH_9S, tmp_path / "voice.wav", 0.24)      # 6 frames over 4: ping-pong
    job, outputs, _ = _run(dubber, video=str(short), audio=str(voice), out_path=str(tmp_path / "o.mp4"),
                           face_track=str(path))
    source = decode_all(short, "bgr24")
    assert len(outputs) == 6 and np.array_equal(outputs[1], source[1])       # no face: unchanged
    for i in (0, 2, 3, 4, 5):
        assert not np.array_equal(outputs[i], source[[0, 1, 2, 3, 3, 2][i]])


def _dub_cli(cache, weights, *args):
    env = {**os.environ, "HUMO_TRACK_CACHE": str(cache)}
    return subprocess.run([sys.executable, "-m", "engine", "dub", "--model", "latentsync-1.6", "--steps", str(STEPS),
                           "--weights", str(weights), *args], cwd=ROOT, capture_output=True, text=True, env=env,
                          timeout=900)


@pytest.mark.parametrize("video,size", [(TALK_1080, (1080, 1920)), (TALK_704, (704, 1216))])
def test_cli_writes_a_playable_mp4_for_both_clips(latentsync_weights, track_cache, tmp_path, video, size):
    voice = wav_prefix(SPEECH_9S, tmp_path / "voice.wav", 0.2)
    out = tmp_path / "o.mp4"
    proc = _dub_cli(track_cache, latentsync_weights, "--video", str(video), "--audio", str(voice), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    info = probe_mp4(out)
    assert (info["frames"], info["width"], info["height"], info["fps"]) == (5, *size, 25)
    assert info["has_audio"] and info["audio_duration_s"] == pytest.approx(0.2, abs=0.05)
    settings = info["metadata"]
    assert settings["model"] == "latentsync-1.6" and settings["steps"] == STEPS and settings["deepcache"] is True
    assert "parsing_mode" not in settings and settings["weights"] == "tiny (random)"


def test_missing_latentsync_weights_name_the_command(track_cache, tmp_path):
    voice = wav_prefix(SPEECH_9S, tmp_path / "voice.wav", 0.2)
    proc = _dub_cli(track_cache, tmp_path / "empty", "--video", str(TALK_704), "--audio", str(voice),
                    "--out", str(tmp_path / "o.mp4"))
    assert proc.returncode == 2 and not (tmp_path / "o.mp4").exists()
    line = proc.stderr.strip().splitlines()[-1]
    assert "latentsync-1.6" in line and "download --model latentsync-1.6" in line


@pytest.mark.parametrize("box", [(120, 100, 320, 300), (0, 0, 150, 160), (500, 330, 640, 480)])
def test_paste_back_around_the_face_equals_the_whole_frame_computation(box):
    from engine.dub.face.align import FaceAligner

    rng = np.random.default_rng(1)
    frame = rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)
    for rounding in ("round", "truncate"):
        aligner = FaceAligner(256, rounding=rounding)
        matrix = aligner.align_points(frame, alignment_points(None, box)).matrix
        face = torch.from_numpy(rng.random((3, 256, 256), dtype=np.float32) * 2 - 1)
        part = aligner.restore(frame, face, matrix)
        whole = aligner.restore(frame, face, matrix, whole=True)
        assert np.array_equal(part, whole) and not np.array_equal(part, frame)


def test_overlapping_windows_cover_every_row_once_and_smooth_the_30s_boundary(golden_dir):
    wave = load_audio(SPEECH_60S, 16000)[: 16000 * 55]
    whisper = WhisperStates(golden_dir / "latentsync" / "whisper" / "tiny.pt")
    cut, overlap = FeatureStream(whisper, wave), FeatureStream(whisper, wave, windows="overlap")
    assert cut.rows == overlap.rows == 2750 and [w[0] for w in overlap.windows] == [0, 2000, 4000]
    covered = [r for k in range(len(overlap.windows)) for r in overlap.rows_of(k)]
    assert covered == list(range(overlap.rows))
    a, b = cut.features(), overlap.features()
    assert torch.equal(a[:1250], b[:1250])                       # the first window's middle: the same window
    frames = list(range(0, 1375, 7))
    assert torch.equal(overlap.frame_chunks(frames), frame_chunks(b, frames=frames))

    def jump(f, r):                                              # change from row r-1 to r, against the typical one
        steps = (f[1:] - f[:-1]).norm(dim=(1, 2))
        return float(steps[r - 1] / steps[1200:1800].median())
    assert jump(a, 1500) > 2 * jump(b, 1500)                     # the official cut at 30 s, gone with overlap


def test_one_dubbing_model_is_held_at_a_time(musetalk_weights, latentsync_weights, tmp_path):
    import gc
    import shutil
    import weakref

    both = tmp_path / "both"
    for src in (musetalk_weights, latentsync_weights):
        shutil.copytree(src, both, dirs_exist_ok=True)
    dubber = Dubber(both, device="cpu", cache_dir=tmp_path / "tracks")
    list(dubber.load("musetalk-1.5"))
    musetalk, parser = weakref.ref(dubber.model), weakref.ref(dubber.parser)
    events = list(dubber.load("latentsync-1.6"))
    assert any("LatentSync" in e.message for e in events) and dubber.latentsync is not None
    gc.collect()
    assert dubber.model is None and musetalk() is None and parser() is None     # nothing else holds them
    latentsync = weakref.ref(dubber.latentsync)
    list(dubber.load("musetalk-1.5"))
    gc.collect()
    assert dubber.model is not None and dubber.latentsync is None and latentsync() is None
    dubber.unload()
    assert (dubber.model, dubber.parser, dubber.latentsync) == (None, None, None)


def test_a_cancel_stops_inside_a_chunk_and_writes_nothing(dubber, tmp_path):
    import threading
    import traceback

    from engine.errors import Cancelled

    voice = wav_prefix(SPEECH_9S, tmp_path / "voice.wav", 0.72)       # one chunk of 16 frames, then 2
    out = tmp_path / "o.mp4"
    cancel = threading.Event()
    request = DubRequest(video=str(TALK_704), audio=str(voice), out_path=str(out), model="latentsync-1.6", steps=3,
                         when_audio_longer="freeze", when_video_longer="keep")
    list(dubber.load("latentsync-1.6"))
    # The first UNet pass asks for the cancel: the run must stop at the end of that step, inside the chunk.
    hook = dubber.latentsync.unet.register_forward_hook(lambda *_: cancel.set())
    try:
        with pytest.raises(Cancelled) as err:
            list(dubber.run(request, cancel=cancel))
    finally:
        hook.remove()
    stack = [frame.name for frame in traceback.extract_tb(err.value.__traceback__)]
    assert "_sync_chunk" in stack and stack[-1] == "check_cancel", stack[-6:]
    assert not out.exists() and list(tmp_path.iterdir()) == [tmp_path / "voice.wav"]
