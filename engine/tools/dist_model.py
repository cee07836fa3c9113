"""A MODEL (arithmetic, not a measurement) of several-GPU runs: communication per step and the
expected speed-up of HuMo on 2/4/8 GPUs.

    python -m engine.tools.dist_model [--gpus 2,4,8] [--link nvlink|pcie|GBPS ...]
                                      [--pass-s-1.7b S] [--pass-s-17b S] [--efficiency 0.4] [--json]

From the pass counts (engine.humo.guidance), the latent sizes and the model widths (variants), and
an assumed link bandwidth (NVLink ~450 GB/s per direction, PCIe ~25 GB/s) it models:

  guidance   the passes of a step shared out over the GPUs, their outputs (float32 latents)
             gathered with all_gather (ring: each GPU receives (N-1) shares), then combined
             everywhere. Capped at the pass count (4 for 1.7B TIA, 3 for 17B).
  sequence   the tokens of each pass split over the GPUs (Ulysses: all-to-alls of q, k, v before
             each self-attention and of its output after, bf16 tokens x width), the output
             projection's tokens gathered at the end of the pass.
  hybrid     g guidance columns x s sequence ranks, g x s = N (--sequence-ways s).
All three run in engine.parallel; only their speed here is modelled. Where the heads do not
divide by s the engine uses ring attention for the rest, modelled here as Ulysses.

The time per network pass is an input. Its default is a PLACEHOLDER: the pass's FLOPs
(engine.tools.flops) at an assumed fraction of the H200's dense bf16 peak; replace it with the
per-pass seconds `python -m engine bench --suite gpu` measures (--pass-s-1.7b / --pass-s-17b).
Communication is taken as not overlapped with compute, at full link bandwidth plus a fixed
latency per collective: an estimate for planning, never a result.
"""
from __future__ import annotations

import argparse
import json
import sys

from engine.humo.guidance import plan_for
from engine.humo.variants import get_variant
from engine.parallel.passes import assign_passes
from engine.tools.flops import GPU_BF16_PEAK, pass_flops

LINKS_GBPS = {"nvlink": 450.0, "pcie": 25.0}
LATENCY_S = 20e-6                  # per collective (assumed)
ACT_BYTES = 2                      # bf16 activations in the sequence-parallel all-to-alls
OUT_BYTES = 4                      # float32 pass outputs in the guidance gather
CASES = (("humo-1.7b", 832, 480), ("humo-17b", 1280, 720))
FRAMES, REFS, STEPS, MODE = 97, 1, 50, "TIA"


def case_shape(variant_name: str, width: int, height: int) -> dict:
    v = get_variant(variant_name)
    T, h, w = (FRAMES - 1) // 4 + 1, height // 8, width // 8
    F = T + REFS
    passes = len(plan_for(v.reference, MODE, 0.0, v.defaults.switch_t).passes)
    flops = pass_flops(v.dit, F, h, w)
    return {"variant": v.name, "label": v.label, "size": f"{width}x{height}", "frames": FRAMES, "passes": passes,
            "tokens": int(flops["tokens"]), "dim": v.dit.dim, "layers": v.dit.num_layers, "flops_per_pass": flops["total"],
            "out_bytes": 16 * F * h * w * OUT_BYTES}


def placeholder_pass_s(case: dict, efficiency: float) -> float:
    peak = dict(GPU_BF16_PEAK)["h200"]
    return case["flops_per_pass"] / (peak * efficiency)


def option(case: dict, pass_s: float, n: int, g: int, s: int, bw: float) -> dict:
    """n GPUs as g guidance groups x s sequence shards (g x s <= n; more GPUs than that wait idle):
    seconds and bytes received per step per GPU."""
    k = max(len(share) for share in assign_passes(case["passes"], g))      # passes per group, slowest
    compute = k * pass_s / s
    seq_bytes = 0.0
    if s > 1:   # 2 all-to-alls per block per pass: 4 tensors of tokens/s x dim, (s-1)/s of each moves
        seq_bytes = k * case["layers"] * 4 * case["tokens"] / s * case["dim"] * ACT_BYTES * (s - 1) / s
    # The gathers as built: along its guidance column every rank receives the k output slots of
    # each other column (ring all_gather); inside a sequence group each pass's output tokens
    # (bf16, the size of half a float32 output) are gathered from the other s - 1 ranks.
    gather_bytes = (g - 1) * k * case["out_bytes"] if g > 1 else 0.0
    if s > 1:
        gather_bytes += k * case["out_bytes"] / 2 * (s - 1) / s
    collectives = (k * (case["layers"] * 2 + 1) if s > 1 else 0) + (2 if g > 1 else 0)
    comm = (seq_bytes + gather_bytes) / (bw * 1e9) + collectives * LATENCY_S
    one = case["passes"] * pass_s
    return {"guidance_ways": g, "sequence_ways": s, "idle_gpus": n - g * s, "compute_s": compute,
            "comm_bytes": seq_bytes + gather_bytes, "comm_s": comm, "step_s": compute + comm,
            "speedup": one / (compute + comm)}


