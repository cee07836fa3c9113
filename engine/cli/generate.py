"""`python -m engine generate ...`: one video from the command line, with a progress bar."""
from __future__ import annotations

import sys


def register(sub) -> None:
    p = sub.add_parser("generate", help="make one video")
    p.add_argument("--variant", default="humo-1.7b", help="humo-1.7b | humo-17b | tiny")
    p.add_argument("--prompt", required=True)
    p.add_argument("--image", action="append", default=[], help="reference image (repeat for several)")
    p.add_argument("--audio", default=None, help="voice clip (wav, mp3, m4a, ogg, flac, ...)")
    p.add_argument("--out", required=True, help="output .mp4")
    p.add_argument("--mode", default=None, choices=["TA", "TIA", "TI", "ta", "tia", "ti"],
                   help="default: TIA with an image and audio, TA with audio only, TI with an image only")
    p.add_argument("--frames", default="auto", help="frame count, or 'auto' to follow the audio length")
    p.add_argument("--size", default=None, help="WxH, e.g. 832x480 (default: the variant's)")
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--shift", type=float, default=None)
    p.add_argument("--scale-t", type=float, default=None)
    p.add_argument("--scale-i", type=float, default=None)
    p.add_argument("--scale-a", type=float, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--negative", default=None, help="negative prompt (default: Wan's standard one)")
    p.add_argument("--weights", default="weights", help="weights folder")
    p.add_argument("--device", default=None, help="cuda | cpu (default: cuda when available)")
    p.add_argument("--attention", default=None, help="attention backend (e.g. native, flash, sage)")
    p.add_argument("--plan", default="auto", help="memory plan (python -m engine plan ...), default auto")
    p.add_argument("--compile", action="store_true", help="torch.compile the DiT blocks (exact; pays off on long runs)")
    p.add_argument("--fast-mode", default=None,
                   help="approximate speed-up preset (see engine/fast.py: fast, faster, taylor, fewer-steps, fastest)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=run)


def parse_size(text: str | None):
    from engine.errors import InputError

    if not text:
        return None, None
    try:
        w, h = text.lower().replace("×", "x").split("x")
        return int(w), int(h)
    except ValueError:
        raise InputError(f"Size {text!r} is not WxH (for example 832x480).") from None


def run(args) -> int:
    from tqdm import tqdm

    from engine import Engine, GenerationRequest
    from engine.errors import InputError

    mode = (args.mode or ("TIA" if args.image and args.audio else "TA" if args.audio else "TI")).upper()
    if str(args.frames).lower() == "auto":
        frames = None
    else:
        try:
            frames = int(args.frames)
        except ValueError:
            raise InputError(f"--frames must be a number or 'auto', got {args.frames!r}.") from None
    width, height = parse_size(args.size)
    request = GenerationRequest(prompt=args.prompt, variant=args.variant, mode=mode, images=list(args.image),
                                audio=args.audio, negative_prompt=args.negative, frames=frames, width=width,
                                height=height, steps=args.steps, shift=args.shift, scale_t=args.scale_t,
                                scale_i=args.scale_i, scale_a=args.scale_a, seed=args.seed, out_path=args.out,
                                preview=False, fast_mode=args.fast_mode)
    engine = Engine(args.weights, device=args.device, attention=args.attention, compile=args.compile, plan=args.plan)
    bar = None
    for ev in engine.generate(request):
        if ev.kind == "stage" and not args.quiet:
            tqdm.write(f"[{ev.stage}] {ev.message}", file=sys.stderr)
        elif ev.kind == "notice":
            tqdm.write(f"note: {ev.message}", file=sys.stderr)
        elif ev.kind == "step" and not args.quiet:
            if bar is None:
                bar = tqdm(total=ev.total, desc="denoising", unit="step", file=sys.stderr)
            bar.update(ev.step - bar.n)
        elif ev.kind == "result":
            if bar is not None:
                bar.close()
            print(f"wrote {ev.video_path}: {ev.frames} frames, {ev.width}x{ev.height}, {ev.fps} fps, "
                  f"{ev.duration_s:.2f} s, seed {ev.seed}, {ev.timings['total_s']:.1f} s")
    return 0
