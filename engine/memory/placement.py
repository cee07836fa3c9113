"""Placement: a plan applied by the engine while loading and around each stage (where each
component's weights load, how they are prepared, and when they move to the GPU and back)."""
from __future__ import annotations

import contextlib

import torch

from engine.memory.plans import Plan
from engine.memory.storage import _is_bnb, enable_fp8, move_module, quantize_linears, tie_text_embeddings


def load_device(plan: Plan, name: str, device: str) -> str:
    """Where a component's weights are first loaded: the GPU only for the full plan; otherwise the
    CPU (offloaded parts start there; fp8 casting and the umT5 embedding tie happen in CPU memory
    so no bf16 copy ever crowds the GPU)."""
    if plan.device == "cpu" or str(device).startswith("cpu"):
        return "cpu"
    if name == "text" or plan.offload != "none" or (name == "dit" and plan.fp8):
        return "cpu"
    return device


def load_dtype(plan: Plan, name: str, dtype: torch.dtype) -> torch.dtype:
    if name == "text" and plan.text == "cpu" and plan.device == "cuda":
        return torch.bfloat16
    if name == "audio" and plan.device == "cpu":
        return torch.float32
    return dtype


def prepare(plan: Plan, name: str, part, device: str, dtype: torch.dtype):
    """Apply the plan to a freshly loaded component (the DiT module, or the TextEncoder / WanVAE /
    WhisperAudioEncoder wrappers) and put it where it waits between stages."""
    on_gpu = plan.device == "cuda" and not str(device).startswith("cpu")
    resident = on_gpu and plan.offload == "none"
    if name == "dit":
        if plan.fp8:
            enable_fp8(part, dtype)
        if plan.offload == "block":
            part.enable_group_offload(**group_offload_options(plan, device))
        elif resident:
            part.to(device)
        return part
    if name == "text":
        tie_text_embeddings(part.model)
        if plan.text in ("int8", "nf4"):
            # Quantize where it will run (bitsandbytes is fastest on the GPU), then park it if offloaded.
            quantize_linears(part.model, plan.text, dtype, device if on_gpu else "cpu")
            move_module(part.model, device if resident else "cpu")
            return part
        if plan.text == "cpu":
            return part
    if name == "vae" and plan.vae_tile:
        t = plan.vae_tile
        part.model.enable_tiling(t, t, t * 3 // 4, t * 3 // 4)
    if resident:
        move_module(_module(part), device)
    return part


def group_offload_options(plan: Plan, device: str) -> dict:
    """Arguments of diffusers' `enable_group_offload` for the block-offload plan.

    On a GPU the next group is copied on a side CUDA stream from pinned CPU memory while the
    current one computes (`use_stream`; diffusers pins every offloaded weight once, up front, and
    copies non-blocking). `record_stream` lets the allocator free an onloaded group once the compute
    stream is done with it; without it diffusers blocks the host on the compute stream after every
    group, so the CPU can no longer queue work ahead of the GPU.
    """
    on_gpu = plan.device == "cuda" and not str(device).startswith("cpu")
    return dict(onload_device=torch.device(device), offload_device=torch.device("cpu"), offload_type="block_level",
                num_blocks_per_group=plan.blocks_per_group, use_stream=on_gpu, record_stream=on_gpu,
                low_cpu_mem_usage=False)


def _module(part) -> torch.nn.Module:
    return part if isinstance(part, torch.nn.Module) else part.model


class _Swap:
    """Move a module to the GPU and back without copying its weights back: the CPU tensors are kept
    and put back (the weights never change while it runs). Quantized (bitsandbytes) modules are
    moved both ways instead, since their quantization states live outside the parameters."""

    def __init__(self, module: torch.nn.Module):
        self.module = module
        self.saved: list = []
        self.quantized = any(_is_bnb(m) for m in module.modules())

    def up(self, device) -> None:
        if self.quantized:
            move_module(self.module, device)
            return
        self.saved = []
        for m in self.module.modules():
            for kind in ("_parameters", "_buffers"):
                for key, t in getattr(m, kind).items():
                    if t is not None:
                        self.saved.append((m, kind, key, t.data if kind == "_parameters" else t))
        self.module.to(device)

    def down(self) -> None:
        if self.quantized:
            move_module(self.module, "cpu")
            return
        for m, kind, key, t in self.saved:
            if kind == "_parameters":
                m._parameters[key].data = t
            else:
                m._buffers[key] = t
        self.saved = []


def moves_per_stage(plan: Plan, name: str) -> bool:
    """Does this component go to the compute device for its stage and leave afterwards?"""
    if plan.offload == "none" or (name == "text" and plan.text == "cpu"):
        return False
    return not (name == "dit" and plan.offload == "block")


@contextlib.contextmanager
def on_device(plan: Plan, name: str, part, device: str):
    """Model offload: the component is on `device` for the body of the `with`, then back in CPU
    memory. (On a CPU run the moves are no-ops but the same code runs.)"""
    if part is None or not moves_per_stage(plan, name):
        yield part
        return
    swap = _Swap(_module(part))
    swap.up(device)
    try:
        yield part
    finally:
        swap.down()
        if torch.cuda.is_available() and not str(device).startswith("cpu"):
            torch.cuda.empty_cache()


class Placement:
    """The engine's side of a plan during a run: `stage(name, part)` brings the component that is
    about to run onto the device and sends the previous one back; `release()` clears the device."""

    def __init__(self, plan: Plan, device: str):
        self.plan = plan
        self.device = device
        self.current: tuple[str, _Swap] | None = None

    def stage(self, name: str, part) -> None:
        if self.current is not None and self.current[0] == name:
            return
        self.release()
        if part is not None and moves_per_stage(self.plan, name):
            swap = _Swap(_module(part))
            swap.up(self.device)
            self.current = (name, swap)

    def release(self) -> None:
        if self.current is None:
            return
        _, swap = self.current
        self.current = None
        swap.down()
        if torch.cuda.is_available() and not str(self.device).startswith("cpu"):
            torch.cuda.empty_cache()


def text_needed(text_encoder, prompts) -> bool:
    """False when every prompt is already in the text encoder's cache (then it need not move)."""
    from engine.humo.text import clean_prompt

    cache = getattr(text_encoder, "cache", None)
    return cache is None or any(clean_prompt(p) not in cache for p in prompts)


def job_free_bytes() -> int:
    """Free GPU memory as a plan sees it: what the driver reports free plus what this process's
    allocator already holds (our own loaded parts are replaced when the plan changes)."""
    free, _ = torch.cuda.mem_get_info()
    return int(free) + int(torch.cuda.memory_reserved())
