"""The speed model: expected extra seconds per video of a plan compared to everything resident."""
from __future__ import annotations

from engine.memory.activations import Job, passes_per_step
from engine.memory.counts import _items, dit_counts, text_counts
from engine.memory.plans import Plan
from engine.humo.variants import Variant

# -- speed model constants (seconds of overhead per video compared to everything resident) ----
PCIE_BPS = 12e9          # host -> GPU copies, pageable memory
HBM_BPS = 2e12           # on-GPU casts (fp8 -> bf16 and back, per layer per pass)
GPU_FLOPS = 4e14         # sustained dense bf16
CPU_FLOPS = 2e11         # umT5 on the CPU (bf16)
GROUP_SYNC_S = 1e-3      # per offloaded block group per pass (hooks, stream sync)
PASS_LAUNCH_S = 2e-4     # per block per extra (unbatched) pass
TEXT_QUANT_S = 0.5       # bitsandbytes matmuls on two prompts
VAE_S_PER_MPX = 0.05     # decode time per million output pixels (frames × H × W)


def dit_flops(shape, tokens: int) -> float:
    """FLOPs of one pass (SPEC §6: 4.2e14 for the 1.7B at 40 560 tokens)."""
    d, f = shape.dim, shape.ffn_dim
    linear = 2 * tokens * (8 * d * d + 2 * d * f) + 2 * shape.text_len * 2 * d * d
    attention = 4 * tokens * tokens * d + 4 * tokens * shape.text_len * d + 4 * tokens * shape.audio_tokens * d
    return shape.num_layers * (linear + attention)


def overhead_seconds(plan: Plan, variant: Variant, job: Job, weights: dict, configs: dict) -> float:
    """Expected extra seconds per video compared to the 'full' plan (speed model constants above)."""
    if plan.device == "cpu":
        return 0.0
    shape = variant.dit
    passes = job.steps * passes_per_step(variant, job.mode)
    cost = 0.0
    if plan.offload != "none":
        moved = [weights["audio"], weights["vae"]] + ([weights["text"]] if plan.text != "cpu" else [])
        if plan.offload == "model":
            moved.append(weights["dit"])
        cost += sum(moved) / PCIE_BPS
    if plan.offload == "block":
        counts = dit_counts(shape)
        blocks = counts.block_bytes(plan.compute_dtype, plan.fp8)
        batch = 1 if plan.sequential else passes_per_step(variant, job.mode)
        compute_block = dit_flops(shape, job.tokens(shape)) * batch / shape.num_layers / GPU_FLOPS
        forwards = passes / batch
        per_block = max(0.0, max(blocks) / PCIE_BPS - compute_block) + GROUP_SYNC_S
        cost += forwards * len(blocks) * per_block
    if plan.fp8:
        cost += passes * dit_counts(shape).castable * 6 / HBM_BPS
    if plan.text == "cpu":
        cfg = configs["text"]
        params = sum(o * i for o, i in text_counts(_items(cfg)).linears)
        cost += 2 * 2 * params * 512 / CPU_FLOPS
    elif plan.text in ("int8", "nf4"):
        cost += TEXT_QUANT_S
    if plan.sequential:
        cost += passes * shape.num_layers * PASS_LAUNCH_S
    if plan.vae_tile and (job.width > plan.vae_tile or job.height > plan.vae_tile):
        stride = plan.vae_tile * 3 // 4
        cost += VAE_S_PER_MPX * job.frames * job.width * job.height / 1e6 * ((plan.vae_tile / stride) ** 2 - 1)
    return cost
