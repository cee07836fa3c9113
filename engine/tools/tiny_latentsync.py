"""Tiny LatentSync 1.6 weights: random values at tiny sizes, in the released file layout.

`<weights>/latentsync-1.6/` gets `latentsync_unet.pt` ({"state_dict": ...}), `whisper/tiny.pt`
(openai format: dims + model_state_dict, float16; the encoder only, as nothing
reads the decoder) and `sd-vae/` (diffusers layout), read by the
real loaders. The tiny UNet's settings go to `unet_config.json` (the released UNet's settings ship
with the code). What the pipeline depends on stays real: 13 input channels, 4 out, 384-wide audio
tokens from 5 whisper states, 16-frame temporal attention; widths, depths and the face resolution
(256 instead of 512) are small.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from engine.dub.latentsync.model import TINY_CONFIG, UNET_FILE, VAE_DIR, WHISPER_FILE
from engine.weights.components import LATENTSYNC_DIR


def _tiny_unet_config() -> dict:
    from engine.dub.latentsync.unet3d import unet_config

    config = unet_config()
    config.update(block_out_channels=[32, 32, 32, 32], layers_per_block=1, sample_size=32)
    return config


TINY_VAE = {
    "_class_name": "AutoencoderKL", "act_fn": "silu", "block_out_channels": [16, 16, 32, 32],
    "down_block_types": ["DownEncoderBlock2D"] * 4, "in_channels": 3, "latent_channels": 4, "layers_per_block": 1,
    "norm_num_groups": 8, "out_channels": 3, "sample_size": 256, "up_block_types": ["UpDecoderBlock2D"] * 4,
}
TINY_WHISPER_DIMS = {"n_mels": 80, "n_audio_ctx": 1500, "n_audio_state": 384, "n_audio_head": 6, "n_audio_layer": 4,
                     "n_vocab": 64, "n_text_ctx": 8, "n_text_state": 64, "n_text_head": 2, "n_text_layer": 1}


def _write_unet(folder: Path) -> None:
    from engine.dub.latentsync.unet3d import LatentSyncUNet3D

    config = _tiny_unet_config()
    model = LatentSyncUNet3D(config)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() > 1 and p.abs().max() == 0:      # zero-initialised projections: give them values
                p.normal_(0.0, 0.02)
    (folder / TINY_CONFIG).write_text(json.dumps({"_note": "tiny random-weight model", **config}, indent=2))
    torch.save({"state_dict": {k: v.contiguous() for k, v in model.state_dict().items()}}, folder / UNET_FILE)


def _write_whisper(path: Path) -> None:
    from transformers import WhisperConfig
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    from engine.dub.latentsync.audio import _openai_key

    d = TINY_WHISPER_DIMS
    config = WhisperConfig(num_mel_bins=d["n_mels"], max_source_positions=d["n_audio_ctx"], d_model=d["n_audio_state"],
                           encoder_attention_heads=d["n_audio_head"], encoder_layers=d["n_audio_layer"],
                           encoder_ffn_dim=4 * d["n_audio_state"])
    encoder = WhisperEncoder(config)
    state = {_openai_key(k): v.half().contiguous() for k, v in encoder.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"dims": dict(d), "model_state_dict": state}, path)


def _write_vae(folder: Path) -> None:
    from diffusers import AutoencoderKL

    model = AutoencoderKL.from_config({k: v for k, v in TINY_VAE.items() if not k.startswith("_")})
    model.save_pretrained(str(folder), safe_serialization=True)


def make_tiny_latentsync(root: str | Path, seed: int = 0) -> Path:
    """Write tiny LatentSync 1.6 weights under `root/latentsync-1.6/`; returns that folder."""
    torch.manual_seed(seed)
    folder = Path(root) / LATENTSYNC_DIR
    folder.mkdir(parents=True, exist_ok=True)
    _write_unet(folder)
    _write_whisper(folder / WHISPER_FILE)
    _write_vae(folder / VAE_DIR)
    (folder / "README.txt").write_text("Tiny LatentSync 1.6 with RANDOM weights, written by "
                                       "`python -m engine make-tiny --model latentsync-1.6`: a pipeline check, "
                                       "not a real model.\n")
    return folder
