"""The face finder of the official LatentSync pipeline: insightface's SCRFD detector (`det_10g.onnx`)
and its 106-point landmark model (`2d106det.onnx`) from the buffalo_l pack, run through onnxruntime
(no insightface package, no build).

What it computes, as the official pipeline gets it from insightface's `FaceAnalysis` with
`det_size=(512, 512)`:
- The frame is scaled (bilinear) to fit 512x512 keeping its aspect, pasted top-left on black, and
  fed as (x - 127.5) / 128. Anchors sit at (column, row) x stride for strides 8, 16 and 32, two
  per place; a score of at least 0.5 keeps an anchor, whose box is its centre minus / plus the
  four predicted distances (x stride); greedy non-maximum suppression at IoU 0.4 (areas with the
  "+1" pixel convention).
- Landmarks: a 192x192 crop centred on the box, scaled so 1.5x its longer side fills it (bilinear,
  black border), fed as raw pixel values; the 212 outputs are (x, y) pairs in [-1, 1] of the crop,
  mapped back through the inverse crop transform.
- LatentSync keeps, among faces whose integer box is at least 50 wide and 80 tall, with a width /
  height ratio in [0.2, 1.5] and a score of at least 0.5, the one with the largest integer box,
  and rounds its landmarks to integers.
- The official pipeline hands insightface RGB frames, which insightface swaps as if they were BGR:
  the networks see BGR. Frames here are BGR and are fed without a swap, so the networks see what
  they see there.

insightface's buffalo_l files are licensed for non-commercial research use only (`LICENCE`).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from engine.errors import WeightsError

FOLDER = "auxiliary/models/buffalo_l"          # under <weights>/latentsync-1.6/, as the official checkpoints/
DETECTOR_FILE = f"{FOLDER}/det_10g.onnx"
LANDMARK_FILE = f"{FOLDER}/2d106det.onnx"
LICENCE = "insightface's buffalo_l models are licensed for non-commercial research use only"
LABEL = "insightface SCRFD + 106 landmarks (buffalo_l: non-commercial research use only)"
DET_SIZE = 512
SCORE = 0.5
NMS_IOU = 0.4
MIN_W, MIN_H = 50, 80
RATIO = (0.2, 1.5)
LANDMARK_SIDE = 192


def _session(path: Path):
    import onnxruntime as ort

    try:
        return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as err:  # onnxruntime raises its own exception types
        raise WeightsError(f"The insightface file {path.name} could not be loaded: {str(err)[:200]}",
                           hint="Download it again (python -m engine download --model latentsync-1.6 "
                                "--with-insightface).") from None


def nms(dets: np.ndarray, iou: float = NMS_IOU) -> list[int]:
    """Greedy suppression over rows (x1, y1, x2, y2, score), best score first; the kept row indices."""
    x1, y1, x2, y2, scores = dets.T
    areas = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = scores.argsort()[::-1]
    keep = []
    while order.size:
        i = order[0]
        keep.append(int(i))
        rest = order[1:]
        w = np.maximum(0.0, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]) + 1)
        h = np.maximum(0.0, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]) + 1)
        inter = w * h
        order = rest[inter / (areas[i] + areas[rest] - inter) <= iou]
    return keep


class InsightFace106:
    """Face boxes and 106 landmarks per frame (see module doc). Used as a face track's detector."""

    name = "insightface"
    label = LABEL
    stride = 1                 # the official pipeline finds the face in every frame

    def __init__(self, detector_path: str | Path, landmark_path: str | Path):
        self._det = _session(Path(detector_path))
        self._lmk = _session(Path(landmark_path))
        inp = self._det.get_inputs()[0]
        self._det_input = inp.name
        fixed = all(isinstance(d, int) for d in inp.shape[2:4])
        self._det_hw = (int(inp.shape[2]), int(inp.shape[3])) if fixed else (DET_SIZE, DET_SIZE)
        outputs = len(self._det.get_outputs())
        if outputs not in (6, 9, 10, 15):
            raise WeightsError(f"{Path(detector_path).name} is not an SCRFD detector ({outputs} outputs).")
        self._levels = 3 if outputs in (6, 9) else 5
        self._strides = [8, 16, 32] if self._levels == 3 else [8, 16, 32, 64, 128]
        self._anchors = 2 if self._levels == 3 else 1
        lmk = self._lmk.get_inputs()[0]
        self._lmk_input = lmk.name
        self._lmk_side = int(lmk.shape[2]) if isinstance(lmk.shape[2], int) else LANDMARK_SIDE

    @staticmethod
    def find(model_dir: str | Path | None) -> "InsightFace106 | None":
        """The finder when both files are in the LatentSync folder, else None."""
        if model_dir is None:
            return None
        det, lmk = Path(model_dir) / DETECTOR_FILE, Path(model_dir) / LANDMARK_FILE
        return InsightFace106(det, lmk) if det.is_file() and lmk.is_file() else None

    def detect(self, frame_bgr: np.ndarray) -> np.ndarray:
        """All detections as rows (x1, y1, x2, y2, score) in frame pixels, best score first (float32)."""
        import cv2

        h, w = frame_bgr.shape[:2]
        in_h, in_w = self._det_hw
        if h / w > in_h / in_w:
            new_h, new_w = in_h, int(in_h / (h / w))
        else:
            new_w, new_h = in_w, int(in_w * (h / w))
        scale = new_h / h
        canvas = np.zeros((in_h, in_w, 3), np.uint8)
        canvas[:new_h, :new_w] = cv2.resize(frame_bgr, (new_w, new_h))
        blob = ((canvas.astype(np.float32) - 127.5) / 128.0).transpose(2, 0, 1)[None]
        outs = [o[0] if o.ndim == 3 else o for o in self._det.run(None, {self._det_input: blob})]
        scores, boxes = [], []
        for level, stride in enumerate(self._strides):
            gh, gw = in_h // stride, in_w // stride
            ys, xs = np.mgrid[:gh, :gw]
            centres = np.repeat(np.stack([xs, ys], -1).reshape(-1, 2) * stride, self._anchors, axis=0)
            score = outs[level].reshape(-1)
            dist = outs[level + self._levels].reshape(-1, 4) * stride
            keep = np.nonzero(score >= SCORE)[0]
            c, d = centres[keep].astype(np.float32), dist[keep]
            boxes.append(np.concatenate([c - d[:, :2], c + d[:, 2:]], 1))
            scores.append(score[keep])
        score = np.concatenate(scores)
        order = score.argsort()[::-1]
        dets = np.hstack([np.concatenate(boxes) / scale, score[:, None]]).astype(np.float32)[order]
        return dets[nms(dets)] if len(dets) else dets

    def landmarks(self, frame_bgr: np.ndarray, box: np.ndarray) -> np.ndarray:
        """[106, 2] float32 landmarks in frame pixels for the face in `box` (x1, y1, x2, y2)."""
        import cv2

        x1, y1, x2, y2 = (float(v) for v in box[:4])
        side = self._lmk_side
        s = side / (max(x2 - x1, y2 - y1) * 1.5)
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        m = np.array([[s, 0.0, side / 2 - cx * s], [0.0, s, side / 2 - cy * s]])
        crop = cv2.warpAffine(frame_bgr, m, (side, side), borderValue=0.0)
        pred = self._lmk.run(None, {self._lmk_input: crop.astype(np.float32).transpose(2, 0, 1)[None]})[0][0]
        pts = pred.reshape(-1, 2)[-106:].astype(np.float64)
        pts = (pts + 1) * (side // 2)
        back = cv2.invertAffineTransform(m)
        return (pts @ back[:, :2].T + back[:, 2]).astype(np.float32)

    def faces(self, frame_bgr: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        """The faces LatentSync accepts, largest integer box first: (box float32 [4], landmarks
        [106, 2] rounded to integers as float32). Landmarks are computed for the kept face only."""
        accepted = []
        for det in self.detect(frame_bgr):
            x1, y1, x2, y2 = det[:4].astype(np.int64)
            w, h = int(x2 - x1), int(y2 - y1)
            if w < MIN_W or h < MIN_H or not RATIO[0] <= w / h <= RATIO[1]:
                continue
            accepted.append((w * h, det))
        # Largest first; among equal areas the earlier (better scored) one, as the official loop keeps it.
        accepted.sort(key=lambda a: -a[0])
        if not accepted:
            return []
        out = [(d[:4].copy(), None) for _, d in accepted]
        first = np.round(self.landmarks(frame_bgr, accepted[0][1])).astype(np.float32)
        out[0] = (out[0][0], first)
        return out
