"""ONNX files in the input / output layout of insightface's buffalo_l detector (det_10g.onnx) and
106-point landmark model (2d106det.onnx), whose outputs the test chooses: the detector reports
given boxes and scores, the landmark model given points shifted by a multiple of the mean of its
input's first channel (which shows what the model was fed). Written with the onnx package."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

STRIDES = (8, 16, 32)
ANCHORS = 2


def det_scale(frame_hw: tuple[int, int], size: int = 512) -> float:
    """How the detector's input scales a frame: the longer side (relative to the square) fills it."""
    h, w = frame_hw
    new_h = size if h / w > 1 else int(size * (h / w))
    return new_h / h


def _zero_of_input(nodes: list, name: str = "input.1") -> str:
    """A scalar 0 computed from the input, so every output depends on it."""
    nodes.append(helper.make_node("ReduceMean", [name], ["mean_all"], keepdims=0))
    nodes.append(helper.make_node("Mul", ["mean_all", "zero"], ["zero_of_input"]))
    return "zero_of_input"


def _save(path: Path, nodes, inputs, outputs, inits) -> Path:
    graph = helper.make_graph(nodes, "g", inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def write_detector(path: Path, frame_hw: tuple[int, int], faces: list[tuple[tuple, float, int]],
                   size: int = 512) -> Path:
    """faces: (box x1, y1, x2, y2 in frame pixels, score, stride). Each is put on the anchor nearest
    its centre, with the distances that give back exactly that box."""
    scale = det_scale(frame_hw, size)
    scores = {s: np.zeros(((size // s) ** 2 * ANCHORS, 1), np.float32) for s in STRIDES}
    dists = {s: np.zeros(((size // s) ** 2 * ANCHORS, 4), np.float32) for s in STRIDES}
    used = set()
    for box, score, stride in faces:
        x1, y1, x2, y2 = (v * scale for v in box)
        col, row = int(round((x1 + x2) / 2 / stride)), int(round((y1 + y2) / 2 / stride))
        anchor = 0 if (stride, row, col, 0) not in used else 1
        used.add((stride, row, col, anchor))
        k = (row * (size // stride) + col) * ANCHORS + anchor
        ax, ay = col * stride, row * stride
        scores[stride][k] = score
        dists[stride][k] = [(ax - x1) / stride, (ay - y1) / stride, (x2 - ax) / stride, (y2 - ay) / stride]
    nodes, inits, outputs = [], [numpy_helper.from_array(np.array(0, np.float32), "zero")], []
    zero = _zero_of_input(nodes)
    arrays = [scores[s] for s in STRIDES] + [dists[s] for s in STRIDES] + \
        [np.zeros((len(scores[s]), 10), np.float32) for s in STRIDES]
    for i, a in enumerate(arrays):
        inits.append(numpy_helper.from_array(a, f"c{i}"))
        nodes.append(helper.make_node("Add", [f"c{i}", zero], [f"out{i}"]))
        outputs.append(helper.make_tensor_value_info(f"out{i}", TensorProto.FLOAT, list(a.shape)))
    inputs = [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [1, 3, "h", "w"])]
    return _save(path, nodes, inputs, outputs, inits)


def write_landmarks(path: Path, points: np.ndarray, per_channel0: float = 0.0, side: int = 192) -> Path:
    """Output [1, 212]: `points` ([106, 2] in the crop's [-1, 1]) + per_channel0 x the mean of input channel 0."""
    nodes = [helper.make_node("Slice", ["data", "s0", "s1", "ax"], ["first"]),
             helper.make_node("ReduceMean", ["first"], ["m"], keepdims=0),
             helper.make_node("Mul", ["m", "k"], ["shift"]),
             helper.make_node("Add", ["base", "shift"], ["fc1"])]
    inits = [numpy_helper.from_array(np.array([0], np.int64), "s0"), numpy_helper.from_array(np.array([1], np.int64), "s1"),
             numpy_helper.from_array(np.array([1], np.int64), "ax"),
             numpy_helper.from_array(np.full((1, 212), per_channel0, np.float32), "k"),
             numpy_helper.from_array(np.asarray(points, np.float32).reshape(1, 212), "base")]
    inputs = [helper.make_tensor_value_info("data", TensorProto.FLOAT, ["n", 3, side, side])]
    outputs = [helper.make_tensor_value_info("fc1", TensorProto.FLOAT, [1, 212])]
    return _save(path, nodes, inputs, outputs, inits)


def points_grid() -> np.ndarray:
    """106 distinct points spread over the crop's [-0.8, 0.8] square."""
    t = np.linspace(-0.8, 0.8, 11)
    grid = np.stack(np.meshgrid(t, t), -1).reshape(-1, 2)
    return grid[:106].astype(np.float32)


DWPOSE_INPUT = (288, 384)            # (w, h) of dw-ll_ucoco_384
DWPOSE_POINTS = 133


def write_dwpose(path: Path, face_bins: np.ndarray | None = None, peak: float = 10.0) -> Path:
    """An ONNX file in DWPose's layout (input [1, 3, 384, 288]; SimCC outputs [1, 133, 576] and
    [1, 133, 768]). With `face_bins` ([68, 2] SimCC bins, x then y): every face point's vectors are
    `peak` at its bins and 0 elsewhere, whatever the input. Without: each point's x vector is the
    input's column sums (each column twice, for the two bins per pixel) and its y vector the row
    sums, so the points sit on the brightest column and row of what the model was fed."""
    w, h = DWPOSE_INPUT
    nodes, inits = [], []
    if face_bins is not None:
        inits.append(numpy_helper.from_array(np.array(0, np.float32), "zero"))
        zero = _zero_of_input(nodes, "input")
        for name, axis, bins in (("simcc_x", 0, 2 * w), ("simcc_y", 1, 2 * h)):
            table = np.zeros((1, DWPOSE_POINTS, bins), np.float32)
            table[0, 23 + np.arange(68), np.asarray(face_bins)[:, axis]] = peak
            inits.append(numpy_helper.from_array(table, f"{name}_c"))
            nodes.append(helper.make_node("Add", [f"{name}_c", zero], [name]))
    else:
        nodes.append(helper.make_node("ReduceMean", ["input"], ["grey"], axes=[1], keepdims=1))
        inits += [numpy_helper.from_array(np.array([2], np.int64), "rows"),
                  numpy_helper.from_array(np.array([3], np.int64), "cols"),
                  numpy_helper.from_array(np.array([3], np.int64), "last")]
        for name, axis, n in (("simcc_x", "rows", w), ("simcc_y", "cols", h)):
            inits += [numpy_helper.from_array(np.array([1, 1, 2 * n], np.int64), f"{name}_flat"),
                      numpy_helper.from_array(np.array([1, DWPOSE_POINTS, 2 * n], np.int64), f"{name}_all")]
            nodes += [helper.make_node("ReduceSum", ["grey", axis], [f"{name}_sum"], keepdims=0),
                      helper.make_node("Unsqueeze", [f"{name}_sum", "last"], [f"{name}_u"]),
                      helper.make_node("Concat", [f"{name}_u", f"{name}_u"], [f"{name}_twice"], axis=3),
                      helper.make_node("Reshape", [f"{name}_twice", f"{name}_flat"], [f"{name}_bins"]),
                      helper.make_node("Expand", [f"{name}_bins", f"{name}_all"], [name])]
    inputs = [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, h, w])]
    outputs = [helper.make_tensor_value_info("simcc_x", TensorProto.FLOAT, [1, DWPOSE_POINTS, 2 * w]),
               helper.make_tensor_value_info("simcc_y", TensorProto.FLOAT, [1, DWPOSE_POINTS, 2 * h])]
    return _save(path, nodes, inputs, outputs, inits)
