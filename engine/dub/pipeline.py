"""Dubbing, streamed: a video and a voice in, typed events out, an MP4 at the end.

Per batch of output frames: source frames (decoded in order; spilled to disk only when they
must be shown again) -> face boxes from the face track -> 256x256 crops -> VAE encode -> UNet
with the frames' audio windows -> VAE decode -> pasted back into the full-resolution frame ->
the MP4 writer. Frames without a face, and frames after the audio when the rest of the video is
kept, pass through unchanged. The output keeps the source's frame rate and size; its sound is
the new voice, or the sound the request gives for it (plus the source's own sound under a kept
rest). Nothing holds the whole video.
"""
from __future__ import annotations

import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from engine.dub.lengths import OutputPlan, plan_lengths
from engine.dub.request import LATENTSYNC, DubRequest, validate_dub_request
from engine.dub.progress import with_progress as _with_progress
from engine.errors import Cancelled, InputError
from engine.events import NoticeEvent, PreviewEvent, ResultEvent, StageEvent, StepEvent

PREVIEW_EVERY_S = 2.0
MASK_CACHE_BYTES = 256 * 1024**2     # paste masks kept for frames shown again (ping-pong), at most
PREVIEW_SIDE = 256
MAX_OUTPUT_SR = 48000
TRACK_CACHE_ENV = "HUMO_TRACK_CACHE"
NO_LANDMARKS = ("No face landmarks: the face is aligned from its box, which is less steady. For landmarks, "
                "download the official 106-point models (python -m engine download --model latentsync-1.6 "
                "--with-insightface; non-commercial research use only) or DWPose (--model musetalk-1.5).")


@dataclass
class DubJob:
    """One run, prepared: everything the frame loop needs."""
    request: DubRequest
    info: object                 # engine.media.video_in.VideoInfo
    track: object                # engine.dub.face.track.FaceTrack
    plan: OutputPlan
    features: object             # the voice features, made as frames need them (musetalk.VoiceFeatures or
                                 # latentsync.audio.FeatureStream)
    n_samples: int               # voice length at 16 kHz
    out_path: Path
    audio: np.ndarray            # the sound track of the result
    audio_sr: int
    settings: dict
    timings: dict = field(default_factory=dict)

    @property
    def chunk(self) -> int:
        """Output frames per step of the frame loop: LatentSync's 16-frame chunks, else the batch size."""
        from engine.dub.latentsync.pipeline_core import CHUNK_FRAMES

        return CHUNK_FRAMES if self.request.model == LATENTSYNC else self.request.batch_size


