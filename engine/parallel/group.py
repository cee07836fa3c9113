"""The process group of a run launched by torchrun: one process (rank) per GPU, or per CPU with gloo.

Every collective the engine makes goes through `ParallelGroup`, which turns a failure into one
`RankStopped` message that names the rank that stopped. How it knows: through the group's
key-value store (torch.distributed's own store, the one torchrun or the first rank hosts). A rank
that fails with an error writes that error there; a rank that sees a collective fail writes that
it is alive and saw it. A rank still alive soon fails at the same collective (or on reaching it)
and says so, so the ranks that saw the failure give the collective's other members a moment (a
quarter of the timeout, at most 15 s) to speak, then name those that said nothing (killed) along
with those that gave their reason.

A rank that neither answers nor dies (stuck) is given up on after the group timeout:
HUMO_DIST_TIMEOUT_S seconds (default 900; loading large weights on every rank happens before the
first collective, so it must cover the slowest rank's loading).
"""
from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Callable

import torch
import torch.distributed as dist

from engine.errors import Cancelled, EngineError
from engine.parallel.passes import assign_passes, guidance_ways, split_line

ENV_TIMEOUT = "HUMO_DIST_TIMEOUT_S"
ENV_SEQUENCE = "HUMO_SEQUENCE_WAYS"
DEFAULT_TIMEOUT_S = 900.0
_PREFIX = "humo/"


class RankStopped(EngineError):
    """Another rank of a distributed run stopped (died, failed, or stopped answering)."""


@dataclass(frozen=True)
class LaunchEnv:
    """Where this process stands in a torchrun launch."""
    rank: int
    world_size: int
    local_rank: int
    agent_store: bool = False   # torchrun's agent hosts the store (it outlives any one rank)


def launch_env(environ: dict | None = None) -> LaunchEnv | None:
    """The torchrun environment (RANK, WORLD_SIZE, LOCAL_RANK), or None for a single process."""
    env = os.environ if environ is None else environ
    if "WORLD_SIZE" not in env:
        return None
    try:
        world = int(env["WORLD_SIZE"])
        rank = int(env.get("RANK", "0"))
        local = int(env.get("LOCAL_RANK", rank))
    except ValueError:
        raise EngineError(f"WORLD_SIZE={env.get('WORLD_SIZE')!r}, RANK={env.get('RANK')!r}: not whole numbers.",
                          hint="Launch with torchrun, which sets them.") from None
    if world <= 1:
        return None
    if not 0 <= rank < world:
        raise EngineError(f"RANK={rank} is outside the {world} ranks of WORLD_SIZE.")
    return LaunchEnv(rank, world, local, env.get("TORCHELASTIC_USE_AGENT_STORE", "").lower() == "true")


def timeout_from_env(environ: dict | None = None) -> float:
    env = os.environ if environ is None else environ
    raw = env.get(ENV_TIMEOUT, "")
    try:
        value = float(raw) if raw.strip() else DEFAULT_TIMEOUT_S
    except ValueError:
        raise EngineError(f"{ENV_TIMEOUT}={raw!r} is not a number of seconds.") from None
    if value <= 0:
        raise EngineError(f"{ENV_TIMEOUT} must be more than 0 seconds, got {raw}.")
    return value


def sequence_from_env(world: int, environ: dict | None = None) -> int:
    """HUMO_SEQUENCE_WAYS (default 1): how many ranks share each network pass's tokens."""
    env = os.environ if environ is None else environ
    raw = env.get(ENV_SEQUENCE, "").strip()
    return check_sequence_ways(raw or 1, world, ENV_SEQUENCE)


def check_sequence_ways(value, world: int, name: str = "--sequence-ways") -> int:
    """`value` as a number of sequence ranks that divides the `world` ranks (one line otherwise)."""
    try:
        ways = int(str(value))
    except ValueError:
        raise EngineError(f"{name}={value!r} is not a whole number.") from None
    if ways < 1 or world % ways:
        raise EngineError(f"{name}={ways} does not divide the {world} ranks.",
                          hint="The ranks form groups of that many, each sharing the tokens of its passes; "
                               f"choose a divisor of {world}.")
    return ways


def _link_error(err: BaseException) -> bool:
    """Whether an error raised inside a network pass came from the link between ranks (a peer gone,
    a timeout) rather than from this rank's own computation."""
    text = str(err).lower()
    return isinstance(err, dist.DistError) or any(
        word in text for word in ("gloo", "nccl", "connection", "peer", "timed out", "timeout"))


def _short(err: BaseException, limit: int = 240) -> str:
    """One line of an error, without the C++ source location torch puts in front."""
    text = " ".join(str(err).split()) or type(err).__name__
    if text.startswith("[") and "] " in text:
        text = text.split("] ", 1)[1]
    for cut in (" This is typically caused", " Check the logs"):
        text = text.split(cut, 1)[0]
    return text if len(text) <= limit else text[: limit - 1] + "…"


