"""Speed benchmark of the DiT at real shapes with random weights (weights do not change the cost).

Measures, in one run and side by side: one network pass, one sampler step (all guidance passes
of the plan, batched and one after the other), the whole video (steps × passes), eager and
`torch.compile`d blocks. The FLOP count and the device peak are in flops.py, the report and its
tables in bench_report.py.
"""
from __future__ import annotations

import contextlib
import math
import resource
import time
from dataclasses import dataclass, field, replace

import torch

from engine.humo.variants import DiTShape, Variant
from engine.tools.bench_report import build_report
from engine.tools.flops import device_peak

# Default for a machine without a GPU: the variant's layer widths, fewer layers, a small clip,
# so the whole run takes about a minute on a few cores.
CPU_SIZE = (256, 160)
CPU_FRAMES = 5
CPU_LAYERS = 1


# ---------------------------------------------------------------------------------------------
# Model and inputs at the benchmark shapes
# ---------------------------------------------------------------------------------------------
def random_dit(shape: DiTShape, device: str, dtype: torch.dtype, seed: int = 0):
    """The HuMo DiT with random weights, built on empty weights and filled on `device`.

    Norm weights are 1, biases 0, other weights N(0, 1/fan_in): activations stay finite through
    every block, as with trained weights. Modules the model keeps in float32 stay float32.
    """
    import re

    from engine.humo.dit_loader import build_dit_empty

    model = build_dit_empty(shape)
    keep = [re.compile(rf"(^|\.){re.escape(p)}(\.|$)") for p in model._keep_in_fp32_modules]
    gen = torch.Generator(device=device).manual_seed(seed)   # drawn where they live: fast at 17B sizes
    for name, param in list(model.named_parameters()):
        module_name, _, attr = name.rpartition(".")
        module = model.get_submodule(module_name) if module_name else model
        dt = torch.float32 if any(p.search(name) for p in keep) else dtype
        value = torch.empty(param.shape, device=device, dtype=torch.float32)
        if "norm" in name and attr == "weight":
            value.fill_(1.0)
        elif attr == "bias":
            value.zero_()
        else:
            std = 1 / math.sqrt(shape.dim if name.endswith("scale_shift_table") else max(1, math.prod(param.shape[1:])))
            value.normal_(0.0, std, generator=gen)
        module._parameters[attr] = torch.nn.Parameter(value.to(dt), requires_grad=False)
        del value
    model.rope.to(device)
    return model.eval().requires_grad_(False)


@dataclass
class BenchConfig:
    variant: Variant
    width: int
    height: int
    frames: int
    mode: str = "TIA"
    device: str = "cpu"
    dtype: torch.dtype = torch.float32
    layers: int | None = None          # None: the variant's; fewer layers for a quick CPU run
    steps: int | None = None           # None: the variant's default
    attention: str | None = None       # None: automatic
    compile: bool = True
    compile_backend: str | None = None
    repeat: int = 2
    warmup: int = 2
    plan: str | None = None
    notes: list[str] = field(default_factory=list)
    block_bytes: int = 0               # weight bytes of one block as stored (set by run_bench)

    @property
    def latent_frames(self) -> int:
        return (self.frames - 1) // 4 + 1


