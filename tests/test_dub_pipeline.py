"""The streaming dub pipeline on tiny MuseTalk weights and the real clips: the frames it encodes.

Each test dubs a handful of frames only (each dubbed frame runs BiSeNet at 512x512 and the VAE
twice): the points are which source frame each output shows, that everything outside the face
is the source exactly, and the lengths. The MP4 side is in test_dub_cli.py.
"""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from engine.dub.blend import expanded_square
from engine.dub.cycle import output_sources
from engine.dub.lengths import ping_pong_frame, plan_lengths
from engine.dub.pipeline import PREVIEW_SIDE, Dubber, _crop_box
from engine.dub.request import DubRequest
from engine.errors import InputError
from engine.media.video_in import read_frames
from tests.dub_fixtures import (SPEECH_9S, SPEECH_60S, TALK_704, TALK_1080, clip, decode_all, ffmpeg, prepared,
                               wav_prefix)


@pytest.fixture(scope="module")
def dubber(musetalk_weights, track_cache):
    return Dubber(musetalk_weights, device="cpu", cache_dir=track_cache)


@pytest.fixture(scope="module")
def short704(tmp_path_factory):
    """The first 4 frames of the 704x1216 clip."""
    return clip(TALK_704, tmp_path_factory.mktemp("clips") / "four.mp4", 0.16)


@pytest.fixture(scope="module")
def ten704(tmp_path_factory):
    """The first 10 frames of the 704x1216 clip."""
    return clip(TALK_704, tmp_path_factory.mktemp("clips") / "ten.mp4", 0.4)


def _run(dubber, **fields):
    job, events = prepared(dubber, DubRequest(**fields))
    outputs = []
    for indices, frames in dubber.output_frames(job):
        assert len(indices) == len(frames) and len(frames) <= job.request.batch_size
        outputs += frames
    return job, outputs, events


def _outside(job, s: int, shape) -> np.ndarray:
    """True where output pixels must equal source frame s: outside the parsed square around its box."""
    keep = np.ones(shape[:2], bool)
    box = _crop_box(job.track, s, job.request, shape[0])
    if box is not None:
        x1, y1, x2, y2 = expanded_square(box)
        keep[max(0, y1):max(0, y2), max(0, x1):max(0, x2)] = False
    return keep


def test_outside_the_face_the_frames_are_the_source(dubber, tmp_path):
    voice = wav_prefix(SPEECH_9S, tmp_path / "voice.wav", 0.2)
    job, outputs, events = _run(dubber, video=str(TALK_1080), audio=str(voice), out_path=str(tmp_path / "o.mp4"),
                                batch_size=3)
    assert job.plan.n_out == job.plan.n_dubbed == 5 and len(outputs) == 5 and job.plan.n_source == 250
    assert any(e.kind == "notice" and "Haar" in e.message for e in events)
    source = np.concatenate(list(read_frames(job.info, 5, max_frames=5)))
    for i, (out, src) in enumerate(zip(outputs, source)):
        assert out.shape == (1920, 1080, 3) and out.dtype == np.uint8
        keep = _outside(job, i, out.shape)
        assert keep.mean() > 0.8
        assert np.array_equal(out[keep], src[keep]), f"frame {i} changed outside its face"
        assert np.abs(out.astype(int) - src).sum() > 0, f"frame {i} was not dubbed"