class ParallelGroup:
    """This rank's view of the run: its rank, the device it computes on, and the collectives."""

    def __init__(self, rank: int, world: int, device: str, backend: str, timeout_s: float,
                 store=None, agent_store: bool = False, sequence_ways: int = 1):
        self.rank, self.world, self.device, self.backend = rank, world, device, backend
        self.timeout_s = timeout_s
        self._store, self._agent_store = store, agent_store
        self._op = 0            # collectives started so far (the same count on every rank)
        # Ranks form a (guidance, sequence) grid, row by row: the S ranks of a row share the tokens
        # of the same passes; the G rows share out the passes of each step.
        self.sequence_ways = check_sequence_ways(sequence_ways, world)
        self.guidance_ranks = world // self.sequence_ways
        self.guidance_rank, self.sequence_rank = divmod(rank, self.sequence_ways)
        self._guidance_group = None     # the ranks of this rank's column (None: all, when S = 1)
        self._meshes: dict = {}
        self._jobs = 0                  # requests handed out (rank 0) or taken (the others), for `next_job`

    @classmethod
    def start(cls, env: LaunchEnv, device: str | None = None, timeout_s: float | None = None,
              sequence_ways: int | None = None, init_method: str | None = None) -> "ParallelGroup":
        """Join the process group: nccl on GPUs (cuda device = LOCAL_RANK), gloo on CPUs.
        `sequence_ways` (default HUMO_SEQUENCE_WAYS, else 1) ranks share each pass's tokens.
        `init_method` (default: MASTER_ADDR / MASTER_PORT from the environment, as torchrun sets)."""
        timeout_s = timeout_from_env() if timeout_s is None else timeout_s
        sequence_ways = sequence_from_env(env.world_size) if sequence_ways is None else \
            check_sequence_ways(sequence_ways, env.world_size)
        use_cuda = torch.cuda.is_available() and not str(device or "").startswith("cpu")
        if use_cuda:
            torch.cuda.set_device(env.local_rank)
            where, backend = f"cuda:{env.local_rank}", "nccl"
        else:
            where, backend = "cpu", "gloo"
        options = dict(backend=backend, timeout=timedelta(seconds=timeout_s), rank=env.rank, world_size=env.world_size,
                       init_method=init_method)
        if use_cuda:
            options["device_id"] = torch.device(where)
        try:
            dist.init_process_group(**options)
        except (RuntimeError, ValueError) as err:
            raise RankStopped(f"The {env.world_size} ranks did not all join within {timeout_s:g} s: {_short(err)}",
                              hint="Start every rank (torchrun does) and check MASTER_ADDR / MASTER_PORT.") from None
        try:
            from torch.distributed.distributed_c10d import _get_default_store

            store = _get_default_store()
        except Exception:       # the store only names the rank that stopped; the run works without it
            store = None
        group = cls(env.rank, env.world_size, where, backend, timeout_s, store, env.agent_store, sequence_ways)
        if sequence_ways > 1:
            group._guidance_group = group._mesh(("guidance", "sequence"), (group.guidance_ranks, sequence_ways)) \
                .get_group("guidance")
        return group

    def _mesh(self, names: tuple, shape: tuple):
        """A DeviceMesh over all ranks (made once per layout; every rank makes it at the same point)."""
        key = (names, shape)
        if key not in self._meshes:
            from torch.distributed.device_mesh import init_device_mesh

            device_type = "cuda" if self.device.startswith("cuda") else "cpu"
            self._meshes[key] = self._collective(
                "setting up the rank groups", lambda: init_device_mesh(device_type, shape, mesh_dim_names=names))
        return self._meshes[key]

    def close(self) -> None:
        if dist.is_initialized():
            try:
                dist.destroy_process_group()
            except Exception:
                pass

    # -- what it does -------------------------------------------------------------------------

    def describe(self, n_passes: int, heads: int = 0) -> str:
        """'4 ranks: guidance passes 2-way (4 per step: 2+2), sequence 2-way (Ulysses 2)' for a model
        with `heads` attention heads."""
        return split_line(self.world, n_passes, self.sequence_ways, self._sequence_kind(heads))

    def settings(self, n_passes: int, heads: int = 0) -> dict:
        """What the run's settings (and the MP4's metadata) record about the split."""
        data = {"ranks": self.world, "backend": self.backend,
                "guidance_ways": guidance_ways(n_passes, self.guidance_ranks), "sequence_ways": self.sequence_ways,
                "passes_per_rank": [len(s) for s in assign_passes(n_passes, self.guidance_ranks)
                                    for _ in range(self.sequence_ways)]}
        if self.sequence_ways > 1:
            data["sequence_attention"] = self._sequence_kind(heads)
        return data

    def _sequence_kind(self, heads: int) -> str | None:
        from engine.parallel import sequence

        return sequence.describe(*sequence.split(self.sequence_ways, heads)) if self.sequence_ways > 1 and heads else None

    # -- sequence parallelism -------------------------------------------------------------------

    def split_model(self, model, attention_backend: str, available: list[str]) -> str | None:
        """Split `model`'s passes over this rank's sequence group (engine.parallel.sequence); a
        no-op with one sequence rank. Returns the attention backend to use when the given one
        cannot be split, else None."""
        if self.sequence_ways == 1:
            return None
        from engine.parallel import sequence

        ring, ulysses = sequence.split(self.sequence_ways, model.config.num_attention_heads)
        backend, note = sequence.backend_for(attention_backend, ring, available)
        mesh = self._mesh(("guidance", "ring", "ulysses"), (self.guidance_ranks, ring, ulysses))
        sequence.enable(model, mesh, ring, ulysses)
        return backend if note else None

    def check_tokens(self, tokens: int, frames_per_pass: int) -> None:
        """One line, before anything runs, when a pass's tokens cannot be cut into equal slices."""
        from engine.parallel import sequence

        sequence.check_tokens(self.sequence_ways, tokens, frames_per_pass)

    # -- collectives ---------------------------------------------------------------------------

    def same(self, value):
        """Rank 0's `value` on every rank (a picklable object)."""
        box = [value]
        self._collective("agreeing on the run's settings",
                         lambda: dist.broadcast_object_list(box, src=0, device=torch.device(self.device)))
        return box[0]

    def any(self, flag: bool) -> bool:
        """True on every rank when `flag` is true on at least one."""
        t = torch.tensor([1 if flag else 0], dtype=torch.int32, device=self.device)
        self._collective("agreeing whether to stop", lambda: dist.all_reduce(t, op=dist.ReduceOp.MAX))
        return bool(t.item())

    def agree_cancel(self, check_cancel: Callable[[], None] | None) -> None:
        """A cancel asked on any rank stops every rank at the same step (raises Cancelled on all)."""
        asked = False
        if check_cancel is not None:
            try:
                check_cancel()
            except Cancelled:
                asked = True
        if self.any(asked):
            raise Cancelled()

    def run_passes(self, passes: tuple, run: Callable[[list], dict], like: torch.Tensor) -> dict:
        """Run this rank's share of `passes` (`run(share) -> {name: output}`) and gather every
        rank's outputs: returns all passes' outputs, float32, the same on every rank. `like` is a
        tensor of the outputs' shape and device (the latents). With sequence ranks, the ranks of a
        sequence group run the same share together, and the gather goes along the guidance column."""
        shares = assign_passes(len(passes), self.guidance_ranks)
        share = [passes[i] for i in shares[self.guidance_rank]]
        if not share:
            outputs = {}
        elif self.sequence_ways == 1:
            outputs = run(share)
        else:       # the passes themselves talk to the other ranks of the sequence group
            try:
                outputs = run(share)
            except RuntimeError as err:
                if not _link_error(err):
                    raise           # this rank's own failure: the pipeline reports it to the others
                row = [self.guidance_rank * self.sequence_ways + j for j in range(self.sequence_ways)]
                raise self._stopped("running a pass split over the sequence ranks", err, row) from None
        slots = max(len(s) for s in shares)
        mine = torch.zeros((slots, *like.shape), dtype=torch.float32, device=like.device)
        for j, p in enumerate(share):
            mine[j] = outputs[p.name]
        if self.guidance_ranks == 1:
            gathered = [mine]
        else:
            gathered = [torch.empty_like(mine) for _ in range(self.guidance_ranks)]
            column = [g * self.sequence_ways + self.sequence_rank for g in range(self.guidance_ranks)]
            self._collective("gathering the guidance passes",
                             lambda: dist.all_gather(gathered, mine, group=self._guidance_group), column)
        return {passes[i].name: gathered[r][j] for r, share_r in enumerate(shares) for j, i in enumerate(share_r)}

    # -- requests handed out by rank 0 (the studio on several GPUs: engine.parallel.serve) ------

    def publish(self, job: dict | None) -> None:
        """Rank 0: hand `job` (JSON-able; None = stop) to the other ranks, which wait in `next_job`."""
        self._jobs += 1
        self._store.set(f"{_PREFIX}job/{self._jobs}", json.dumps(job))

    def next_job(self, poll_s: float = 300.0) -> dict | None:
        """The other ranks: wait (as long as it takes) for rank 0's next job; None = stop.
        RankStopped when rank 0 is gone (its store with it)."""
        self._jobs += 1
        key = f"{_PREFIX}job/{self._jobs}"
        while True:
            try:
                self._store.wait([key], timedelta(seconds=poll_s))
                return json.loads(self._store.get(key).decode())
            except RuntimeError as err:       # torch's store errors are RuntimeErrors
                if "timeout" not in str(err).lower() and "timed out" not in str(err).lower():
                    raise RankStopped(f"rank 0 stopped: {_short(err)}") from None

    # -- failures -------------------------------------------------------------------------------

    def begin_run(self) -> None:
        """Forget this rank's report of an earlier run's failure."""
        if self._store is not None:
            try:
                self._store.delete_key(f"{_PREFIX}stopped/{self.rank}")
            except Exception:
                pass

    def report_stop(self, err: BaseException) -> None:
        """Tell the other ranks why this one stops (best effort: the store may be gone too)."""
        if self._store is None:
            return
        if isinstance(err, GeneratorExit):
            why = "its run was closed before the end"
        elif isinstance(err, KeyboardInterrupt):
            why = "it was interrupted"
        elif isinstance(err, EngineError):
            why = _short(err)
        else:
            why = f"{type(err).__name__}: {_short(err)}"
        try:
            self._store.set(f"{_PREFIX}stopped/{self.rank}", f"{self._op}|{why}")
        except Exception:
            pass

    def _collective(self, what: str, fn: Callable[[], object], members: list[int] | None = None):
        """`fn()`, a collective among `members` (default: every rank); its failure as RankStopped."""
        self._op += 1
        try:
            return fn()
        except RuntimeError as err:          # torch.distributed's errors are RuntimeErrors
            raise self._stopped(what, err, members) from None

    def _read(self, key: str) -> str | None:
        return self._store.get(key).decode() if self._store.check([key]) else None

    def _fresh(self, key: str) -> str | None:
        """An 'op|text' report written at this collective (or the one before), else None."""
        raw = self._read(key)
        if not raw:
            return None
        op, _, text = raw.partition("|")
        return text if int(op) >= self._op - 1 else None

    def _await_reports(self, ranks: list[int], seconds: float) -> None:
        """Until each of `ranks` has reported (failed here, or stopped) or `seconds` have passed."""
        deadline = time.monotonic() + seconds
        pause = threading.Event()
        while time.monotonic() < deadline:
            if all(self._store.check([f"{_PREFIX}failed/{r}"]) or self._store.check([f"{_PREFIX}stopped/{r}"])
                   for r in ranks):
                return
            pause.wait(0.05)

    def _stopped(self, what: str, err: BaseException, members: list[int] | None = None) -> RankStopped:
        """The RankStopped for a failed collective among `members` (default: every rank). A member
        still alive soon fails at it too, or reaches it and fails, and says so in the store ("failed");
        one that stopped with an error said why ("stopped"). The members that say neither within a
        moment (a quarter of the timeout, at most 15 s) are named: killed, or stuck."""
        hint = "Check that rank's output; every rank must run to the end for a video to be made."
        timed_out = "timed out" in str(err).lower() or "timeout" in str(err).lower()
        others = [r for r in (range(self.world) if members is None else members) if r != self.rank]
        try:
            if self._store is None:
                raise RuntimeError("no store")
            self._store.set(f"{_PREFIX}failed/{self.rank}", f"{self._op}|")     # "alive, and saw it fail"
            notes = {r: why for r in others if (why := self._fresh(f"{_PREFIX}stopped/{r}")) is not None}
            silent = [r for r in others if r not in notes]
            if silent:
                self._await_reports(silent, min(15.0, max(1.0, self.timeout_s / 4)))
                notes.update({r: why for r in silent if (why := self._fresh(f"{_PREFIX}stopped/{r}")) is not None})
                silent = [r for r in silent if r not in notes and self._fresh(f"{_PREFIX}failed/{r}") is None]
        except Exception:
            # The store lives with torchrun's agent, or else with rank 0: gone with it.
            if not self._agent_store and self.rank != 0:
                return RankStopped(f"rank 0 stopped while {what}: {_short(err)}", hint=hint)
            return RankStopped(f"another rank stopped while {what}: {_short(err)}", hint=hint)
        named = sorted(set(silent) | set(notes))
        if not named:
            return RankStopped(f"a rank stopped while {what}: {_short(err)}", hint=hint)
        who = f"rank {named[0]}" if len(named) == 1 else "ranks " + ", ".join(map(str, named))
        reasons = list(dict.fromkeys(notes[r] for r in named if r in notes))
        if reasons:
            why = "; ".join(reasons)
        elif timed_out:
            why = f"no answer for {self.timeout_s:g} s while {what} (stuck, or killed)"
        else:
            why = f"it ended while {what} without saying why (killed, or out of memory?)"
        return RankStopped(f"{who} stopped: {why}", hint=hint)
