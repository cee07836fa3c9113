"""Weights: downloads that resume across runs (partial files under <weights>/.partial/).

The stand-in Hub serves the bytes; each test interrupts a transfer one way or another and
checks that the next run asks only for the rest, or starts over when it must."""
from __future__ import annotations

import hashlib
import json
import shutil
import sys
from collections import namedtuple
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from hub_server import FakeHub  # noqa: E402

from engine import weights as W  # noqa: E402
from engine.__main__ import main as engine_main  # noqa: E402
from engine.errors import OutOfResources, WeightsError  # noqa: E402

from weights_fixtures import Event, expected_files, fake_release, hub, torch_zip  # noqa: E402,F401 (hub is a fixture)
from tests.waiting import wait_until  # noqa: E402

# ---------------------------------------------------------------------------------------------
# Resuming across runs: partial files under <weights>/.partial/
# ---------------------------------------------------------------------------------------------

MiB = 1024 * 1024


def big_file(hub, seed: int = 20, size: int = 24 * MiB, repo: str = "test/big"):
    """A file of many read chunks, so bytes reach the disk mid-file."""
    data = np.random.default_rng(seed).bytes(size)
    hub.add_repo(repo, {"big.bin": data})
    return data, W.Component("dit", "big test file", repo, "big", ("big.bin",), len(data))


def partial_of(wd: Path, rel: str) -> Path:
    return wd / ".partial" / (rel + ".part")


def file_gets(hub, name: str) -> list[str | None]:
    """The Range header of each GET of the file `name` (None: from the start)."""
    return [r for m, p, r in hub.requests if m == "GET" and urlsplit_path(p).endswith("/" + name)]


def urlsplit_path(p: str) -> str:
    from urllib.parse import unquote, urlsplit

    return unquote(urlsplit(p).path)


def cancel_mid_file(hub, repo_id: str, repo_path: str, written, run) -> None:
    """Cancel `run(cancel)` (a download in a thread) once `written()` says 10 MiB are on disk.

    The hub stalls after 15 MiB, so the bytes up to there reach the disk (in read chunks); then
    the cancel is set and the hub sends the rest, which the cancelled transfer refuses.
    """
    import threading

    from engine.errors import Cancelled

    cancel = threading.Event()
    outcome: list[BaseException | None] = []

    def target() -> None:
        try:
            run(cancel)
            outcome.append(None)
        except BaseException as err:  # noqa: BLE001 - handed to the test thread
            outcome.append(err)

    hub.stall_once(repo_id, repo_path, 15 * MiB)
    worker = threading.Thread(target=target, daemon=True)
    worker.start()
    wait_until(lambda: written() >= 10 * MiB or not worker.is_alive(), 30, "10 MiB of the download")
    assert worker.is_alive(), outcome
    cancel.set()
    hub.release(finish=True)
    worker.join(30)
    assert len(outcome) == 1 and isinstance(outcome[0], Cancelled), outcome


def size_of(path: Path) -> int:
    return path.stat().st_size if path.is_file() else 0


def interrupted_run(hub, wd: Path, comp, data: bytes) -> int:
    """A first run that is cancelled mid-file; returns the bytes it left in the partial file."""
    part = partial_of(wd, "big/big.bin")
    cancel_mid_file(hub, comp.repo_id, "big.bin", lambda: size_of(part),
                    lambda cancel: W.download("humo-1.7b", wd, components=[comp], cancel=cancel))
    kept = size_of(part)
    assert 0 < kept < len(data)
    assert part.read_bytes() == data[:kept]
    assert not (wd / "big/big.bin").exists()
    return kept


