"""`make-tiny --model musetalk-1.5` writes the released layouts: the same files, key names and shapes
as the official-layout checkpoints in golden/musetalk/models (values are our own random ones)."""
from __future__ import annotations

import json

import torch

from engine.dub.musetalk import MuseTalk
from engine.dub.face.parsing import FaceParser


def _keys(path):
    state = torch.load(path, map_location="cpu", weights_only=True)
    return {k: tuple(v.shape) for k, v in state.items()}


def test_tiny_files_have_the_released_layout(musetalk_weights, golden_dir):
    ours, ref = musetalk_weights / "musetalk-1.5", golden_dir / "musetalk" / "models"
    for rel in ("musetalkV15/unet.pth", "sd-vae/diffusion_pytorch_model.bin", "whisper/pytorch_model.bin",
                "face-parse-bisent/79999_iter.pth", "face-parse-bisent/resnet18-5c106cde.pth"):
        assert _keys(ours / rel) == _keys(ref / rel), rel
    for rel in ("musetalkV15/musetalk.json", "sd-vae/config.json"):
        assert json.loads((ours / rel).read_text()) == json.loads((ref / rel).read_text()), rel
    assert not torch.equal(torch.load(ours / "musetalkV15/unet.pth")["conv_in.weight"],
                           torch.load(ref / "musetalkV15/unet.pth")["conv_in.weight"])       # our own values


def test_tiny_weights_load_through_the_real_loaders(musetalk_weights):
    folder = musetalk_weights / "musetalk-1.5"
    model = MuseTalk.load(folder)
    assert model.unet.config.in_channels == 8 and model.unet.config.cross_attention_dim == 384
    parser = FaceParser.load(folder)
    assert parser.parse(torch.zeros(64, 64, 3, dtype=torch.uint8).numpy()).shape == (512, 512)
