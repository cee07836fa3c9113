"""The studio on several GPUs: rank 0 serves the page, the other ranks run its requests with it.

`RankPool` lives in the studio's process, which is rank 0. It starts the other ranks as child
processes (`python -m engine.parallel.serve`, one per GPU: cuda:i for rank i; gloo processes on a
machine without GPUs), joins their process group, and before each run hands them the request
through the group's key-value store (hosted by rank 0). Every rank then runs it as a torchrun run
would (engine.parallel): the same split, the same cancel vote at each step; rank 0 writes the video.

A rank that dies or fails mid-run becomes one RankStopped message on rank 0 (the page shows it);
the pool then ends the other ranks and starts them all again for the next request, so the studio
keeps serving. When rank 0 itself fails (out of memory, say) the others would wait on it, so the
pool restarts them the same way. A request every rank refuses alike (InputError: bad settings or
files) and a cancel keep the ranks as they are.
"""
from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import threading
from dataclasses import dataclass

from engine.parallel.group import LaunchEnv, ParallelGroup, check_sequence_ways

STOP_WAIT_S = 20.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass(frozen=True)
class EngineSettings:
    """What every rank builds its Engine with (they must agree)."""
    plan: str = "auto"
    attention: str | None = None
    compile: bool = False


class RankPool:
    """Rank 0's side: the other ranks' processes and the process group they share with it."""

    def __init__(self, world: int, weights_dir: str, device: str | None = None, sequence_ways: int = 1,
                 timeout_s: float | None = None):
        if world < 2:
            raise ValueError("a pool needs at least 2 ranks")
        self.world, self.weights_dir = world, str(weights_dir)
        self.sequence_ways = check_sequence_ways(sequence_ways, world, "--sequence-ways")
        self.device, self.timeout_s = device, timeout_s
        self.group: ParallelGroup | None = None
        self.procs: list[subprocess.Popen] = []
        self.note: str | None = None        # what happened to the last ranks, for the next run's page

    @property
    def ready(self) -> bool:
        return self.group is not None and all(p.poll() is None for p in self.procs)

    def start(self) -> ParallelGroup:
        """Start the other ranks (again, after a failure) and join them; returns the group."""
        if self.group is not None or self.procs:
            gone = [r for r, p in enumerate(self.procs, 1) if p.poll() is not None]
            if gone and self.note is None:
                self.note = (f"Rank {gone[0]} had stopped" if len(gone) == 1 else
                             f"Ranks {', '.join(map(str, gone))} had stopped") + "; all ranks were started again."
            self.close()
        import torch

        from engine.errors import EngineError

        port = _free_port()
        use_cuda = torch.cuda.is_available() and not str(self.device or "").startswith("cpu")
        if use_cuda and torch.cuda.device_count() < self.world:
            raise EngineError(f"{self.world} ranks need {self.world} GPUs; this machine has {torch.cuda.device_count()}.",
                              hint="Start the studio with a smaller --gpus.")
        for rank in range(1, self.world):
            # torch's C++ warnings (a closed socket when rank 0 leaves) would bury the one-line messages.
            env = dict(os.environ, RANK=str(rank), WORLD_SIZE=str(self.world), LOCAL_RANK=str(rank),
                       MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), HUMO_SEQUENCE_WAYS=str(self.sequence_ways),
                       TORCH_CPP_LOG_LEVEL=os.environ.get("TORCH_CPP_LOG_LEVEL", "ERROR"))
            cmd = [sys.executable, "-m", "engine.parallel.serve", "--weights", self.weights_dir,
                   "--device", "cuda" if use_cuda else "cpu"]
            self.procs.append(subprocess.Popen(cmd, env=env))
        # Join in a thread, watching the ranks meanwhile: one that cannot start (a broken install, no
        # memory) is said at once instead of after the group's timeout.
        joined: dict = {}

        def join():
            try:
                joined["group"] = ParallelGroup.start(LaunchEnv(0, self.world, 0), self.device, self.timeout_s,
                                                      self.sequence_ways, init_method=f"tcp://127.0.0.1:{port}")
            except BaseException as err:        # handed to the thread that waits below
                joined["error"] = err

        thread = threading.Thread(target=join, name="humo-join-ranks", daemon=True)
        thread.start()
        while thread.is_alive():
            thread.join(0.2)
            dead = [(r, p.returncode) for r, p in enumerate(self.procs, 1) if p.poll() is not None]
            if dead and thread.is_alive():
                self.close(wait_s=0)
                rank, code = dead[0]
                raise EngineError(f"Rank {rank} of {self.world} could not start (exit code {code}).",
                                  hint="Its error is in the studio's log, above this line.")
        if "error" in joined:
            self.close(wait_s=0)
            raise joined["error"]
        self.group = joined["group"]
        return self.group

    def hand_out(self, request, settings: EngineSettings) -> None:
        """Give the other ranks the request rank 0 is about to run."""
        self.group.publish({"request": request.to_dict(), "engine": settings.__dict__})

    def after_run(self, error: BaseException | None) -> None:
        """After a run: a failure that leaves the ranks out of step (a rank stopped, rank 0 failed or
        left the run half-way) ends them; the next run starts them again."""
        from engine.errors import Cancelled, InputError

        if error is None or isinstance(error, (Cancelled, InputError)):
            return
        self.close()
        self.note = f"All {self.world} ranks were started again after the last run stopped."

    def close(self, wait_s: float = STOP_WAIT_S) -> None:
        """Ask the ranks to stop (leaving the group breaks off a run they are in), end those that
        have not stopped `wait_s` seconds later."""
        group, self.group = self.group, None
        if group is not None:
            try:
                group.publish(None)
            except Exception:
                pass
            group.close()
        for p in self.procs:
            try:
                p.wait(timeout=wait_s)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self.procs = []

    def take_note(self) -> str | None:
        note, self.note = self.note, None
        return note


def serve(weights_dir: str, device: str) -> int:
    """One of the other ranks: join the group, then run each request rank 0 hands out."""
    from engine import Engine, GenerationRequest
    from engine.errors import Cancelled, EngineError, InputError
    from engine.parallel import launch_env

    env = launch_env()
    if env is None:
        print("error: engine.parallel.serve runs as a rank of the studio (started by it)", file=sys.stderr)
        return 2
    group = ParallelGroup.start(env, device)
    engine, settings = None, None
    try:
        while True:
            job = group.next_job()
            if job is None:
                return 0
            wanted = EngineSettings(**job["engine"])
            if engine is None or wanted != settings:
                if engine is not None:
                    engine.unload()
                engine = Engine(weights_dir, device=group.device, plan=wanted.plan, attention=wanted.attention,
                                compile=wanted.compile, parallel=group)
                settings = wanted
            try:
                for _ in engine.generate(GenerationRequest.from_dict(job["request"])):
                    pass
            except (Cancelled, InputError):
                continue            # every rank stopped the same way: ready for the next request
    except EngineError as err:      # RankStopped, or this rank's own failure (the others were told)
        print(f"error: [rank {group.rank}] {err}", file=sys.stderr)
        return 3
    finally:
        group.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m engine.parallel.serve", description=__doc__.split("\n\n")[0])
    p.add_argument("--weights", required=True)
    p.add_argument("--device", default="cuda")
    args = p.parse_args(argv)
    from engine.errors import EngineError

    try:
        return serve(args.weights, args.device)
    except EngineError as err:          # could not join: one line in the studio's log
        print(f"error: [rank {os.environ.get('RANK', '?')}] {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
