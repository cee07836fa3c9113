"""`python -m engine bench ...`: time the DiT at real shapes with random weights."""
from __future__ import annotations

import json

DTYPES = {"bf16": "bfloat16", "bfloat16": "bfloat16", "fp16": "float16", "float16": "float16",
          "fp32": "float32", "float32": "float32"}


def register(sub) -> None:
    p = sub.add_parser("bench", help="benchmark the DiT (random weights at the real shapes)")
    p.add_argument("--variant", default="humo-1.7b", help="humo-1.7b | humo-17b | tiny")
    p.add_argument("--size", default=None, help="WxH (default: the variant's; a small size on CPU)")
    p.add_argument("--frames", default=None, help="video frames (default: the variant's; 5 on CPU)")
    p.add_argument("--layers", type=int, default=None,
                   help="blocks to build (default: all on GPU; 2 on CPU, for a run of about a minute)")
    p.add_argument("--mode", default="TIA", help="TIA | TA | TI")
    p.add_argument("--steps", default=None, help="steps per video (default: the variant's)")
    p.add_argument("--plan", default=None, help="memory plan to place the DiT with (see the memory plans)")
    p.add_argument("--device", default=None, help="cuda | cpu (default: cuda when available)")
    p.add_argument("--dtype", default=None, choices=sorted(DTYPES), help="default: bf16 on GPU, fp32 on CPU")
    p.add_argument("--attention", default=None, help="attention backend (default: automatic)")
    p.add_argument("--no-compile", action="store_true", help="skip the torch.compile measurement")
    p.add_argument("--compile-backend", default=None, help="torch.compile backend (default: inductor)")
    p.add_argument("--repeat", type=int, default=None, help="timed repeats per measurement (median)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--suite", default=None, choices=["gpu"],
                   help="gpu: every figure for the GPU record in one run: humo-1.7b 832x480x97 (all blocks, eager "
                        "and compiled), humo-17b 1280x720x97 under block-offload and fp8 (4 blocks, extrapolated)")
    p.add_argument("--dry-run", action="store_true", help="check the settings and print the benchmark's shape, "
                   "without building anything")
    p.add_argument("--limit-s", type=float, default=540.0,
                   help="with --suite: stop starting new runs after this many seconds (default 540)")
    p.add_argument("--dub", action="store_true",
                   help="benchmark dubbing instead: time and peak memory for --minutes of 1080x1920 video "
                        "(the real clip looped) on tiny MuseTalk weights")
    p.add_argument("--minutes", type=float, nargs="+", default=[1, 3, 10], help="with --dub: video lengths")
    p.add_argument("--dub-model", default="musetalk-1.5", choices=["musetalk-1.5", "latentsync-1.6"],
                   help="with --dub: the dubbing model (tiny weights)")
    p.add_argument("--dub-steps", type=int, default=1,
                   help="with --dub --dub-model latentsync-1.6: DDIM steps (default 1: memory does not depend on them)")
    p.add_argument("--dub-unets", action="store_true",
                   help="time the LatentSync 1.6 and MuseTalk 1.5 networks at their released shapes (random "
                        "weights) side by side: seconds per chunk and per second of video (--steps: DDIM steps, "
                        "default 20)")
    p.add_argument("--batch-size", type=int, default=8, help="with --dub: frames per batch")
    p.add_argument("--avatar-seconds", type=float, default=4.0,
                   help="with --dub: also time a prepared avatar of this many seconds speaking as long (0: skip)")
    p.set_defaults(func=run)


def _run_dub(args) -> int:
    from engine.errors import InputError
    from engine.tools.bench_dub import format_report, run_dub_bench

    if any(m <= 0 or m > 120 for m in args.minutes):
        raise InputError("--minutes must be between 0 and 120.")
    show = (lambda r: None) if args.json else (lambda r: print(format_report(r), flush=True))
    reports = run_dub_bench(args.minutes, batch_size=args.batch_size, on_report=show,
                            avatar_seconds=args.avatar_seconds, model=args.dub_model, steps=args.dub_steps)
    if args.json:
        print(json.dumps(reports, indent=2))
    return 0


