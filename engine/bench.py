"""Speed benchmark of the DiT at real shapes with random weights (weights do not change the cost).

Measures, in one run and side by side: one network pass, one sampler step (all guidance passes
of the plan, batched and one after the other), the whole video (steps × passes), eager and
`torch.compile`d blocks; counts the FLOPs of one pass (matmuls only: linear layers, the patch
convolution and attention Q·Kᵀ and P·V) and compares the achieved rate with the device's peak.
"""
from __future__ import annotations

import contextlib
import math
import platform
import resource
import time
from dataclasses import dataclass, field, replace

import torch

from engine.variants import DiTShape, Variant

# Dense bf16 tensor-core peaks (FLOP/s), by device name; the first matching key wins.
GPU_BF16_PEAK = (
    ("h200", 989e12), ("h100 pcie", 756e12), ("h100 nvl", 835e12), ("h100", 989e12), ("h800", 989e12), ("gh200", 989e12),
    ("b200", 2250e12), ("a100", 312e12), ("a800", 312e12), ("l40s", 362e12), ("l40", 181e12),
    ("l4", 121e12), ("a10g", 70e12), ("a10", 125e12), ("4090", 165e12), ("3090", 71e12), ("a6000", 155e12),
    ("v100", 125e12), ("t4", 65e12),
)

# Default for a machine without a GPU: the variant's layer widths, fewer layers, a small clip,
# so the whole run takes about a minute on a few cores.
CPU_SIZE = (256, 160)
CPU_FRAMES = 5
CPU_LAYERS = 1


# ---------------------------------------------------------------------------------------------
# FLOPs
# ---------------------------------------------------------------------------------------------
def pass_flops(shape: DiTShape, latent_frames: int, h: int, w: int, batch: int = 1) -> dict[str, float]:
    """Multiply-add FLOPs (2 per MAC) of `batch` network passes over `latent_frames` (T + R)
    latent frames of h×w latent pixels. Returns the parts and the total."""
    pt, ph, pw = shape.patch_size
    f, hh, ww = latent_frames // pt, h // ph, w // pw
    s = f * hh * ww                                   # video tokens
    d, L = shape.dim, shape.text_len
    patch = pt * ph * pw
    audio_tokens = f * shape.audio_tokens
    n = shape.num_layers
    parts = {
        # per block
        "self_attn_proj": n * 2 * s * d * d * 4,                                  # q, k, v, o
        "self_attn_qk_pv": n * 2 * 2 * s * s * d,                                 # Q·Kᵀ and P·V
        "text_attn_proj": n * (2 * s * d * d * 2 + 2 * L * d * d * 2),            # q, o on video; k, v on text
        "text_attn_qk_pv": n * 2 * 2 * s * L * d,
        "audio_attn_proj": n * (2 * s * d * d * 2 + 2 * audio_tokens * shape.audio_dim * d * 2),
        "audio_attn_qk_pv": n * 2 * 2 * s * shape.audio_tokens * d,               # frame-local: 16 keys per token
        "ffn": n * 2 * s * d * shape.ffn_dim * 2,
        # once per pass
        "patch_embed": 2 * s * shape.in_dim * patch * d,
        "text_embed": 2 * L * (shape.text_dim * d + d * d),
        "time_embed": 2 * (shape.freq_dim * d + d * d + d * 6 * d),
        "audio_proj": 2 * f * (8 * 5 * shape.audio_channels * shape.audio_intermediate_dim
                               + shape.audio_intermediate_dim ** 2
                               + shape.audio_intermediate_dim * shape.audio_tokens * shape.audio_dim),
        "proj_out": 2 * s * d * shape.out_dim * patch,
    }
    parts = {k: float(v) * batch for k, v in parts.items()}
    parts["attention"] = parts["self_attn_qk_pv"] + parts["text_attn_qk_pv"] + parts["audio_attn_qk_pv"]
    parts["total"] = sum(v for k, v in parts.items() if k != "attention")
    parts["tokens"] = float(s)
    return parts


