"""The Dub tab's first-frame check: the face track's detectors on the first frame that shows a face
(the very first, unless the video opens without one), then the crop box and the blend mask the run
would use, drawn on that frame. Everything comes from the engine's own functions (engine.dub.face,
engine.dub.blend, engine.dub.pipeline's crop box)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from engine.errors import InputError

BOX_COLOUR = (0, 255, 0)          # RGB
MASK_COLOUR = np.array([255, 0, 160], np.float32)
MASK_OPACITY = 0.45
CHECK_SECONDS = 10                # how far into the video the check looks for a face
CHECK_EVERY = 5                   # on every this-many-th frame (the face track's keyframe stride)


@dataclass
class FirstFrameCheck:
    image: np.ndarray                 # uint8 RGB: the first frame with the box and the mask drawn on it
    box: tuple[int, int, int, int]    # the crop box (x1, y1, x2, y2) in frame pixels
    mask_pixels: int                  # pixels the blend mask changes (alpha > 0)
    notices: list[str] = field(default_factory=list)


def first_face(info, detector, landmarker=None) -> tuple[int, np.ndarray, list]:
    """The first frame that shows a face, looked for on every CHECK_EVERY-th frame of the video's first
    CHECK_SECONDS: (its index, the frame as uint8 BGR, the faces `find_faces` gives on it). A video
    that opens on a title card or an empty room still gets its check."""
    import cv2

    from engine.dub.face.track import detect_size, find_faces, full_frames
    from engine.media.video_in import read_frames

    limit = max(1, int(float(info.fps) * CHECK_SECONDS))
    frames = read_frames(info, CHECK_EVERY, max_frames=limit)
    seen = 0
    try:
        for chunk in frames:
            frame = np.asarray(chunk[0])
            # As the face track finds faces (engine.dub.face.track): on the full-size or the detection-size frame.
            small = frame if full_frames(detector, landmarker) else cv2.resize(
                frame, detect_size(info), interpolation=cv2.INTER_AREA)
            found = find_faces(small, info, detector, landmarker)
            if found:
                return seen, frame, found
            seen += len(chunk)
    finally:
        close = getattr(frames, "close", None)
        if close is not None:
            close()
    name = Path(info.path).name
    raise InputError(f"No face was found in the first {round(seen / float(info.fps), 1):g} s of {name}.",
                     hint="Use a video that shows the person's face, facing the camera.")


def check_first_frame(dubber, request) -> FirstFrameCheck:
    """Detect the face on the first frame that has one, as the face track would, and draw the run's crop
    box and mask there.
    `dubber`: an engine.dub.pipeline.Dubber (its face parser is loaded here if needed)."""
    from engine import weights
    from engine.dub.blend import paste_mask
    from engine.dub.face.parsing import FaceParser
    from engine.dub.face.track import FaceTrack, finder_label
    from engine.dub.pipeline import _crop_box
    from engine.dub.request import LATENTSYNC, validate_dub_request
    from engine.media.video_in import probe_video

    req = validate_dub_request(request)
    info = probe_video(req.video)
    notices = list(info.notices)
    detector, landmarker = dubber.face_finder(req.model)
    index, frame, found = first_face(info, detector, landmarker)
    where = "the first frame"
    if index:
        where = f"frame {index + 1} ({index / float(info.fps):.1f} s)"
        notices.append(f"No face in the video's first frame: the check shows {where}, the first where one was found.")
    box, points = found[0]
    if len(found) > 1:
        notices.append(f"{len(found)} faces in {where}: the largest is dubbed.")
    label = finder_label(detector, landmarker)
    notices.append(f"Face detector: {label}.")
    track = FaceTrack(boxes=box[None].astype(np.float32), width=info.width, height=info.height, detector=label,
                      landmarks=None if points is None else np.asarray(points, np.float32)[None])
    if req.model == LATENTSYNC:
        return _latentsync_check(frame, track, notices)
    crop = _crop_box(track, 0, req, info.height)
    if crop is None:
        raise InputError("The face in that frame is too small to dub.", hint="Use a closer shot of the face.")
    weights.require("musetalk-1.5", dubber.weights_dir)
    if dubber.parser is None:
        dubber.parser = FaceParser.load(dubber.models_dir, device=dubber.device)
    mask = paste_mask(frame, crop, dubber.parser, req.parsing_mode, (req.cheek_left, req.cheek_right))
    return FirstFrameCheck(draw(frame, crop, mask), crop, int(np.count_nonzero(mask.alpha)), notices)


def _latentsync_check(frame: np.ndarray, track, notices: list[str]) -> FirstFrameCheck:
    """LatentSync: the aligned face crop (box: its bounds in the frame) and the fixed mouth mask warped
    back into the frame, which is what the model redraws."""
    from engine.dub.pipeline import NO_LANDMARKS, latentsync_region

    found = latentsync_region(frame.shape[:2], track)
    if found is None:
        raise InputError("The face in that frame is too small to dub.", hint="Use a closer shot of the face.")
    if track.landmarks is None:
        notices.append(NO_LANDMARKS)
    box, alpha = found
    mask = SimpleNamespace(square=(0, 0, frame.shape[1], frame.shape[0]), alpha=alpha)
    return FirstFrameCheck(draw(frame, box, mask), box, int(np.count_nonzero(alpha)), notices)


def draw(frame_bgr: np.ndarray, box, mask) -> np.ndarray:
    """The frame (RGB) with the mask tinted over it and the crop box outlined."""
    import cv2

    rgb = np.ascontiguousarray(frame_bgr[:, :, ::-1]).astype(np.float32)
    h, w = rgb.shape[:2]
    x1, y1, x2, y2 = mask.square
    alpha = np.zeros((h, w), np.float32)
    sx1, sy1, sx2, sy2 = max(x1, 0), max(y1, 0), min(x2, w), min(y2, h)
    if sx2 > sx1 and sy2 > sy1:
        alpha[sy1:sy2, sx1:sx2] = mask.alpha[sy1 - y1: sy2 - y1, sx1 - x1: sx2 - x1] / 255.0
    a = (alpha * MASK_OPACITY)[..., None]
    out = (rgb * (1 - a) + MASK_COLOUR * a).round().clip(0, 255).astype(np.uint8)
    thickness = max(2, round(max(h, w) / 300))
    cv2.rectangle(out, (int(box[0]), int(box[1])), (int(box[2]) - 1, int(box[3]) - 1), BOX_COLOUR, thickness)
    return out
