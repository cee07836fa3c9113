"""Studio features the other browser tests do not click: "Download weights" against a stand-in
Hub on 127.0.0.1, recording the voice clip with the (fake) microphone, and the compile checkbox.

Real parts throughout: the app in a child process, the engine's downloader and the tiny
variant's weights (made by `python -m engine make-tiny`), headless Debian Chromium whose fake
microphone plays an espeak-ng clip. Tests in this file run in file order and share two apps.
"""
from __future__ import annotations

import json
import re
import sys
import time
from http.server import ThreadingHTTPServer
from pathlib import Path
import threading

import pytest
from playwright.sync_api import sync_playwright

sys.path.insert(0, str(Path(__file__).parent))
from conftest_ui import (StudioProcess, fake_microphone_args, free_port, launch_browser,  # noqa: E402
                         make_tiny_weights, open_studio, portrait, screenshot, set_checkbox, set_number,
                         set_text, spoken_clip, status_text, upload_images, video_ready_state, wait_status)
from hub_server import FakeHub, _Handler  # noqa: E402

from engine.weights import HUMO_REPO, SEPARATOR_REPO, WAN_REPO, WHISPER_REPO  # noqa: E402

PROMPT = "A young man with short brown hair talks to the camera, blue sky behind him."
HUB_BYTES_PER_S = 1_500_000        # slow enough that the download's progress can be watched


class SlowHub(FakeHub):
    """The stand-in Hub, sending file bodies at a limited rate, on a port chosen beforehand
    (so an app can be pointed at it before it answers)."""

    def __init__(self, port: int, bytes_per_s: int) -> None:
        super().__init__()
        self.port, self.bytes_per_s = port, bytes_per_s

    def start(self) -> "SlowHub":
        rate = self.bytes_per_s

        class Handler(_Handler):
            def _send(self, status, body=b"", headers=None, head_only=False):
                self.send_response(status)
                for k, v in (headers or {}).items():
                    self.send_header(k, str(v))
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if head_only or not body:
                    return
                chunk = max(1, rate // 50)
                for i in range(0, len(body), chunk):
                    self.wfile.write(body[i:i + chunk])
                    self.wfile.flush()
                    time.sleep(0.02)

        Handler.hub = self
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="slow-hub", daemon=True)
        self._thread.start()
        return self


def release_from_tiny(tiny: Path) -> dict[str, dict[str, bytes]]:
    """The HuMo-1.7B release layout, filled with the tiny variant's real checkpoint files where
    the formats match (the 1.7B's own files are tens of GB). Plus files the 1.7B must not fetch."""
    t = tiny / "tiny"
    read = lambda rel: (t / rel).read_bytes()  # noqa: E731
    humo = {"HuMo-1.7B/ema.pth": read("dit/ema.pth"),
            "HuMo-17B/humo.safetensors.index.json": b'{"metadata": {}, "weight_map": {}}',
            "README.md": b"# HuMo\n"}
    wan = {"Wan2.1_VAE.pth": read("vae/Wan2.1_VAE.pth"),
           "models_t5_umt5-xxl-enc-bf16.pth": read("t5/models_t5_umt5-xxl-enc-bf16.pth"),
           "google/umt5-xxl/tokenizer.json": read("t5/tokenizer/tokenizer.json"),
           "google/umt5-xxl/tokenizer_config.json": read("t5/tokenizer/tokenizer_config.json"),
           "google/umt5-xxl/special_tokens_map.json": b'{"eos_token": "</s>", "pad_token": "<pad>"}',
           "google/umt5-xxl/spiece.model": b"\x0a\x00" * 600,
           "diffusion_pytorch_model.safetensors": read("whisper/model.safetensors")}
    whisper = {"config.json": read("whisper/config.json"),
               "preprocessor_config.json": read("whisper/preprocessor_config.json"),
               "model.safetensors": read("whisper/model.safetensors"),
               "generation_config.json": read("whisper/generation_config.json")}
    return {HUMO_REPO: humo, WAN_REPO: wan, WHISPER_REPO: whisper, SEPARATOR_REPO: {"Kim_Vocal_2.onnx": b"x" * 4000}}


NEEDED_1_7B = {f"{HUMO_REPO}:HuMo-1.7B/ema.pth", f"{WAN_REPO}:Wan2.1_VAE.pth",
               f"{WAN_REPO}:models_t5_umt5-xxl-enc-bf16.pth",
               *(f"{WAN_REPO}:google/umt5-xxl/{n}" for n in
                 ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "spiece.model")),
               f"{WHISPER_REPO}:config.json", f"{WHISPER_REPO}:preprocessor_config.json",
               f"{WHISPER_REPO}:model.safetensors"}


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("studio-extras")
    inputs = root / "inputs"
    inputs.mkdir()
    data = {"root": root, "tiny": make_tiny_weights(root / "weights"),
            "photo": portrait(inputs / "portrait.png"),
            "voice": spoken_clip(inputs / "voice.wav", "Hello there, nice to meet you. How are you today?")}
    with sync_playwright() as pw:
        # One browser for the module; its fake microphone plays the spoken clip.
        browser = launch_browser(pw, fake_microphone_args(data["voice"]))
        data["browser"] = browser
        yield data
        browser.close()


