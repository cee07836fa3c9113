"""Face detectors for the face track.

`HaarDetector` uses the frontal-face cascade that ships inside the OpenCV package: always there,
no download, the offline fallback (every result says so). `DWPoseLandmarks` adds the 68 face
landmarks MuseTalk's box is built from, running the DWPose whole-body ONNX file through
onnxruntime (no mmcv/mmpose) when that file is in the weights folder.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from engine.errors import WeightsError

DWPOSE_FILE = "dwpose/dw-ll_ucoco_384.onnx"
HAAR_LABEL = "OpenCV Haar cascade (offline fallback)"
DWPOSE_LABEL = "DWPose landmarks (ONNX) + OpenCV Haar cascade boxes"
FACE_POINTS = slice(23, 91)          # the 68 face points among DWPose's 133 whole-body points
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
    """68 face landmarks from DWPose's whole-body model (SimCC heads), top-down around a face box."""

    name = "dwpose"
    label = DWPOSE_LABEL

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

    def landmarks(self, frame_bgr: np.ndarray, face_box: np.ndarray) -> np.ndarray:
        """[68, 2] float32 face points in frame pixels, for the person around `face_box`."""
        import cv2

        x1, y1, x2, y2 = [float(v) for v in face_box]
        # The model is top-down over a person box: take a generous region around the face.
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        bw, bh = (x2 - x1) * 2.0, (y2 - y1) * 2.0
        aspect = self._w / self._h
        if bw > bh * aspect:
            bh = bw / aspect
        else:
            bw = bh * aspect
        bw, bh = bw * 1.25, bh * 1.25
        sx, sy = self._w / bw, self._h / bh
        warp = np.array([[sx, 0, self._w / 2 - cx * sx], [0, sy, self._h / 2 - cy * sy]], np.float32)
        crop = cv2.warpAffine(frame_bgr, warp, (self._w, self._h), flags=cv2.INTER_LINEAR)
        x = (crop[:, :, ::-1].astype(np.float32) - _MEAN) / _STD
        simcc_x, simcc_y = self._session.run(None, {self._input: x.transpose(2, 0, 1)[None]})[:2]
        split_x = simcc_x.shape[-1] / self._w
        split_y = simcc_y.shape[-1] / self._h
        px = simcc_x[0].argmax(-1) / split_x
        py = simcc_y[0].argmax(-1) / split_y
        pts = np.stack([(px - warp[0, 2]) / sx, (py - warp[1, 2]) / sy], -1).astype(np.float32)
        return pts[FACE_POINTS]