def test_longer_voice_cycles_the_frames_ping_pong(dubber, short704, tmp_path):
    voice = wav_prefix(SPEECH_60S, tmp_path / "voice.wav", 0.4)
    job, outputs, events = _run(dubber, video=str(short704), audio=str(voice), out_path=str(tmp_path / "o.mp4"),
                                batch_size=4)
    assert job.plan.n_source == 4 and job.plan.n_dubbed == 10 and len(outputs) == 10
    assert any("cycled forward and backward" in getattr(e, "message", "") for e in events)
    order = [ping_pong_frame(i, 4) for i in range(10)]
    assert order == [0, 1, 2, 3, 3, 2, 1, 0, 0, 1]
    assert order == [src.frame for src in output_sources(10, [True] * 4)]    # the official cycle
    source = decode_all(short704, "bgr24")
    for i, out in enumerate(outputs):
        keep = _outside(job, order[i], out.shape)
        assert np.array_equal(out[keep], source[order[i]][keep]), f"output {i} is not frame {order[i]}"
    job, outputs, events = _run(dubber, video=str(short704), audio=str(voice), out_path=str(tmp_path / "b.mp4"),
                                batch_size=4, when_audio_longer="bounce")
    order = [0, 1, 2, 3, 2, 1, 0, 1, 2, 3]                   # each turning frame once
    assert any("each turning frame shown once" in getattr(e, "message", "") for e in events)
    for i, out in enumerate(outputs):
        keep = _outside(job, order[i], out.shape)
        assert np.array_equal(out[keep], source[order[i]][keep]), f"output {i} is not frame {order[i]}"


def test_freeze_holds_the_last_frame_and_keep_keeps_the_rest(dubber, short704, ten704, tmp_path):
    voice = wav_prefix(SPEECH_60S, tmp_path / "voice.wav", 0.24)
    job, outputs, _ = _run(dubber, video=str(short704), audio=str(voice), out_path=str(tmp_path / "o.mp4"),
                           batch_size=3, when_audio_longer="freeze")
    source = decode_all(short704, "bgr24")
    assert len(outputs) == 6
    for i in range(4, 6):
        keep = _outside(job, 3, outputs[i].shape)
        assert np.array_equal(outputs[i][keep], source[3][keep])

    short = wav_prefix(SPEECH_60S, tmp_path / "short.wav", 0.2)
    job, outputs, events = _run(dubber, video=str(ten704), audio=str(short), out_path=str(tmp_path / "k.mp4"),
                                batch_size=4, when_video_longer="keep")
    assert (job.plan.n_dubbed, job.plan.n_out) == (5, 10) and len(outputs) == 10
    source = decode_all(ten704, "bgr24")
    for i in range(5, 10):
        assert np.array_equal(outputs[i], source[i])                # after the voice: the video as it was
    assert any("keep their own sound" in getattr(e, "message", "") for e in events)
    assert job.audio.shape[0] == round(10 / 25 * job.audio_sr)      # the voice, then the source's (silent) rest


def test_frames_without_a_face_pass_through(dubber, short704, tmp_path):
    track = {"format": "humo-face-track", "version": 1, "detector": "given", "width": 704, "height": 1216,
             "frames": 4, "boxes": [[190, 260, 440, 510], None, [200, 266, 430, 500], None]}
    path = tmp_path / "track.json"
    path.write_text(json.dumps(track))
    voice = wav_prefix(SPEECH_9S, tmp_path / "voice.wav", 0.2)
    job, outputs, _ = _run(dubber, video=str(short704), audio=str(voice), out_path=str(tmp_path / "o.mp4"),
                           batch_size=5, face_track=str(path))
    assert job.track.detector == "given" and len(outputs) == 5
    source = decode_all(short704, "bgr24")
    for i, s in ((1, 1), (3, 3), (4, 3)):                          # output 4 cycles back to frame 3
        assert np.array_equal(outputs[i], source[s])
    for i in (0, 2):
        assert not np.array_equal(outputs[i], source[i])