def model(gpus: list[int], links: dict[str, float], pass_s: dict[str, float]) -> list[dict]:
    rows = []
    for name, width, height in CASES:
        case = case_shape(name, width, height)
        t = pass_s[name]
        for link, bw in links.items():
            for n in gpus:
                guidance = option(case, t, n, min(n, case["passes"]), 1, bw)      # --sequence-ways 1
                hybrids = [option(case, t, n, g, n // g, bw) for g in range(1, min(n, case["passes"]) + 1) if n % g == 0]
                rows.append({**case, "pass_s": t, "link": link, "link_gbps": bw, "gpus": n, "guidance": guidance,
                             "sequence": option(case, t, n, 1, n, bw),
                             "best": min([guidance, *hybrids], key=lambda o: o["step_s"])})
    return rows


def _mb(b: float) -> str:
    return f"{b / 1e6:,.1f} MB" if b < 1e9 else f"{b / 1e9:,.2f} GB"


def format_rows(rows: list[dict], placeholder: bool) -> str:
    out = ["MODELLED, NOT MEASURED: communication per denoising step and expected speed-up, by arithmetic.",
           ("Per-pass times are PLACEHOLDERS (FLOPs at an assumed fraction of H200 bf16 peak): replace them with "
            "measured ones (python -m engine bench --suite gpu; --pass-s-1.7b / --pass-s-17b).") if placeholder
           else "Per-pass times as given on the command line.",
           "guidance = --sequence-ways 1; sequence = --sequence-ways N; best = the fastest g x s "
           "(torchrun --nproc-per-node N ... --sequence-ways s).", ""]
    last = None
    for r in rows:
        if (r["variant"], r["link"]) != last:
            last = (r["variant"], r["link"])
            one = r["passes"] * r["pass_s"]
            out.append(f"{r['label']} {r['size']}, {r['frames']} frames: {r['passes']} passes/step, {r['tokens']:,} tokens, "
                       f"width {r['dim']}, pass {r['pass_s']:.3g} s{' (placeholder)' if placeholder else ''}, "
                       f"1 GPU {one:.3g} s/step; link {r['link']} {r['link_gbps']:g} GB/s")
            out.append(f"  {'GPUs':>4}  {'guidance: comm/step':>20} {'speed-up':>9}   {'sequence: comm/step':>20} "
                       f"{'speed-up':>9}   best (g x s)       speed-up")
        g, s, b = r["guidance"], r["sequence"], r["best"]
        best = f"{b['guidance_ways']} x {b['sequence_ways']}"
        out.append(f"  {r['gpus']:>4}  {_mb(g['comm_bytes']):>11} {g['comm_s'] * 1e3:>6.2f} ms {g['speedup']:>8.2f}x   "
                   f"{_mb(s['comm_bytes']):>11} {s['comm_s'] * 1e3:>6.1f} ms {s['speedup']:>8.2f}x   "
                   f"{best:<18} {b['speedup']:.2f}x")
    out.append("")
    out.append("Assumed: no overlap of communication with compute, full link bandwidth, "
               f"{LATENCY_S * 1e6:g} us per collective, float32 gathered outputs, bf16 activations; "
               "every GPU holds the whole model (no weight sharding in any option).")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m engine.tools.dist_model", description=__doc__.split("\n\n")[0])
    p.add_argument("--gpus", default="2,4,8", help="GPU counts, comma separated (default 2,4,8)")
    p.add_argument("--link", action="append", default=None,
                   help="nvlink (450 GB/s), pcie (25 GB/s) or a bandwidth in GB/s; repeat for several (default both)")
    p.add_argument("--pass-s-1.7b", dest="pass_17", type=float, default=None, help="seconds per HuMo-1.7B 480p pass")
    p.add_argument("--pass-s-17b", dest="pass_170", type=float, default=None, help="seconds per HuMo-17B 720p pass")
    p.add_argument("--efficiency", type=float, default=0.4,
                   help="fraction of H200 bf16 peak behind the placeholder pass times (default 0.4)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    try:
        gpus = [int(x) for x in args.gpus.split(",") if x.strip()]
        links = {}
        for item in args.link or ["nvlink", "pcie"]:
            links[item] = LINKS_GBPS[item] if item in LINKS_GBPS else float(item)
    except ValueError as err:
        p.error(str(err))
    if any(n < 1 for n in gpus) or any(bw <= 0 for bw in links.values()) or not 0 < args.efficiency <= 1:
        p.error("GPU counts and bandwidths must be positive; --efficiency in (0, 1]")
    cases = {name: case_shape(name, w, h) for name, w, h in CASES}
    given = {"humo-1.7b": args.pass_17, "humo-17b": args.pass_170}
    pass_s = {k: given[k] if given[k] else placeholder_pass_s(cases[k], args.efficiency) for k in cases}
    placeholder = not all(given.values())
    rows = model(gpus, links, pass_s)
    if args.json:
        json.dump({"modelled": True, "measured": False, "pass_s_placeholder": placeholder, "rows": rows}, sys.stdout,
                  indent=1)
        print()
    else:
        print(format_rows(rows, placeholder))
    return 0


if __name__ == "__main__":
    sys.exit(main())