class Dubber:
    """Keeps MuseTalk, the face parser and the face detectors loaded between runs."""

    def __init__(self, weights_dir: str | Path = "weights", *, device: str | None = None, dtype=None,
                 cache_dir: str | Path | None = None):
        import torch

        self.weights_dir = Path(weights_dir)
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        # The networks in bf16 on a GPU (float32's range, so no fp16 overflow); the sampler's state,
        # masks and blends stay float32. float32 on a CPU, and wherever exactness is checked.
        self.dtype = dtype or (torch.bfloat16 if str(self.device).startswith("cuda") else torch.float32)
        self.cache_dir = Path(cache_dir) if cache_dir is not None else _default_cache_dir()
        self.model = self.parser = self.detector = self.landmarker = self.insightface = None
        self.latentsync = None
        self._masks: dict[int, object] = {}
        self._mask_bytes = 0

    @property
    def models_dir(self) -> Path:
        from engine.weights.components import MUSETALK_DIR

        return self.weights_dir / MUSETALK_DIR

    def model_dir(self, model: str) -> Path:
        return self.weights_dir / model

    def load(self, model: str = "musetalk-1.5") -> Iterator[StageEvent]:
        """Load what is not loaded yet (events say what); the weights must be complete. The other
        dubbing model's networks are freed first: one is held at a time."""
        from engine import weights
        from engine.dub.face.parsing import FaceParser
        from engine.dub.musetalk import MuseTalk

        self._load_detectors()
        self.unload(keep=model)
        if model == LATENTSYNC:
            if self.latentsync is None:
                from engine.dub.latentsync.model import LatentSync

                weights.require(LATENTSYNC, self.weights_dir)
                yield StageEvent("loading", "Loading LatentSync 1.6 (3D UNet, VAE, whisper-tiny)")
                self.latentsync = LatentSync.load(self.model_dir(LATENTSYNC), device=self.device, dtype=self.dtype)
            return
        if self.model is not None:
            return
        weights.require("musetalk-1.5", self.weights_dir)
        yield StageEvent("loading", "Loading MuseTalk 1.5 (UNet, VAE, whisper)")
        self.model = MuseTalk.load(self.models_dir, device=self.device, dtype=self.dtype)
        yield StageEvent("loading", "Loading the face parser (BiSeNet)")
        self.parser = FaceParser.load(self.models_dir, device=self.device)

    def unload(self, keep: str | None = None) -> None:
        """Free the dubbing networks, all of them or all but `keep`'s (the face detectors stay: small,
        and on the CPU)."""
        import gc

        import torch

        freed = False
        if keep != LATENTSYNC and self.latentsync is not None:
            self.latentsync, freed = None, True
        if keep == LATENTSYNC or keep is None:
            if self.model is not None or self.parser is not None:
                self.model = self.parser = None
                self._masks, self._mask_bytes = {}, 0
                freed = True
        if freed:
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()

    def _load_detectors(self) -> None:
        from engine.dub.face.detect import DWPoseLandmarks, HaarDetector
        from engine.dub.face.insight import InsightFace106

        if self.detector is None:
            self.detector = HaarDetector()
            self.landmarker = DWPoseLandmarks.find(self.weights_dir)
            self.insightface = InsightFace106.find(self.model_dir(LATENTSYNC))

    def face_finder(self, model: str) -> tuple[object, object | None]:
        """(detector, landmarker) of `model`'s face track: LatentSync's official insightface finder
        when its files are there; else the Haar cascade's boxes with DWPose's landmarks when present."""
        self._load_detectors()
        if model == LATENTSYNC and self.insightface is not None:
            return self.insightface, None
        return self.detector, self.landmarker

    def run(self, request: DubRequest, cancel: threading.Event | None = None) -> Iterator:
        """Events of one dubbing run (see module doc); raises `EngineError`s with one-line messages."""
        t0 = time.monotonic()

        def check_cancel():
            if cancel is not None and cancel.is_set():
                raise Cancelled("Dubbing cancelled.")

        job = yield from self.prepare(request, check_cancel)
        t = time.monotonic()
        yield StageEvent("dubbing", f"Dubbing {job.plan.n_dubbed} frames")
        yield from self._write(job, check_cancel)
        job.timings["dub_s"] = time.monotonic() - t
        job.timings["total_s"] = time.monotonic() - t0
        yield StageEvent("done", "Done")
        info, plan = job.info, job.plan
        yield ResultEvent(video_path=str(job.out_path), frames=plan.n_out, width=info.width, height=info.height,
                          fps=float(info.fps), seed=job.request.seed, duration_s=float(plan.n_out / info.fps),
                          timings=job.timings, settings=job.settings)

    def prepare(self, request: DubRequest, check_cancel=lambda: None) -> Iterator:
        """Check the inputs, load the models, track the face, encode the voice: a generator of
        events whose return value (`yield from`) is the `DubJob`."""
        from engine.dub.face.track import face_track
        from engine.dub.musetalk import window_rows
        from engine.media.audio import audio_info, load_audio
        from engine.media.video_in import probe_video

        timings: dict[str, float] = {}
        req = validate_dub_request(request)
        yield StageEvent("reading", "Reading the video and the voice")
        info = probe_video(req.video)
        voice = load_audio(req.audio, 16000)
        out_sr = min(max(int(audio_info(req.sound or req.audio)["sample_rate"] or 16000), 16000), MAX_OUTPUT_SR)
        out_path = _output_path(req)         # checked now, before minutes of work
        for note in info.notices:
            yield NoticeEvent(note)
        check_cancel()
        from engine import weights

        weights.require(req.model, self.weights_dir)    # say so before minutes of face tracking
        detector, landmarker = self.face_finder(req.model)
        t = time.monotonic()
        yield StageEvent("tracking", "Finding the face in every frame")
        track, how = yield from _with_progress(
            lambda on_progress: face_track(info, cache_dir=self.cache_dir, detector=detector, landmarker=landmarker,
                                           track_file=req.face_track, check_cancel=check_cancel,
                                           on_progress=on_progress),
            "tracking", "Finding the face")
        for note in track.notices:
            yield NoticeEvent(note)
        if req.model == LATENTSYNC and track.landmarks is None:
            yield NoticeEvent(NO_LANDMARKS)
        if req.model != LATENTSYNC and req.bbox_shift and (track.landmarks is None or track.landmarks.shape[1] != 68):
            yield NoticeEvent("bbox_shift needs face landmarks (DWPose), which this face track does not have: "
                              "it is not applied.")
        timings["track_s"] = time.monotonic() - t
        check_cancel()
        t = time.monotonic()
        yield from self.load(req.model)
        timings["load_s"] = time.monotonic() - t

        t = time.monotonic()
        yield StageEvent("encoding_audio", "Encoding the voice")
        if req.model == LATENTSYNC:
            features = self.latentsync.feature_stream(voice, _sync_options(req))
            n_dubbed = features.frame_count(float(info.fps), req.frame_count)
        else:
            features = self.model.voice_features(voice)
            n_dubbed = int(window_rows(len(voice), info.fps, features.shape[1], req.fps_rule).shape[0])
        plan = plan_lengths(len(track), n_dubbed, req.when_audio_longer, req.when_video_longer)
        for note in _length_notes(plan):
            yield NoticeEvent(note)
        audio = _output_audio(req, plan, info, out_sr, voice)
        timings["audio_s"] = time.monotonic() - t
        settings = {**req.settings(), "fps": str(info.fps), "width": info.width, "height": info.height,
                    "frames": plan.n_out, "dubbed_frames": plan.n_dubbed, "face_detector": track.detector,
                    "face_track_source": how, "weights": "tiny (random)" if _is_tiny(self.model_dir(req.model)) else "released"}
        if out_path is None:                 # a temporary file, made only once the job is ready to write
            out_path = Path(tempfile.mkdtemp(prefix="humo-dub-out-")) / "dubbed.mp4"
        return DubJob(req, info, track, plan, features, len(voice), out_path, audio, out_sr, settings, timings)

    def output_frames(self, job: "DubJob", check_cancel=lambda: None) -> Iterator[tuple[list[int], list[np.ndarray]]]:
        """(output indices, uint8 BGR full-size frames) per batch, in order: exactly what is encoded."""
        import torch

        from engine.dub.source import SourceFrames

        req, plan = job.request, job.plan
        generator = torch.Generator().manual_seed(req.seed)
        self._masks, self._mask_bytes = {}, 0
        source = SourceFrames(job.info, plan, job.chunk, spill_dir=None)
        sync = None
        if req.model == LATENTSYNC:
            from engine.dub.latentsync.model import SyncRun

            sync = SyncRun(self.latentsync, _sync_options(req), req.seed, job.features, job.info.fps,
                           shown_again=plan.n_source if plan.n_dubbed > plan.n_source else 0)
        try:
            for start in range(0, plan.n_out, job.chunk):
                check_cancel()
                indices = list(range(start, min(start + job.chunk, plan.n_out)))
                if sync is not None:
                    yield indices, self._sync_chunk(job, source, indices, sync, check_cancel)
                else:
                    yield indices, self._dub_batch(job, source, indices, generator)
        finally:
            source.close()
            self._masks, self._mask_bytes = {}, 0

    def _write(self, job: "DubJob", check_cancel) -> Iterator:
        from engine.dub.writer import BackgroundWriter

        req, plan = job.request, job.plan
        writer = BackgroundWriter(job.out_path, job.info.fps, job.audio, job.audio_sr, job.settings,
                                  depth=2 * job.chunk)
        t0 = last_preview = time.monotonic()
        done = 0
        try:
            for indices, frames in self.output_frames(job, check_cancel):
                for frame in frames:
                    writer.put(frame[:, :, ::-1])
                done += len(indices)
                elapsed = time.monotonic() - t0
                yield StepEvent(step=done, total=plan.n_out, elapsed_s=elapsed,
                                eta_s=elapsed / done * (plan.n_out - done))
                if req.preview and (time.monotonic() - last_preview >= PREVIEW_EVERY_S or done == plan.n_out):
                    last_preview = time.monotonic()
                    yield PreviewEvent(step=done, total=plan.n_out, frames=_preview(frames[-1]))
            yield StageEvent("writing", "Finishing the MP4")
            writer.finish()
        except BaseException as err:
            writer.abort(err if isinstance(err, Exception) else None)
            raise

    def _sync_chunk(self, job: "DubJob", source, indices, sync, check_cancel) -> list[np.ndarray]:
        """LatentSync: output frames (uint8 BGR, full size) of one chunk of output indices."""
        from engine.dub.latentsync.model import alignment_points

        frames, jobs = [], []
        for k, i in enumerate(indices):
            s = job.plan.source(i)
            frames.append(source.frame(s))
            if job.plan.dubbed(i):
                points = alignment_points(job.track.landmarks_at(s), job.track.box(s))
                if points is not None:
                    jobs.append((k, i, s, points))
        return sync.dub(frames, jobs, on_step=lambda *_: check_cancel())

    def _dub_batch(self, job: "DubJob", source, indices, generator) -> list[np.ndarray]:
        """Output frames (uint8 BGR, full size) for output indices `indices`."""
        import torch

        req, info, track, plan = job.request, job.info, job.track, job.plan

        from engine.dub.blend import paste_face, paste_mask
        from engine.dub.face.crop import crop_face

        frames, jobs = [], []               # jobs: (position in batch, output index, source frame, box)
        for k, i in enumerate(indices):
            s = plan.source(i)
            frame = source.frame(s)
            frames.append(frame)
            box = _crop_box(track, s, req, info.height) if plan.dubbed(i) else None
            if box is not None:
                jobs.append((k, i, s, box))
        if not jobs:
            return [np.array(f) for f in frames]
        latents = [None] * len(jobs)
        todo = []
        for j, (k, i, s, box) in enumerate(jobs):
            cached = source.latent(s)
            if cached is not None:
                latents[j] = torch.from_numpy(np.array(cached))
            else:
                todo.append(j)
        if todo:
            crops = np.stack([crop_face(frames[jobs[j][0]], jobs[j][3]) for j in todo])
            fresh = self.model.encode(crops, generator=generator).float().cpu()
            for j, latent in zip(todo, fresh):
                latents[j] = latent
                source.keep_latent(jobs[j][2], latent.numpy())
        batch = torch.stack(latents).to(self.model.device, self.model.dtype)
        windows = self.model.audio_windows(job.features, job.n_samples, info.fps, req.fps_rule, frames=[i for _, i, _, _ in jobs])
        faces = self.model.decode(self.model.predict(batch, windows.to(self.model.device, self.model.dtype)))
        out = [np.array(f) for f in frames]
        cheeks = (req.cheek_left, req.cheek_right)
        for (k, _, s, box), face in zip(jobs, faces):
            mask = self._masks.get(s)
            if mask is None:
                mask = paste_mask(out[k], box, self.parser, req.parsing_mode, cheeks)
                if plan.cycles and self._mask_bytes + mask.alpha.nbytes <= MASK_CACHE_BYTES:
                    mask.classes = mask.mask512 = None      # only the alpha is needed again
                    self._masks[s] = mask
                    self._mask_bytes += mask.alpha.nbytes
            out[k] = paste_face(out[k], face, box, self.parser, mode=req.parsing_mode, cheeks=cheeks, mask=mask)
        return out


