"""Reference photos in: opening any format as upright RGB (`load_image`, `to_rgb`) and the SPEC §3
fit onto the video canvas (`fit_size`, `fit_reference_image`)."""
from __future__ import annotations

import math
import os
import threading
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from engine.errors import InputError
from engine.media.files import _check_file

# Image limits: the decompression-bomb guard (pixels) and the working size kept after loading.
MAX_IMAGE_PIXELS = 200_000_000
WORKING_MAX_SIDE = 2048
SMALL_IMAGE_SIDE = 256

_PIL_GUARD_LOCK = threading.Lock()


def _to_8bit_gray(img: Image.Image) -> Image.Image:
    """High-bit-depth and float grayscale ("I;16", "I", "F") to "L" by range, not by clipping."""
    arr = np.asarray(img).astype(np.float64)
    top = float(arr.max()) if arr.size else 0.0
    if img.mode.startswith("I;16"):
        arr = arr / 257.0  # 16-bit samples: the full 0..65535 range maps to 0..255
    elif img.mode == "F" and top <= 1.0:
        arr = arr * 255.0
    elif top > 255.0:
        # 32-bit integers or floats: assume a 16-bit range unless the values go beyond it
        arr = arr / (65535.0 if top <= 65535.0 else top) * 255.0
    return Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), "L")


def _composite_on_white(img: Image.Image) -> Image.Image:
    rgba = img.convert("RGBA")
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(white, rgba).convert("RGB")


def to_rgb(img: Image.Image) -> Image.Image:
    """Any PIL mode to RGB; transparency becomes white."""
    mode = img.mode
    if mode == "RGB":
        return img
    if mode == "P":
        has_alpha = "transparency" in img.info or (img.palette is not None and img.palette.mode == "RGBA")
        return _composite_on_white(img) if has_alpha else img.convert("RGB")
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        return _composite_on_white(img)
    if mode == "L" and "transparency" in img.info:
        return _composite_on_white(img)
    if mode in ("L", "1"):
        return img.convert("L").convert("RGB")
    if mode.startswith("I") or mode == "F":
        return _to_8bit_gray(img).convert("RGB")
    return img.convert("RGB")  # CMYK, YCbCr, LAB, HSV, RGBX


def _open_guarded(path: Path) -> Image.Image:
    # Pillow's own bomb guard refuses around 179 MP; ours allows up to MAX_IMAGE_PIXELS and
    # refuses above it with a message. The global is swapped under a lock just for the open.
    with _PIL_GUARD_LOCK:
        saved = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                img = Image.open(path)
        finally:
            Image.MAX_IMAGE_PIXELS = saved
    w, h = img.size
    if w <= 0 or h <= 0:
        img.close()
        raise InputError(f"The image {path.name} has no pixels.", hint="Use a JPEG or PNG photo.")
    if w * h > MAX_IMAGE_PIXELS:
        img.close()
        raise InputError(f"The image {path.name} is too large: {w}x{h} ({w * h / 1e6:.0f} megapixels, "
                         f"the limit is {MAX_IMAGE_PIXELS / 1e6:.0f}).", hint="Resize it to a few thousand pixels a side.")
    return img


def load_image(path: str | os.PathLike | Image.Image) -> tuple[Image.Image, list[str]]:
    """Open a reference photo as an upright RGB image, plus notices for the user.

    Large photos are reduced early (JPEG draft mode, then a thumbnail) to at most
    WORKING_MAX_SIDE a side so memory stays low; tiny ones are kept with a notice.
    """
    notices: list[str] = []
    if isinstance(path, Image.Image):
        img, name = path, "The image"
        close_after = False
    else:
        p = _check_file(path, "Image")
        name = p.name
        if p.stat().st_size == 0:
            raise InputError(f"The image file {name} is empty (0 bytes).", hint="Upload a JPEG or PNG photo.")
        try:
            img = _open_guarded(p)
        except UnidentifiedImageError as err:
            raise InputError(f"{name} is not an image file, or its format is not supported.", hint="Upload a JPEG, PNG or WebP photo.") from err
        except (OSError, SyntaxError, ValueError) as err:
            raise InputError(f"Could not read the image {name}: it is damaged or not an image.",
                             hint="Export it again as JPEG or PNG.") from err
        close_after = True
    try:
        orig_w, orig_h = img.size
        try:
            if img.format == "JPEG" and max(orig_w, orig_h) > WORKING_MAX_SIDE:
                # Decode at 1/2, 1/4 or 1/8 scale directly: an 8000x8000 JPEG never fills memory.
                img.draft("RGB", (WORKING_MAX_SIDE, WORKING_MAX_SIDE))
            img.load()
            exif_before = img.getexif() if hasattr(img, "getexif") else None
            if max(img.size) > WORKING_MAX_SIDE:
                img.thumbnail((WORKING_MAX_SIDE, WORKING_MAX_SIDE), Image.Resampling.LANCZOS)
                if exif_before is not None and not img.getexif():
                    img.info["exif"] = exif_before.tobytes()
            out = ImageOps.exif_transpose(img)
            out = to_rgb(out)
            if out is img:
                out = img.copy()
        except (OSError, SyntaxError, ValueError) as err:
            raise InputError(f"Could not read the image {name}: it is damaged or truncated.",
                             hint="Export it again as JPEG or PNG.") from err
    finally:
        if close_after:
            img.close()
    if max(orig_w, orig_h) > WORKING_MAX_SIDE:
        notices.append(f"The image is {orig_w}x{orig_h}; it was reduced to {out.width}x{out.height} on loading.")
    if max(orig_w, orig_h) < SMALL_IMAGE_SIDE:
        notices.append(f"The image is only {orig_w}x{orig_h} pixels: it will be upscaled and the result will look soft.")
    return out, notices


def fit_size(img_w: int, img_h: int, width: int, height: int) -> tuple[int, int, int, int]:
    """SPEC §3: the scaled size inside (width, height) and the top-left offset on the canvas."""
    ratio = img_w / img_h
    if ratio > width / height:
        new_w, new_h = width, math.floor(width / ratio)
    else:
        new_w, new_h = math.floor(height * ratio), height
    new_w, new_h = max(1, min(width, new_w)), max(1, min(height, new_h))
    return new_w, new_h, (width - new_w) // 2, (height - new_h) // 2


def fit_reference_image(img: Image.Image, width: int, height: int) -> np.ndarray:
    """SPEC §3 reference image: LANCZOS fit inside (W, H), centered on white, as float32 [3, H, W] in [-1, 1]."""
    img = to_rgb(img)
    new_w, new_h, left, top = fit_size(img.width, img.height, width, height)
    scaled = img.resize((new_w, new_h), Image.Resampling.LANCZOS)
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    canvas.paste(scaled, (left, top))
    arr = np.asarray(canvas, dtype=np.float32) / 127.5 - 1.0
    return np.ascontiguousarray(arr.transpose(2, 0, 1))
