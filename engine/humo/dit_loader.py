"""Build the HuMo DiT on empty weights and load an official-layout checkpoint into it."""
from __future__ import annotations

import re
from pathlib import Path

import torch
from accelerate import init_empty_weights

from engine.humo.convert import key_map
from engine.humo.dit import HuMoTransformer3DModel, dit_from_shape
from engine.weights.loading import load_into, read_checkpoint


def _fp32_matcher(model: HuMoTransformer3DModel):
    patterns = [re.compile(rf"(^|\.){re.escape(p)}(\.|$)") for p in model._keep_in_fp32_modules]
    return lambda name: any(p.search(name) for p in patterns)


def build_dit_empty(shape) -> HuMoTransformer3DModel:
    """The DiT with parameters on the meta device (buffers such as RoPE stay real)."""
    with init_empty_weights():
        return dit_from_shape(shape)


def load_dit(shape, path: str | Path, *, dtype: torch.dtype = torch.bfloat16, device="cpu") -> HuMoTransformer3DModel:
    checkpoint = read_checkpoint(path)
    model = build_dit_empty(shape)
    load_into(model, checkpoint, key_map(checkpoint.keys()), dtype=dtype, keep_fp32=_fp32_matcher(model),
              device=device, label="HuMo DiT")
    model.rope.to(device)
    return model.eval().requires_grad_(False)
