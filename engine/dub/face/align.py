"""3-point face alignment and paste-back, as LatentSync 1.6's `AlignRestore` computes them.

`FaceAligner` fits a similarity transform from three landmark points (brow centres, nose) to a
fixed template, crops a 3:4 face with a bilinear warp (fill 127), squeezes it to R x R with
LANCZOS4, and later warps a generated face back into the frame under a soft, eroded mask.
One aligner per video: it carries the temporal smoothing state from frame to frame.

Warps are `affine_grid` + `grid_sample` with kornia's pixel normalisation (`align_corners=True`),
written here with torch; the LANCZOS4 resize and the centre erosion use OpenCV as the official
code does, so uint8 results match it exactly.

Options (the official value first; see `engine.dub.latentsync` for the list):
- `smoothing`: "official" adds the smoothed nose residual, computed in normalised (std-scaled)
  units, to the translation in pixels (a shift of hundredths of a pixel); "pixels" scales it to
  crop pixels first; "off" does not smooth.
- `rounding`: "truncate" (official) cuts warped and pasted values to uint8; "round" rounds them.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from engine.errors import InputError

TEMPLATE = np.array([[17.0, 20.0], [58.0, 20.0], [37.5, 40.0]])  # at scale r = 2.8 * R / 256
BROW_LEFT = [43, 48, 49, 51, 50]
BROW_RIGHT = [101, 102, 103, 104, 105]
NOSE = [74, 77, 83, 86]
FILL = 127.0
SMOOTHING = ("official", "pixels", "off")
ROUNDING = ("truncate", "round")


def crop_size(resolution: int) -> tuple[int, int]:
    """(w, h) of the 3:4 crop for a face resolution R."""
    ratio = resolution / 256 * 2.8
    return int(75 * ratio), int(100 * ratio)


def three_points(landmarks106: np.ndarray) -> np.ndarray:
    """106-point landmarks -> the 3 rounded alignment points (float64 [3, 2], halves to even)."""
    lmk = np.asarray(landmarks106)
    if lmk.shape != (106, 2):
        raise InputError(f"Expected 106 face landmarks of (x, y), got an array of shape {lmk.shape}.")
    return np.round([lmk[BROW_LEFT].mean(0), lmk[BROW_RIGHT].mean(0), lmk[NOSE].mean(0)])


def _pixel_to_norm(h: int, w: int) -> torch.Tensor:
    """kornia's `normal_transform_pixel`: pixel coordinates -> [-1, 1] (align_corners=True)."""
    m = torch.tensor([[1.0, 0.0, -1.0], [0.0, 1.0, -1.0], [0.0, 0.0, 1.0]])
    m[0, 0] = m[0, 0] * 2.0 / (1e-14 if w == 1 else w - 1.0)
    m[1, 1] = m[1, 1] * 2.0 / (1e-14 if h == 1 else h - 1.0)
    return m


def _homography(matrix: torch.Tensor) -> torch.Tensor:
    return torch.cat([matrix.float(), torch.tensor([[0.0, 0.0, 1.0]])], dim=0)


def invert_affine(matrix: torch.Tensor) -> torch.Tensor:
    """Inverse of a [2, 3] affine matrix (float32, via the 3x3 inverse)."""
    return torch.linalg.inv(_homography(matrix))[:2]


