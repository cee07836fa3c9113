"""`python -m engine check-golden DIR`: every golden case through the real loaders."""
from __future__ import annotations

import time


def register(sub) -> None:
    p = sub.add_parser("check-golden", help="reproduce a golden folder (official outputs) through the real loaders")
    p.add_argument("folder", help="folder in the format of shared/golden")
    p.add_argument("-k", dest="match", default=None, help="only cases whose name contains this text")
    p.set_defaults(func=run)


def run(args) -> int:
    from engine.tools.golden import TOLERANCE, discover, run_case

    failures = 0
    count = 0
    for name, runner in discover(args.folder):
        if args.match and args.match not in name:
            continue
        count += 1
        start = time.perf_counter()
        result = run_case(name, runner)
        took = time.perf_counter() - start
        status = "ok  " if result.ok else "FAIL"
        detail = f"  {result.error}" if result.error else ""
        print(f"{status} {name:<34} rel_err={result.rel_error:.3e}  ({took:.1f}s){detail}", flush=True)
        failures += not result.ok
    if count == 0:
        print(f"no golden cases found in {args.folder}")
        return 1
    print(f"{count - failures} passed, {failures} failed (tolerance {TOLERANCE:g})")
    return 1 if failures else 0
