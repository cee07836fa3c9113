"""The MuseTalk face box: from 68 face landmarks and a face detector's box, as v1.5 computes it.

The box spans the landmarks horizontally and, vertically, from as far above landmark 29 (the
nose bridge, moved by `bbox_shift`) as the chin is below it, down to the lowest landmark. The
official code writes the shifted point back into the landmarks before taking the lowest one,
and falls back to the detector's box when the landmark box is empty; both are kept. Frames
where the detector finds no face get no box (None).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from engine.errors import InputError

FACE_POINTS = slice(23, 91)  # the 68 face points inside DWPose's 133 whole-body keypoints
CROP_SIZE = 256


@dataclass(frozen=True)
class FaceBox:
    x1: int
    y1: int
    x2: int
    y2: int
    source: str  # "landmarks" or "detector" (the landmark box was empty)

    @property
    def box(self) -> tuple[int, int, int, int]:
        return (self.x1, self.y1, self.x2, self.y2)


def face_landmarks(keypoints133: np.ndarray) -> np.ndarray:
    """The 68 face points of a whole-body pose, truncated toward zero to int32 as the official code does."""
    return np.asarray(keypoints133)[FACE_POINTS].astype(np.int32)


def detector_box(detections: np.ndarray) -> tuple[int, int, int, int] | None:
    """The first (best) detection [x1, y1, x2, y2, score], clipped at 0 and truncated; None without one."""
    detections = np.asarray(detections)
    if detections.size == 0:
        return None
    first = np.clip(detections.reshape(-1, detections.shape[-1])[0], 0, None)
    return tuple(int(v) for v in first[:4])


def face_box(landmarks68: np.ndarray, detection: tuple[int, int, int, int] | None, bbox_shift: int = 0) -> FaceBox | None:
    """The crop box of one frame, or None when the detector found no face there."""
    if detection is None:
        return None
    points = np.array(landmarks68, dtype=np.int32)
    if bbox_shift != 0:
        points[29, 1] += bbox_shift          # written back: it takes part in the maximum below
    y_mid = int(points[29, 1])
    y2 = int(points[:, 1].max())
    x1, x2 = int(points[:, 0].min()), int(points[:, 0].max())
    y1 = max(0, 2 * y_mid - y2)
    if y2 - y1 <= 0 or x2 - x1 <= 0 or x1 < 0:
        return FaceBox(*detection, source="detector")
    return FaceBox(x1, y1, x2, y2, source="landmarks")


@dataclass
class BoxTrack:
    boxes: list[FaceBox | None]
    shift_range: tuple[int, int]     # the bbox_shift values that keep the nose bridge within the face
    report: str                      # the official bbox-shift report line
    fallbacks: list[int]             # frames whose box came from the detector


def track_boxes(keypoints: np.ndarray, detections: list, bbox_shift: int = 0) -> BoxTrack:
    """Boxes for every frame (keypoints [F, 133, 2]; detections[f] = that frame's [n, 5] boxes, best first)."""
    boxes, minus, plus = [], [], []
    for f, kp in enumerate(keypoints):
        points = face_landmarks(kp)
        det = detector_box(detections[f])
        if det is not None:
            minus.append(int(points[30, 1] - points[29, 1]))
            plus.append(int(points[29, 1] - points[28, 1]))
        boxes.append(face_box(points, det, bbox_shift))
    if not minus:
        raise InputError("No face was found in any frame; give a video where one face is visible.")
    low, high = math.trunc(sum(minus) / len(minus)), math.trunc(sum(plus) / len(plus))
    report = (f"Total frame:\u300c{len(boxes)}\u300d Manually adjust range : [ -{low}~{high} ] , "
              f"the current value: {bbox_shift}")
    fallbacks = [f for f, b in enumerate(boxes) if b is not None and b.source == "detector"]
    return BoxTrack(boxes, (-low, high), report, fallbacks)


def with_margin(box, extra_margin: int, frame_height: int) -> tuple[int, int, int, int]:
    """v1.5 crops `extra_margin` more rows below the chin, never past the frame's bottom."""
    x1, y1, x2, y2 = (int(v) for v in box)
    return (x1, y1, x2, min(y2 + int(extra_margin), int(frame_height)))


def crop_face(frame_bgr: np.ndarray, box, size: int = CROP_SIZE) -> np.ndarray:
    """The box cut out by slicing (a box past the right edge is cut short) and resized with LANCZOS4."""
    x1, y1, x2, y2 = (int(v) for v in box)
    patch = frame_bgr[y1:y2, x1:x2]
    if patch.size == 0:
        raise InputError(f"The face box {(x1, y1, x2, y2)} lies outside the frame.")
    return cv2.resize(patch, (size, size), interpolation=cv2.INTER_LANCZOS4)