@pytest.fixture(scope="module")
def hub_app(env):
    """The studio on HuMo-1.7B with an empty weights folder, pointed at a stand-in Hub that is
    not answering yet (the first test needs it unreachable)."""
    root = env["root"]
    hub = SlowHub(free_port(), HUB_BYTES_PER_S)
    for repo_id, files in release_from_tiny(env["tiny"]).items():
        hub.add_repo(repo_id, files)
    app = StudioProcess(root / "hub-weights", root / "hub-outputs", root / "hub-app.log", variant="humo-1.7b",
                        env={"HF_ENDPOINT": f"http://127.0.0.1:{hub.port}", "HF_HUB_OFFLINE": "0",
                             "HF_HOME": str(root / "hf-home"), "HF_HUB_DISABLE_TELEMETRY": "1"}).start()
    yield {"app": app, "hub": hub, "weights": root / "hub-weights"}
    app.stop()
    hub.stop()


@pytest.fixture(scope="module")
def tiny_app(env):
    root = env["root"]
    app = StudioProcess(env["tiny"], root / "outputs", root / "tiny-app.log").start()
    yield app
    app.stop()


def new_page(env, url: str):
    context = env["browser"].new_context(viewport={"width": 1400, "height": 1300}, permissions=["microphone"])
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda err: errors.append(str(err)))
    open_studio(page, url)
    return page, errors


# ----------------------------------------------------------------------------- Download weights


# Every progress text gradio shows on the weights panel, in order.
PROGRESS_JS = """
() => {
  window.__progress = [];
  const box = document.querySelector('#weights-status');
  const note = () => {
    const t = [...box.querySelectorAll('.progress-text, .progress-level')].map(e => e.innerText.trim()).join(' | ');
    if (t && window.__progress[window.__progress.length - 1] !== t) window.__progress.push(t);
  };
  new MutationObserver(note).observe(box, {subtree: true, childList: true, characterData: true, attributes: true});
}
"""


def weights_text(page) -> str:
    return page.locator("#weights-status").inner_text()


def test_download_with_the_hub_unreachable_says_so_in_one_line(env, hub_app):
    page, errors = new_page(env, hub_app["app"].url)
    try:
        assert "weights are not ready" in weights_text(page)
        button = page.locator("#download-weights")
        assert button.is_visible()
        button.click()
        page.wait_for_function(
            "() => (document.querySelector('#weights-status')?.innerText || '').includes('Problem')",
            timeout=60_000)
        screenshot(page, "download-unreachable")
        problem = [ln for ln in weights_text(page).splitlines() if "Problem" in ln]
        assert len(problem) == 1, weights_text(page)
        line = problem[0]
        assert "Traceback" not in line and "File \"" not in line, line
        assert re.search(r"reach|connect|unreachable|offline|network", line, re.I), line
        assert hub_app["hub"].requests == []          # nothing was listening
        assert hub_app["app"].alive(), hub_app["app"].log()
        # The app keeps serving: the page reloads and its weights check answers.
        page.reload()
        open_studio(page, hub_app["app"].url)
        assert "weights are not ready" in weights_text(page)
        assert not errors, errors
    finally:
        page.context.close()


def test_download_shows_progress_then_the_weights_are_present(env, hub_app):
    hub = hub_app["hub"].start()
    page, errors = new_page(env, hub_app["app"].url)
    try:
        page.evaluate(PROGRESS_JS)
        page.locator("#download-weights").click()
        page.wait_for_selector("#weights-status .progress-level", timeout=60_000)
        screenshot(page, "download-progress")
        page.wait_for_function(
            "() => { const t = document.querySelector('#weights-status')?.innerText || '';"
            " return t.includes('weights present') || t.includes('Problem'); }", timeout=120_000)
        screenshot(page, "download-done")
        text = weights_text(page)
        assert "weights present" in text and "Problem" not in text, f"{text}\n{hub_app['app'].log()}"
        # While it ran, the panel showed which file was coming and its size, file after file.
        seen = page.evaluate("() => window.__progress")
        first = [next((i for i, t in enumerate(seen) if name in t and "bytes" in t), None)
                 for name in ("ema.pth", "Wan2.1_VAE.pth", "model.safetensors")]
        assert None not in first and first == sorted(first), seen
        assert any(re.search(r"1\.3M bytes", t) for t in seen), seen
        assert set(hub.requested_files("GET")) == NEEDED_1_7B
        for rel in ("HuMo/HuMo-1.7B/ema.pth", "Wan2.1-T2V-1.3B/Wan2.1_VAE.pth", "whisper-large-v3/model.safetensors"):
            assert (hub_app["weights"] / rel).is_file(), rel
        # The picker marks the model ready.
        page.locator("#variant input").click()
        options = page.get_by_role("option").all_inner_texts()
        page.keyboard.press("Escape")
        assert any("HuMo-1.7B" in o and "[ready]" in o for o in options), options
        assert "Ready" in status_text(page)
        assert not errors, errors
    finally:
        page.context.close()