def dub(request: DubRequest, weights_dir: str | Path = "weights", *, cancel: threading.Event | None = None,
        device: str | None = None, cache_dir: str | Path | None = None) -> Iterator:
    """One dubbing run on freshly loaded models (an `Engine` keeps them between runs)."""
    yield from Dubber(weights_dir, device=device, cache_dir=cache_dir).run(request, cancel)


def latentsync_region(frame_size: tuple[int, int], track, s: int = 0):
    """LatentSync's aligned crop bounds and mouth mask (uint8, 255 = redrawn) for frame s of a face track,
    or None when the frame has no usable face (the first-frame check draws them)."""
    from engine.dub.latentsync.model import alignment_points, mouth_region

    points = alignment_points(track.landmarks_at(s), track.box(s))
    return None if points is None else mouth_region(frame_size, points)


def _sync_options(req: DubRequest):
    from engine.dub.latentsync.model import SyncOptions

    return SyncOptions(steps=req.steps, guidance=req.guidance, deepcache=req.deepcache, whisper_pad=req.whisper_pad,
                       whisper_floor=req.whisper_floor, whisper_windows=req.whisper_windows,
                       smoothing=req.face_smoothing, rounding=req.rounding)


def _crop_box(track, s: int, req: DubRequest, height: int) -> tuple[int, int, int, int] | None:
    """MuseTalk's crop box of source frame s (landmark box when DWPose ran, else the detector box)."""
    from engine.dub.face.crop import face_box, with_margin

    det = track.box(s)
    if det is None:
        return None
    detection = tuple(int(v) for v in det)
    points = track.landmarks_at(s)
    box = detection
    if points is not None and len(points) == 68:       # MuseTalk's box is built from the 68-point layout
        fb = face_box(points, detection, req.bbox_shift)
        box = fb.box if fb is not None else detection
    x1, y1, x2, y2 = with_margin(box, req.extra_margin, height)
    if x2 - x1 < 2 or y2 - y1 < 2:
        return None
    return (x1, y1, x2, y2)


