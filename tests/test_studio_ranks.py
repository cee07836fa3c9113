"""The studio on several ranks (`./launch.sh --gpus N`; gloo CPU processes on this machine): the
studio is rank 0 and hands each request to the other ranks; a run's video records the split; a
cancel reaches every rank; a rank killed mid-run is one message on the page, and the next run
works again with the ranks started afresh. Driven through the real app's API with gradio_client."""
from __future__ import annotations

from pathlib import Path

import psutil
import pytest
from gradio_client import Client

from conftest_ui import StudioProcess, make_tiny_weights, portrait, spoken_clip
from engine.media import probe_mp4
from tests.test_api import generate_args
from tests.waiting import wait_until


@pytest.fixture(scope="module")
def studio(tmp_path_factory):
    root = tmp_path_factory.mktemp("studio-ranks")
    with StudioProcess(make_tiny_weights(root / "weights"), root / "outputs", root / "app.log",
                       extra_args=("--gpus", "2"), env={"OMP_NUM_THREADS": "1"}) as app:
        client = Client(app.url, verbose=False, download_files=str(root / "downloads"))
        yield {"app": app, "client": client, "root": root,
               "photo": portrait(root / "portrait.png"), "voice": spoken_clip(root / "voice.wav", "Good morning!")}


def other_ranks(app) -> list[psutil.Process]:
    """The rank processes the studio started (its children running engine.parallel.serve)."""
    return [p for p in psutil.Process(app.proc.pid).children(recursive=True)
            if "engine.parallel.serve" in " ".join(p.cmdline())]


def step_of(job) -> int:
    last = str((job.outputs() or [[""]])[-1][0])
    return int(last.split('data-step="')[1].split('"')[0]) if 'data-step="' in last else 0


def video_of(outputs) -> str:
    status, _preview, video, _summary, _grid = outputs[-1]
    assert "Done:" in status, status
    return video["video"] if isinstance(video, dict) else video


def test_a_run_on_two_ranks_makes_one_video_that_records_the_split(studio):
    client = studio["client"]
    job = client.submit(*generate_args(studio, steps=3, seed=7), api_name="/generate")
    job.result(timeout=300)
    meta = probe_mp4(video_of(job.outputs()))["metadata"]["humo_studio"]
    assert meta["parallel"]["ranks"] == 2 and meta["parallel"]["guidance_ways"] == 2
    assert meta["parallel"]["passes_per_rank"] == [2, 2]
    assert len(other_ranks(studio["app"])) == 1
    # Only rank 0 writes: one new video in the outputs, none from the other rank.
    assert len(list(Path(studio["root"], "outputs").rglob("*.mp4"))) >= 1


def test_cancel_reaches_every_rank_and_keeps_them(studio):
    client = studio["client"]
    ranks_before = [p.pid for p in other_ranks(studio["app"])]
    job = client.submit(*generate_args(studio, prompt="A long take to cancel.", steps=60, seed=3), api_name="/generate")
    wait_until(lambda: step_of(job) >= 1, 240, "the run to start denoising")
    client.predict(api_name="/cancel")
    job.result(timeout=120)
    assert "Cancelled. Ready for the next run." in job.outputs()[-1][0]
    # Both ranks stopped at the same step and wait for the next request: the same processes serve it.
    job = client.submit(*generate_args(studio, steps=2, seed=8), api_name="/generate")
    job.result(timeout=300)
    video_of(job.outputs())
    assert [p.pid for p in other_ranks(studio["app"])] == ranks_before


def test_a_rank_killed_mid_run_is_one_message_and_the_next_run_works(studio):
    client, app = studio["client"], studio["app"]
    job = client.submit(*generate_args(studio, prompt="A take that loses a rank.", steps=60, seed=4),
                        api_name="/generate")
    wait_until(lambda: step_of(job) >= 1 and other_ranks(app), 240, "the run to start denoising on both ranks")
    (victim,) = other_ranks(app)
    victim.kill()
    job.result(timeout=120)
    final = str(job.outputs()[-1][0])
    assert "rank 1 stopped" in final, final
    # The studio keeps serving: the next run starts the ranks again and makes its video.
    job = client.submit(*generate_args(studio, steps=2, seed=9), api_name="/generate")
    job.result(timeout=300)
    meta = probe_mp4(video_of(job.outputs()))["metadata"]["humo_studio"]
    assert meta["parallel"]["ranks"] == 2
    (fresh,) = other_ranks(app)
    assert fresh.pid != victim.pid
    assert app.alive()


def test_a_rank_that_cannot_start_is_said_at_once(tiny_weights, monkeypatch):
    """The other ranks read HUMO_DIST_TIMEOUT_S themselves: a bad value stops them before they join.
    Rank 0 (given its timeout directly) says which rank could not start, without waiting it out."""
    from engine.errors import EngineError
    from engine.parallel.serve import RankPool

    monkeypatch.setenv("HUMO_DIST_TIMEOUT_S", "soon")
    pool = RankPool(2, str(tiny_weights), device="cpu", timeout_s=20)
    with pytest.raises(EngineError, match=r"Rank 1 of 2 could not start \(exit code 1\)"):
        pool.start()
    assert pool.procs == [] and pool.group is None and not pool.ready
