"""The face track of a video: one face box (and, with a landmark model, its landmarks) or none per frame.

Built once per video as its own stage and cached: detection runs on downscaled frames, on every
k-th frame (a keyframe), and the boxes in between are interpolated. A finder that detects and
places landmarks itself (insightface, LatentSync's official one) sees every full-size frame.
When a frame shows two or more faces the largest is kept (and counted); short runs of keyframes
without a face are bridged from the neighbouring boxes; longer runs stay faceless (those frames
pass through unchanged).
A video with no face at all is one `InputError`. The track is a small JSON file: cached under
a key made of the video's sha256, the detector and the track settings, or given by the user.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from engine.errors import InputError
from engine.media.files import atomic_write, file_sha256
from engine.media.video_in import VideoInfo, read_frames

TRACK_FORMAT = "humo-face-track"
TRACK_VERSION = 2        # 2: DWPose landmarks as the official preprocessing places them
DETECT_SIDE = 480        # detection sees frames whose longer side is at most this many pixels
STRIDE = 5               # detect on every STRIDE-th frame, interpolate between
MAX_GAP = 15             # keyframes with a face at most this many frames apart are bridged


@dataclass
class FaceTrack:
    boxes: np.ndarray                      # [n, 4] float32 x1, y1, x2, y2 in frame pixels; NaN rows: no face
    width: int
    height: int
    detector: str                          # label of the detector that made it
    landmarks: np.ndarray | None = None    # [n, K, 2] float32 (NaN where no face): 68 (DWPose) or 106 points
    multi_face_frames: int = 0             # keyframes that showed more than one face
    checked_frames: int = 0                # keyframes the detector looked at (0: not recorded)
    bridged_frames: int = 0                # frames whose box was bridged over a short gap
    notices: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.boxes.shape[0])

    def box(self, i: int) -> np.ndarray | None:
        if i < 0 or i >= len(self) or np.isnan(self.boxes[i, 0]):
            return None
        return self.boxes[i]

    def landmarks_at(self, i: int) -> np.ndarray | None:
        if self.landmarks is None or self.box(i) is None or np.isnan(self.landmarks[i, 0, 0]):
            return None
        return self.landmarks[i]

    def fit(self, frames: int) -> str | None:
        """Make the track `frames` long (a given file may be a frame or two off the video's count):
        extra rows are dropped, missing ones have no face (those frames are kept unchanged)."""
        n = len(self)
        if n == frames:
            return None
        self.boxes = _fit_rows(self.boxes, frames)
        if self.landmarks is not None:
            self.landmarks = _fit_rows(self.landmarks, frames)
        if n < frames:
            return f"The face track has {n} frames and the video {frames}: the last {frames - n} have no track rows."
        return f"The face track has {n} frames and the video {frames}: its last {n - frames} are not used."

    @property
    def face_frames(self) -> int:
        return int(np.count_nonzero(~np.isnan(self.boxes[:, 0])))

    def findings(self) -> list[str]:
        """What the page says about this track: several faces, bridged gaps, faceless frames. Made
        from the stored counts, so a cached or given track says the same as a fresh one."""
        notes = []
        if self.multi_face_frames:
            of = f" of {self.checked_frames}" if self.checked_frames else ""
            notes.append(f"Several faces were seen in {self.multi_face_frames}{of} checked frames: "
                         "the largest is dubbed.")
        if self.bridged_frames:
            notes.append(f"Short gaps without a detected face ({self.bridged_frames} frames) were bridged "
                         "from the neighbouring boxes.")
        faceless = len(self) - self.face_frames
        if faceless:
            notes.append(f"No face in {faceless} of {len(self)} frames: those frames are kept unchanged.")
        return notes

    def to_json(self) -> dict:
        def rows(a):
            return [None if np.isnan(r.flat[0]) else np.round(r, 2).tolist() for r in a]
        data = {"format": TRACK_FORMAT, "version": TRACK_VERSION, "detector": self.detector,
                "width": self.width, "height": self.height, "frames": len(self),
                "multi_face_frames": self.multi_face_frames, "checked_frames": self.checked_frames,
                "bridged_frames": self.bridged_frames,
                "boxes": rows(self.boxes)}
        if self.landmarks is not None:
            data["landmarks"] = rows(self.landmarks)
        return data

    def save(self, path: str | os.PathLike) -> Path:
        """Write the track as JSON, atomically."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(path, what="the face track", suffix=".json") as tmp:
            tmp.write_text(json.dumps(self.to_json(), separators=(",", ":")), encoding="utf-8")
        return path


def _fit_rows(a: np.ndarray, n: int) -> np.ndarray:
    if len(a) >= n:
        return a[:n].copy()
    return np.concatenate([a, np.full((n - len(a), *a.shape[1:]), np.nan, a.dtype)])


def load_track(path: str | os.PathLike, info: VideoInfo | None = None, *, fit: bool = False) -> FaceTrack:
    """Read a track file (as `FaceTrack.save` writes it); check it fits the video when given, and
    with `fit` (a file from the user) make it exactly the video's length."""
    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
        if data.get("format") != TRACK_FORMAT:
            raise ValueError("not a face track")
        n = int(data["frames"])
        boxes = np.full((n, 4), np.nan, np.float32)
        for i, b in enumerate(data["boxes"][:n]):
            if b is not None:
                boxes[i] = np.asarray(b, np.float32).reshape(4)
        landmarks = None
        rows = [r for r in (data.get("landmarks") or [])[:n] if r is not None]
        if rows:
            points = len(rows[0])
            if points not in (68, 106):
                raise ValueError(f"{points} landmarks per face (68 or 106 expected)")
            landmarks = np.full((n, points, 2), np.nan, np.float32)
            for i, pts in enumerate(data["landmarks"][:n]):
                if pts is not None:
                    landmarks[i] = np.asarray(pts, np.float32).reshape(points, 2)
        track = FaceTrack(boxes=boxes, width=int(data["width"]), height=int(data["height"]),
                          detector=str(data.get("detector", "given track file")), landmarks=landmarks,
                          multi_face_frames=int(data.get("multi_face_frames", 0)),
                          checked_frames=int(data.get("checked_frames", 0)),
                          bridged_frames=int(data.get("bridged_frames", 0)))
    except FileNotFoundError:
        raise InputError(f"Face track file not found: {p.name}.") from None
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise InputError(f"{p.name} is not a readable face track file ({str(err)[:80]}).",
                         hint="Give a file written by the dub command's face track stage.") from None
    if not np.all(np.isnan(boxes).all(1) | np.isfinite(boxes).all(1)):
        raise InputError(f"The face track file {p.name} holds invalid box values.")
    if info is not None:
        if (track.width, track.height) != (info.width, info.height):
            raise InputError(f"The face track {p.name} is for a {track.width}x{track.height} video; "
                             f"this video is {info.width}x{info.height}.")
        if abs(len(track) - info.frames) > 2:
            raise InputError(f"The face track {p.name} has {len(track)} frames; this video has {info.frames}.")
        fitted = track.fit(info.frames) if fit else None
        if fitted:
            track.notices.append(fitted)
    if track.face_frames == 0:
        raise InputError(f"The face track {p.name} has no face in any frame.")
    return track


def track_key(video_sha256: str, detector_name: str, settings: dict) -> str:
    text = json.dumps({"video": video_sha256, "detector": detector_name, "version": TRACK_VERSION,
                       "stride": STRIDE, "detect_side": DETECT_SIDE, "max_gap": MAX_GAP, **settings},
                      sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def detect_size(info: VideoInfo) -> tuple[int, int]:
    scale = min(1.0, DETECT_SIDE / max(info.width, info.height))
    return max(2, int(round(info.width * scale / 2)) * 2), max(2, int(round(info.height * scale / 2)) * 2)


def full_frames(detector, landmarker=None) -> bool:
    """Whether the track reads full-size frames (landmarks, or a finder of its own) or detection-size ones."""
    return landmarker is not None or hasattr(detector, "faces")


def find_faces(frame: np.ndarray, info: VideoInfo, detector, landmarker=None) -> list[tuple[np.ndarray, np.ndarray | None]]:
    """The faces of one frame, largest first: (box [x1, y1, x2, y2] in frame pixels, landmarks or None;
    landmarks for the first face only). `frame` is full size when `full_frames` says so, else at
    `detect_size`."""
    import cv2

    if hasattr(detector, "faces"):
        return detector.faces(frame)
    small = detect_size(info)
    img = frame if landmarker is None else cv2.resize(frame, small, interpolation=cv2.INTER_AREA)
    sx, sy = info.width / small[0], info.height / small[1]
    found = [b * np.array([sx, sy, sx, sy], np.float32) for b in detector.detect(img)]
    if found and landmarker is not None:
        found[0] = (found[0], landmarker.landmarks(frame, found[0]))
    return [f if isinstance(f, tuple) else (f, None) for f in found]


def build_track(info: VideoInfo, detector, landmarker=None, *, stride: int | None = None, max_gap: int = MAX_GAP,
                batch: int = 16, check_cancel: Callable[[], None] | None = None,
                on_progress: Callable[[int, int], None] | None = None) -> FaceTrack:
    """Detect on every `stride`-th frame (the landmark model's or detector's own stride, else STRIDE) and the last,
    then interpolate and bridge (see module doc)."""
    stride = stride or getattr(landmarker, "stride", None) or getattr(detector, "stride", STRIDE)
    keys: dict[int, tuple[np.ndarray | None, np.ndarray | None]] = {}
    multi = 0
    n = 0
    last = None

    def detect(frame, i):
        nonlocal multi
        found = find_faces(frame, info, detector, landmarker)
        multi += len(found) > 1
        keys[i] = found[0] if found else (None, None)

    frames = read_frames(info, batch, size=None if full_frames(detector, landmarker) else detect_size(info))
    for chunk in frames:
        if check_cancel is not None:
            check_cancel()
        for frame in chunk:
            if n % stride == 0:
                detect(frame, n)
            n += 1
        last = chunk[-1]
        if on_progress is not None:
            on_progress(n, max(n, info.frames))
    if (n - 1) not in keys:
        detect(last, n - 1)
    track = _fill(keys, n, max(stride, max_gap), info, finder_label(detector, landmarker))
    track.multi_face_frames, track.checked_frames = multi, len(keys)
    if track.face_frames == 0:
        raise InputError(f"No face was found anywhere in {Path(info.path).name}.",
                         hint="Use a video where the person's face is visible and facing the camera.")
    track.notices += track.findings() + [f"Face detector: {track.detector}."]
    return track


def finder_label(detector, landmarker=None) -> str:
    return detector.label if landmarker is None else landmarker.label


def _fill(keys: dict, n: int, bridge: int, info: VideoInfo, label: str) -> FaceTrack:
    points = next((len(p) for _, p in keys.values() if p is not None), 0)
    boxes = np.full((n, 4), np.nan, np.float32)
    lms = np.full((n, points, 2), np.nan, np.float32) if points else None
    order = sorted(keys)
    good = [k for k in order if keys[k][0] is not None]
    bridged = 0

    def put(i, a, b):          # frame i from good keyframes a <= i <= b, linearly
        t = 0.0 if b == a else (i - a) / (b - a)
        boxes[i] = (1 - t) * keys[a][0] + t * keys[b][0]
        if lms is not None and keys[a][1] is not None and keys[b][1] is not None:
            lms[i] = (1 - t) * keys[a][1] + t * keys[b][1]

    for a, b in zip(good, good[1:]):
        if b - a <= bridge:
            for i in range(a, b + 1):
                put(i, a, b)
            if any(k in keys and keys[k][0] is None for k in range(a + 1, b)):
                bridged += b - a - 1
        else:                  # a long gap: hold each box for half a stride, the rest stays faceless
            half = max(1, (order[1] - order[0]) // 2) if len(order) > 1 else 1
            for i in range(a, min(a + half, b)):
                put(i, a, a)
            for i in range(max(b - half + 1, a), b + 1):
                put(i, b, b)
    if good:
        span = (order[1] - order[0]) if len(order) > 1 else 1
        for i in range(max(0, good[0] - span + 1), good[0] + 1):
            put(i, good[0], good[0])
        for i in range(good[-1], min(n, good[-1] + span)):
            put(i, good[-1], good[-1])
    np.clip(boxes, 0, [info.width, info.height, info.width, info.height], out=boxes)
    return FaceTrack(boxes=boxes, width=info.width, height=info.height, detector=label, landmarks=lms,
                     bridged_frames=bridged)


def face_track(info: VideoInfo, *, cache_dir: str | os.PathLike | None, detector, landmarker=None,
               track_file: str | os.PathLike | None = None, settings: dict | None = None,
               check_cancel=None, on_progress=None) -> tuple[FaceTrack, str]:
    """The video's face track and where it came from ("given", "cache" or "detected").

    A given `track_file` wins; else a cached track with the same key; else one is built (and
    cached when `cache_dir` is set).
    """
    if track_file is not None:
        track = load_track(track_file, info, fit=True)
        track.notices += track.findings() + [f"Face track from {Path(track_file).name} ({track.detector})."]
        return track, "given"
    name = detector.name if landmarker is None else landmarker.name
    cached = None
    if cache_dir is not None:
        cached = Path(cache_dir) / f"{track_key(file_sha256(info.path), name, settings or {})}.json"
        if cached.is_file():
            try:
                track = load_track(cached, info)
                track.notices += track.findings() + [f"Face track from the cache (detector: {track.detector})."]
                return track, "cache"
            except InputError:
                pass           # an unreadable cache entry is rebuilt below
    track = build_track(info, detector, landmarker, check_cancel=check_cancel, on_progress=on_progress)
    if cached is not None:
        track.save(cached)
    return track, "detected"
