"""Pasting a generated face back into its frame, as MuseTalk 1.5 does.

The face box is widened to a square (`expand` x half the longer side), that square is parsed
with BiSeNet, the parse becomes a mask (mode `raw`, `neck` or `jaw`), only the face box part
of its lower half is kept, it is blurred and used as alpha. Pillow and OpenCV do the resizing
and pasting in the same order as the official code, so the result is the same to the pixel.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image

from engine.dub.face.parsing import PARSE_SIZE, FaceParser
from engine.errors import InputError

MODES = ("raw", "neck", "jaw")
SKIN, NOSE, MOUTH, UPPER_LIP, LOWER_LIP, NECK = 1, 10, 11, 12, 13, 14
MOUTH_CLASSES = (MOUTH, UPPER_LIP, LOWER_LIP)


def jaw_kernel() -> np.ndarray:
    """33x33 dilation kernel: empty rows 0..9, a cone of widths 1, 3, ..., 21 in rows 10..20, then width 21."""
    cone, tail = 21, 12
    size = cone + tail
    kernel = np.zeros((size, size), np.uint8)
    centre = size // 2
    for row in range(cone // 2, size):
        half = min(row - cone // 2, cone // 2)
        kernel[row, centre - half:centre + half + 1] = 1
    return kernel


CHEEK_KERNEL = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (35, 3))


def cheek_columns(left: int, right: int) -> np.ndarray:
    """[512, 512] bool: the outer columns 0..256-left and 256+right..511 (both ends included)."""
    cols = np.arange(PARSE_SIZE)
    centre = PARSE_SIZE // 2
    outer = (cols <= centre - left) | (cols >= centre + right)
    return np.broadcast_to(outer[None, :], (PARSE_SIZE, PARSE_SIZE))


def face_mask(classes: np.ndarray, mode: str = "jaw", cheeks: tuple[int, int] = (90, 90)) -> np.ndarray:
    """0/255 uint8 mask [512, 512] of the parts MuseTalk replaces, from a BiSeNet class map.

    raw: skin and mouth; neck: also the neck; jaw (v1.5): the skin dilated downwards (so the
    new jaw line may move), narrower (eroded) in the cheek columns, without the nose, plus mouth.
    """
    if mode not in MODES:
        raise InputError(f"Unknown blending mode '{mode}'; use one of {', '.join(MODES)}.")
    if mode == "raw":
        keep = np.isin(classes, (SKIN,) + MOUTH_CLASSES)
    elif mode == "neck":
        keep = np.isin(classes, (SKIN,) + MOUTH_CLASSES + (NECK,))
    else:
        skin = (classes == SKIN).astype(np.uint8) * 255
        dilated = cv2.dilate(skin, jaw_kernel(), iterations=1)
        eroded = cv2.erode(dilated, CHEEK_KERNEL, iterations=2)
        region = np.where(cheek_columns(*cheeks), eroded, dilated)
        keep = ((region == 255) & (classes != NOSE)) | np.isin(classes, MOUTH_CLASSES)
    return np.where(keep, 255, 0).astype(np.uint8)


def expanded_square(box, expand: float = 1.5) -> list[int]:
    """The square around a face box that gets parsed: centre of the box, half side int(max(w,h)//2*expand)."""
    x1, y1, x2, y2 = box
    cx, cy = (x1 + x2) // 2, (y1 + y2) // 2
    s = int(max(x2 - x1, y2 - y1) // 2 * expand)
    return [cx - s, cy - s, cx + s, cy + s]


@dataclass
class PasteMask:
    """The blurred alpha for one frame and box (reusable while the frame and box stay the same)."""
    alpha: np.ndarray          # uint8 [square h, square w]
    square: list[int]          # the expanded square in frame coordinates
    classes: np.ndarray        # BiSeNet class map [512, 512]
    mask512: np.ndarray        # face_mask(...) before resizing


def paste_mask(frame_bgr: np.ndarray, box, parser: FaceParser, mode: str = "jaw", cheeks=(90, 90),
               upper_ratio: float = 0.5, expand: float = 1.5, classes: np.ndarray | None = None) -> PasteMask:
    """The alpha mask of one frame and box; `classes` may be a parse of the same square (another mode)."""
    x1, y1, x2, y2 = (int(v) for v in box)
    square = expanded_square((x1, y1, x2, y2), expand)
    xs, ys = square[:2]
    body = Image.fromarray(np.ascontiguousarray(frame_bgr[:, :, ::-1]))
    face_large = body.crop(square)                      # outside the frame: black
    if classes is None:
        classes = parser.parse(face_large)
    mask512 = face_mask(classes, mode, cheeks)
    mask = Image.fromarray(mask512).resize(face_large.size)   # Pillow's default for L: bicubic
    inner = (x1 - xs, y1 - ys, x2 - xs, y2 - ys)
    boxed = Image.new("L", face_large.size, 0)
    boxed.paste(mask.crop(inner), inner)
    width, height = boxed.size
    top = int(height * upper_ratio)
    lower = Image.new("L", face_large.size, 0)
    lower.paste(boxed.crop((0, top, width, height)), (0, top))
    k = int(0.05 * width // 2 * 2) + 1
    alpha = cv2.GaussianBlur(np.array(lower), (k, k), 0)
    return PasteMask(alpha, square, classes, mask512)


def resize_face(face256_bgr: np.ndarray, box) -> np.ndarray:
    """The generated face at the box size (OpenCV's default bilinear, as the official loop)."""
    x1, y1, x2, y2 = (int(v) for v in box)
    return cv2.resize(face256_bgr, (x2 - x1, y2 - y1))


def paste_face(frame_bgr: np.ndarray, face256_bgr: np.ndarray, box, parser: FaceParser, mode: str = "jaw",
               cheeks=(90, 90), upper_ratio: float = 0.5, expand: float = 1.5,
               mask: PasteMask | None = None) -> np.ndarray:
    """The frame (uint8 BGR) with the generated 256x256 face pasted into `box` (x1, y1, x2, y2).

    `mask` may be a `paste_mask` result for the same frame and box (the parse depends only on
    them), so a frame shown several times is parsed once.
    """
    x1, y1, x2, y2 = (int(v) for v in box)
    if x2 <= x1 or y2 <= y1:
        raise InputError(f"The face box {box} is empty; it cannot take a face.")
    if mask is None:
        mask = paste_mask(frame_bgr, box, parser, mode, cheeks, upper_ratio, expand)
    xs, ys = mask.square[:2]
    body = Image.fromarray(np.ascontiguousarray(frame_bgr[:, :, ::-1]))
    face_large = body.crop(mask.square)
    face = Image.fromarray(np.ascontiguousarray(resize_face(face256_bgr, box)[:, :, ::-1]))
    face_large.paste(face, (x1 - xs, y1 - ys, x2 - xs, y2 - ys))
    body.paste(face_large, (xs, ys), Image.fromarray(mask.alpha))
    return np.ascontiguousarray(np.asarray(body)[:, :, ::-1])