def test_cancelled_download_resumes_with_range_in_the_next_run(hub, tmp_path):
    data, comp = big_file(hub)
    wd = tmp_path / "w"
    kept = interrupted_run(hub, wd, comp, data)
    sidecar = json.loads((wd / ".partial/big/big.bin.part.json").read_text())
    assert sidecar["size"] == len(data) and sidecar["sha256"] == hashlib.sha256(data).hexdigest()
    assert sidecar["repo_id"] == "test/big" and sidecar["repo_path"] == "big.bin"

    # the partial file never counts as the file
    st = W.find("humo-1.7b", wd, components=[comp])
    assert not st.complete and st.missing_files == ["big/big.bin"]
    assert st.partial_files == {"big/big.bin": kept}
    assert st.bytes_to_download == len(data) - kept

    hub.requests.clear()
    events, messages = [], []
    status = W.download("humo-1.7b", wd, components=[comp], progress=lambda *a: events.append(Event(*a)),
                        on_message=messages.append)
    assert status.complete
    assert file_gets(hub, "big.bin") == [f"bytes={kept}-"]  # only the rest was asked for
    assert (wd / "big/big.bin").read_bytes() == data
    assert not (wd / ".partial").exists()  # partial, sidecar and lock gone
    mine = [e for e in events if e.file == "big/big.bin"]
    assert mine[0].done == kept and mine[0].total == len(data)  # the resumed offset counts as done
    assert mine[-1].done == len(data)
    assert any(m.startswith(f"Resuming big/big.bin at {W.format_bytes(kept)} of {W.format_bytes(len(data))}")
               for m in messages), messages
    assert any("already here from before" in m for m in messages)
    manifest = json.loads((wd / W.MANIFEST_NAME).read_text())["files"]
    assert manifest["big/big.bin"]["sha256"] == hashlib.sha256(data).hexdigest()


def test_file_changed_on_the_hub_between_runs_is_fetched_from_zero(hub, tmp_path):
    data, comp = big_file(hub)
    wd = tmp_path / "w"
    interrupted_run(hub, wd, comp, data)

    new_data, _ = big_file(hub, seed=21, size=20 * MiB)  # a new upload of the same path
    hub.requests.clear()
    messages = []
    assert W.download("humo-1.7b", wd, components=[comp], on_message=messages.append).complete
    assert file_gets(hub, "big.bin") == [None]
    assert (wd / "big/big.bin").read_bytes() == new_data
    assert any("again from zero" in m and "changed on the Hub" in m for m in messages), messages
    assert not (wd / ".partial").exists()


