"""DDIM sampling of one LatentSync chunk, with audio guidance and optional DeepCache.

The scheduler is diffusers' `DDIMScheduler` with LatentSync's `configs/scheduler_config.json`
("leading" spacing + offset 1: 20 steps -> 951, 901, ..., 1; `set_alpha_to_one` false; eta 0).

Guidance: the unconditional pass gets zero audio; eps = u + g * (c - u). Both passes of a step
run as one UNet call on a batch [unconditional, conditional], as the official pipeline does; the
UNet treats batch items independently, so this equals two separate calls. `guidance_scale` 1
runs the conditional pass only.

DeepCache (`deepcache_interval`, official value 3 in `inference.sh` and the Gradio app) is an
APPROXIMATION: between full steps the deep UNet features are reused (see
`unet3d.DeepCacheState`); it changes the result by a few percent relative to running every step
in full, exactly as the official DeepCache code does.
"""
from __future__ import annotations

from typing import Callable

import torch

from engine.dub.latentsync.unet3d import DeepCacheState

SCHEDULER_CONFIG = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "trained_betas": None,
    "clip_sample": False,
    "set_alpha_to_one": False,
    "steps_offset": 1,
    "prediction_type": "epsilon",
    "thresholding": False,
    "dynamic_thresholding_ratio": 0.995,
    "clip_sample_range": 1.0,
    "sample_max_value": 1.0,
    "timestep_spacing": "leading",
    "rescale_betas_zero_snr": False,
}


def make_scheduler(steps: int, config: dict | None = None):
    """diffusers `DDIMScheduler` with LatentSync's settings (or `config`), set to `steps` steps."""
    from diffusers import DDIMScheduler

    config = {k: v for k, v in (config or SCHEDULER_CONFIG).items() if not k.startswith("_") and k != "skip_prk_steps"}
    scheduler = DDIMScheduler.from_config(config)
    scheduler.set_timesteps(steps)
    return scheduler


def guided_audio(audio: torch.Tensor, guidance_scale: float) -> torch.Tensor:
    """Audio for the UNet batch: [zeros, audio] when guiding, else the audio alone (rows batch*F + frame)."""
    return torch.cat([torch.zeros_like(audio), audio]) if guidance_scale > 1 else audio


@torch.no_grad()
def denoise_chunk(unet, latents: torch.Tensor, conditions: torch.Tensor, audio: torch.Tensor, *, steps: int,
                  guidance_scale: float = 1.5, deepcache_interval: int | None = 3, scheduler_config: dict | None = None,
                  on_step: Callable[[int, torch.Tensor], None] | None = None) -> torch.Tensor:
    """Denoise one chunk.

    latents [1, 4, F, h, w] (the starting noise); conditions [1, 5 + 4, F, h, w] = mask, masked-image
    latents and reference latents (channel order of the UNet input after the noisy latents);
    audio [F, tokens, width]. `on_step(i, latents)` sees the latents after each step.
    """
    scheduler = make_scheduler(steps, scheduler_config)
    guide = guidance_scale > 1
    # The sampler's state and arithmetic stay float32; only the UNet runs in its own dtype (bf16 on a GPU).
    dtype = next(unet.parameters()).dtype
    latents = latents.float()
    batch_audio = guided_audio(audio, guidance_scale).to(dtype)
    batch_conditions = (torch.cat([conditions] * 2) if guide else conditions).to(dtype)
    cache = DeepCacheState(deepcache_interval) if deepcache_interval else None
    for i, t in enumerate(scheduler.timesteps):
        x = torch.cat([latents] * 2) if guide else latents
        x = scheduler.scale_model_input(x, t)
        eps = unet(torch.cat([x.to(dtype), batch_conditions], dim=1), t, batch_audio, cache=cache, step=i).float()
        if guide:
            uncond, cond = eps.chunk(2)
            eps = uncond + guidance_scale * (cond - uncond)
        latents = scheduler.step(eps, t, latents, eta=0.0, return_dict=False)[0]
        if on_step is not None:
            on_step(i, latents)
    return latents
