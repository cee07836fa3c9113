"""Small condition builders shared by the pipeline and the golden runner (SPEC §3)."""
from __future__ import annotations

import torch


def reference_mask(latent_frames: int, ref_frames: int, h: int, w: int) -> torch.Tensor:
    """4 channels over T + R frames: 0 on the first T frames, 1 on the last R."""
    mask = torch.zeros(4, latent_frames + ref_frames, h, w)
    mask[:, latent_frames:] = 1.0
    return mask


def channel_conditions(zero_latents: torch.Tensor, ref_latents: torch.Tensor, T: int, R: int):
    """17B layout: y_c = mask ⊕ (zeros of frames 0..T−1, then the R reference latents); y_null = mask ⊕ zeros."""
    _, _, h, w = zero_latents.shape
    mask = reference_mask(T, R, h, w)
    y_c = torch.cat([mask, torch.cat([zero_latents[:, :T], ref_latents.to(zero_latents.dtype)], dim=1)])
    y_null = torch.cat([mask, zero_latents[:, : T + R]])
    return y_c, y_null
