"""The benchmark's report: figures derived from the measured times (per pass, step and video,
FLOP rate and fraction of peak, all-layer extrapolation) and their text tables."""
from __future__ import annotations

import math

from engine.tools.flops import pass_flops

def build_report(cfg, v, shape, steps, T, R, h, w, mode, passes, backend, peak, peak_note, results, compiled,
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
