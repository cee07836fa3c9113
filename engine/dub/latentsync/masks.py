"""LatentSync's fixed mouth mask and the masked inputs of the UNet.

The mask is LatentSync's `mask.png` (lower face 0, the rest 1), resized with LANCZOS4 on uint8
(so rounded and saturated) and divided by 255 in float64, as the official `ImageProcessor` does.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from engine.errors import WeightsError


@lru_cache(maxsize=8)
def _mask_u8(path: str, resolution: int) -> np.ndarray:
    import cv2

    image = cv2.imread(path)
    if image is None:
        raise WeightsError(f"The LatentSync mask image {path} is missing or unreadable.",
                           hint="It ships with LatentSync as latentsync/utils/mask.png.")
    image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    return cv2.resize(image, (resolution, resolution), interpolation=cv2.INTER_LANCZOS4)


def fixed_mask(path: str | Path, resolution: int) -> torch.Tensor:
    """The mask at `resolution` as float64 [3, R, R] in 0..1 (0 = the region the model redraws)."""
    return torch.from_numpy(_mask_u8(str(path), resolution).astype(np.float64) / 255.0).permute(2, 0, 1)


def face_pixels(faces: torch.Tensor) -> torch.Tensor:
    """uint8 faces [N, 3, R, R] -> float32 in [-1, 1]."""
    return (faces.float() / 255.0 - 0.5) / 0.5


def masked_inputs(faces: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(pixels float32, masked pixels float64, masks float64 [N, 1, R, R]) for aligned uint8 faces.

    Inside the mouth the masked pixels are 0 (mid-grey), not -1, as in the official code.
    """
    pixels = face_pixels(faces)
    masked = pixels * mask
    masks = mask[0:1].expand(faces.shape[0], 1, *mask.shape[1:])
    return pixels, masked, masks


def latent_mask(masks: torch.Tensor, latent_size: tuple[int, int]) -> torch.Tensor:
    """Masks [N, 1, R, R] -> float32 [N, 1, R/8, R/8] (nearest, as `F.interpolate` defaults)."""
    return F.interpolate(masks, size=latent_size).float()
