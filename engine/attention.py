"""Attention backends: which ones work here, and which one to use.

The names are diffusers' attention dispatcher names (`AttentionBackendName`). Every backend
computes the same softmax attention; they differ in speed and in rounding:
  native        PyTorch SDPA (picks flash / memory-efficient / cuDNN kernels itself on GPUs)
  _flash_3      FlashAttention 3 (Hopper: H100/H200), fp16/bf16 only
  flash         FlashAttention 2, fp16/bf16 only
  sage          SageAttention (8-bit Q·K, fp16 P·V): fastest, slightly less exact
  _native_math  PyTorch's reference implementation (slow; for checks)
FlashAttention and SageAttention are optional extras (requirements-gpu.txt); SDPA is always there.
"""
from __future__ import annotations

from engine.errors import InputError

# Automatic choice on a GPU, best first. SDPA is the fallback everywhere.
AUTO_ORDER = ("_flash_3", "flash", "sage")

ALIASES = {
    "auto": "auto", "sdpa": "native", "torch": "native", "native": "native",
    "fa3": "_flash_3", "flash3": "_flash_3", "flash_3": "_flash_3", "flash-attn-3": "_flash_3",
    "fa2": "flash", "flash2": "flash", "flash-attn": "flash", "flash_attn": "flash",
    "sageattention": "sage", "sage-attention": "sage", "math": "_native_math",
}

# What each backend needs beyond PyTorch, for messages.
NEEDS = {
    "_flash_3": "FlashAttention 3 (build the 'hopper' package from the flash-attention repository)",
    "flash": "the flash-attn package (pip install flash-attn; needs CUDA)",
    "sage": "the sageattention package (pip install sageattention; needs CUDA)",
    "xformers": "the xformers package",
    "_native_flash": "a CUDA GPU",
    "_native_efficient": "a CUDA GPU",
    "_native_cudnn": "a CUDA GPU",
}
GPU_ONLY = {"_flash_3", "flash", "sage", "xformers", "_native_flash", "_native_efficient", "_native_cudnn"}
HALF_ONLY = {"_flash_3", "flash", "sage"}        # kernels that take fp16/bf16 inputs only
APPROXIMATE = {"sage"}                            # quantized: not bit-for-bit softmax attention


def _dispatch_flags() -> dict[str, bool]:
    """What the installed diffusers found importable (its own checks, read once)."""
    from diffusers.models import attention_dispatch as ad

    return {
        "_flash_3": bool(getattr(ad, "_CAN_USE_FLASH_ATTN_3", False)),
        "flash": bool(getattr(ad, "_CAN_USE_FLASH_ATTN", False)),
        "sage": bool(getattr(ad, "_CAN_USE_SAGE_ATTN", False)),
        "xformers": bool(getattr(ad, "_CAN_USE_XFORMERS_ATTN", False)),
    }


def _is_cuda(device) -> bool:
    import torch

    if device is None:
        return torch.cuda.is_available()
    return str(device).startswith("cuda")


def available_backends(device=None) -> list[str]:
    """Backend names that run on `device` (default: the GPU when there is one, else the CPU)."""
    names = ["native", "_native_math"]
    if _is_cuda(device):
        import torch

        if torch.cuda.is_available():
            names += ["_native_flash", "_native_efficient", "_native_cudnn"]
            flags = _dispatch_flags()
            names += [n for n in ("_flash_3", "flash", "sage", "xformers") if flags[n]]
    return names


def normalize(name: str) -> str:
    key = str(name).strip().lower()
    return ALIASES.get(key, key)


def choose_backend(preferred: str | None = None, device=None, dtype=None) -> str:
    """The backend to use: `preferred` when it can run here, else the fastest available.

    `preferred` None or "auto" picks FlashAttention 3, FlashAttention 2, SageAttention (in that
    order, when installed, on a GPU, in fp16/bf16), else PyTorch SDPA. A named backend that
    cannot run here is an `InputError` saying what it needs.
    """
    import torch

    half = dtype in (torch.float16, torch.bfloat16) if dtype is not None else _is_cuda(device)
    available = available_backends(device)
    name = normalize(preferred) if preferred else "auto"
    if name == "auto":
        if _is_cuda(device) and half:
            for candidate in AUTO_ORDER:
                if candidate in available:
                    return candidate
        return "native"
    from diffusers.models.attention_dispatch import AttentionBackendName

    known = {b.value for b in AttentionBackendName}
    if name not in known:
        raise InputError(f"Unknown attention backend {preferred!r}; choose auto or one of: {', '.join(available)}.")
    if name not in available:
        need = NEEDS.get(name, "a package or device this machine lacks")
        raise InputError(f"Attention backend {name!r} cannot run here: it needs {need}. "
                         f"Available: {', '.join(available)}.")
    if name in HALF_ONLY and not half:
        raise InputError(f"Attention backend {name!r} needs fp16/bf16 weights; use native in float32.")
    return name


def apply_backend(model, backend: str) -> str:
    """Route every attention of the HuMo DiT (self, text, audio) through `backend`."""
    model.set_attention_backend_all(None if backend == "native" else backend)
    return backend


def describe(backend: str) -> str:
    note = " (approximate: 8-bit Q·K)" if backend in APPROXIMATE else ""
    return f"{backend}{note}"
