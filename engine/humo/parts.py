"""HuMo's four parts as one table: how each is loaded from the located weight files and made
ready under the engine's memory plan.

The memory plan (engine.memory) says where a part loads and how it is prepared; each entry
here applies it to its own part. The pipeline walks the table and never picks a loader by
name.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable


def _load_text(engine, paths: dict, dtype, device):
    from engine import memory
    from engine.humo.text import TextEncoder

    part = TextEncoder(paths["t5_file"], paths["tokenizer_dir"], dtype=dtype, device=device)
    return memory.prepare(engine.plan, "text", part, engine.device, engine.dtype)


def _load_audio(engine, paths: dict, dtype, device):
    from engine import memory
    from engine.humo.audio import WhisperAudioEncoder

    part = WhisperAudioEncoder(paths["whisper_dir"], dtype=dtype, device=device)
    return memory.prepare(engine.plan, "audio", part, engine.device, engine.dtype)


def _load_vae(engine, paths: dict, dtype, device):
    from engine import memory
    from engine.humo.vae import WanVAE

    part = WanVAE(paths["vae_file"], dtype=dtype, device=device)
    return memory.prepare(engine.plan, "vae", part, engine.device, engine.dtype)


def _load_dit(engine, paths: dict, dtype, device):
    """The DiT, with the engine's attention backend, its sequence split (a torchrun run with
    sequence ranks), its memory plan and (optionally) compiled blocks."""
    from engine import memory
    from engine.attention import apply_backend, available_backends, choose_backend
    from engine.humo.dit_loader import load_dit

    model = load_dit(engine.variant.dit, paths["dit_files"][0], dtype=dtype, device=device)
    engine.attention_backend = apply_backend(model, choose_backend(engine.attention, engine.device, dtype))
    if engine.parallel is not None:     # sequence ranks share each pass's tokens (engine.parallel.sequence)
        other = engine.parallel.split_model(model, engine.attention_backend, available_backends(engine.device))
        if other is not None:
            engine.attention_backend = apply_backend(model, other)
    model = memory.prepare(engine.plan, "dit", model, engine.device, dtype)
    engine.compile_backend = None
    if engine.compile:
        from engine.compile import compile_dit, default_backend

        engine.compile_backend = default_backend(engine.device)
        compile_dit(model, backend=engine.compile_backend)
    return model


@dataclass(frozen=True)
class Part:
    name: str                                         # its key in memory plans and in `Engine.parts`
    load: Callable[[object, dict, object, str], object]   # (engine, located paths, dtype, device) -> part


PARTS = (Part("dit", _load_dit), Part("vae", _load_vae), Part("text", _load_text), Part("audio", _load_audio))
