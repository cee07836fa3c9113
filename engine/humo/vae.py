"""The Wan 2.1 VAE (diffusers `AutoencoderKLWan`) loaded from the official `Wan2.1_VAE.pth` layout.

Latents are normalized per channel with the Wan 2.1 mean/std: z = (μ − mean) / std.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import torch
from accelerate import init_empty_weights
from diffusers import AutoencoderKLWan
from diffusers.loaders.single_file_utils import convert_wan_vae_to_diffusers

from engine.weights.loading import load_into, read_checkpoint

LATENTS_MEAN = [-0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508,
                0.4134, -0.0715, 0.5517, -0.3632, -0.1922, -0.9497, 0.2503, -0.2921]
LATENTS_STD = [2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743,
               3.2687, 2.1526, 2.8652, 1.5579, 1.6382, 1.1253, 2.8251, 1.9160]

WAN21_VAE = dict(base_dim=96, z_dim=16, dim_mult=(1, 2, 4, 4), num_res_blocks=2,
                 temperal_downsample=(False, True, True))
STRIDE_T, STRIDE_S = 4, 8


def build_vae_empty(base_dim=96, z_dim=16, dim_mult=(1, 2, 4, 4), num_res_blocks=2,
                    temperal_downsample=(False, True, True)) -> AutoencoderKLWan:
    with init_empty_weights():
        return AutoencoderKLWan(base_dim=base_dim, z_dim=z_dim, dim_mult=list(dim_mult), num_res_blocks=num_res_blocks,
                                temperal_downsample=list(temperal_downsample), attn_scales=[],
                                latents_mean=LATENTS_MEAN, latents_std=LATENTS_STD)


def vae_key_map(official_keys: list[str]) -> dict[str, str]:
    converted = convert_wan_vae_to_diffusers({k: k for k in official_keys})
    return {ours: official for ours, official in converted.items()}


def infer_vae_config(checkpoint) -> dict:
    base_dim = checkpoint.shapes["encoder.conv1.weight"][0]
    z_dim = checkpoint.shapes["conv2.weight"][0]
    return dict(WAN21_VAE, base_dim=base_dim, z_dim=z_dim)


class WanVAE:
    """Encode videos to normalized latents and decode them back, in the dtype asked for."""

    def __init__(self, path: str | Path, *, dtype=torch.bfloat16, device="cpu", tiling: bool = False):
        checkpoint = read_checkpoint(path)
        self.model = build_vae_empty(**infer_vae_config(checkpoint))
        load_into(self.model, checkpoint, vae_key_map(checkpoint.keys()), dtype=dtype, device=device, label="Wan VAE")
        self.model.eval().requires_grad_(False)
        if tiling:
            self.model.enable_tiling()
        self.dtype = dtype
        self.mean = torch.tensor(LATENTS_MEAN, dtype=torch.float32).view(-1, 1, 1, 1)
        self.inv_std = 1.0 / torch.tensor(LATENTS_STD, dtype=torch.float32).view(-1, 1, 1, 1)

    @property
    def device(self):
        return next(self.model.parameters()).device

    @torch.no_grad()
    def encode(self, video: torch.Tensor) -> torch.Tensor:
        """[3, F, H, W] in [-1, 1] -> normalized latents [16, 1 + (F-1)/4, H/8, W/8] (float32)."""
        x = video[None].to(self.device, self.dtype)
        mu = self.model.encode(x).latent_dist.mode()[0].float().cpu()
        return (mu - self.mean) * self.inv_std

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Normalized latents [16, T, h, w] -> video [3, 1 + 4(T-1), 8h, 8w] clamped to [-1, 1] (float32)."""
        z = latents.float() / self.inv_std + self.mean
        video = self.model.decode(z[None].to(self.device, self.dtype), return_dict=False)[0][0]
        return video.cpu().float().clamp(-1, 1)  # to the CPU first: no float32 copy on the GPU

    def decode_stream(self, latents: torch.Tensor) -> Iterator[torch.Tensor]:
        """`decode`, one latent frame at a time: yields video chunks [3, n, 8h, 8w] (n = 1, then 4),
        clamped to [-1, 1] (float32), whose concatenation equals `decode(latents)`.

        The Wan decoder is causal and keeps a cache of the frames before, which is how diffusers'
        own decode walks the latents; walking them here lets a long video go to the MP4 writer as
        it is decoded instead of being held whole. With tiling on, tiles cannot stream in time: the
        whole video is decoded (and memory grows with length)."""
        m = self.model
        if m.use_tiling:
            yield self.decode(latents)
            return
        z = (latents.float() / self.inv_std + self.mean)[None].to(self.device, self.dtype)
        with torch.no_grad():
            m.clear_cache()
            try:
                x = m.post_quant_conv(z)
                for i in range(x.shape[2]):
                    m._conv_idx = [0]
                    out = m.decoder(x[:, :, i:i + 1], feat_cache=m._feat_map, feat_idx=m._conv_idx, first_chunk=i == 0)
                    yield out[0].cpu().float().clamp(-1, 1)
            finally:
                m.clear_cache()

    @torch.no_grad()
    def zero_latents(self, frames: int, height: int, width: int) -> torch.Tensor:
        """Latents of an all-zero video of `frames` latent frames, equal to `encode` of that video
        without ever holding it: the encoder walks the zero video a chunk at a time, as diffusers'
        encode does, and once a chunk leaves the encoder's causal cache exactly as it found it
        (bit for bit), every later chunk (zeros again, the same cache) gives the same output, so
        the rest is that output repeated. With tiling on, the whole video is encoded."""
        from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution

        m = self.model
        if m.use_tiling and (width > m.tile_sample_min_width or height > m.tile_sample_min_height):
            return self.encode(torch.zeros(3, 1 + STRIDE_T * (frames - 1), height, width))
        outs, before = [], None
        m.clear_cache()
        try:
            for i in range(frames):
                m._enc_conv_idx = [0]
                chunk = torch.zeros(1, 3, 1 if i == 0 else STRIDE_T, height, width, device=self.device, dtype=self.dtype)
                outs.append(m.encoder(chunk, feat_cache=m._enc_feat_map, feat_idx=m._enc_conv_idx))
                state = [c.clone() if torch.is_tensor(c) else c for c in m._enc_feat_map]
                if i > 0 and _same_cache(state, before):
                    outs.extend([outs[-1]] * (frames - 1 - i))
                    break
                before = state
            enc = m.quant_conv(torch.cat(outs, 2))
        finally:
            m.clear_cache()
        mu = DiagonalGaussianDistribution(enc).mode()[0].float().cpu()
        return (mu - self.mean) * self.inv_std


def _same_cache(a: list, b: list | None) -> bool:
    """Whether two snapshots of the encoder's causal cache are bit for bit the same."""
    if b is None or len(a) != len(b):
        return False
    return all(torch.equal(x, y) if torch.is_tensor(x) and torch.is_tensor(y) else
               (not torch.is_tensor(x) and not torch.is_tensor(y) and x == y) for x, y in zip(a, b))
