"""Optional `torch.compile` of the DiT: regional compilation of the repeated blocks.

All blocks share one forward, so one compiled graph serves every block; it is compiled once
per input shape (batch of passes, latent size, text/audio length) on the first call and reused
for every later step. Compiling the blocks rather than the whole model keeps the compile time
short and leaves the cheap per-call code (embeddings, audio projection) eager.
"""
from __future__ import annotations

import torch

RECOMPILE_LIMIT = 32   # distinct shapes kept per compiled block (sizes × pass batches)


def compile_dit(model, *, backend: str = "inductor", mode: str | None = None, fullgraph: bool = False):
    """Compile every `HuMoTransformerBlock` of `model` in place; returns `model`.

    `dynamic=False`: one specialised graph per shape, never a slower shape-generic one.
    """
    if getattr(model, "_humo_compiled", None):
        return model
    import torch._dynamo

    cfg = torch._dynamo.config
    for name in ("recompile_limit", "cache_size_limit"):
        if hasattr(cfg, name):
            setattr(cfg, name, max(getattr(cfg, name), RECOMPILE_LIMIT))
    options = dict(backend=backend, fullgraph=fullgraph, dynamic=False)
    if mode is not None:
        options["mode"] = mode
    if hasattr(model, "compile_repeated_blocks"):
        model.compile_repeated_blocks(**options)
    else:
        for block in model.blocks:
            block.compile(**options)
    model._humo_compiled = backend
    return model


def is_compiled(model) -> bool:
    return bool(getattr(model, "_humo_compiled", None))


def default_backend(device) -> str:
    """inductor everywhere it can build kernels (CUDA, or CPU with a C++ compiler)."""
    import shutil

    if str(device).startswith("cuda") or shutil.which("g++") or shutil.which("c++"):
        return "inductor"
    return "aot_eager"


def reset_compiled() -> None:
    """Forget every compiled graph (tests, or after changing the attention backend)."""
    torch._dynamo.reset()
