"""`python -m engine bench ...`: time the DiT at real shapes with random weights."""
from __future__ import annotations

import json

DTYPES = {"bf16": "bfloat16", "bfloat16": "bfloat16", "fp16": "float16", "float16": "float16",
          "fp32": "float32", "float32": "float32"}


def register(sub) -> None:
    p = sub.add_parser("bench", help="benchmark the DiT (random weights at the real shapes)")
    p.add_argument("--variant", default="humo-1.7b", help="humo-1.7b | humo-17b | tiny")
    p.add_argument("--size", default=None, help="WxH (default: the variant's; a small size on CPU)")
    p.add_argument("--frames", type=int, default=None, help="video frames (default: the variant's; 5 on CPU)")
    p.add_argument("--layers", type=int, default=None,
                   help="blocks to build (default: all on GPU; 2 on CPU, for a run of about a minute)")
    p.add_argument("--mode", default="TIA", choices=["TIA", "TA", "TI"])
    p.add_argument("--steps", type=int, default=None, help="steps per video (default: the variant's)")
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
    p.add_argument("--limit-s", type=float, default=540.0,
                   help="with --suite: stop starting new runs after this many seconds (default 540)")
    p.set_defaults(func=run)


def run(args) -> int:
    import torch

    from engine.bench import CPU_FRAMES, CPU_LAYERS, CPU_SIZE, BenchConfig, format_report, run_bench
    from engine.cli.generate import parse_size
    from engine.errors import InputError
    from engine.variants import get_variant

    try:
        variant = get_variant(args.variant)
    except KeyError as err:
        raise InputError(str(err.args[0])) from None
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise InputError("No CUDA GPU is visible to PyTorch here; run with --device cpu.")
    on_cpu = device == "cpu"
    dtype = getattr(torch, DTYPES[args.dtype]) if args.dtype else (torch.float32 if on_cpu else torch.bfloat16)
    if args.suite:
        return _run_suite(args, device, dtype)
    notes = []
    small = on_cpu and not variant.random_weights
    width, height = parse_size(args.size)
    if width is None:
        width, height = CPU_SIZE if small else (variant.defaults.width, variant.defaults.height)
        if small:
            notes.append(f"CPU: reduced size {width}x{height} (pass --size for another)")
    if width % 16 or height % 16:
        raise InputError(f"Size {width}x{height} must be a multiple of 16 on both sides.")
    frames = args.frames or (CPU_FRAMES if small else variant.defaults.frames)
    if frames < 1:
        raise InputError(f"--frames must be at least 1, got {frames}.")
    layers = args.layers if args.layers else (CPU_LAYERS if small else None)
    if small and not args.layers:
        notes.append(f"CPU: {CPU_LAYERS} of {variant.dit.num_layers} layers (per-pass time scales with the layers)")
    cfg = BenchConfig(variant=variant, width=width, height=height, frames=frames, mode=args.mode, device=device,
                      dtype=dtype, layers=layers, steps=args.steps, attention=args.attention,
                      compile=not args.no_compile, compile_backend=args.compile_backend,
                      repeat=args.repeat or (1 if small else 3), warmup=1 if small else 2,
                      plan=args.plan, notes=notes)
    report = run_bench(cfg)
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    return 0


def _run_suite(args, device: str, dtype) -> int:
    import json
    import sys

    from engine.bench import format_report, format_summary, run_suite, suite_configs
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