def _conditions(shape: DiTShape, reference: str, T: int, R: int, h: int, w: int, device, dtype):
    from engine.humo.sampler import Conditions

    gen = torch.Generator().manual_seed(1)

    def rnd(*size):
        return torch.randn(*size, generator=gen).to(device=device, dtype=dtype)

    cond = Conditions(text=rnd(shape.text_len, shape.text_dim), null=rnd(shape.text_len, shape.text_dim),
                      audio=rnd(T + R, 8, 5, shape.audio_channels), ref_frames=R, ref_latents=rnd(16, R, h, w))
    if reference == "channel":
        cond.y_c, cond.y_null = rnd(shape.in_dim - 16, T + R, h, w), rnd(shape.in_dim - 16, T + R, h, w)
    return cond


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _timed(fn, device: str, repeat: int, warmup: int = 2) -> float:
    """Median seconds of `repeat` calls after `warmup` untimed calls."""
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    times.sort()
    return times[len(times) // 2]


def _peak_memory(device: str) -> float:
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def _reset_peak(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()


def run_bench(cfg: BenchConfig) -> dict:
    from engine import attention as attn
    from engine.humo.guidance import combine, plan_for
    from engine.humo.sampler import make_scheduler, run_passes

    v = cfg.variant
    shape = v.dit if cfg.layers is None else replace(v.dit, num_layers=cfg.layers)
    steps = cfg.steps or v.defaults.steps
    T, R = cfg.latent_frames, 1
    h, w = cfg.height // 8, cfg.width // 8
    dev, dt = cfg.device, cfg.dtype

    backend = attn.choose_backend(cfg.attention, dev, dt)
    placement = contextlib.nullcontext()
    if cfg.plan:
        from engine import memory  # the memory plans decide placement, offload and weight dtype

        plan_ = memory.parse_plan(cfg.plan, device=dev)
        model = random_dit(shape, memory.load_device(plan_, "dit", dev), memory.load_dtype(plan_, "dit", dt))
        model = memory.prepare(plan_, "dit", model, dev, dt)
        placement = memory.on_device(plan_, "dit", model, dev)
    else:
        model = random_dit(shape, dev, dt)
    attn.apply_backend(model, backend)

    def model_fn(x, t, text, audio, y):
        return model(x, t, text, audio, y, return_dict=False)[0].float()

    cond = _conditions(shape, v.reference, T, R, h, w, dev, dt)
    latents = torch.randn(16, T + R, h, w, generator=torch.Generator().manual_seed(2)).to(dev)
    t_in = torch.tensor([999.0], device=dev)
    mode = cfg.mode
    plan = plan_for(v.reference, mode, 999.0, v.defaults.switch_t)
    passes = len(plan.passes)
    scales = {"scale_t": v.defaults.scale_t, "scale_a": v.defaults.scale_a, "scale_i": v.defaults.scale_i or 1.0}

    def passes_fn(batched):
        def go():
            with torch.no_grad():
                run_passes(model_fn, plan, cond, latents, t_in, batched)
        return go

    def one_step():
        scheduler = make_scheduler(steps, v.defaults.shift)
        t = scheduler.timesteps[0]
        with torch.no_grad():
            outs = run_passes(model_fn, plan, cond, latents, t.to(dev, torch.float32).reshape(1), True)
            pred = combine(plan, outs, scales)
            scheduler.step(pred[None], t, latents[None], return_dict=False)

    cfg.block_bytes = sum(p.numel() * p.element_size() for p in model.blocks[0].parameters()) if len(model.blocks) else 0
    peak, peak_note = device_peak(dev, dt)
    with placement:
        results, compiled, mems = _measure(cfg, model, passes_fn, one_step, dev)
    mem_seq, mem_batched = mems
    report = build_report(cfg, v, shape, steps, T, R, h, w, mode, passes, backend, peak, peak_note, results, compiled,
                     mem_seq, mem_batched)
    return report


def _measure(cfg: BenchConfig, model, passes_fn, one_step, dev: str):
    from engine.compile import compile_dit, default_backend

    results: dict = {}
    _reset_peak(dev)
    results["sequential_s"] = _timed(passes_fn(False), dev, cfg.repeat, cfg.warmup)
    mem_seq = _peak_memory(dev)
    _reset_peak(dev)
    results["batched_s"] = _timed(passes_fn(True), dev, cfg.repeat, cfg.warmup)
    mem_batched = _peak_memory(dev)
    results["step_s"] = _timed(one_step, dev, max(1, cfg.repeat - 1), warmup=0)  # already warm
    compiled = None
    if cfg.compile:
        backend_c = cfg.compile_backend or default_backend(dev)
        compile_dit(model, backend=backend_c)
        t0 = time.perf_counter()
        passes_fn(True)()                     # the compile happens here, once for this shape
        _sync(dev)
        compile_s = time.perf_counter() - t0
        _reset_peak(dev)
        compiled = {"backend": backend_c, "compile_s": compile_s,
                    "batched_s": _timed(passes_fn(True), dev, cfg.repeat, max(0, cfg.warmup - 1))}
        compiled["peak_memory_gib"] = _peak_memory(dev)
    return results, compiled, (mem_seq, mem_batched)


# ---------------------------------------------------------------------------------------------
# Suites: every figure a GPU session needs, from one command, within one time limit
# ---------------------------------------------------------------------------------------------
# Each entry: the run and a rough share of the time limit. The 17B at 1280×720 takes ~10-16 s per
# pass with all 40 blocks, too long to time eagerly, batched, sequentially and compiled in a few
# minutes, so it is measured with 4 blocks and extrapolated (the report says so).
GPU_SUITE = (
    dict(variant="humo-1.7b", size=(832, 480), frames=97, plan="full", layers=None, repeat=3, warmup=2, compile=True),
    dict(variant="humo-17b", size=(1280, 720), frames=97, plan="block-offload", layers=4, repeat=1, warmup=1,
         compile=True),
    # fp8 weights are cast inside each linear (engine.memory.storage.Fp8Linear), so they compile too.
    dict(variant="humo-17b", size=(1280, 720), frames=97, plan="fp8", layers=4, repeat=1, warmup=1, compile=True),
)
SUITES = {"gpu": GPU_SUITE}


def suite_configs(name: str, device: str, dtype: torch.dtype, attention: str | None = None,
                  compile_backend: str | None = None, layers: int | None = None) -> list[BenchConfig]:
    from engine.humo.variants import get_variant

    out = []
    for entry in SUITES[name]:
        v = get_variant(entry["variant"])
        n = layers or entry["layers"]
        notes = [f"suite {name}: {n} of {v.dit.num_layers} blocks measured, all-layer figures extrapolated"] \
            if n and n < v.dit.num_layers else []
        out.append(BenchConfig(variant=v, width=entry["size"][0], height=entry["size"][1], frames=entry["frames"],
                               device=device, dtype=dtype, layers=n, attention=attention, compile=entry["compile"],
                               compile_backend=compile_backend, repeat=entry["repeat"], warmup=entry["warmup"],
                               plan=entry["plan"] if device.startswith("cuda") else None, notes=notes))
    return out


def run_suite(configs: list[BenchConfig], limit_s: float | None = None, on_report=None) -> list[dict]:
    """Run each config in turn; once `limit_s` is nearly spent, the rest are listed as skipped."""
    import gc

    t0 = time.perf_counter()
    reports = []
    for i, cfg in enumerate(configs):
        left = None if limit_s is None else limit_s - (time.perf_counter() - t0)
        if left is not None and left < 60:
            reports.append({"variant": cfg.variant.name, "plan": cfg.plan, "skipped": f"time limit ({limit_s:.0f} s) reached"})
        else:
            reports.append(run_bench(cfg))
        if on_report is not None:
            on_report(reports[-1])
        gc.collect()
        if cfg.device.startswith("cuda"):
            torch.cuda.empty_cache()
        from engine.compile import reset_compiled

        reset_compiled()
    return reports


