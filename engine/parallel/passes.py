"""Guidance-branch parallelism: which rank runs which guidance pass.

HuMo runs 2–4 network passes per denoising step (engine.humo.guidance). The passes of a step are
independent, so with N ranks each runs a share and the predictions are gathered; every rank then
combines the same numbers. These functions are pure: the same answer on every rank.
"""
from __future__ import annotations


def assign_passes(n_passes: int, world: int) -> list[list[int]]:
    """Pass indices per rank: contiguous shares whose sizes differ by at most one, the larger
    shares first (4 passes on 3 ranks: [[0, 1], [2], [3]]). Ranks past the pass count get none."""
    if n_passes < 0 or world < 1:
        raise ValueError(f"cannot split {n_passes} passes over {world} ranks")
    base, extra = divmod(n_passes, world)
    shares, start = [], 0
    for rank in range(world):
        size = base + (1 if rank < extra else 0)
        shares.append(list(range(start, start + size)))
        start += size
    return shares


def guidance_ways(n_passes: int, world: int) -> int:
    """How many ranks run passes at the same time (the rest wait for the gather)."""
    return min(n_passes, world)


def split_line(world: int, n_passes: int, sequence: int = 1, kind: str | None = None) -> str:
    """One line for people: '3 ranks: guidance passes 3-way (4 per step: 2+1+1), sequence 1-way';
    with sequence ranks, '4 ranks: guidance passes 2-way (4 per step: 2+2), sequence 2-way (Ulysses 2)'."""
    columns = world // sequence
    shares = assign_passes(n_passes, columns)
    sizes = "+".join(str(len(s)) for s in shares)
    line = (f"{world} ranks: guidance passes {guidance_ways(n_passes, columns)}-way "
            f"({n_passes} per step: {sizes}), sequence {sequence}-way")
    if sequence > 1 and kind:
        line += f" ({kind})"
    idle = sum(1 for s in shares if not s) * sequence
    if idle:
        line += f"; {idle} rank{'s' if idle > 1 else ''} idle (more ranks than passes)"
    return line


def step_speedup(n_passes: int, world: int, sequence: int = 1) -> float:
    """The ideal speed-up of the network work of one step (communication left out): the slowest
    group of `sequence` ranks runs ceil(passes / groups) passes, each on 1/sequence of the tokens."""
    columns = world // sequence
    return (n_passes / max(len(s) for s in assign_passes(n_passes, columns)) if n_passes else 1.0) * sequence
