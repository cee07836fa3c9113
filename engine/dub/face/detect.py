"""Face detectors for the face track.

`HaarDetector` uses the frontal-face cascade that ships inside the OpenCV package: always there,
no download, the offline fallback (every result says so). `DWPoseLandmarks` adds the 68 face
landmarks MuseTalk's box is built from, running the DWPose whole-body ONNX file through
onnxruntime (no mmcv/mmpose) when that file is in the weights folder, as MuseTalk's preprocessing
runs it through mmpose: on every frame, the whole frame as the person box (padded by 1.25 and
widened or heightened to the model's 3:4), the prediction averaged with that of the mirrored
frame (the config's flip test), and each point at the peak of its SimCC vectors.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from engine.errors import WeightsError

DWPOSE_FILE = "dwpose/dw-ll_ucoco_384.onnx"
HAAR_LABEL = "OpenCV Haar cascade (offline fallback)"
DWPOSE_LABEL = "DWPose landmarks (ONNX) + OpenCV Haar cascade boxes"
FACE_POINTS = slice(23, 91)          # the 68 face points among DWPose's 133 whole-body points
BOX_PADDING = 1.25                   # mmpose's person box padding
SIMCC_SPLIT = 2.0                    # SimCC bins per input pixel
# The mirror partner of each of the 68 face points (iBUG order, as COCO-WholeBody's flip pairs give them).
_MIRROR_PAIRS = ([(i, 16 - i) for i in range(8)] + [(17 + i, 26 - i) for i in range(5)]
                 + [(31, 35), (32, 34), (36, 45), (37, 44), (38, 43), (39, 42), (40, 47), (41, 46), (48, 54),
                    (49, 53), (50, 52), (55, 59), (56, 58), (60, 64), (61, 63), (65, 67)])
FACE_MIRROR = np.arange(68)
for _a, _b in _MIRROR_PAIRS:
    FACE_MIRROR[_a], FACE_MIRROR[_b] = _b, _a
VOTE_SHARE = 0.2
_MEAN = np.array([123.675, 116.28, 103.53], np.float32)
_STD = np.array([58.395, 57.12, 57.375], np.float32)


class HaarDetector:
    """Face boxes from OpenCV's bundled frontal-face Haar cascade, on a (downscaled) BGR frame."""

    name = "haar"
    label = HAAR_LABEL

    def __init__(self):
        import cv2

        folder = Path(cv2.data.haarcascades)
        self._cascade = cv2.CascadeClassifier(str(folder / "haarcascade_frontalface_default.xml"))
        self._verify = cv2.CascadeClassifier(str(folder / "haarcascade_frontalface_alt2.xml"))
        if self._cascade.empty() or self._verify.empty():
            raise WeightsError("OpenCV's face cascades could not be loaded.", hint="Reinstall opencv-python-headless.")

    def detect(self, frame_bgr: np.ndarray) -> list[np.ndarray]:
        """Boxes [x1, y1, x2, y2] (float32, frame pixels), largest first."""
        import cv2

        gray = cv2.equalizeHist(cv2.cvtColor(frame_bgr, cv2.COLOR_BGR2GRAY))
        side = max(20, min(gray.shape) // 12)
        found, votes = self._cascade.detectMultiScale2(gray, scaleFactor=1.1, minNeighbors=5, minSize=(side, side))
        if len(found) == 0:
            return []
        # The default cascade finds faces reliably but also collars, hands and seams; a face
        # must also be found by the second cascade inside its own region, and gather a fair
        # share of the best candidate's overlapping hits.
        votes = np.asarray(votes).reshape(-1)
        boxes = []
        for (x, y, w, h), v in zip(found, votes):
            if v < VOTE_SHARE * votes.max():
                continue
            m = w // 4
            roi = gray[max(0, y - m): y + h + m, max(0, x - m): x + w + m]
            least = int(w * 0.6)
            if len(self._verify.detectMultiScale(roi, 1.1, 3, minSize=(least, least))):
                boxes.append(np.array([x, y, x + w, y + h], np.float32))
        return sorted(boxes, key=lambda b: -(b[2] - b[0]) * (b[3] - b[1]))


class DWPoseLandmarks:
    """68 face landmarks from DWPose's whole-body model (SimCC heads), as MuseTalk's preprocessing gets them."""

    name = "dwpose"
    label = DWPOSE_LABEL
    stride = 1                 # the official preprocessing places the landmarks on every frame

    def __init__(self, onnx_path: str | Path):
        import onnxruntime as ort

        self.path = Path(onnx_path)
        try:
            self._session = ort.InferenceSession(str(self.path), providers=["CPUExecutionProvider"])
        except Exception as err:  # onnxruntime raises its own exception types
            raise WeightsError(f"The DWPose file {self.path.name} could not be loaded: {str(err)[:200]}",
                               hint="Download it again (python -m engine download --model musetalk-1.5).") from err
        inp = self._session.get_inputs()[0]
        self._input = inp.name
        self._h, self._w = int(inp.shape[2]), int(inp.shape[3])   # 384 x 288 for dw-ll_ucoco_384

    @staticmethod
    def find(weights_dir: str | Path | None) -> "DWPoseLandmarks | None":
        if weights_dir is None:
            return None
        path = Path(weights_dir) / "musetalk-1.5" / DWPOSE_FILE
        return DWPoseLandmarks(path) if path.is_file() else None

    def landmarks(self, frame_bgr: np.ndarray, face_box: np.ndarray | None = None) -> np.ndarray:
        """[68, 2] float32 face points in frame pixels. The whole frame is the person box, as in the
        official preprocessing (`face_box`, the detector's, is not used)."""
        import cv2

        h, w = frame_bgr.shape[:2]
        centre = np.array([w / 2, h / 2], np.float32)
        size = np.array([w, h], np.float32) * BOX_PADDING
        aspect = self._w / self._h
        if size[0] > size[1] * aspect:
            size[1] = size[0] / aspect
        else:
            size[0] = size[1] * aspect
        scale = self._w / size[0]
        warp = np.array([[scale, 0, self._w / 2 - centre[0] * scale],
                         [0, scale, self._h / 2 - centre[1] * scale]], np.float32)
        crop = cv2.warpAffine(frame_bgr, warp, (self._w, self._h), flags=cv2.INTER_LINEAR)
        x = ((crop[:, :, ::-1].astype(np.float32) - _MEAN) / _STD).transpose(2, 0, 1)[None]
        simcc_x, simcc_y = self._session.run(None, {self._input: x})[:2]
        flip_x, flip_y = self._session.run(None, {self._input: np.ascontiguousarray(x[..., ::-1])})[:2]
        # Flip test: the mirrored frame's vectors, each point taken from its mirror partner and the x
        # vectors reversed, averaged with the frame's own.
        vx = (simcc_x[0, FACE_POINTS] + flip_x[0, FACE_POINTS][FACE_MIRROR, ::-1]) * 0.5
        vy = (simcc_y[0, FACE_POINTS] + flip_y[0, FACE_POINTS][FACE_MIRROR]) * 0.5
        bins = np.stack([vx.argmax(-1), vy.argmax(-1)], -1).astype(np.float32)
        peak = np.minimum(vx.max(-1), vy.max(-1))
        bins[peak <= 0] = -1                 # no peak above zero: mmpose's "not found" location
        points = bins / SIMCC_SPLIT / np.array([self._w, self._h], np.float32) * size + centre - 0.5 * size
        return points.astype(np.float32)
