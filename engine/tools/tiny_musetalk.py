"""Tiny MuseTalk 1.5 weights: random values at tiny sizes, written in the released folder layout.

`<weights>/musetalk-1.5/` gets the files the official download lays out under `models/`
(musetalkV15/, sd-vae/, whisper/, face-parse-bisent/), so the real loaders read them. The
shapes the pipeline depends on stay real (8 latent channels in, 4 out, 384-wide audio tokens,
five whisper hidden states, 19 parsing classes); widths and depths are small. DWPose is left
out: without it the face track uses OpenCV's Haar cascade, as on any machine without it.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from engine.weights.components import MUSETALK_DIR

TINY_UNET = {
    "_class_name": "UNet2DConditionModel", "_diffusers_version": "0.6.0.dev0", "act_fn": "silu",
    "attention_head_dim": 8, "block_out_channels": [16, 32, 32, 32], "center_input_sample": False,
    "cross_attention_dim": 384,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "downsample_padding": 1, "flip_sin_to_cos": True, "freq_shift": 0, "in_channels": 8, "layers_per_block": 1,
    "mid_block_scale_factor": 1, "norm_eps": 1e-05, "norm_num_groups": 8, "out_channels": 4, "sample_size": 64,
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
}
TINY_VAE = {
    "_class_name": "AutoencoderKL", "_diffusers_version": "0.4.2", "act_fn": "silu",
    "block_out_channels": [16, 16, 32, 32], "down_block_types": ["DownEncoderBlock2D"] * 4, "in_channels": 3,
    "latent_channels": 4, "layers_per_block": 1, "norm_num_groups": 8, "out_channels": 3, "sample_size": 256,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
}
TINY_WHISPER = dict(d_model=384, encoder_layers=4, encoder_attention_heads=6, encoder_ffn_dim=96, decoder_layers=0,
                    decoder_attention_heads=6, decoder_ffn_dim=32, num_mel_bins=80, vocab_size=16,
                    max_source_positions=1500, max_target_positions=8, pad_token_id=1, bos_token_id=2,
                    eos_token_id=3, decoder_start_token_id=2, begin_suppress_tokens=None, suppress_tokens=None)
# sd-vae-ft-mse's file keeps the mid-block attention names from before diffusers renamed them.
_OLD_ATTENTION = {".to_q.": ".query.", ".to_k.": ".key.", ".to_v.": ".value.", ".to_out.0.": ".proj_attn."}


def _config(data: dict) -> dict:
    return {k: v for k, v in data.items() if not k.startswith("_")}


def _write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2))


def _write_unet(folder: Path) -> None:
    from diffusers import UNet2DConditionModel

    model = UNet2DConditionModel.from_config(_config(TINY_UNET))
    _write_json(folder / "musetalk.json", TINY_UNET)
    torch.save({k: v.contiguous() for k, v in model.state_dict().items()}, folder / "unet.pth")


def _write_vae(folder: Path) -> None:
    from diffusers import AutoencoderKL

    model = AutoencoderKL.from_config(_config(TINY_VAE))
    state = {}
    for name, value in model.state_dict().items():
        if ".attentions." in name:
            for new, old in _OLD_ATTENTION.items():
                name = name.replace(new, old)
        state[name] = value.contiguous()
    _write_json(folder / "config.json", TINY_VAE)
    torch.save(state, folder / "diffusion_pytorch_model.bin")


def _write_whisper(folder: Path) -> None:
    from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperForConditionalGeneration

    config = WhisperConfig(**TINY_WHISPER)
    model = WhisperForConditionalGeneration(config)
    folder.mkdir(parents=True, exist_ok=True)
    config.save_pretrained(str(folder))
    torch.save({k: v.contiguous() for k, v in model.state_dict().items()}, folder / "pytorch_model.bin")
    WhisperFeatureExtractor(feature_size=80).save_pretrained(str(folder))


def _write_face_parsing(folder: Path) -> None:
    from engine.dub.face.parsing import BiSeNet

    model = BiSeNet()
    with torch.no_grad():
        # Random scores would make the paste mask empty or arbitrary; lean the classifier
        # towards skin (class 1) and the upper lip (12) so the tiny model pastes a lower face.
        head = model.conv_out.conv_out.weight
        head.normal_(0.0, 0.01)
        head[1] += 0.05
        head[12, : head.shape[1] // 4] += 0.08
    state = _pooled({k: v.contiguous() for k, v in model.state_dict().items()})
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(state, folder / "79999_iter.pth")
    # torchvision's resnet18 layout (the 2017 file: no num_batches_tracked); the loader never reads
    # its values (79999_iter.pth overwrites them), so the backbone's are reused and a random fc added.
    prefix = "cp.resnet."
    backbone = {k[len(prefix):]: v for k, v in state.items()
                if k.startswith(prefix) and not k.endswith("num_batches_tracked")}
    backbone["fc.weight"] = torch.randn(1000, 512) * 0.01
    backbone["fc.bias"] = torch.zeros(1000)
    torch.save(_pooled(backbone), folder / "resnet18-5c106cde.pth")


def _pooled(state: dict, pool_size: int = 2**18, large: int = 20_000) -> dict:
    """Large weights as overlapping strided views into one random pool, so the file stays small.

    `torch.save` writes the shared pool once; loading copies each view into its own tensor.
    """
    pool = torch.randn(pool_size) * 0.02
    out = {}
    for name, value in state.items():
        if value.is_floating_point() and value.numel() > large:
            strides = [1] * value.dim()
            for d in range(value.dim() - 2, -1, -1):      # small co-prime steps: no two rows alike
                strides[d] = strides[d + 1] * min(value.shape[d + 1], 7) + 2 * d + 3
            assert sum((n - 1) * st for n, st in zip(value.shape, strides)) < pool_size
            out[name] = pool.as_strided(tuple(value.shape), tuple(strides))
        else:
            out[name] = value
    return out


def make_tiny_musetalk(weights_dir: str | Path, seed: int = 0) -> Path:
    """Write tiny MuseTalk 1.5 weights under `<weights_dir>/musetalk-1.5/`; return that folder."""
    root = Path(weights_dir) / MUSETALK_DIR
    torch.manual_seed(seed)
    _write_unet(root / "musetalkV15")
    _write_vae(root / "sd-vae")
    _write_whisper(root / "whisper")
    _write_face_parsing(root / "face-parse-bisent")
    (root / "README.txt").write_text(
        "Tiny MuseTalk 1.5: RANDOM weights at tiny sizes, for checking the dubbing pipeline end to end.\n"
        "Its mouths are noise, not lip sync. Made by: python -m engine make-tiny DIR --model musetalk-1.5\n")
    return root
