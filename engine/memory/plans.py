"""Plan names as data: `Plan`, `parse_plan` ('model-offload+fp8+text-nf4' -> Plan), `describe`, `plan_options`."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from engine.errors import InputError
from engine.humo.variants import Variant

GIB = 1024**3
COMPONENTS = ("text", "audio", "vae", "dit")
LABELS = {"text": "text encoder (umT5-XXL)", "audio": "audio encoder (whisper)", "vae": "VAE", "dit": "DiT"}
TEXT_MODES = ("gpu", "cpu", "int8", "nf4")
DEFAULT_TILE = 256


@dataclass(frozen=True)
class Plan:
    device: str = "cuda"            # "cuda" | "cpu"
    offload: str = "none"           # "none" | "model" | "block"
    fp8: bool = False
    text: str = "gpu"               # "gpu" (the plan's device) | "cpu" | "int8" | "nf4"
    vae_tile: int | None = None     # pixels; None = no tiling
    sequential: bool = False
    blocks_per_group: int = 1

    @property
    def name(self) -> str:
        base = {"none": "full", "model": "model-offload", "block": "block-offload"}[self.offload]
        mods = []
        if self.device == "cpu":
            if self.offload == "none":
                base = "cpu"
            else:
                mods.append("cpu")
        if self.fp8:
            if base == "full":
                base = "fp8"
            else:
                mods.append("fp8")
        if self.offload == "block" and self.blocks_per_group != 1:
            mods.append(f"blocks-{self.blocks_per_group}")
        if self.text != "gpu":
            mods.append(f"text-{self.text}")
        if self.vae_tile:
            mods.append("vae-tiling" if self.vae_tile == DEFAULT_TILE else f"vae-tiling-{self.vae_tile}")
        if self.sequential:
            mods.append("sequential")
        return "+".join([base] + mods)

    @property
    def compute_dtype(self) -> torch.dtype:
        return torch.bfloat16 if self.device == "cuda" else torch.float32

    @property
    def lossless(self) -> bool:
        return not self.fp8 and self.text not in ("int8", "nf4")

    def text_device(self) -> str:
        return "cpu" if self.text == "cpu" else self.device

    def __str__(self) -> str:
        return self.name


def parse_plan(text: str, device: str | None = None) -> Plan:
    """'model-offload+fp8+text-nf4' -> Plan. `device` ("cuda"/"cpu") overrides the GPU default."""
    tokens = [t.strip().lower() for t in str(text).replace(" ", "").split("+") if t.strip()]
    if not tokens or "auto" in tokens:
        raise InputError(f"Plan {text!r} is not a concrete plan ('auto' is resolved by choose_plan).")
    fields: dict = {"device": "cuda"}
    for tok in tokens:
        if tok in ("full", "gpu"):
            fields["offload"] = "none"
        elif tok == "cpu":
            fields["device"] = "cpu"
        elif tok == "model-offload":
            fields["offload"] = "model"
        elif tok == "block-offload":
            fields["offload"] = "block"
        elif tok == "fp8":
            fields["fp8"] = True
        elif tok.startswith("text-") and tok[5:] in TEXT_MODES:
            fields["text"] = tok[5:]
        elif tok == "vae-tiling":
            fields["vae_tile"] = DEFAULT_TILE
        elif tok.startswith("vae-tiling-") and tok[11:].isdigit() and int(tok[11:]) % 16 == 0 and int(tok[11:]) >= 32:
            fields["vae_tile"] = int(tok[11:])
        elif tok == "sequential":
            fields["sequential"] = True
        elif tok.startswith("blocks-") and tok[7:].isdigit() and int(tok[7:]) >= 1:
            fields["blocks_per_group"] = int(tok[7:])
        else:
            raise InputError(f"Unknown memory plan part {tok!r} in {text!r}; use e.g. full, fp8, model-offload, "
                             "block-offload, cpu, with +fp8, +text-cpu, +text-int8, +text-nf4, +vae-tiling, +sequential.")
    if device is not None:
        on_cpu = str(device).startswith("cpu")
        if fields["device"] == "cpu" and not on_cpu:
            raise InputError("The 'cpu' plan runs the whole model on the CPU (very slow), but this engine runs on "
                             "the GPU; pick a GPU plan such as block-offload, or start it with --device cpu.")
        fields["device"] = "cpu" if on_cpu else "cuda"
    return Plan(**fields)


def describe(plan: Plan | str) -> str:
    """One sentence a person can read: where each component runs and what it costs."""
    if not isinstance(plan, Plan) and str(plan).strip().lower() == "auto":
        return "auto: the fastest plan whose estimated peak fits the GPU's free memory (everything on the CPU without a GPU)."
    p = plan if isinstance(plan, Plan) else parse_plan(plan)
    dev = "GPU" if p.device == "cuda" else "CPU"
    parts = []
    if p.device == "cpu":
        parts.append("Everything on the CPU in float32" if p.offload == "none" else
                     f"CPU run ({p.offload} offload is a no-op there)")
    elif p.offload == "none":
        parts.append("All components stay on the GPU (fastest)")
    elif p.offload == "model":
        parts.append("Each component moves to the GPU only while it runs")
    else:
        n = p.blocks_per_group
        parts.append(f"DiT blocks stream from CPU memory ({n} block{'s' if n > 1 else ''} at a time); "
                     "the other components move to the GPU only while they run")
    parts.append("DiT weights stored in fp8 (small quality loss)" if p.fp8 else
                 f"DiT in {'bf16' if p.device == 'cuda' else 'float32'}")
    parts.append({"gpu": f"text encoder on the {dev}", "cpu": "text encoder on the CPU (slower prompts)",
                  "int8": "text encoder 8-bit (bitsandbytes)", "nf4": "text encoder 4-bit NF4 (bitsandbytes)"}[p.text])
    if p.vae_tile:
        parts.append(f"VAE in {p.vae_tile}px tiles")
    if p.sequential:
        parts.append("guidance passes one at a time")
    return f"{p.name}: " + "; ".join(parts) + "."


def plan_options(variant: Variant | str | None = None, device: str | None = None) -> list[str]:
    """Plans worth offering in a picker, fastest first ('auto' leads); no 'cpu' on a GPU engine."""
    options = ["auto", "full", "fp8", "model-offload", "model-offload+fp8", "model-offload+text-int8",
               "model-offload+text-nf4", "model-offload+fp8+text-nf4+vae-tiling", "model-offload+text-cpu",
               "block-offload", "block-offload+sequential+vae-tiling", "block-offload+fp8+text-nf4+sequential+vae-tiling",
               "cpu"]
    if device is not None and not str(device).startswith("cpu"):
        options.remove("cpu")
    return options
