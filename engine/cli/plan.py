"""`python -m engine plan ...`: which memory plan a run would use, and what it needs per component."""
from __future__ import annotations

import json


def register(sub) -> None:
    p = sub.add_parser("plan", help="choose a memory plan and show its estimated GPU peak")
    p.add_argument("--variant", default="humo-1.7b", help="humo-1.7b | humo-17b | tiny")
    p.add_argument("--size", default=None, help="WxH, e.g. 832x480 (default: the variant's)")
    p.add_argument("--frames", default=None, help="video frames (default: the variant's, 97)")
    p.add_argument("--images", type=int, default=1, help="reference images")
    p.add_argument("--mode", default=None, help="TIA | TA | TI (default: the variant's)")
    p.add_argument("--steps", default=None)
    p.add_argument("--vram-gb", type=float, default=None,
                   help="GPU memory in GiB (default: the free memory of this machine's GPU)")
    p.add_argument("--plan", default="auto", help="'auto' or a plan to estimate, e.g. model-offload+fp8+text-nf4")
    p.add_argument("--device", default=None, help="cuda | cpu (default: cuda when --vram-gb is given or a GPU is present)")
    p.add_argument("--json", action="store_true", help="print the estimate as JSON")
    p.add_argument("--dry-run", action="store_true", help="check the settings and print the job, without estimating")
    p.set_defaults(func=run)


def _gib(n: int) -> str:
    from engine.memory import GIB

    return f"{n / GIB:6.2f} GiB"


def resolve_job(args):
    """The variant and the job the flags describe, checked by the one request rule; and its notices."""
    from engine.request import check_mode, check_steps, check_variant, parse_size, resolve_shape

    variant = check_variant(args.variant)
    d = variant.defaults
    shape = resolve_shape(variant, *parse_size(args.size), args.frames)
    notices = list(shape.notices)
    steps = d.steps if args.steps is None else check_steps(args.steps, notices)
    mode = check_mode(args.mode or d.mode)
    return variant, (shape.width, shape.height, shape.frames, mode, steps), notices


def run(args) -> int:
    import sys

    variant, (width, height, frames, mode, steps), notices = resolve_job(args)
    for note in notices:
        print(f"note: {note}", file=sys.stderr)
    if args.dry_run:
        print(f"job: {variant.name} {mode}, {width}x{height}, frames {frames}, steps {steps}", flush=True)
        return 0
    import torch

    from engine import memory
    from engine.errors import InputError

    job = memory.Job(width, height, frames, max(args.images, 1), mode, steps)
    device = args.device or ("cuda" if args.vram_gb is not None or torch.cuda.is_available() else "cpu")
    if args.vram_gb is None and device == "cuda" and not torch.cuda.is_available():
        raise InputError("No GPU found: give its memory with --vram-gb (e.g. --vram-gb 24), or use --device cpu.")

    if str(args.plan).lower() == "auto":
        choice = memory.choose_plan(variant, job, vram_gb=args.vram_gb, device=device,
                                    free_bytes=None if args.vram_gb is not None or device == "cpu"
                                    else memory.job_free_bytes())
        est, budget = choice.estimate, choice.budget
    else:
        plan = memory.parse_plan(args.plan, device=device)
        est = memory.estimate(plan, variant, job)
        budget = memory.budget_bytes(args.vram_gb) if args.vram_gb is not None else None
        if budget is not None and est.peak > budget:
            raise memory.OutOfResources(
                f"Plan {plan.name} needs about {est.peak / memory.GIB:.1f} GiB at its {memory.LABELS[est.peak_stage]} "
                f"stage; {budget / memory.GIB:.1f} GiB is usable.", hint="Try --plan auto.")

    if args.json:
        data = est.as_dict()
        data["tokens"] = job.tokens(variant.dit)
        data["budget_bytes"] = budget
        print(json.dumps(data, indent=2))
        return 0
    print(f"{variant.label}, {width}x{height}, {frames} frames ({job.tokens(variant.dit):,} DiT tokens), "
          f"{job.mode}, {est.batch} pass(es) per forward")
    print(f"plan: {memory.describe(est.plan)}")
    where = "GPU" if est.plan.device == "cuda" else "memory"
    print(f"{'component':<26}{'where':<16}{'weights':>12}{'on GPU':>12}{'activations':>14}{'stage peak':>14}")
    for p in est.parts:
        print(f"{memory.LABELS[p.name]:<26}{p.where:<16}{_gib(p.weights):>12}{_gib(p.resident):>12}"
              f"{_gib(p.activations):>14}{_gib(p.stage_peak):>14}")
    line = f"estimated peak: {_gib(est.peak).strip()} {where} ({memory.LABELS[est.peak_stage]} stage)"
    if budget is not None:
        line += f"; usable: {_gib(budget).strip()} (after a {int(memory.MARGIN_FRACTION * 100)}% + 0.5 GiB margin)"
    print(line)
    if est.cpu_weights:
        print(f"weights held in CPU memory: {_gib(est.cpu_weights).strip()}")
    if est.plan.device == "cuda":
        print(f"expected overhead vs. 'full': about {est.overhead_s:.0f} s per video")
    return 0