def test_a_given_track_two_frames_short_keeps_the_last_frames(dubber, short704, tmp_path):
    track = {"format": "humo-face-track", "version": 1, "detector": "given", "width": 704, "height": 1216,
             "frames": 2, "boxes": [[190, 260, 440, 510], [200, 266, 430, 500]]}
    path = tmp_path / "track.json"
    path.write_text(json.dumps(track))
    voice = wav_prefix(SPEECH_9S, tmp_path / "voice.wav", 0.2)
    job, outputs, events = _run(dubber, video=str(short704), audio=str(voice), out_path=str(tmp_path / "o.mp4"),
                                batch_size=5, face_track=str(path), when_audio_longer="freeze")
    source = decode_all(short704, "bgr24")
    assert len(source) == 4 and job.plan.n_source == 4 and len(outputs) == 5
    for i in (2, 3, 4):                                # no track rows: the source's own frames, in place
        assert np.array_equal(outputs[i], source[min(i, 3)])
    assert not np.array_equal(outputs[0], source[0])
    assert any("the last 2 have no track rows" in getattr(e, "message", "") for e in events)


def test_plan_lengths():
    assert plan_lengths(10, 4, "pingpong", "cut").n_out == 4
    assert plan_lengths(10, 4, "pingpong", "keep").n_out == 10
    assert plan_lengths(4, 10, "freeze", "keep").source(9) == 3
    assert not plan_lengths(4, 10, "freeze", "cut").cycles and plan_lengths(4, 10).cycles
    bounce = plan_lengths(4, 10, "bounce")
    assert bounce.cycles and [bounce.source(i) for i in range(10)] == [0, 1, 2, 3, 2, 1, 0, 1, 2, 3]
    assert [plan_lengths(1, 3, "bounce").source(i) for i in range(3)] == [0, 0, 0]


def test_prepared_avatar_speaks_from_its_cache(dubber, short704, tmp_path):
    from engine.dub.avatar import Avatar
    from engine.media.audio import load_audio

    avatar = Avatar.prepare(dubber, DubRequest(video=str(short704), audio=str(SPEECH_9S), batch_size=4))
    assert len(avatar.frames) == 4 and sorted(avatar.latents) == [s for s in range(4) if avatar.boxes[s]]
    voice = load_audio(wav_prefix(SPEECH_9S, tmp_path / "voice.wav", 0.2), 16000)
    first = list(avatar.speak(voice))
    again = list(avatar.speak(voice))
    assert len(first) == 5 and all(np.array_equal(a, b) for a, b in zip(first, again))   # no new noise draws
    source = decode_all(short704, "bgr24")
    for i, out in enumerate(first):
        s = ping_pong_frame(i, 4)
        keep = np.ones(out.shape[:2], bool)
        if avatar.boxes[s] is not None:
            x1, y1, x2, y2 = expanded_square(avatar.boxes[s])
            keep[max(0, y1):y2, max(0, x1):x2] = False
        assert np.array_equal(out[keep], source[s][keep])
    with pytest.raises(InputError, match="real-time mode"):      # LatentSync has no prepared mode
        Avatar.prepare(dubber, DubRequest(video=str(short704), audio=str(SPEECH_9S), model="latentsync-1.6"))


def test_a_stage_reports_its_progress_and_hands_back_its_result_or_error():
    import threading

    from engine.dub.pipeline import _with_progress
    from engine.errors import Cancelled

    def work(on_progress):
        for done in (4, 8, 12):
            on_progress(done, 12)
        return threading.current_thread().name

    gen = _with_progress(work, "tracking", "Finding the face", every_s=0)
    events = []
    try:
        while True:
            events.append(next(gen))
    except StopIteration as stop:
        worker = stop.value
    assert worker == "humo-tracking"                                   # it ran in its own thread
    assert [e.message.split(",")[0] for e in events] == ["Finding the face: frame 4 of 12",
                                                         "Finding the face: frame 8 of 12"]
    assert all(e.stage == "tracking" and e.message.endswith("s left") for e in events)

    def cancelled(on_progress):
        on_progress(1, 10)
        raise Cancelled("Dubbing cancelled.")

    with pytest.raises(Cancelled, match="Dubbing cancelled"):
        list(_with_progress(cancelled, "tracking", "Finding the face", every_s=0))

    ended = threading.Event()

    def endless(on_progress):                  # works until told otherwise
        try:
            done = 0
            while True:
                done += 1
                on_progress(done, 10**9)
        finally:
            ended.set()

    gen = _with_progress(endless, "tracking", "Finding the face", every_s=0)
    next(gen)
    gen.close()                                # the caller went away without a cancel
    assert ended.wait(30), "the worker should stop at its next report"