def device_peak(device: str, dtype: torch.dtype) -> tuple[float | None, str]:
    """(peak FLOP/s, how it was found). GPU: the dense bf16 peak for its name; CPU: a measured matmul rate."""
    if device.startswith("cuda"):
        name = torch.cuda.get_device_name(torch.device(device))
        for key, peak in GPU_BF16_PEAK:
            if key in name.lower():
                if dtype in (torch.bfloat16, torch.float16):
                    return peak, f"{name}: dense bf16 peak {peak / 1e12:.0f} TFLOP/s (datasheet)"
                if torch.get_float32_matmul_precision() != "highest":     # TF32 tensor cores: half the bf16 rate
                    return peak / 2, f"{name}: dense TF32 peak {peak / 2e12:.0f} TFLOP/s (datasheet)"
                return None, f"{name}: float32 without TF32 (no tensor-core peak to compare with)"
        return None, f"{name}: peak unknown"
    n = 2048
    a = torch.randn(n, n, dtype=dtype)
    b = torch.randn(n, n, dtype=dtype)
    a @ b
    best, t_end = float("inf"), time.perf_counter() + 1.0
    while time.perf_counter() < t_end:
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    rate = 2 * n ** 3 / best
    return rate, f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads): " \
                 f"measured {n}³ {str(dtype).replace('torch.', '')} matmul {rate / 1e9:.1f} GFLOP/s"


