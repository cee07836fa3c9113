"""The two dubbing networks at their released shapes (random weights), side by side on one clip length.

LatentSync 1.6: the 3D UNet (released config) on a 16-frame chunk at 512x512 (64x64 latents), the
audio guidance pair as one batch of 2; a full step and a DeepCache step (only the last up layer)
timed separately, then per chunk = steps on the DeepCache schedule (1 full step in 3) or all full.
MuseTalk 1.5: the 2D UNet (SD 1.5 layout, 8 channels in, 384-wide audio) on the same 16 frames at
256x256 (32x32 latents), one pass per frame. The VAEs and the face work are left out: this compares
the networks. Seconds of compute per second of 25 fps video are the figures to compare.
"""
from __future__ import annotations

import time

import torch

FPS = 25
CHUNK = 16
MUSETALK_UNET = {
    "act_fn": "silu", "attention_head_dim": 8, "block_out_channels": [320, 640, 1280, 1280],
    "center_input_sample": False, "cross_attention_dim": 384,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "downsample_padding": 1, "flip_sin_to_cos": True, "freq_shift": 0, "in_channels": 8, "layers_per_block": 2,
    "mid_block_scale_factor": 1, "norm_eps": 1e-05, "norm_num_groups": 32, "out_channels": 4, "sample_size": 64,
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
}


def _timed(fn, repeat: int, device: str) -> float:
    fn()                                                    # warm-up (allocations, kernels)
    times = []
    for _ in range(repeat):
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


@torch.no_grad()
def latentsync_times(device: str, dtype: torch.dtype, repeat: int = 1, frames: int = CHUNK) -> dict:
    from engine.dub.latentsync.unet3d import DeepCacheState, LatentSyncUNet3D, unet_config

    torch.manual_seed(0)
    unet = LatentSyncUNet3D(unet_config()).to(device, dtype).eval()
    params = sum(p.numel() for p in unet.parameters())
    x = torch.randn(2, 13, frames, 64, 64, device=device, dtype=dtype)
    audio = torch.randn(2 * frames, 50, 384, device=device, dtype=dtype)
    cache = DeepCacheState(3)
    full = _timed(lambda: unet(x, 500, audio, cache=cache, step=0), repeat, device)
    shallow = _timed(lambda: unet(x, 500, audio, cache=cache, step=1), repeat, device)
    del unet
    return {"params": params, "full_step_s": full, "deepcache_step_s": shallow}


@torch.no_grad()
def musetalk_times(device: str, dtype: torch.dtype, repeat: int = 1, frames: int = CHUNK) -> dict:
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel.from_config(MUSETALK_UNET).to(device, dtype).eval()
    params = sum(p.numel() for p in unet.parameters())
    x = torch.randn(frames, 8, 32, 32, device=device, dtype=dtype)
    audio = torch.randn(frames, 50, 384, device=device, dtype=dtype)
    t = torch.zeros(frames, device=device, dtype=dtype)
    batch = _timed(lambda: unet(x, t, encoder_hidden_states=audio), repeat, device)
    del unet
    return {"params": params, "frames_s": batch}


def run(device: str | None = None, dtype: str = "auto", steps: int = 20, repeat: int = 1) -> dict:
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if dtype == "auto":
        dtype = "bfloat16" if device == "cuda" else "float32"
    dt = getattr(torch, dtype)
    ls = latentsync_times(device, dt, repeat)
    mt = musetalk_times(device, dt, repeat)
    full_steps = -(-steps // 3)                               # DeepCache: steps 0, 3, 6, ... run in full
    chunk_deepcache = full_steps * ls["full_step_s"] + (steps - full_steps) * ls["deepcache_step_s"]
    chunk_exact = steps * ls["full_step_s"]
    video_s = CHUNK / FPS
    return {
        "device": device if device != "cuda" else torch.cuda.get_device_name(), "dtype": dtype, "steps": steps,
        "latentsync": {**ls, "chunk_s_deepcache": chunk_deepcache, "chunk_s_exact": chunk_exact,
                       "per_video_second_deepcache": chunk_deepcache / video_s,
                       "per_video_second_exact": chunk_exact / video_s},
        "musetalk": {**mt, "per_video_second": mt["frames_s"] / video_s},
        "latentsync_over_musetalk_deepcache": chunk_deepcache / mt["frames_s"],
        "latentsync_over_musetalk_exact": chunk_exact / mt["frames_s"],
    }


def format_report(r: dict) -> list[str]:
    ls, mt = r["latentsync"], r["musetalk"]
    return [
        f"device {r['device']}, {r['dtype']}, random weights at the released shapes; {CHUNK} frames = "
        f"{CHUNK / FPS:.2f} s of 25 fps video",
        f"LatentSync 1.6 UNet ({ls['params'] / 1e6:.0f} M params), 512x512, guidance pair batched: full step "
        f"{ls['full_step_s']:.2f} s, DeepCache step {ls['deepcache_step_s']:.2f} s",
        f"  per chunk of {CHUNK} ({r['steps']} steps): {ls['chunk_s_deepcache']:.1f} s with DeepCache, "
        f"{ls['chunk_s_exact']:.1f} s exact = {ls['per_video_second_deepcache']:.1f} / "
        f"{ls['per_video_second_exact']:.1f} s per second of video",
        f"MuseTalk 1.5 UNet ({mt['params'] / 1e6:.0f} M params), 256x256, one pass per frame: {CHUNK} frames in "
        f"{mt['frames_s']:.2f} s = {mt['per_video_second']:.2f} s per second of video",
        f"LatentSync / MuseTalk: {r['latentsync_over_musetalk_deepcache']:.0f}x with DeepCache, "
        f"{r['latentsync_over_musetalk_exact']:.0f}x exact (networks only)",
    ]