def resolve_shape_args(args):
    """Size, frames and steps from the flags, checked by the one request rule; returns (shape,
    steps, notices)."""
    from engine.request import check_mode, check_steps, check_variant, parse_size, resolve_shape

    variant = check_variant(args.variant)
    args.mode = check_mode(args.mode)
    shape = resolve_shape(variant, *parse_size(args.size), args.frames)
    notices = list(shape.notices)
    steps = None if args.steps is None else check_steps(args.steps, notices)
    return shape, steps, notices


def run(args) -> int:
    import sys

    from engine.request import check_variant

    variant = check_variant(args.variant)
    shape, steps, rounded = resolve_shape_args(args)
    for note in rounded:
        print(f"note: {note}", file=sys.stderr)
    if args.dry_run:
        print(f"bench: {variant.name} {args.mode}, {shape.width}x{shape.height}, frames {shape.frames}, "
              f"steps {steps or variant.defaults.steps}", flush=True)
        return 0
    import torch

    if args.dub_unets:
        from engine.tools.bench_unets import format_report as unet_lines
        from engine.tools.bench_unets import run as run_unets

        report = run_unets(args.device, DTYPES.get(args.dtype, "auto") if args.dtype else "auto",
                           steps=int(args.steps or 20), repeat=args.repeat or 1)
        print(json.dumps(report, indent=2) if args.json else "\n".join(unet_lines(report)))
        return 0
    if args.dub:
        return _run_dub(args)

    from engine.tools.bench import CPU_FRAMES, CPU_LAYERS, CPU_SIZE, BenchConfig, run_bench
    from engine.tools.bench_report import format_report
    from engine.errors import InputError

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise InputError("No CUDA GPU is visible to PyTorch here; run with --device cpu.")
    on_cpu = device == "cpu"
    dtype = getattr(torch, DTYPES[args.dtype]) if args.dtype else (torch.float32 if on_cpu else torch.bfloat16)
    if args.suite:
        return _run_suite(args, device, dtype)
    notes = []
    small = on_cpu and not variant.random_weights
    width, height = shape.width, shape.height
    if args.size is None and small:
        width, height = CPU_SIZE
        notes.append(f"CPU: reduced size {width}x{height} (pass --size for another)")
    frames = shape.frames if args.frames is not None else (CPU_FRAMES if small else variant.defaults.frames)
    layers = args.layers if args.layers else (CPU_LAYERS if small else None)
    if small and not args.layers:
        notes.append(f"CPU: {CPU_LAYERS} of {variant.dit.num_layers} layers (per-pass time scales with the layers)")
    cfg = BenchConfig(variant=variant, width=width, height=height, frames=frames, mode=args.mode, device=device,
                      dtype=dtype, layers=layers, steps=steps, attention=args.attention,
                      compile=not args.no_compile, compile_backend=args.compile_backend,
                      repeat=args.repeat or (1 if small else 3), warmup=1 if small else 2,
                      plan=args.plan, notes=notes)
    report = run_bench(cfg)
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    return 0


def _run_suite(args, device: str, dtype) -> int:
    import json
    import sys

    from engine.tools.bench import run_suite, suite_configs
    from engine.tools.bench_report import format_report, format_summary
    from engine.errors import InputError

    if not device.startswith("cuda"):
        raise InputError(f"--suite {args.suite} measures the real sizes and needs a CUDA GPU; "
                         "on the CPU run single benchmarks (python -m engine bench --variant tiny).")
    configs = suite_configs(args.suite, device, dtype, attention=args.attention,
                            compile_backend=args.compile_backend, layers=args.layers)
    if args.no_compile:
        for cfg in configs:
            cfg.compile = False

    def show(report):            # each table as soon as its run ends, so a cut-off run still reports
        if not args.json:
            print(format_report(report) if "skipped" not in report else f"skipped {report['variant']}: "
                  f"{report['skipped']}", end="\n\n", flush=True)
        sys.stdout.flush()

    reports = run_suite(configs, limit_s=args.limit_s, on_report=show)
    if args.json:
        print(json.dumps(reports, indent=2))
    else:
        print(f"summary (best of eager/compiled per run; all blocks){chr(10)}{format_summary(reports)}")
    return 0