# ---------------------------------------------------------------------------------------------
# Model and inputs at the benchmark shapes
# ---------------------------------------------------------------------------------------------
def random_dit(shape: DiTShape, device: str, dtype: torch.dtype, seed: int = 0):
    """The HuMo DiT with random weights, built on empty weights and filled on `device`.

    Norm weights are 1, biases 0, other weights N(0, 1/fan_in): activations stay finite through
    every block, as with trained weights. Modules the model keeps in float32 stay float32.
    """
    import re

    from engine.models.dit_loader import build_dit_empty

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
    from engine.sampler import Conditions

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
    from engine.guidance import combine, plan_for
    from engine.sampler import make_scheduler, run_passes

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
        return model(x, t, text, audio, y).float()

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
    report = _report(cfg, v, shape, steps, T, R, h, w, mode, passes, backend, peak, peak_note, results, compiled,
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


def _report(cfg, v, shape, steps, T, R, h, w, mode, passes, backend, peak, peak_note, results, compiled,
            mem_seq, mem_batched) -> dict:
    from engine import attention as attn

    dev, dt = cfg.device, cfg.dtype
    flops = pass_flops(shape, T + R, h, w)
    best_step = min(results["batched_s"], results["sequential_s"], compiled["batched_s"] if compiled else math.inf)
    per_pass = {
        "sequential": results["sequential_s"] / passes,
        "batched": results["batched_s"] / passes,
    }
    if compiled:
        per_pass["compiled"] = compiled["batched_s"] / passes
    achieved = {k: flops["total"] / s for k, s in per_pass.items()}
    report = {
        "variant": v.name, "layers": shape.num_layers, "full_layers": v.dit.num_layers,
        "width": cfg.width, "height": cfg.height, "frames": cfg.frames,
        "latent_frames": T + R, "tokens": int(flops["tokens"]), "mode": mode, "passes_per_step": passes,
        "steps": steps, "device": dev, "dtype": str(dt).replace("torch.", ""), "attention": attn.describe(backend),
        "plan": cfg.plan,
        "flops_per_pass": flops["total"], "attention_fraction": flops["attention"] / flops["total"],
        "flops_parts": {k: v_ for k, v_ in flops.items() if k not in ("total", "tokens")},
        "pass_s": per_pass,
        "step_s": {"batched_eager": results["step_s"], "best": best_step},
        "video_s": {"batched_eager": results["step_s"] * steps, "best": best_step * steps,
                    "network_passes": steps * passes},
        "achieved_flops": achieved,
        "peak_flops": peak, "peak_source": peak_note,
        "peak_fraction": {k: (a / peak if peak else None) for k, a in achieved.items()},
        "batched_over_sequential": results["batched_s"] / results["sequential_s"],
        "compiled": compiled,
        "compiled_over_eager": (compiled["batched_s"] / results["batched_s"]) if compiled else None,
        "peak_memory_gib": {"sequential": mem_seq, "batched": mem_batched,
                            "kind": "GPU allocated" if dev.startswith("cuda") else "process RSS"},
        "floor_video_s": flops["total"] * steps * passes / peak if peak else None,
        "notes": list(cfg.notes),
    }
    if compiled:
        report["peak_memory_gib"]["compiled"] = compiled["peak_memory_gib"]
    report["all_layers"] = _all_layers(cfg, v, shape, T, R, h, w, steps, passes, per_pass, best_step, peak,
                                       mem_seq, mem_batched)
    return report


def _all_layers(cfg, v, shape, T, R, h, w, steps, passes, per_pass, best_step, peak, mem_seq, mem_batched):
    """With fewer blocks than the model has (--layers), the figures for all of them: times scale
    with the FLOPs (the blocks are nearly all of them), and a plan that keeps the DiT resident
    holds the missing blocks' weights too. None when every block was measured."""
    full = v.dit.num_layers
    if shape.num_layers == full:
        return None
    factor = pass_flops(v.dit, T + R, h, w)["total"] / pass_flops(shape, T + R, h, w)["total"]
    resident = not cfg.plan or "block-offload" not in cfg.plan
    extra = (full - shape.num_layers) * cfg.block_bytes / 2**30 if resident and cfg.device.startswith("cuda") else 0.0
    return {
        "layers": full, "flops_factor": factor,
        "pass_s": {k: s * factor for k, s in per_pass.items()},
        "step_s": best_step * factor, "video_s": best_step * factor * steps,
        "floor_video_s": pass_flops(v.dit, T + R, h, w)["total"] * steps * passes / peak if peak else None,
        "peak_memory_gib": {"sequential": mem_seq + extra, "batched": mem_batched + extra},
        "method": f"measured with {shape.num_layers} of {full} blocks; times × {factor:.2f} (FLOP ratio)"
                  + (f"; memory + {extra:.2f} GiB for the resident weights of the other blocks" if extra else ""),
    }


def _si(x: float, unit: str = "") -> str:
    for factor, prefix in ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= factor:
            return f"{x / factor:.3g} {prefix}{unit}"
    return f"{x:.3g} {unit}"


def _dur(s: float) -> str:
    if s >= 120:
        return f"{s / 60:.1f} min"
    if s >= 1:
        return f"{s:.2f} s"
    return f"{s * 1e3:.1f} ms"


def format_report(r: dict) -> str:
    lines = []
    layers = f"{r['layers']} of {r['full_layers']} layers" if r["layers"] != r["full_layers"] else f"{r['layers']} layers"
    lines.append(f"HuMo DiT benchmark: {r['variant']} ({layers}), {r['width']}x{r['height']}, {r['frames']} frames "
                 f"-> {r['latent_frames']} latent frames, {r['tokens']} tokens, mode {r['mode']} "
                 f"({r['passes_per_step']} passes/step), {r['steps']} steps")
    lines.append(f"device {r['device']}, {r['dtype']}, attention {r['attention']}"
                 + (f", plan {r['plan']}" if r["plan"] else "") + ", random weights")
    lines.append(f"FLOPs per pass        {r['flops_per_pass']:.3e}  (attention {r['attention_fraction'] * 100:.0f} %)")
    lines.append(f"peak                  {r['peak_source']}")
    lines.append("")
    lines.append(f"{'':22}{'per pass':>11}{'per step':>11}{'per video':>11}{'TFLOP/s':>10}{'of peak':>9}")
    for key, label in (("sequential", "eager, sequential"), ("batched", "eager, batched"), ("compiled", "compiled, batched")):
        if key not in r["pass_s"]:
            continue
        p = r["pass_s"][key]
        step = p * r["passes_per_step"]
        frac = r["peak_fraction"][key]
        lines.append(f"{label:22}{_dur(p):>11}{_dur(step):>11}{_dur(step * r['steps']):>11}"
                     f"{r['achieved_flops'][key] / 1e12:>10.3g}{(f'{frac * 100:.1f} %' if frac is not None else '-'):>9}")
    lines.append("")
    lines.append(f"one sampler step       {_dur(r['step_s']['batched_eager'])} (eager batched passes, combine, UniPC)")
    lines.append(f"video                  {r['video_s']['network_passes']} network passes; "
                 f"best {_dur(r['video_s']['best'])}"
                 + (f"; hardware floor {_dur(r['floor_video_s'])}" if r["floor_video_s"] else ""))
    lines.append(f"batched / sequential   {r['batched_over_sequential']:.2f}x time")
    if r["compiled"]:
        c = r["compiled"]
        lines.append(f"compiled / eager       {r['compiled_over_eager']:.2f}x time "
                     f"({c['backend']}, compiled once in {_dur(c['compile_s'])})")
    m = r["peak_memory_gib"]
    lines.append(f"peak memory            {m['sequential']:.2f} GiB sequential, {m['batched']:.2f} GiB batched"
                 + (f", {m['compiled']:.2f} GiB compiled" if "compiled" in m else "") + f" ({m['kind']})")
    a = r.get("all_layers")
    if a:
        lines.append("")
        lines.append(f"all {a['layers']} layers (extrapolated: {a['method']}):")
        for key, label in (("sequential", "eager, sequential"), ("batched", "eager, batched"), ("compiled", "compiled, batched")):
            if key in a["pass_s"]:
                p = a["pass_s"][key]
                lines.append(f"  {label:20}{_dur(p):>11}{_dur(p * r['passes_per_step']):>11}"
                             f"{_dur(p * r['passes_per_step'] * r['steps']):>11}")
        lines.append(f"  video best {_dur(a['video_s'])}"
                     + (f"; hardware floor {_dur(a['floor_video_s'])}" if a["floor_video_s"] else "")
                     + f"; peak memory {a['peak_memory_gib']['sequential']:.2f} GiB sequential, "
                       f"{a['peak_memory_gib']['batched']:.2f} GiB batched")
    for note in r["notes"]:
        lines.append(f"note: {note}")
    return "\n".join(lines)


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
    from engine.variants import get_variant

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


def format_summary(reports: list[dict]) -> str:
    """One line per run: the figures to compare, all-layer (extrapolated where marked)."""
    lines = [f"{'run':44}{'pass':>10}{'step':>10}{'video':>11}{'of peak':>9}{'peak mem':>10}  notes"]
    for r in reports:
        if "skipped" in r:
            lines.append(f"{r['variant'] + ' ' + str(r['plan']):44}{'-':>10}{'-':>10}{'-':>11}{'-':>9}{'-':>10}  skipped: {r['skipped']}")
            continue
        a = r.get("all_layers")
        best = min(r["pass_s"], key=r["pass_s"].get)
        p = (a["pass_s"] if a else r["pass_s"])[best]
        mem = (a["peak_memory_gib"] if a else r["peak_memory_gib"])["batched"]
        frac = r["peak_fraction"][best]
        name = f"{r['variant']} {r['width']}x{r['height']}x{r['frames']} {r['plan'] or 'full'} {best}"
        lines.append(f"{name:44}{_dur(p):>10}{_dur(p * r['passes_per_step']):>10}"
                     f"{_dur(p * r['passes_per_step'] * r['steps']):>11}"
                     f"{(f'{frac * 100:.1f} %' if frac is not None else '-'):>9}{mem:>8.1f} G"
                     + ("  extrapolated from " + str(r["layers"]) + " blocks" if a else ""))
    return "\n".join(lines)
