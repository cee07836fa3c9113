"""`python -m engine make-tiny DIR`: write the tiny variant's weights in the released layouts."""
from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("make-tiny", help="write the tiny (random-weight) variant's weights folder")
    p.add_argument("folder", help="weights folder (files go under FOLDER/tiny/)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=run)


def run(args) -> int:
    from engine.tiny import make_tiny

    root = make_tiny(args.folder, seed=args.seed)
    print(f"tiny weights written to {root / 'tiny'} (random weights: a pipeline check, not a real model)")
    return 0