def _output_audio(req: DubRequest, plan: OutputPlan, info, sr: int, voice_16k: np.ndarray) -> np.ndarray:
    """The new voice (or the request's `sound`) for the dubbed frames; under a kept rest, the source's
    own sound (or silence). A 16 kHz voice is the one already read for the features (a view of it,
    not a copy)."""
    from engine.media.audio import load_audio
    from engine.media.mp4_read import read_mp4_audio

    if req.sound:
        voice = load_audio(req.sound, sr)
    else:
        voice = voice_16k if sr == 16000 else load_audio(req.audio, sr)
    dubbed = int(round(plan.n_dubbed / info.fps * sr))
    voice = voice[:dubbed] if len(voice) >= dubbed else np.pad(voice, (0, dubbed - len(voice)))
    if plan.kept_tail <= 0:
        return voice
    total = int(round(plan.n_out / info.fps * sr))
    original = read_mp4_audio(info.path, sr) if info.has_audio else np.zeros(0, np.float32)
    tail = original[dubbed:total]
    return np.concatenate([voice, tail, np.zeros(max(0, total - dubbed - len(tail)), np.float32)])


def _length_notes(plan: OutputPlan) -> list[str]:
    notes = []
    if plan.n_dubbed > plan.n_source:
        how = {"pingpong": "the frames are cycled forward and backward",
               "bounce": "the frames are cycled forward and backward, each turning frame shown once",
               "freeze": "the last frame is held"}[plan.when_audio_longer]
        notes.append(f"The voice is longer than the video ({plan.n_dubbed} frames for {plan.n_source}): {how}.")
    elif plan.n_source > plan.n_dubbed:
        how = ("the video is cut at the end of the voice" if plan.when_video_longer == "cut"
               else f"its last {plan.kept_tail} frames keep their own sound, unchanged")
        notes.append(f"The video is longer than the voice ({plan.n_source} frames for {plan.n_dubbed}): {how}.")
    return notes


def _output_path(req: DubRequest) -> Path | None:
    """The checked output path (None: the run writes a temporary file)."""
    if req.out_path is None:
        return None
    path = Path(req.out_path)
    if path.is_dir():
        raise InputError(f"The output path {path.name} is a folder; give a file name ending in .mp4.")
    if path.suffix.lower() != ".mp4":
        raise InputError(f"The output file {path.name} must end in .mp4.")
    if path.resolve() == Path(req.video).resolve():
        raise InputError("The output file would overwrite the input video; choose another name.")
    return path


def _preview(frame_bgr: np.ndarray) -> np.ndarray:
    import cv2

    h, w = frame_bgr.shape[:2]
    scale = min(1.0, PREVIEW_SIDE / max(h, w))
    small = cv2.resize(frame_bgr, (max(1, int(w * scale)), max(1, int(h * scale))), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(small[:, :, ::-1])[None]


def _is_tiny(models_dir: Path) -> bool:
    readme = models_dir / "README.txt"
    return readme.is_file() and "RANDOM weights" in readme.read_text(errors="replace")


def _default_cache_dir() -> Path:
    import os

    env = os.environ.get(TRACK_CACHE_ENV)
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "humo-studio" / "face-tracks"