def warp_affine(src: torch.Tensor, matrix: torch.Tensor, size: tuple[int, int], fill: float | None = None,
                window: tuple[int, int, int, int] | None = None) -> torch.Tensor:
    """Warp float images [B, C, H, W] by a [2, 3] pixel matrix (src -> dst) to size (h, w), bilinear.

    With `fill`, the outside is `fill`, blended bilinearly at the border (kornia's "fill" padding);
    otherwise zeros. With `window` (x0, y0, x1, y1), only that part of the destination is made,
    from the same sample positions as the whole.
    """
    h_src, w_src = src.shape[-2:]
    dst_from_src = _pixel_to_norm(*size) @ (_homography(matrix) @ torch.linalg.inv(_pixel_to_norm(h_src, w_src)))
    theta = torch.linalg.inv(dst_from_src)[:2].to(src.dtype)
    grid = F.affine_grid(theta[None].expand(src.shape[0], 2, 3), [src.shape[0], src.shape[1], *size], align_corners=True)
    if window is not None:
        x0, y0, x1, y1 = window
        grid = grid[:, y0:y1, x0:x1]
    out = F.grid_sample(src, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    if fill is not None:
        outside = 1 - F.grid_sample(torch.ones_like(src), grid, mode="bilinear", padding_mode="zeros", align_corners=True)
        out = out + outside * fill
    return out


def _erode_2x2(mask: torch.Tensor) -> torch.Tensor:
    """Minimum over each pixel and its upper, left and upper-left neighbours; outside pixels ignored."""
    padded = F.pad(mask, (1, 0, 1, 0), value=float("inf"))
    return -F.max_pool2d(-padded, kernel_size=2, stride=1)


def _gaussian_blur(x: torch.Tensor, k: int, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur with reflect borders (kornia's `gaussian_blur2d`)."""
    taps = torch.arange(k, dtype=x.dtype) - k // 2
    if k % 2 == 0:
        taps = taps + 0.5
    g = torch.exp(-taps.pow(2.0) / (2 * torch.tensor(sigma, dtype=x.dtype).pow(2.0)))
    g = g / g.sum()
    left, right = (k - 1) // 2, k // 2
    x = F.conv2d(F.pad(x, (left, right, 0, 0), mode="reflect"), g.reshape(1, 1, 1, k))
    return F.conv2d(F.pad(x, (0, 0, left, right), mode="reflect"), g.reshape(1, 1, k, 1))


@dataclass
class AlignedFace:
    face: torch.Tensor     # uint8 [3, R, R]
    warped: np.ndarray     # uint8 [h, w, 3], the crop before the resize
    box: tuple[int, int, int, int]  # (x1, y1, x2, y2) of the crop: (0, 0, w, h)
    matrix: torch.Tensor   # float32 [2, 3], frame pixels -> crop pixels
    points: np.ndarray     # float64 [3, 2], the rounded alignment points


class FaceAligner:
    """Align faces of one video in order (carrying the smoothing state) and paste generated faces back."""

    def __init__(self, resolution: int = 256, *, smoothing: str = "official", rounding: str = "truncate"):
        if smoothing not in SMOOTHING or rounding not in ROUNDING:
            raise ValueError(f"smoothing must be one of {SMOOTHING} and rounding one of {ROUNDING}")
        self.resolution = resolution
        self.template = TEMPLATE * (resolution / 256 * 2.8)
        self.crop_size = crop_size(resolution)  # (w, h)
        self.smoothing, self.rounding = smoothing, rounding
        self.p_bias: torch.Tensor | None = None

    def _to_uint8(self, x: torch.Tensor) -> torch.Tensor:
        if self.rounding == "round":
            x = x.round()
        return x.clamp(0, 255).to(torch.uint8) if self.rounding == "round" else x.to(torch.uint8)

    def fit(self, points: np.ndarray) -> torch.Tensor:
        """Similarity matrix [2, 3] (float32) mapping `points` onto the template, smoothing included."""
        p = torch.tensor(points, dtype=torch.float32)
        q = torch.tensor(self.template, dtype=torch.float32)
        cp, cq = p.mean(0), q.mean(0)
        sp, sq = torch.std(p - cp), torch.std(q - cq)
        pn, qn = (p - cp) / sp, (q - cq) / sq
        u, _, v = torch.svd(pn.T @ qn)
        rot = v @ u.T
        if torch.det(rot) < 0:
            v[:, -1] = -v[:, -1]
            rot = v @ u.T
        matrix = torch.cat([(sq / sp) * rot, cq.reshape(2, 1) - (sq / sp) * (rot @ cp.reshape(2, 1))], dim=1)
        if self.smoothing != "off":
            bias = qn[2] - pn[2]
            if self.smoothing == "pixels":
                bias = bias * sq
            if self.p_bias is not None:
                bias = self.p_bias * 0.2 + bias * 0.8
            self.p_bias = bias
            matrix[:, 2] = matrix[:, 2] + bias
        return matrix

    def align(self, frame: np.ndarray, landmarks106: np.ndarray) -> AlignedFace:
        """An RGB uint8 frame [H, W, 3] and its 106 landmarks -> the aligned R x R face."""
        return self.align_points(frame, three_points(landmarks106))

    def align_points(self, frame: np.ndarray, points: np.ndarray) -> AlignedFace:
        """An RGB uint8 frame and its 3 rounded alignment points -> the aligned face (smoothing state advances)."""
        matrix = self.fit(points)
        face, warped = self._crop(frame, matrix)
        w, h = self.crop_size
        return AlignedFace(face, warped, (0, 0, w, h), matrix, points)

    def crop(self, frame: np.ndarray, matrix: torch.Tensor) -> torch.Tensor:
        """The aligned face [3, R, R] of a frame under an alignment already fitted (no smoothing step)."""
        return self._crop(frame, matrix)[0]

    def _crop(self, frame: np.ndarray, matrix: torch.Tensor) -> tuple[torch.Tensor, np.ndarray]:
        import cv2

        w, h = self.crop_size
        src = torch.from_numpy(np.ascontiguousarray(frame)).float().permute(2, 0, 1)[None]
        crop = warp_affine(src, matrix, (h, w), fill=FILL)[0].permute(1, 2, 0)
        warped = self._to_uint8(crop).numpy()
        face = cv2.resize(warped, (self.resolution, self.resolution), interpolation=cv2.INTER_LANCZOS4)
        return torch.from_numpy(face).permute(2, 0, 1).contiguous(), warped

    def restore(self, frame: np.ndarray, face: torch.Tensor, matrix: torch.Tensor, *, whole: bool = False) -> np.ndarray:
        """Paste a generated face (float [3, R, R] in [-1, 1], face space) into the uint8 frame [H, W, 3].

        Only the part of the frame around the face is computed (the crop's bounds plus the erosion
        and blur reach); the rest is the frame as it was, as the whole-frame computation
        (`whole=True`) leaves it.
        """
        height, width = frame.shape[:2]
        inverse = invert_affine(matrix)
        window = (0, 0, width, height) if whole else self._region(inverse, width, height)
        if window == (0, 0, width, height):
            return self._restore(frame, face, inverse, None)
        x0, y0, x1, y1 = window
        out = np.array(frame)
        out[y0:y1, x0:x1] = self._restore(frame, face, inverse, window)
        return out

    def _region(self, inverse: torch.Tensor, width: int, height: int) -> tuple[int, int, int, int]:
        """Frame rectangle holding the pasted crop and everything its soft edge reaches."""
        w, h = self.crop_size
        corners = torch.tensor([[0.0, 0.0, 1.0], [w, 0.0, 1.0], [0.0, h, 1.0], [w, h, 1.0]]) @ inverse.T
        area = abs(float(torch.linalg.det(inverse[:, :2]))) * w * h
        reach = 4 * (int(area ** 0.5) // 20 + 1) + 8
        lo, hi = corners.min(0).values, corners.max(0).values
        return (max(0, int(lo[0]) - reach), max(0, int(lo[1]) - reach),
                min(width, int(hi[0]) + 1 + reach), min(height, int(hi[1]) + 1 + reach))

    def _restore(self, frame: np.ndarray, face: torch.Tensor, inverse: torch.Tensor, window) -> np.ndarray:
        import cv2

        w, h = self.crop_size
        face = F.interpolate(face[None].float(), size=(h, w), mode="bicubic", align_corners=False, antialias=True)
        size = frame.shape[:2]
        if window is not None:
            x0, y0, x1, y1 = window
            frame = frame[y0:y1, x0:x1]
        pasted = warp_affine(face, inverse, size, fill=FILL, window=window)[0]
        pasted = (pasted / 2 + 0.5).clamp(0, 1) * 255
        mask = _erode_2x2(warp_affine(torch.ones(1, 1, h, w), inverse, size, window=window))
        w_edge = int(mask.sum() ** 0.5) // 20
        centre = cv2.erode(mask[0, 0].numpy(), np.ones((w_edge * 2, w_edge * 2), np.uint8))
        k = w_edge * 2 + 1
        soft = _gaussian_blur(torch.from_numpy(centre)[None, None], k, 0.3 * ((k - 1) * 0.5 - 1) + 0.8)[0]
        image = torch.from_numpy(np.ascontiguousarray(frame)).float().permute(2, 0, 1)
        out = soft * (mask[0] * pasted) + (1 - soft) * image
        return self._to_uint8(out.permute(1, 2, 0).contiguous()).numpy()
