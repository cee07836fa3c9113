"""Guidance-branch parallelism on torch.distributed (gloo on the CPU, tiny weights).

Each rank is a real process with the environment torchrun gives it (RANK, WORLD_SIZE, LOCAL_RANK,
MASTER_ADDR, MASTER_PORT on a free port), running tests/dist_worker.py; one test launches the CLI
through torchrun itself. Runs are compared with a single process, bit for bit.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from engine.errors import EngineError
from engine.parallel import assign_passes, launch_env, split_line, step_speedup
from engine.parallel.group import timeout_from_env
from tests.conftest import ROOT
from tests.media_fixtures import tone_mix, write_wav

WORKER = ROOT / "tests" / "dist_worker.py"
LAUNCH_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK", "MASTER_ADDR", "MASTER_PORT",
               "TORCHELASTIC_USE_AGENT_STORE", "TORCHELASTIC_RUN_ID")
PROCESS_LIMIT_S = 90


# -- the split, as pure functions ------------------------------------------------------------

@pytest.mark.parametrize("passes, world, expected", [
    (4, 1, [[0, 1, 2, 3]]),
    (4, 2, [[0, 1], [2, 3]]),
    (4, 3, [[0, 1], [2], [3]]),
    (3, 2, [[0, 1], [2]]),
    (2, 3, [[0], [1], []]),
    (3, 4, [[0], [1], [2], []]),
])
def test_passes_are_shared_out_evenly_and_in_order(passes, world, expected):
    assert assign_passes(passes, world) == expected


def test_every_split_covers_each_pass_once_with_shares_one_apart():
    for passes in range(0, 7):
        for world in range(1, 9):
            shares = assign_passes(passes, world)
            sizes = [len(s) for s in shares]
            assert len(shares) == world
            assert [i for s in shares for i in s] == list(range(passes))
            assert max(sizes) - min(sizes) <= 1 and sizes == sorted(sizes, reverse=True)
    with pytest.raises(ValueError):
        assign_passes(4, 0)


def test_split_line_and_speedup():
    assert split_line(4, 4, 2, "Ulysses 2") == "4 ranks: guidance passes 2-way (4 per step: 2+2), sequence 2-way (Ulysses 2)"
    assert split_line(6, 3, 2, "Ulysses 2") == "6 ranks: guidance passes 3-way (3 per step: 1+1+1), sequence 2-way (Ulysses 2)"
    assert "2 ranks idle" in split_line(8, 3, 2)        # 4 columns of 2 ranks, 3 passes: one column waits
    assert step_speedup(4, 4, 2) == 4.0 and step_speedup(3, 6, 2) == 6.0 and step_speedup(3, 2, 2) == 2.0
    assert split_line(2, 4) == "2 ranks: guidance passes 2-way (4 per step: 2+2), sequence 1-way"
    assert split_line(3, 4) == "3 ranks: guidance passes 3-way (4 per step: 2+1+1), sequence 1-way"
    assert "1 rank idle" in split_line(4, 3)
    assert step_speedup(4, 2) == 2.0 and step_speedup(4, 3) == 2.0 and step_speedup(3, 2) == 1.5
    assert step_speedup(4, 4) == 4.0 and step_speedup(3, 8) == 3.0


def test_launch_env_reads_torchrun_variables():
    assert launch_env({}) is None
    assert launch_env({"WORLD_SIZE": "1", "RANK": "0"}) is None
    env = launch_env({"WORLD_SIZE": "4", "RANK": "3", "LOCAL_RANK": "1", "TORCHELASTIC_USE_AGENT_STORE": "True"})
    assert (env.rank, env.world_size, env.local_rank, env.agent_store) == (3, 4, 1, True)
    with pytest.raises(EngineError, match="outside"):
        launch_env({"WORLD_SIZE": "2", "RANK": "2"})
    with pytest.raises(EngineError, match="not whole numbers"):
        launch_env({"WORLD_SIZE": "two"})
    assert timeout_from_env({}) == 900.0 and timeout_from_env({"HUMO_DIST_TIMEOUT_S": "12.5"}) == 12.5
    with pytest.raises(EngineError):
        timeout_from_env({"HUMO_DIST_TIMEOUT_S": "soon"})


def test_dist_model_is_labelled_modelled_and_its_arithmetic_holds(capsys):
    from engine.tools import dist_model

    assert dist_model.main(["--gpus", "2,4,8"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("MODELLED, NOT MEASURED") and "PLACEHOLDERS" in text
    rows = dist_model.model([2, 4, 8], {"nvlink": 450.0}, {"humo-1.7b": 1.0, "humo-17b": 20.0})
    by = {(r["variant"], r["gpus"]): r for r in rows}
    small = by[("humo-1.7b", 2)]
    # 1.7B 480p: 25 + 1 latent frames of 60x104, float32 -> one pass output; 2 ranks x 2 passes each.
    assert small["out_bytes"] == 16 * 26 * 60 * 104 * 4 and small["tokens"] == 26 * 30 * 52
    assert small["guidance"]["comm_bytes"] == 2 * small["out_bytes"]
    assert by[("humo-1.7b", 8)]["guidance"]["speedup"] <= 4.0 < by[("humo-1.7b", 8)]["best"]["speedup"]
    assert by[("humo-17b", 2)]["guidance"]["speedup"] < 1.5 + 1e-9          # 3 passes on 2 GPUs: 2 + 1
    assert by[("humo-17b", 2)]["best"]["sequence_ways"] == 2                # 3 passes: a sequence split does better
    seq = by[("humo-1.7b", 2)]["sequence"]          # 1 column, 2 sequence ranks: all 4 passes on half the tokens
    assert seq["guidance_ways"] == 1 and seq["compute_s"] == pytest.approx(4 * 1.0 / 2)
    per_pass = small["layers"] * 4 * small["tokens"] / 2 * small["dim"] * 2 / 2 + small["out_bytes"] / 2 / 2
    assert seq["comm_bytes"] == pytest.approx(4 * per_pass)
    assert dist_model.main(["--pass-s-1.7b", "2.0", "--pass-s-17b", "30", "--link", "pcie", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["modelled"] and not data["measured"] and not data["pass_s_placeholder"]


# -- real ranks ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    d = tmp_path_factory.mktemp("dist-inputs")
    wav = write_wav(d / "voice.wav", tone_mix(16000 * 2, 16000, amp=0.3), 16000)
    img = Image.new("RGB", (96, 128), (90, 120, 200))
    for y in range(0, 128, 4):
        for x in range(96):
            img.putpixel((x, y), (200, 100 + y, 140))
    img.save(d / "face.png")
    return {"audio": str(wav), "image": str(d / "face.png")}


def request(inputs, variant="tiny", **over) -> dict:
    r = dict(prompt="A woman talks to the camera", variant=variant, mode="TIA", images=[inputs["image"]],
             audio=inputs["audio"], frames=5, steps=3, width=128, height=96, seed=11, preview=False)
    r.update(over)
    return r


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def base_env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in LAUNCH_VARS}
    env.update(OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1", **extra)
    return env


class Ranks:
    """One worker process per rank; their results once they have ended."""

    def __init__(self, tmp: Path, weights: Path, scenario: str, req: dict, world: int, timeout_s: float = 60,
                 sequence: int = 1, **job):
        self.folder = tmp / f"{scenario}-{world}-{sequence}"
        self.folder.mkdir()
        req = {**req, "out_path": str(self.folder / "video.mp4")}
        spec = self.folder / "job.json"
        spec.write_text(json.dumps({"weights": str(weights), "results": str(self.folder), "request": req, **job}))
        port = free_port()
        self.started = time.monotonic()
        self.procs = []
        for rank in range(world):
            launch = {} if world == 1 else dict(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                                                MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
            self.procs.append(subprocess.Popen(
                [sys.executable, str(WORKER), scenario, str(spec)], cwd=ROOT, stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT, text=True,
                env=base_env(HUMO_DIST_TIMEOUT_S=str(timeout_s), HUMO_SEQUENCE_WAYS=str(sequence), **launch)))

    def wait(self, ranks=None) -> dict[int, dict]:
        """Wait for the given ranks (default all) to end; their result files, by rank."""
        ranks = range(len(self.procs)) if ranks is None else ranks
        try:
            for r in ranks:
                out, _ = self.procs[r].communicate(timeout=PROCESS_LIMIT_S)
                assert self.procs[r].returncode in (0, -signal.SIGKILL), f"rank {r} failed:\n{out[-3000:]}"
        finally:
            self.seconds = time.monotonic() - self.started
        return {r: json.loads(p.read_text()) for r in ranks
                if (p := self.folder / f"result-rank{r}.json").is_file()}

    def latents(self, rank: int) -> torch.Tensor:
        return torch.load(self.folder / f"latents-rank{rank}.pt")

    def stop_all(self) -> None:
        for p in self.procs:       # only the processes this test started, by their own handles
            if p.poll() is None:
                p.kill()
                p.communicate()


@pytest.fixture
def ranks(tmp_path, tiny_weights):
    started: list[Ranks] = []

    def start(scenario, req, world, **job):
        r = Ranks(tmp_path, tiny_weights, scenario, req, world, **job)
        started.append(r)
        return r

    yield start
    for r in started:
        r.stop_all()


@pytest.fixture(scope="module")
def single(tmp_path_factory, tiny_weights, inputs):
    """Single-process reference runs, one per variant and settings, made on first use."""
    done: dict[str, Ranks] = {}

    def get(variant: str, **over) -> Ranks:
        key = json.dumps([variant, over], sort_keys=True)
        if key not in done:
            run = Ranks(tmp_path_factory.mktemp(f"single-{variant}"), tiny_weights, "run",
                        request(inputs, variant, **over), 1)
            assert run.wait()[0]["outcome"] == "done"
            done[key] = run
        return done[key]

    return get


WINDOWS = dict(frames=9, window_length=2, window_overlap=1)   # 3 latent frames in 2 context windows per step


@pytest.mark.parametrize("variant, world, sequence, over", [
    ("tiny", 2, 1, {}), ("tiny", 3, 1, {}), ("tiny-17b", 2, 1, {}), ("tiny", 2, 1, WINDOWS),
    ("tiny", 2, 2, {}), ("tiny-17b", 2, 2, {}), ("tiny", 4, 2, {}), ("tiny", 2, 2, WINDOWS),
], ids=["1.7b-layout-2-ranks", "1.7b-layout-3-ranks", "17b-layout-2-ranks", "windows-2-ranks",
        "1.7b-layout-sequence-2", "17b-layout-sequence-2", "guidance-2-x-sequence-2", "windows-sequence-2"])
def test_distributed_run_equals_the_single_process_run(ranks, single, inputs, variant, world, sequence, over):
    ref = single(variant, **over).latents(0)
    run = ranks("run", request(inputs, variant, **over), world, sequence=sequence)
    results = run.wait()
    assert sorted(results) == list(range(world)) and all(r["outcome"] == "done" for r in results.values())
    for rank in range(world):
        got = run.latents(rank)
        assert got.shape == ref.shape
        assert (got - ref).abs().max().item() <= 1e-5
        if sequence == 1:       # no pass is cut: the very same arithmetic
            assert torch.equal(got, ref), f"rank {rank} differs from the single process (bit for bit)"
    passes = 4 if variant == "tiny" else 3
    columns = world // sequence
    kind = "Ulysses 2" if sequence == 2 else None       # the tiny models have 2 attention heads
    assert split_line(world, passes, sequence, kind) in results[0]["notices"]
    expected = {"ranks": world, "backend": "gloo", "guidance_ways": min(passes, columns), "sequence_ways": sequence,
                "passes_per_rank": [len(s) for s in assign_passes(passes, columns) for _ in range(sequence)]}
    if sequence > 1:
        expected["sequence_attention"] = kind
    assert results[0]["settings"]["parallel"] == expected
    # Each rank's passes really run on its share of the tokens: 2 latent frames (or a window of 2)
    # plus the reference frame, 48 tokens each at 128x96.
    for r in range(world):
        assert results[r]["tokens_per_pass"] == [3 * 48 // sequence], results[r]["tokens_per_pass"]
    # Rank 0 writes the one video; the others return no file.
    assert Path(results[0]["video_path"]).is_file()
    assert all(results[r]["video_path"] is None for r in range(1, world))
    assert run.seconds < 60


@pytest.mark.parametrize("sequence", [1, 2])
def test_a_cancel_on_rank_0_stops_every_rank_at_the_same_step(ranks, inputs, sequence):
    run = ranks("cancel", request(inputs, steps=40), 2, sequence=sequence, cancel_after=1)
    results = run.wait()
    assert [results[r]["outcome"] for r in (0, 1)] == ["cancelled", "cancelled"]
    assert results[0]["steps"] == results[1]["steps"] == 1      # agreed at the start of step 2
    assert not (run.folder / "video.mp4").exists()


def test_a_killed_rank_is_named_instead_of_a_hang(ranks, inputs):
    # 3 ranks, 4 passes: rank 1 runs one pass a step; it is killed in its second pass (step 2).
    run = ranks("kill", request(inputs, steps=4), 3, timeout_s=12, bad_rank=1, bad_call=2)
    results = run.wait()
    assert run.procs[1].returncode == -signal.SIGKILL and 1 not in results
    for r in (0, 2):
        assert results[r]["outcome"] == "error" and results[r]["error_type"] == "RankStopped"
        assert results[r]["error"].startswith("rank 1 stopped: "), results[r]["error"]
        assert "\n" not in results[r]["error"]
    assert run.seconds < 60


def test_a_rank_killed_inside_a_split_pass_is_named(ranks, inputs):
    # 2 sequence ranks share every pass: rank 1 dies in the middle of the ranks' all-to-alls.
    run = ranks("kill", request(inputs, steps=4), 2, timeout_s=12, sequence=2, bad_rank=1, bad_call=3)
    results = run.wait()
    assert run.procs[1].returncode == -signal.SIGKILL and 1 not in results
    assert results[0]["outcome"] == "error" and results[0]["error_type"] == "RankStopped", results[0]["error"]
    assert results[0]["error"].startswith("rank 1 stopped: "), results[0]["error"]
    assert run.seconds < 60


def test_a_size_whose_tokens_do_not_split_is_refused_before_loading(ranks, inputs):
    # 144x80: 9x5 = 45 tokens per latent frame, 3 frames: 135 tokens do not cut in two.
    run = ranks("run", request(inputs, width=144, height=80), 2, sequence=2)
    results = run.wait()
    for r in (0, 1):
        assert results[r]["outcome"] == "error" and results[r]["error_type"] == "InputError"
        assert "135 tokens" in results[r]["error"] and "2 equal slices" in results[r]["error"]
        assert results[r]["tokens_per_pass"] == []         # nothing ran
    assert not (run.folder / "video.mp4").exists()


def test_an_error_on_one_rank_reaches_rank_0_with_its_reason(ranks, inputs):
    run = ranks("fail", request(inputs, steps=4), 2, timeout_s=12, bad_rank=1, bad_call=3)
    results = run.wait()
    assert results[1]["error_type"] == "RuntimeError" and "pretend the GPU ran out of memory" in results[1]["error"]
    assert results[0]["error"].startswith("rank 1 stopped: RuntimeError: pretend the GPU ran out of memory"), \
        results[0]["error"]
    assert run.seconds < 60


def test_a_stuck_rank_is_given_up_on_after_the_timeout(ranks, inputs):
    run = ranks("stall", request(inputs, steps=4), 2, timeout_s=6, bad_rank=1, bad_call=2)
    results = run.wait(ranks=[0])
    assert results[0]["outcome"] == "error"
    assert results[0]["error"].startswith("rank 1 stopped: no answer for 6 s"), results[0]["error"]
    assert 6 <= results[0]["seconds"] < 40
    assert run.procs[1].poll() is None       # still there, stopped: the fixture ends it


@pytest.mark.parametrize("sequence", [1, 2])
def test_torchrun_cli_writes_one_video_equal_to_the_single_process_video(tiny_weights, inputs, single, tmp_path,
                                                                          sequence):
    from engine.media import probe_mp4, read_video_frames

    out = tmp_path / "cli.mp4"
    r = request(inputs)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr", "127.0.0.1",
           "--master-port", str(free_port()), "-m", "engine", "generate", "--variant", r["variant"],
           "--weights", str(tiny_weights), "--prompt", r["prompt"], "--mode", r["mode"], "--image", r["images"][0],
           "--audio", r["audio"], "--frames", str(r["frames"]), "--steps", str(r["steps"]), "--size", "128x96",
           "--seed", str(r["seed"]), "--out", str(out), "--sequence-ways", str(sequence)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=PROCESS_LIMIT_S, env=base_env())
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = {1: "2 ranks: guidance passes 2-way (4 per step: 2+2), sequence 1-way",
            2: "2 ranks: guidance passes 1-way (4 per step: 4), sequence 2-way (Ulysses 2)"}[sequence]
    assert line in proc.stderr
    assert proc.stdout.count("wrote ") == 1 and f"wrote {out}" in proc.stdout     # rank 0 only
    meta = probe_mp4(out)["metadata"]["humo_studio"]
    assert meta["parallel"]["ranks"] == 2 and meta["parallel"]["guidance_ways"] == 2 // sequence
    assert meta["parallel"]["sequence_ways"] == sequence
    reference = single("tiny").folder / "video.mp4"
    got, want = read_video_frames(out), read_video_frames(reference)
    assert got.shape == want.shape and np.abs(got.astype(int) - want.astype(int)).max() <= (0 if sequence == 1 else 1)
