"""Shared pieces of the studio's end-to-end tests: the real app as a child process on
127.0.0.1, tiny weights made by `python -m engine make-tiny`, spoken clips from espeak-ng,
and headless Debian Chromium driven by Playwright."""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
ASSETS = ROOT / "assets"
# Test runs write their screenshots under tests/_artifacts (ignored by git); set
# HUMO_UPDATE_SCREENSHOTS=1 to refresh the README's copies in docs/screenshots instead.
SCREENSHOTS = ROOT / ("docs/screenshots" if os.environ.get("HUMO_UPDATE_SCREENSHOTS") == "1" else "tests/_artifacts/screenshots")
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic", "--autoplay-policy=no-user-gesture-required"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def child_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(GRADIO_ANALYTICS_ENABLED="False", HF_HUB_OFFLINE="1", HF_HUB_DISABLE_TELEMETRY="1",
               PYTHONUNBUFFERED="1", PYTHONPATH=str(ROOT), NO_PROXY="127.0.0.1,localhost",
               no_proxy="127.0.0.1,localhost")
    env.update(extra)
    return env


def make_tiny_weights(weights_dir: Path) -> Path:
    """The tiny variant's random weights, written by the project's own command."""
    proc = subprocess.run([sys.executable, "-m", "engine", "make-tiny", str(weights_dir)], cwd=ROOT,
                          env=child_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"make-tiny failed:\n{proc.stdout}\n{proc.stderr}"
    return weights_dir


def spoken_clip(path: Path, text: str = "Hello there, nice to meet you.") -> Path:
    exe = shutil.which("espeak-ng")
    assert exe, "espeak-ng is required (apt-get install espeak-ng)"
    subprocess.run([exe, "-v", "en-us", "-s", "170", "-w", str(path), text], check=True, timeout=60)
    return path


def silent_clip(path: Path, seconds: float = 2.0, sr: int = 16000) -> Path:
    import soundfile as sf
    sf.write(str(path), np.zeros(int(seconds * sr), np.float32), sr)
    return path


def long_clip(path: Path, seconds: float = 600.0, sr: int = 8000) -> Path:
    """A 10-minute clip (a quiet tone, so it is not silent)."""
    import soundfile as sf
    t = np.arange(int(seconds * sr)) / sr
    sf.write(str(path), (0.2 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), sr)
    return path


def portrait(dest: Path) -> Path:
    shutil.copy(ASSETS / "portrait.png", dest)
    return dest


# Every app child still running; tests/conftest.py stops them at the end of the session, so a
# fixture that failed half-way never leaves a studio serving after pytest has exited.
RUNNING: set["StudioProcess"] = set()


class StudioProcess:
    """`app.py` in a child process, the way `./launch.sh` runs it. Also a context manager."""

    def __init__(self, weights_dir: Path, outputs_dir: Path, log_path: Path, variant: str = "tiny",
                 extra_args: tuple[str, ...] = (), env: dict[str, str] | None = None):
        self.weights_dir, self.outputs_dir, self.log_path = weights_dir, outputs_dir, log_path
        self.variant, self.extra_args, self.env = variant, extra_args, env or {}
        self.port = 0
        self.proc: subprocess.Popen | None = None
        self.ready_s: float | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def start(self, timeout_s: float = 90.0) -> "StudioProcess":
        self.port = free_port()
        args = [sys.executable, str(ROOT / "app.py"), "--host", "127.0.0.1", "--port", str(self.port),
                "--variant", self.variant, "--weights-dir", str(self.weights_dir),
                "--outputs-dir", str(self.outputs_dir), *self.extra_args]
        self._log = open(self.log_path, "ab")
        t0 = time.perf_counter()
        self.proc = subprocess.Popen(args, cwd=ROOT, env=child_env(**self.env), stdout=self._log,
                                     stderr=subprocess.STDOUT, process_group=0)
        RUNNING.add(self)
        try:
            self._wait_ready(timeout_s)
        except BaseException:
            log = self.log()
            self.stop()                   # a start that failed half-way leaves nothing running
            raise AssertionError(f"the studio did not start:\n{log}") from None
        self.ready_s = time.perf_counter() - t0
        return self

    def _wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"the studio exited with {self.proc.returncode}")
            try:
                with urllib.request.urlopen(self.url, timeout=2) as resp:
                    if resp.status == 200:
                        return
            except OSError:
                threading.Event().wait(0.2)   # poll again until the deadline
        raise AssertionError(f"the studio did not answer within {timeout_s} s")

    def __enter__(self) -> "StudioProcess":
        return self if self.alive() else self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        RUNNING.discard(self)
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)   # its own process group: children go too
                self.proc.wait(timeout=15)
        self.proc = None
        self._log.close()

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-6000:]
        except OSError:
            return ""


def stop_all_studios() -> None:
    for app in list(RUNNING):
        app.stop()


def new_page(browser, **options):
    """A page that records the browser's uncaught errors in `page.errors` (see `assert_no_page_errors`)."""
    page = browser.new_page(**options)
    page.errors = []
    page.on("pageerror", lambda err: page.errors.append(str(err)))
    return page


