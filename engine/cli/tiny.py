"""`python -m engine make-tiny DIR [--model musetalk-1.5|latentsync-1.6]`: write random-weight checkpoints in the released layouts."""
from __future__ import annotations

TINY_MODELS = ("humo", "musetalk-1.5", "latentsync-1.6")


def register(sub) -> None:
    p = sub.add_parser("make-tiny", help="write tiny (random-weight) checkpoints for pipeline checks")
    p.add_argument("folder", help="weights folder (HuMo's files go under FOLDER/tiny/, a dubbing model's under "
                                  "FOLDER/<model>/)")
    p.add_argument("--model", default="humo", choices=TINY_MODELS,
                   help="humo: the tiny HuMo variant (default); musetalk-1.5 / latentsync-1.6: a tiny "
                        "dubbing model")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=run)


def run(args) -> int:
    if args.model == "musetalk-1.5":
        from engine.tools.tiny_musetalk import make_tiny_musetalk

        root = make_tiny_musetalk(args.folder, seed=args.seed)
        print(f"tiny MuseTalk 1.5 weights written to {root} (random weights: a pipeline check, not a real model)")
        return 0
    if args.model == "latentsync-1.6":
        from engine.tools.tiny_latentsync import make_tiny_latentsync

        root = make_tiny_latentsync(args.folder, seed=args.seed)
        print(f"tiny LatentSync 1.6 weights written to {root} (random weights: a pipeline check, not a real model)")
        return 0
    from engine.tools.tiny import make_tiny

    root = make_tiny(args.folder, seed=args.seed)
    print(f"tiny weights written to {root / 'tiny'} (random weights: a pipeline check, not a real model)")
    return 0
