"""The estimate: what a plan needs for a job, component by component (weights + activations),
and the GPU peak."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from engine.memory.activations import (Job, audio_activation_bytes, dit_activation_bytes, latents_bytes,
                                       passes_per_step, text_activation_bytes, vae_activation_bytes)
from engine.memory.counts import _dtype_bytes, _items, component_configs, dit_counts, text_counts, weight_bytes
from engine.memory.plans import COMPONENTS, GIB, Plan, describe, parse_plan
from engine.memory.speed import overhead_seconds
from engine.humo.variants import Variant, get_variant


@dataclass
class PartEstimate:
    name: str
    where: str                      # where the weights live while it runs: "gpu" | "cpu" | "gpu (streamed)"
    weights: int                    # bytes of its weights as stored
    resident: int                   # bytes of its weights on the GPU while it runs
    activations: int                # peak working memory of its stage (on its device)
    stage_peak: int                 # GPU bytes in use during its stage (all resident weights + activations)

    def as_dict(self) -> dict:
        return {k: getattr(self, k) for k in ("name", "where", "weights", "resident", "activations", "stage_peak")}


@dataclass
class Estimate:
    plan: Plan
    variant: str
    job: Job
    parts: list[PartEstimate]
    peak: int                       # GPU bytes (CPU plan: process memory for weights + activations)
    peak_stage: str
    cpu_weights: int                # bytes of weights held in CPU memory
    overhead_s: float               # expected extra seconds per video compared to "full"
    batch: int

    def as_dict(self) -> dict:
        return {"plan": self.plan.name, "description": describe(self.plan), "variant": self.variant,
                "width": self.job.width, "height": self.job.height, "frames": self.job.frames,
                "tokens": self.job.tokens(get_variant(self.variant).dit), "peak_bytes": self.peak, "peak_gib": round(self.peak / GIB, 2),
                "peak_stage": self.peak_stage, "cpu_weights_bytes": self.cpu_weights, "passes_per_batch": self.batch,
                "overhead_s": round(self.overhead_s, 2), "parts": [p.as_dict() for p in self.parts]}


def estimate(plan: Plan | str, variant: Variant, job: Job, configs: dict | None = None) -> Estimate:
    """What `plan` needs for `job`: per component, weights + activations, and the GPU peak."""
    plan = plan if isinstance(plan, Plan) else parse_plan(plan)
    configs = configs or component_configs(variant)
    weights = weight_bytes(plan, variant, configs)
    counts = dit_counts(variant.dit)
    dt = plan.compute_dtype
    passes = passes_per_step(variant, job.mode)
    # The engine batches the passes of a step on the GPU and runs them one by one on the CPU.
    batch = 1 if plan.sequential or plan.device == "cpu" else passes

    on_gpu = {"text": plan.text != "cpu", "audio": True, "vae": True, "dit": True}
    resident = dict(weights)
    where = {n: "gpu" if on_gpu[n] else "cpu" for n in COMPONENTS}
    if plan.offload == "block":
        blocks = counts.block_bytes(dt, plan.fp8)
        # With CUDA streams the next group is prefetched while the current one runs: 2 groups resident.
        groups = 2 if plan.device == "cuda" else 1
        n = plan.blocks_per_group if plan.device != "cuda" else 1
        resident["dit"] = weights["dit"] - sum(blocks) + groups * n * max(blocks)
        where["dit"] = "gpu (streamed)"
    if plan.device == "cpu":
        where = {n: "cpu" for n in COMPONENTS}

    largest_text = max(o * i for o, i in text_counts(_items(configs["text"])).linears)
    acts = {
        "text": text_activation_bytes(configs["text"], torch.bfloat16 if plan.text == "cpu" and dt != torch.float32 else dt,
                                      largest_text),
        "audio": audio_activation_bytes(configs["audio"], torch.float32 if plan.device == "cpu" else dt),
        "vae": max(vae_activation_bytes(configs["vae"]["base_dim"], job, dt, plan.vae_tile, decode=True),
                   vae_activation_bytes(configs["vae"]["base_dim"], job, dt, plan.vae_tile, decode=False)),
        "dit": dit_activation_bytes(variant.dit, job, batch, dt) + latents_bytes(job),
    }
    if plan.fp8:  # one layer at a time is cast up to the compute dtype
        acts["dit"] += counts.largest_linear * _dtype_bytes(dt)

    gpu_resident_always = {n: resident[n] for n in COMPONENTS if on_gpu[n]} if plan.offload == "none" else {}
    parts = []
    for n in COMPONENTS:
        if plan.device == "cpu":
            peak = sum(weights.values()) + acts[n]
        elif plan.offload == "none":
            peak = sum(gpu_resident_always.values()) + (acts[n] if on_gpu[n] else 0)
        else:
            peak = (resident[n] + acts[n]) if on_gpu[n] else 0
        parts.append(PartEstimate(n, where[n], weights[n], resident[n] if on_gpu[n] and plan.device == "cuda" else 0,
                                  acts[n], peak))
    top = max(parts, key=lambda p: p.stage_peak)
    cpu_weights = sum(weights.values()) if (plan.device == "cpu" or plan.offload != "none") else \
        sum(weights[n] for n in COMPONENTS if not on_gpu[n])
    return Estimate(plan, variant.name, job, parts, top.stage_peak, top.name, cpu_weights,
                    overhead_seconds(plan, variant, job, weights, configs), batch)