def stem_durations(page, prefix: str = "") -> list[float]:
    """Seconds of the voice and background stems the page offers (decoded by the browser; -1: none)."""
    return page.evaluate("""async (prefix) => {
        const out = [];
        for (const id of ['stem-vocals', 'stem-background']) {
            const link = document.querySelector('#' + prefix + id + ' a[download]');
            if (!link) { out.push(-1); continue; }
            const buf = await (await fetch(link.href)).arrayBuffer();
            out.push((await new OfflineAudioContext(1, 1, 44100).decodeAudioData(buf)).duration);
        }
        return out;
    }""", prefix)


def assert_no_page_errors(page) -> None:
    errors = getattr(page, "errors", [])
    assert not errors, f"the page raised {len(errors)} error(s): {errors[:3]}"



@contextmanager
def chromium(extra_args: tuple[str, ...] = ()):
    """Headless Debian chromium through Playwright, closed (with Playwright) when the block ends."""
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).exists(), "Debian chromium is required (apt-get install chromium)"
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=[*CHROMIUM_ARGS, *extra_args], headless=True)
        try:
            yield browser
        finally:
            browser.close()


def fake_microphone_args(wav: Path) -> tuple[str, ...]:
    """Chromium flags that grant the microphone without asking and feed it `wav` (looped)."""
    return ("--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
            f"--use-file-for-fake-audio-capture={wav}")


def screenshot(page, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=False)
    return path


# ----------------------------------------------------------------------------- page actions


def open_studio(page, url: str) -> None:
    page.goto(url)
    page.wait_for_selector("#generate-btn", timeout=60_000)
    page.wait_for_function("() => document.querySelector('#run-status') !== null")


def set_number(page, elem_id: str, value) -> None:
    box = page.locator(f"#{elem_id} input[type=number]").first
    box.fill(str(value))
    box.press("Enter")
    box.blur()


def set_text(page, elem_id: str, value: str) -> None:
    box = page.locator(f"#{elem_id} textarea, #{elem_id} input[type=text]").first
    box.fill(value)
    box.blur()


def set_checkbox(page, elem_id: str, on: bool) -> None:
    box = page.locator(f"#{elem_id} input[type=checkbox]")
    if box.is_checked() != on:
        box.click()


def upload_images(page, *paths: Path) -> None:
    """Upload reference photos and wait until each is listed. Gradio's file list writes a name as
    two spans ("portrait" ".png") with a space between, so the name is looked up by the cell's label."""
    page.locator("#ref-images input[type=file]").set_input_files([str(p) for p in paths])
    for p in paths:
        page.locator(f'#ref-images td.filename[aria-label="{p.name}"]').first.wait_for(timeout=90_000)


def upload_audio(page, path: Path, elem_id: str = "audio-in") -> None:
    clear = page.locator(f"#{elem_id} button[aria-label='Clear']")
    if clear.count():                     # a clip is loaded: the upload area returns once it is cleared
        clear.first.click()
        page.wait_for_function(
            "() => (document.querySelector('#audio-info')?.innerText || '').trim() === ''", timeout=90_000)
    page.locator(f"#{elem_id} input[type=file]").set_input_files(str(path))
    page.wait_for_function(
        "() => { const t = document.querySelector('#audio-info')?.innerText || '';"
        " return t.includes('Clip:') || t.includes('Problem'); }", timeout=90_000)


def status_text(page) -> str:
    return page.locator("#run-status").inner_text()


def wait_status(page, *needles: str, timeout_ms: int = 120_000, previous: str | None = None) -> str:
    """Wait until the run status shows one of `needles` (and is no longer `previous`)."""
    import json
    page.wait_for_function(
        f"() => {{ const t = document.querySelector('#run-status')?.innerText || '';"
        f" return t !== {json.dumps(previous)} && {json.dumps(list(needles))}.some(n => t.includes(n)); }}",
        timeout=timeout_ms)
    return status_text(page)


WATCH_JS = """
() => {
  window.__humo = {previews: [], videoAt: null, steps: []};
  const seen = window.__humo;
  const pv = document.querySelector('#preview');
  new MutationObserver(() => {
    const img = pv.querySelector('img');
    if (img && img.src && !seen.previews.some(p => p.src === img.src))
      seen.previews.push({src: img.src, t: performance.now()});
  }).observe(pv, {subtree: true, childList: true, attributes: true});
  const rv = document.querySelector('#result-video');
  new MutationObserver(() => {
    const v = rv.querySelector('video');
    if (v && v.src && seen.videoAt === null) seen.videoAt = performance.now();
  }).observe(rv, {subtree: true, childList: true, attributes: true});
  const st = document.querySelector('#run-status');
  new MutationObserver(() => {
    const line = st.querySelector('[data-step]');
    if (line) seen.steps.push(Number(line.dataset.step));
  }).observe(st, {subtree: true, childList: true, attributes: true, characterData: true});
}
"""


def watch_run(page) -> None:
    page.evaluate(WATCH_JS)


def run_record(page) -> dict:
    return page.evaluate("() => window.__humo")


def video_ready_state(page, selector: str = "#result-video video", timeout_ms: int = 120_000) -> int:
    page.wait_for_selector(selector, timeout=timeout_ms)
    # Playing (muted) makes the browser fetch the whole clip, as a person pressing play would.
    page.evaluate(f"() => {{ const v = document.querySelector('{selector}'); v.muted = true;"
                  f" v.play().catch(() => {{}}); }}")
    page.wait_for_function(f"() => document.querySelector('{selector}').readyState >= 4", timeout=timeout_ms)
    return page.evaluate(f"() => document.querySelector('{selector}').readyState")
