"""Cheap previews: normalized Wan 2.1 latents -> RGB with a linear map (no VAE), SPEC §5."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

# rows: latent channels 0..15; columns: R, G, B
LATENT_RGB_FACTORS = torch.tensor([
    [-0.1299, -0.1692, 0.2932], [0.0671, 0.0406, 0.0442], [0.3568, 0.2548, 0.1747], [0.0372, 0.2344, 0.1420],
    [0.0313, 0.0189, -0.0328], [0.0296, -0.0956, -0.0665], [-0.3477, -0.4059, -0.2925], [0.0166, 0.1902, 0.1975],
    [-0.0412, 0.0267, -0.1364], [-0.1293, 0.0740, 0.1636], [0.0680, 0.3019, 0.1128], [0.0032, 0.0581, 0.0639],
    [-0.1251, 0.0927, 0.1699], [0.0060, -0.0633, 0.0005], [0.3477, 0.2275, 0.2950], [0.1984, 0.0913, 0.1861],
])
LATENT_RGB_BIAS = torch.tensor([-0.1835, -0.0868, -0.3360])


def latents_to_rgb(latents: torch.Tensor, max_side: int = 160) -> np.ndarray:
    """[16, T, h, w] -> uint8 [T, h', w', 3], one preview frame per latent frame, longest side ≤ max_side."""
    x = latents.detach().float().cpu()
    rgb = torch.einsum("cthw,cr->trhw", x, LATENT_RGB_FACTORS) + LATENT_RGB_BIAS.view(1, 3, 1, 1)
    t, _, h, w = rgb.shape
    scale = max_side / max(h, w)
    if scale != 1:
        size = (max(1, round(h * scale)), max(1, round(w * scale)))
        rgb = F.interpolate(rgb, size=size, mode="bilinear", align_corners=False)
    img = ((rgb.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return img.permute(0, 2, 3, 1).contiguous().numpy()
