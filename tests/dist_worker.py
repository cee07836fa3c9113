"""One rank of a distributed test run (tests/test_distributed.py starts one process per rank with the
environment torchrun would give it; with no WORLD_SIZE it is a plain single process).

    python tests/dist_worker.py SCENARIO JOB.json

SCENARIO: run | cancel | kill | fail | stall. JOB.json holds the request settings, the weights
folder, the folder for results, and for kill/fail/stall which rank misbehaves at which network call.
Each rank that gets to the end writes result-rank<R>.json (and its final latents, latents-rank<R>.pt)
to the results folder.
"""
from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine import Engine, GenerationRequest  # noqa: E402
from engine.errors import Cancelled, EngineError  # noqa: E402
from engine.humo import stages  # noqa: E402
from engine.parallel import start_from_env  # noqa: E402


def keep_final_latents(folder: Path, rank: int) -> None:
    """Save the latents the loop returns (before the VAE), on every rank."""
    original = stages.denoise_with_events

    def wrapped(*args, **kwargs):
        final = yield from original(*args, **kwargs)
        torch.save(final.detach().cpu().clone(), folder / f"latents-rank{rank}.pt")
        return final

    stages.denoise_with_events = wrapped


def count_tokens(seen: set) -> None:
    """Record how many tokens the first self-attention of each network pass gets on this rank
    (all of a pass's tokens, or this rank's slice of them when sequence ranks share the pass)."""
    original = stages.dit_call

    def dit_call(dit, device, dtype):
        if not getattr(dit, "_tokens_counted", False):
            dit.blocks[0].attn1.register_forward_pre_hook(lambda module, args: seen.add(args[0].shape[1]))
            dit._tokens_counted = True
        return original(dit, device, dtype)

    stages.dit_call = dit_call


def misbehave_at(call: int, action) -> None:
    """Make the network's `call`-th pass (1-based) run `action` first."""
    original = stages.dit_call

    def dit_call(dit, device, dtype):
        inner = original(dit, device, dtype)
        count = {"n": 0}

        def call_(*args):
            count["n"] += 1
            if count["n"] == call:
                action()
            return inner(*args)

        return call_

    stages.dit_call = dit_call


def main() -> int:
    scenario, job = sys.argv[1], json.loads(Path(sys.argv[2]).read_text())
    rank = int(os.environ.get("RANK", "0"))
    out = Path(job["results"])
    keep_final_latents(out, rank)
    tokens: set = set()
    count_tokens(tokens)
    if scenario in ("kill", "fail", "stall") and rank == job["bad_rank"]:
        def fail():
            raise RuntimeError("pretend the GPU ran out of memory")

        action = {"kill": lambda: os.kill(os.getpid(), signal.SIGKILL), "fail": fail,
                  "stall": lambda: os.kill(os.getpid(), signal.SIGSTOP)}[scenario]
        misbehave_at(job["bad_call"], action)

    group = start_from_env("cpu")
    engine = Engine(job["weights"], device="cpu", parallel=group)
    request = GenerationRequest(**job["request"])
    result = {"rank": rank, "world": 1 if group is None else group.world, "notices": [], "steps": 0}
    t0 = time.monotonic()
    try:
        for ev in engine.generate(request):
            if ev.kind == "notice":
                result["notices"].append(ev.message)
            elif ev.kind == "step":
                result["steps"] = ev.step
                if scenario == "cancel" and rank == 0 and ev.step == job["cancel_after"]:
                    engine.cancel()
            elif ev.kind == "result":
                result.update(outcome="done", video_path=ev.video_path, settings=ev.settings)
    except Cancelled:
        result["outcome"] = "cancelled"
    except EngineError as err:
        result.update(outcome="error", error=str(err), error_type=type(err).__name__)
    except Exception as err:        # the "fail" scenario's own error, on the failing rank
        result.update(outcome="error", error=f"{type(err).__name__}: {err}", error_type=type(err).__name__)
    finally:
        if group is not None:
            group.close()
    result["seconds"] = time.monotonic() - t0
    result["tokens_per_pass"] = sorted(tokens)
    (out / f"result-rank{rank}.json").write_text(json.dumps(result, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