def test_first_frame_check_moves_on_to_the_first_frame_with_a_face(dubber, tmp_path):
    from studio.dub_check import check_first_frame

    late = tmp_path / "late.mp4"              # the face is hidden for the first 7 frames
    ffmpeg("-i", str(TALK_704), "-t", "0.6", "-vf", "drawbox=enable='lt(n,7)':x=0:y=0:w=iw:h=ih:c=black:t=fill",
           "-c:v", "libx264", "-preset", "ultrafast", str(late))
    check = check_first_frame(dubber, DubRequest(video=str(late), audio=str(SPEECH_9S)))
    assert any("the check shows frame 11 (0.4 s)" in n for n in check.notices), check.notices
    frame = decode_all(late)[10]              # the picture is that frame, drawn on only around the face
    assert np.array_equal(check.image[:64, :64], frame[:64, :64]) and frame[:64, :64].max() > 0



def test_a_refused_run_leaves_no_temporary_folder(dubber, tmp_path, monkeypatch):
    import tempfile

    blank = tmp_path / "wall.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc=r=25:s=320x240", "-frames:v", "10", "-c:v", "libx264", str(blank))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    with pytest.raises(InputError, match="No face was found"):
        list(dubber.run(DubRequest(video=str(blank), audio=str(SPEECH_9S))))
    assert not list(tmp_path.glob("humo-dub-out-*"))


def test_a_29_97_fps_video_keeps_its_rate_and_a_kept_rest_its_own_sound(dubber, tmp_path):
    from fractions import Fraction

    from engine.media.mp4_read import read_mp4_audio
    from engine.media.video_in import probe_video

    src = tmp_path / "ntsc.mp4"               # 0.6 s at 30000/1001 fps, sounding a 440 Hz tone
    ffmpeg("-i", str(TALK_704), "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100", "-t", "0.6",
           "-vf", "fps=30000/1001", "-map", "0:v", "-map", "1:a", "-c:v", "libx264", "-preset", "ultrafast",
           "-c:a", "aac", str(src))
    voice = wav_prefix(SPEECH_9S, tmp_path / "voice.wav", 0.3)
    out = tmp_path / "o.mp4"
    events = list(dubber.run(DubRequest(video=str(src), audio=str(voice), out_path=str(out), batch_size=4,
                                        when_video_longer="keep")))
    result = events[-1]
    source, made = probe_video(src), probe_video(out)
    assert made.fps == Fraction(30000, 1001) and made.frames == source.frames == result.frames
    # The page's preview: the last one shows the last frame written, small and in RGB.
    previews = [e for e in events if type(e).__name__ == "PreviewEvent"]
    assert previews and previews[-1].step == previews[-1].total == made.frames
    shown = previews[-1].frames[0]
    assert max(shown.shape[:2]) <= PREVIEW_SIDE and shown.shape[1] / shown.shape[0] == pytest.approx(704 / 1216, abs=0.01)
    last = cv2.resize(decode_all(out, "rgb24")[-1], shown.shape[1::-1], interpolation=cv2.INTER_AREA)
    assert np.abs(last.astype(int) - shown).mean() < 4
    dubbed_s = 9 / made.fps                   # 0.3 s of voice at 29.97 fps: 9 dubbed frames
    sr = 16000
    tail = read_mp4_audio(out, sr)[int((float(dubbed_s) + 0.05) * sr):]
    assert tail.size > 0.15 * sr
    spectrum = np.abs(np.fft.rfft(tail * np.hanning(tail.size)))
    assert abs(np.argmax(spectrum) * sr / tail.size - 440) < 15, "the kept rest should sound as the source did"
