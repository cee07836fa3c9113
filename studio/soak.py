"""Soak benchmark (not a test): does a long-running studio stay flat?

    python -m studio.soak --runs 100 [--every 10] [--weights-dir DIR]

Starts the app (`app.py`, tiny variant) as a child process with its own Gradio temp folder, makes
`--runs` tiny generations through gradio_client, each followed by bad uploads (a file that is not
audio, a file over the upload limit), and prints at intervals the server's resident memory, the
number of files in Gradio's temp folder and in `outputs/.work`. After the warm-up the three
columns should stay flat.
"""
from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
UPLOAD_LIMIT_MB = 2


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def file_count(folder: Path) -> int:
    return sum(1 for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else 0


def rss_mb(pid: int) -> float:
    import psutil

    proc = psutil.Process(pid)
    total = proc.memory_info().rss
    for child in proc.children(recursive=True):
        try:
            total += child.memory_info().rss
        except psutil.Error:
            pass
    return total / 2**20


def make_inputs(folder: Path) -> dict[str, Path]:
    import soundfile as sf
    from PIL import Image

    sr = 16000
    t = np.arange(int(1.2 * sr)) / sr
    voice = (0.3 * np.sin(2 * np.pi * 180 * t) * (1 + np.sin(2 * np.pi * 3 * t)) / 2).astype(np.float32)
    sf.write(str(folder / "voice.wav"), voice, sr)
    Image.new("RGB", (96, 128), (180, 140, 120)).save(folder / "face.png")
    (folder / "notes.wav").write_text("this is not audio\n" * 50)
    with open(folder / "big.wav", "wb") as fh:                # over the child's upload limit
        fh.write(b"\0" * (UPLOAD_LIMIT_MB + 1) * 2**20)
    return {"voice": folder / "voice.wav", "photo": folder / "face.png", "text": folder / "notes.wav",
            "big": folder / "big.wav"}


def start_app(weights: Path, outputs: Path, temp: Path, log_path: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = dict(os.environ, GRADIO_ANALYTICS_ENABLED="False", HF_HUB_OFFLINE="1", GRADIO_TEMP_DIR=str(temp),
               PYTHONPATH=str(ROOT), NO_PROXY="127.0.0.1,localhost", no_proxy="127.0.0.1,localhost")
    log = open(log_path, "ab")
    proc = subprocess.Popen([sys.executable, str(ROOT / "app.py"), "--host", "127.0.0.1", "--port", str(port),
                             "--variant", "tiny", "--weights-dir", str(weights), "--outputs-dir", str(outputs),
                             "--max-upload-mb", str(UPLOAD_LIMIT_MB), "--no-mcp"],
                            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the studio exited with {proc.returncode}; see {log_path}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return proc, url
        except OSError:
            time.sleep(0.3)
    proc.kill()
    raise SystemExit(f"the studio did not answer within 120 s; see {log_path}")


def generate_args(inputs: dict, seed: int, trim: float) -> list:
    from gradio_client import handle_file

    return ["tiny", "TIA", "A person talks to the camera.", "", [handle_file(str(inputs["photo"]))],
            handle_file(str(inputs["voice"])), trim, 0, "Original clip", False, 1.0, "custom", 64, 64, False, 5,
            1, 5.0, 7.0, 4.0, 7.5, seed, "auto", "exact", "auto", False, 1]


def bad_uploads(client, inputs: dict) -> None:
    """A text file posing as audio (a readable refusal) and a file over the upload limit."""
    from gradio_client import handle_file

    args = generate_args(inputs, 0, 0)
    args[5] = handle_file(str(inputs["text"]))
    status = client.predict(*args, api_name="/generate")[0]
    if "Problem" not in status:
        raise SystemExit(f"a text file as audio was not refused: {status}")
    args[5] = handle_file(str(inputs["big"]))
    try:
        client.predict(*args, api_name="/generate")
    except Exception:
        pass                           # refused at upload, as it should be
    else:
        raise SystemExit("a file over the upload limit was accepted")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m studio.soak", description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=100, help="tiny generations to make")
    p.add_argument("--every", type=int, default=10, help="print a line every N runs")
    p.add_argument("--weights-dir", default=None, help="tiny weights (default: made in a temp folder)")
    p.add_argument("--keep", action="store_true", help="keep the temp folder (outputs, log) afterwards")
    args = p.parse_args(argv)

    from gradio_client import Client

    root = Path(tempfile.mkdtemp(prefix="humo-soak-"))
    weights = Path(args.weights_dir) if args.weights_dir else root / "weights"
    if not args.weights_dir:
        subprocess.run([sys.executable, "-m", "engine", "make-tiny", str(weights)], cwd=ROOT, check=True,
                       capture_output=True)
    outputs, temp = root / "outputs", root / "gradio-tmp"
    inputs = make_inputs(Path(tempfile.mkdtemp(dir=root)))
    proc, url = start_app(weights, outputs, temp, root / "app.log")
    print(f"soak: {args.runs} tiny runs (64x64, 5 frames, 1 step) + 2 bad uploads each; server pid {proc.pid}; "
          f"temp {temp}", flush=True)
    print(f"{'runs':>5} {'elapsed s':>10} {'server RSS MB':>14} {'temp files':>11} {'.work files':>12}", flush=True)

    def line(n: int, t0: float) -> None:
        print(f"{n:>5} {time.monotonic() - t0:>10.1f} {rss_mb(proc.pid):>14.0f} {file_count(temp):>11} "
              f"{file_count(outputs / '.work'):>12}", flush=True)

    try:
        client = Client(url, verbose=False, download_files=False)
        t0 = time.monotonic()
        line(0, t0)
        for i in range(1, args.runs + 1):
            status = client.predict(*generate_args(inputs, i, 0.1 if i % 2 else 0), api_name="/generate")[0]
            if "Done:" not in status:
                raise SystemExit(f"run {i} did not finish: {status}")
            bad_uploads(client, inputs)
            if i % args.every == 0 or i == args.runs:
                line(i, t0)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
        else:
            print(f"kept {root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
