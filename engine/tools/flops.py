"""What one DiT pass costs and what the device can do: FLOPs counted from the shapes (matmuls
only: linear layers, the patch convolution and attention Q·Kᵀ and P·V) and the device's peak
rate, for the benchmark's "fraction of peak" figures."""
from __future__ import annotations

import platform
import time

import torch

from engine.humo.variants import DiTShape

# Dense bf16 tensor-core peaks (FLOP/s), by device name; the first matching key wins.
GPU_BF16_PEAK = (
    ("h200", 989e12), ("h100 pcie", 756e12), ("h100 nvl", 835e12), ("h100", 989e12), ("h800", 989e12), ("gh200", 989e12),
    ("b200", 2250e12), ("a100", 312e12), ("a800", 312e12), ("l40s", 362e12), ("l40", 181e12),
    ("l4", 121e12), ("a10g", 70e12), ("a10", 125e12), ("4090", 165e12), ("3090", 71e12), ("a6000", 155e12),
    ("v100", 125e12), ("t4", 65e12),
)

def pass_flops(shape: DiTShape, latent_frames: int, h: int, w: int, batch: int = 1) -> dict[str, float]:
    """Multiply-add FLOPs (2 per MAC) of `batch` network passes over `latent_frames` (T + R)
    latent frames of h×w latent pixels. Returns the parts and the total."""
    pt, ph, pw = shape.patch_size
    f, hh, ww = latent_frames // pt, h // ph, w // pw
    s = f * hh * ww                                   # video tokens
    d, L = shape.dim, shape.text_len
    patch = pt * ph * pw
    audio_tokens = f * shape.audio_tokens
    n = shape.num_layers
    parts = {
        # per block
        "self_attn_proj": n * 2 * s * d * d * 4,                                  # q, k, v, o
        "self_attn_qk_pv": n * 2 * 2 * s * s * d,                                 # Q·Kᵀ and P·V
        "text_attn_proj": n * (2 * s * d * d * 2 + 2 * L * d * d * 2),            # q, o on video; k, v on text
        "text_attn_qk_pv": n * 2 * 2 * s * L * d,
        "audio_attn_proj": n * (2 * s * d * d * 2 + 2 * audio_tokens * shape.audio_dim * d * 2),
        "audio_attn_qk_pv": n * 2 * 2 * s * shape.audio_tokens * d,               # frame-local: 16 keys per token
        "ffn": n * 2 * s * d * shape.ffn_dim * 2,
        # once per pass
        "patch_embed": 2 * s * shape.in_dim * patch * d,
        "text_embed": 2 * L * (shape.text_dim * d + d * d),
        "time_embed": 2 * (shape.freq_dim * d + d * d + d * 6 * d),
        "audio_proj": 2 * f * (8 * 5 * shape.audio_channels * shape.audio_intermediate_dim
                               + shape.audio_intermediate_dim ** 2
                               + shape.audio_intermediate_dim * shape.audio_tokens * shape.audio_dim),
        "proj_out": 2 * s * d * shape.out_dim * patch,
    }
    parts = {k: float(v) * batch for k, v in parts.items()}
    parts["attention"] = parts["self_attn_qk_pv"] + parts["text_attn_qk_pv"] + parts["audio_attn_qk_pv"]
    parts["total"] = sum(v for k, v in parts.items() if k != "attention")
    parts["tokens"] = float(s)
    return parts


def device_peak(device: str, dtype: torch.dtype) -> tuple[float | None, str]:
    """(peak FLOP/s, how it was found). GPU: the dense bf16 peak for its name; CPU: a measured matmul rate."""
    if device.startswith("cuda"):
        name = torch.cuda.get_device_name(torch.device(device))
        for key, peak in GPU_BF16_PEAK:
            if key in name.lower():
                if dtype in (torch.bfloat16, torch.float16):
                    return peak, f"{name}: dense bf16 peak {peak / 1e12:.0f} TFLOP/s (datasheet)"
                if torch.get_float32_matmul_precision() != "highest":     # TF32 tensor cores: half the bf16 rate
                    return peak / 2, f"{name}: dense TF32 peak {peak / 2e12:.0f} TFLOP/s (datasheet)"
                return None, f"{name}: float32 without TF32 (no tensor-core peak to compare with)"
        return None, f"{name}: peak unknown"
    n = 2048
    a = torch.randn(n, n, dtype=dtype)
    b = torch.randn(n, n, dtype=dtype)
    a @ b
    best, t_end = float("inf"), time.perf_counter() + 1.0
    while time.perf_counter() < t_end:
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    rate = 2 * n ** 3 / best
    return rate, f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads): " \
                 f"measured {n}³ {str(dtype).replace('torch.', '')} matmul {rate / 1e9:.1f} GFLOP/s"
