"""Audio conditions (SPEC §3): whisper-large-v3 hidden states -> per-frame features -> windows.

The encoder is loaded alone from a transformers-format folder (config.json,
preprocessor_config.json, model.safetensors): the decoder half of whisper is never read.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from engine.errors import WeightsError
from engine.weights.loading import load_into, read_checkpoint

SAMPLE_RATE = 16000
FPS = 25
SAMPLES_PER_FRAME = SAMPLE_RATE // FPS          # 640
SLICE_SAMPLES = 30 * SAMPLE_RATE                # whisper's 30 s window
MEL_FRAMES = 3000
WINDOW = 8                                      # per-frame features per latent window
GROUPS = ((0, 8), (8, 16), (16, 24), (24, 32), (32, 33))


def frames_for_samples(samples: int) -> int:
    """Video frames the clip covers at 25 fps."""
    return samples // SAMPLES_PER_FRAME


def group_hidden_states(hidden: torch.Tensor) -> torch.Tensor:
    """[1, T50, 33, C] (embeddings + 32 layers, 50 Hz) -> [T25, 5, C] at 25 fps."""
    h = hidden[0]
    groups = torch.stack([h[:, a:b].mean(dim=1) for a, b in GROUPS], dim=1)  # [T50, 5, C]
    t50 = groups.shape[0]
    flat = groups.permute(1, 2, 0).reshape(1, -1, t50)                        # [1, 5*C, T50]
    out = F.interpolate(flat, size=t50 // 2, mode="linear", align_corners=True)
    return out.reshape(groups.shape[1], groups.shape[2], -1).permute(2, 0, 1).contiguous()


def latent_windows(features: torch.Tensor, frames: int) -> torch.Tensor:
    """Per-frame features [T, 5, C] -> per-latent-frame windows [1 + (frames-1)//4, 8, 5, C].

    Latent frame 0 sees 3 zero rows then frames −2…2; latent frame k ≥ 1 sees frames 4k−5 … 4k+2.
    Rows outside the feature array are zeros (features past `frames` are still used, as officially).
    """
    latent_frames = 1 + (frames - 1) // 4
    n, groups, channels = features.shape
    padded = torch.cat([features.new_zeros(8, groups, channels), features,
                        features.new_zeros(4 * latent_frames + 8, groups, channels)])
    offset = 8  # padded[i + offset] == frame i
    starts = [-5 if k == 0 else 4 * k - 5 for k in range(latent_frames)]
    windows = []
    for k, s in enumerate(starts):
        rows = padded[s + offset: s + offset + WINDOW]
        if k == 0:  # 3 zero rows, then frames −2..2
            rows = torch.cat([features.new_zeros(3, groups, channels), padded[offset - 2: offset + 3]])
        windows.append(rows)
    return torch.stack(windows)


class WhisperAudioEncoder:
    """whisper feature extractor (128 mel bins) + encoder returning all hidden states."""

    def __init__(self, folder: str | Path, *, dtype=torch.float32, device="cpu"):
        from accelerate import init_empty_weights
        from transformers import WhisperConfig, WhisperFeatureExtractor
        from transformers.models.whisper.modeling_whisper import WhisperEncoder

        folder = Path(folder)
        if not (folder / "config.json").is_file():
            raise WeightsError(f"Whisper folder {folder} is missing config.json.",
                               hint="Fetch it with: python -m engine download --variant ...")
        config = WhisperConfig.from_pretrained(str(folder))
        self.extractor = WhisperFeatureExtractor.from_pretrained(str(folder)) if (folder / "preprocessor_config.json").is_file() \
            else WhisperFeatureExtractor(feature_size=config.num_mel_bins)
        files = sorted(folder.glob("model*.safetensors.index.json")) or sorted(folder.glob("model*.safetensors"))
        if not files:
            raise WeightsError(f"No model.safetensors in {folder}.", hint="Fetch it with: python -m engine download --variant ...")
        checkpoint = read_checkpoint(files[0])
        with init_empty_weights():
            self.model = WhisperEncoder(config)
        prefix = next((p for p in ("model.encoder.", "encoder.") if any(k.startswith(p) for k in checkpoint.keys())), None)
        if prefix is None:
            raise WeightsError(f"{files[0]} holds no whisper encoder weights.", hint="Re-download whisper-large-v3.")
        names = {n: prefix + n for n in self.model.state_dict()}
        load_into(self.model, checkpoint, names, dtype=dtype, device=device, label="whisper encoder",
                  ignore=lambda key: ".decoder." in key or key.startswith(("decoder.", "proj_out")))
        self.model.eval().requires_grad_(False)
        self.dtype = dtype

    @property
    def device(self):
        return next(self.model.parameters()).device

    @torch.no_grad()
    def hidden_states(self, wave: np.ndarray) -> torch.Tensor:
        """16 kHz mono -> [1, T50, 33, C]: 30 s slices, 3000 mel frames each, encoder states stacked."""
        outs = []
        for start in range(0, max(len(wave), 1), SLICE_SAMPLES):
            piece = wave[start: start + SLICE_SAMPLES]
            feats = self.extractor(piece, sampling_rate=SAMPLE_RATE, return_tensors="pt").input_features
            feats = feats[..., :MEL_FRAMES]
            if feats.shape[-1] < MEL_FRAMES:
                feats = F.pad(feats, (0, MEL_FRAMES - feats.shape[-1]))
            res = self.model(feats.to(self.device, self.dtype), output_hidden_states=True)
            outs.append(torch.stack(res.hidden_states, dim=2).float().cpu())  # [1, 1500, 33, C]
        hidden = torch.cat(outs, dim=1)
        return hidden[:, : 2 * frames_for_samples(len(wave))]

    def features(self, wave: np.ndarray) -> torch.Tensor:
        """16 kHz mono -> per-frame features [T25, 5, C]."""
        return group_hidden_states(self.hidden_states(wave))