def test_damaged_partial_is_caught_by_sha256_and_fetched_again(hub, tmp_path):
    data, comp = big_file(hub)
    wd = tmp_path / "w"
    kept = interrupted_run(hub, wd, comp, data)
    part = partial_of(wd, "big/big.bin")
    with open(part, "r+b") as f:  # a few bytes that differ from the Hub's (bad disk, crash)
        f.seek(kept // 2)
        f.write(bytes(b ^ 0xFF for b in data[kept // 2: kept // 2 + 16]))

    hub.requests.clear()
    messages = []
    assert W.download("humo-1.7b", wd, components=[comp], on_message=messages.append).complete
    assert file_gets(hub, "big.bin") == [f"bytes={kept}-", None]  # resumed, caught, fetched again
    assert (wd / "big/big.bin").read_bytes() == data
    assert any("failed its check after resuming" in m and "sha256" in m for m in messages), messages
    assert not (wd / ".partial").exists()


def test_resumed_file_that_fails_again_from_zero_is_removed_and_reported(hub, tmp_path):
    data, comp = big_file(hub)
    wd = tmp_path / "w"
    kept = interrupted_run(hub, wd, comp, data)
    hub.corrupt("test/big", "big.bin")  # the Hub now serves bad bytes under the same size and sha256
    hub.requests.clear()
    with pytest.raises(WeightsError) as err:
        W.download("humo-1.7b", wd, components=[comp])
    msg = str(err.value)
    assert "big/big.bin is damaged after download" in msg and "sha256" in msg and "\n" not in msg
    assert file_gets(hub, "big.bin") == [f"bytes={kept}-", None]  # resumed, then once from zero
    assert not (wd / "big/big.bin").exists() and not (wd / ".partial").exists()


def test_status_lists_partial_files_and_disk_check_counts_them(hub, tmp_path, capsys, monkeypatch):
    big_ema = torch_zip(1, 24 * MiB)
    release = fake_release()
    hub.add_repo(W.HUMO_REPO, {**release[W.HUMO_REPO], "HuMo-1.7B/ema.pth": big_ema})
    wd = tmp_path / "weights"
    part = partial_of(wd, "HuMo/HuMo-1.7B/ema.pth")
    cancel_mid_file(hub, W.HUMO_REPO, "HuMo-1.7B/ema.pth", lambda: size_of(part),
                    lambda cancel: W.download("humo-1.7b", wd, cancel=cancel))
    kept = size_of(part)
    assert 0 < kept < len(big_ema)

    assert engine_main(["status", "--weights", str(wd), "--variant", "humo-1.7b"]) == 0
    text = capsys.readouterr().out
    assert "missing: HuMo/HuMo-1.7B/ema.pth" in text
    assert f"partial: {W.format_bytes(kept)} of {W.format_bytes(len(big_ema))}, will resume" in text
    assert engine_main(["status", "--weights", str(wd), "--variant", "humo-1.7b", "--json"]) == 0
    js = json.loads(capsys.readouterr().out)["variants"][0]
    assert js["partial"] == {"HuMo/HuMo-1.7B/ema.pth": kept} and not js["complete"]
    assert "HuMo/HuMo-1.7B/ema.pth" in js["missing"]

    # the free-disk check asks only for what is not on disk yet
    sizes = {W.HUMO_REPO: {**release[W.HUMO_REPO], "HuMo-1.7B/ema.pth": big_ema}}
    need = sum(len((sizes.get(r) or release[r])[p]) for r, p in
               (x.split(":", 1) for x in expected_files("humo-1.7b")))
    Usage = namedtuple("Usage", "total used free")
    free = need - kept + W.DISK_MARGIN_BYTES - 10
    monkeypatch.setattr(shutil, "disk_usage", lambda path: Usage(10**12, 10**12 - free, free))
    with pytest.raises(OutOfResources) as err:
        W.download("humo-1.7b", wd)
    assert W.format_bytes(need - kept + W.DISK_MARGIN_BYTES) in str(err.value)
    free += 20
    monkeypatch.setattr(shutil, "disk_usage", lambda path: Usage(10**12, 10**12 - free, free))
    hub.requests.clear()
    assert W.download("humo-1.7b", wd).complete
    assert file_gets(hub, "ema.pth") == [f"bytes={kept}-"]
    assert (wd / "HuMo/HuMo-1.7B/ema.pth").read_bytes() == big_ema


def test_resume_through_a_storage_redirect_of_a_xet_backed_file(hub, tmp_path, monkeypatch):
    """Like the Hub: /resolve/ answers 302 to another host, here with Xet headers; Range still works there."""
    monkeypatch.setenv("HF_TOKEN", "hf_test_token_for_the_stand_in_hub")
    hub.use_cdn(xet=True)
    data, comp = big_file(hub)
    wd = tmp_path / "w"
    kept = interrupted_run(hub, wd, comp, data)
    hub.cdn_requests.clear()
    hub.authorization.clear()
    assert W.download("humo-1.7b", wd, components=[comp]).complete
    assert [(m, r) for m, _, r, _ in hub.cdn_requests] == [("GET", f"bytes={kept}-")]
    at_hub = [a for m, p, a in hub.authorization if m == "GET" and "/resolve/" in p]
    assert at_hub == ["Bearer hf_test_token_for_the_stand_in_hub"]  # the Hub gets the token...
    assert all(auth is None for *_, auth in hub.cdn_requests)  # ...the storage host never does
    assert (wd / "big/big.bin").read_bytes() == data


def test_another_download_of_the_same_file_is_refused(hub, tmp_path):
    from filelock import FileLock

    data, comp = big_file(hub, size=2 * MiB)
    wd = tmp_path / "w"
    (wd / ".partial/big").mkdir(parents=True)
    with FileLock(str(wd / ".partial/big/big.bin.part.lock")):
        with pytest.raises(WeightsError) as err:
            W.download("humo-1.7b", wd, components=[comp])
    assert "Another download of big/big.bin" in str(err.value)
    assert W.download("humo-1.7b", wd, components=[comp]).complete


def test_hub_mode_uses_hf_hub_download_and_keeps_no_partial(hub, tmp_path, monkeypatch):
    monkeypatch.setenv("HUMO_DOWNLOAD", "hub")
    data, comp = big_file(hub)
    wd = tmp_path / "w"
    # huggingface_hub's own per-process temporary file: deleted when the transfer stops
    cancel_mid_file(hub, "test/big", "big.bin", lambda: max(map(size_of, wd.rglob("*.incomplete")), default=0),
                    lambda cancel: W.download("humo-1.7b", wd, components=[comp], cancel=cancel))
    assert list(wd.rglob("*.incomplete")) == [] and not (wd / ".partial").exists()
    hub.requests.clear()
    assert W.download("humo-1.7b", wd, components=[comp]).complete
    assert file_gets(hub, "big.bin") == [None]  # from zero: no resume across runs in this mode
    assert (wd / "big/.cache/huggingface/download/big.bin.metadata").is_file()  # hf_hub_download's note
    assert (wd / "big/big.bin").read_bytes() == data

    monkeypatch.setenv("HUMO_DOWNLOAD", "fast")
    with pytest.raises(WeightsError) as err:
        W.download("humo-1.7b", tmp_path / "other", components=[comp])
    assert "HUMO_DOWNLOAD" in str(err.value) and "'hub'" in str(err.value)


def test_killed_cli_download_resumes_in_the_next_process(hub, tmp_path):
    """Ctrl-C, SIGTERM, then a hard kill of `python -m engine download`; each next run continues the file."""
    import os
    import signal
    import subprocess

    big_ema = torch_zip(1, 48 * MiB)
    hub.add_repo(W.HUMO_REPO, {**fake_release()[W.HUMO_REPO], "HuMo-1.7B/ema.pth": big_ema})
    wd = tmp_path / "weights"
    part = partial_of(wd, "HuMo/HuMo-1.7B/ema.pth")
    env = {**os.environ, "HF_ENDPOINT": hub.url, "HF_HOME": str(tmp_path / "hf-home"), "HF_HUB_OFFLINE": "0",
           "HF_HUB_DISABLE_TELEMETRY": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    cmd = [sys.executable, "-m", "engine", "download", "--variant", "humo-1.7b", "--weights", str(wd)]

    def run_until_partial_has(at_least: int, sig: int) -> subprocess.CompletedProcess:
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            wait_until(lambda: proc.poll() is not None or (part.is_file() and part.stat().st_size >= at_least), 60,
                       "the download to reach the stall")
            assert proc.poll() is None, proc.communicate()
            proc.send_signal(sig)
            out, err = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
            hub.release()
        return subprocess.CompletedProcess(cmd, proc.returncode, out, err)

    # 1) Ctrl-C while the Hub stalls after 15 MiB (10 MiB have reached the disk)
    hub.stall_once(W.HUMO_REPO, "HuMo-1.7B/ema.pth", 15 * MiB)
    first = run_until_partial_has(10 * MiB, signal.SIGINT)
    assert first.returncode == 130
    assert "interrupted" in first.stderr and "run the same command again to resume" in first.stderr
    assert "Traceback" not in first.stderr
    kept1 = part.stat().st_size

    # 2) the next process resumes, then gets SIGTERM (a shutdown, a closed terminal: SIGHUP alike)
    hub.stall_once(W.HUMO_REPO, "HuMo-1.7B/ema.pth", 12 * MiB)
    second = run_until_partial_has(kept1 + 10 * MiB, signal.SIGTERM)
    assert second.returncode == 130 and "run the same command again to resume" in second.stderr
    assert f"Resuming HuMo/HuMo-1.7B/ema.pth at {W.format_bytes(kept1)}" in second.stderr
    kept2 = part.stat().st_size

    # 3) the next one is killed outright: nothing of ours runs, the bytes on disk still count
    hub.stall_once(W.HUMO_REPO, "HuMo-1.7B/ema.pth", 12 * MiB)
    third = run_until_partial_has(kept2 + 10 * MiB, signal.SIGKILL)
    assert third.returncode == -signal.SIGKILL
    kept3 = part.stat().st_size
    assert part.read_bytes() == big_ema[:kept3]

    # 4) and the last one finishes it
    hub.requests.clear()
    assert W.download("humo-1.7b", wd).complete
    assert file_gets(hub, "ema.pth") == [f"bytes={kept3}-"]
    assert (wd / "HuMo/HuMo-1.7B/ema.pth").read_bytes() == big_ema
    assert not (wd / ".partial").exists()
    gets = [r for m, p, r in hub.requests if m == "GET"]
    assert gets and all(r is None for r in gets[1:])  # the other files were fetched whole


def test_after_a_restart_only_the_flushed_part_of_a_partial_is_trusted(hub, tmp_path, monkeypatch):
    from engine.weights import resume

    monkeypatch.setattr(resume, "CHECKPOINT_BYTES", 4 * MiB)
    data, comp = big_file(hub)
    wd = tmp_path / "w"
    sidecar = wd / ".partial/big/big.bin.part.json"
    seen_durable = []

    def written() -> int:  # while the transfer runs, whole checkpoints get flushed and recorded as durable
        durable = json.loads(sidecar.read_text())["durable"] if sidecar.is_file() else 0
        seen_durable.append(durable)
        return durable

    cancel_mid_file(hub, "test/big", "big.bin", written,
                    lambda cancel: W.download("humo-1.7b", wd, components=[comp], cancel=cancel))
    kept = size_of(partial_of(wd, "big/big.bin"))
    assert 4 * MiB <= seen_durable[-1] <= kept  # flushed mid-transfer, before the stop
    record = json.loads(sidecar.read_text())
    assert record["durable"] == kept and record["boot_id"] == resume.boot_id()

    # What a power cut leaves: more bytes on disk than were flushed, written in an earlier boot.
    with open(partial_of(wd, "big/big.bin"), "ab") as f:
        f.write(b"\0" * (3 * MiB))
    sidecar.write_text(json.dumps({**record, "boot_id": "an-earlier-boot"}))
    assert W.find("humo-1.7b", wd, components=[comp]).partial_files == {"big/big.bin": kept}

    hub.requests.clear()
    messages = []
    assert W.download("humo-1.7b", wd, components=[comp], on_message=messages.append).complete
    assert file_gets(hub, "big.bin") == [f"bytes={kept}-"]
    assert (wd / "big/big.bin").read_bytes() == data
    assert any("before the machine restarted" in m for m in messages), messages


def test_connection_lost_for_good_keeps_the_partial_for_a_later_run(hub, tmp_path, monkeypatch):
    """The link drops mid-file and the Hub stays away, so the run gives up; later, it continues."""
    import threading

    data, comp = big_file(hub)
    wd = tmp_path / "w"
    part = partial_of(wd, "big/big.bin")
    hub.stall_once("test/big", "big.bin", 15 * MiB)
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            W.download("humo-1.7b", wd, components=[comp])
            outcome.append(None)
        except BaseException as err:  # noqa: BLE001 - handed to the test thread
            outcome.append(err)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    wait_until(lambda: size_of(part) >= 10 * MiB or not worker.is_alive(), 30, "10 MiB of the download")
    assert worker.is_alive(), outcome
    hub.stop()  # nobody listens any more: huggingface_hub's retries run out
    hub.release()
    worker.join(60)
    err = outcome[0]
    assert isinstance(err, WeightsError), outcome
    kept = size_of(part)
    msg = str(err)
    assert "big/big.bin" in msg and f"{W.format_bytes(kept)} fetched so far are kept" in msg and "\n" not in msg

    back = FakeHub()  # the Hub is back (at another address, even)
    back.add_repo("test/big", {"big.bin": data})
    with back:
        monkeypatch.setenv("HF_ENDPOINT", back.url)
        assert W.download("humo-1.7b", wd, components=[comp]).complete
        assert file_gets(back, "big.bin") == [f"bytes={kept}-"]
    assert (wd / "big/big.bin").read_bytes() == data
