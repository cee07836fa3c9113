"""Memory plans: where each component lives, in which dtype, and what a run needs on the GPU.

A plan is a base placement plus modifiers, written as one string (`parse_plan`, `Plan.name`):

  full              everything in the compute dtype on the GPU, kept there between runs
  model-offload     each component on the GPU only while it runs (text, audio, VAE, DiT in turn)
  block-offload     as model-offload, and the DiT streams its blocks from CPU memory
                    (diffusers group offload; only a few blocks are resident)
  cpu               everything on the CPU in float32
  +fp8              DiT weights stored as float8 e4m3, cast per layer for compute (inside each linear: compiles)
  +text-cpu / +text-int8 / +text-nf4
                    the umT5 encoder on the CPU, or quantized with bitsandbytes (8-bit / 4-bit NF4)
  +vae-tiling[-N]   decode (and encode) the video in N×N-pixel tiles (default 256, stride 3/4 of N)
  +sequential       run the guidance passes of a step one after another instead of as one batch

`estimate` says what a plan needs, component by component (weights from the real parameter
counts of each component built at its real shapes on empty weights, plus activations from the
formulas in `activations`); `choose_plan` picks the fastest plan that fits a memory budget.

The pieces:
  plans        Plan, parse_plan, describe, plan_options
  storage      fp8 casting, bitsandbytes layers, the tied umT5 embedding, moves
  counts       weight bytes per component (counted on empty modules, or measured)
  activations  Job (the size of a run) and the activation peak of each stage
  speed        the expected extra seconds of a plan
  estimates    estimate: weights + activations per component, the GPU peak
  choose       the budget and choose_plan / resolve_plan
  placement    what the engine does with a plan while loading and around each stage
"""
from engine.errors import InputError, OutOfResources
from engine.memory.activations import (ACT_SLACK, VAE_BYTES_PER_PX_CH, Job, audio_activation_bytes,
                                       dit_activation_bytes, latents_bytes, passes_per_step,
                                       text_activation_bytes, vae_activation_bytes)
from engine.memory.choose import (CUDA_CONTEXT_BYTES, LOSSY_PENALTY_S, MARGIN_BYTES, MARGIN_FRACTION, Choice,
                                  budget_bytes, candidate_plans, choose_plan, resolve_plan, speed_key)
from engine.memory.counts import (TINY_VOCAB, WHISPER_LARGE_V3, DiTCounts, TextCounts, component_configs,
                                  dit_counts, module_bytes, state_numel, text_counts, weight_bytes)
from engine.memory.estimates import Estimate, PartEstimate, estimate
from engine.memory.placement import _module  # noqa: F401  (kept importable from engine.memory)
from engine.memory.placement import (Placement, job_free_bytes, load_device, load_dtype,
                                     moves_per_stage, on_device, prepare, text_needed)
from engine.memory.plans import (COMPONENTS, DEFAULT_TILE, GIB, LABELS, TEXT_MODES, Plan, describe, parse_plan,
                                 plan_options)
from engine.memory.speed import (CPU_FLOPS, GPU_FLOPS, GROUP_SYNC_S, HBM_BPS, PASS_LAUNCH_S, PCIE_BPS,
                                 TEXT_QUANT_S, VAE_S_PER_MPX, dit_flops, overhead_seconds)
from engine.memory.storage import (FP8_EXTRA_SKIP, enable_fp8, move_module, quantizable_linears,
                                   quantize_linears, tie_text_embeddings)

__all__ = [
    "ACT_SLACK", "COMPONENTS", "CPU_FLOPS", "CUDA_CONTEXT_BYTES", "DEFAULT_TILE", "FP8_EXTRA_SKIP", "GIB",
    "GPU_FLOPS", "GROUP_SYNC_S", "HBM_BPS", "LABELS", "LOSSY_PENALTY_S", "MARGIN_BYTES", "MARGIN_FRACTION",
    "PASS_LAUNCH_S", "PCIE_BPS", "TEXT_MODES", "TEXT_QUANT_S", "TINY_VOCAB", "VAE_BYTES_PER_PX_CH",
    "VAE_S_PER_MPX", "WHISPER_LARGE_V3",
    "Choice", "DiTCounts", "Estimate", "InputError", "Job", "OutOfResources", "PartEstimate", "Placement",
    "Plan", "TextCounts",
    "audio_activation_bytes", "budget_bytes", "candidate_plans", "choose_plan", "component_configs",
    "describe", "dit_activation_bytes", "dit_counts", "dit_flops", "enable_fp8", "estimate", "job_free_bytes",
    "latents_bytes", "load_device", "load_dtype", "module_bytes", "move_module", "moves_per_stage",
    "on_device", "overhead_seconds", "parse_plan", "passes_per_step", "plan_options",
    "prepare", "quantizable_linears", "quantize_linears", "resolve_plan", "speed_key", "state_numel",
    "text_activation_bytes", "text_counts", "text_needed", "tie_text_embeddings", "vae_activation_bytes",
    "weight_bytes",
]
