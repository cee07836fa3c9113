"""How fast the studio opens with no model loaded.

    python -m studio.startup_bench [--runs 3]

Prints, per run:
  process  time from starting `app.py` to the first page answered (includes Python and Gradio imports)
and once, in this process (imports already warm):
  imports  importing gradio and the studio
  page     building the app + starting the server + first page answered  (target: < 3 s)
and checks that torch and diffusers were not imported on the way.
"""
from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_page(url: str, timeout_s: float = 120.0, alive=lambda: True) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not alive():
            raise RuntimeError("the studio exited before answering")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"{url} did not answer within {timeout_s} s")


def process_start(tmp: Path) -> float:
    port = _free_port()
    env = dict(os.environ, GRADIO_ANALYTICS_ENABLED="False", HF_HUB_OFFLINE="1")
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, str(ROOT / "app.py"), "--port", str(port), "--no-mcp",
                             "--weights-dir", str(tmp / "weights"), "--outputs-dir", str(tmp / "outputs")],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_page(f"http://127.0.0.1:{port}/", alive=lambda: proc.poll() is None)
        return time.perf_counter() - t0
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def in_process(tmp: Path) -> dict:
    """Imports, then build + launch + first page, timed separately in this process."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    t0 = time.perf_counter()
    import gradio  # noqa: F401

    from studio.app_ui import CSS, build_app
    from studio.config import StudioConfig
    t1 = time.perf_counter()
    port = _free_port()
    config = StudioConfig(port=port, weights_dir=str(tmp / "weights"), outputs_dir=str(tmp / "outputs"))
    demo = build_app(config)
    demo.queue(default_concurrency_limit=1)
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True,
                theme=demo.humo_theme, css=CSS)
    _wait_page(f"http://127.0.0.1:{port}/")
    t2 = time.perf_counter()
    heavy = sorted(m for m in ("torch", "diffusers", "transformers") if m in sys.modules)
    demo.close()
    return {"imports_s": t1 - t0, "page_s": t2 - t1, "heavy_modules": heavy}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m studio.startup_bench")
    parser.add_argument("--runs", type=int, default=3, help="child-process starts to time")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        for i in range(args.runs):
            print(f"process start to first page, run {i + 1}: {process_start(tmp):.2f} s", flush=True)
        r = in_process(tmp)
    print(f"imports (gradio + studio): {r['imports_s']:.2f} s")
    print(f"build + launch + first page, imports warm: {r['page_s']:.2f} s (target < 3 s)")
    print("heavy modules imported: " + (", ".join(r["heavy_modules"]) or "none"))
    return 0 if r["page_s"] < 3.0 and not r["heavy_modules"] else 1


if __name__ == "__main__":
    sys.exit(main())
