"""Studio features the other browser tests do not click: "Download weights" against a stand-in
Hub on 127.0.0.1, recording the voice clip with the (fake) microphone, and the compile checkbox.

Real parts throughout: the app in a child process, the engine's downloader and the tiny
variant's weights (made by `python -m engine make-tiny`), headless Debian Chromium whose fake
microphone plays an espeak-ng clip. Each test stands alone: the download tests get a fresh app
and stand-in Hub each, the microphone and compile tests share one tiny app.
"""
from __future__ import annotations

import json
import re
import sys
from http.server import ThreadingHTTPServer
import threading
from contextlib import contextmanager
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from conftest_ui import (StudioProcess, fake_microphone_args, free_port, chromium,  # noqa: E402
                         make_tiny_weights, open_studio, portrait, screenshot, set_checkbox, set_number,
                         set_text, spoken_clip, status_text, upload_audio, upload_images, video_ready_state,
                         wait_status)
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
        self.pace = threading.Event()

    def stop(self) -> None:
        self.pace.set()
        super().stop()

    def start(self) -> "SlowHub":
        class Handler(_Handler):
            def _send(self, status, body=b"", headers=None, head_only=False):
                self.send_response(status)
                for k, v in (headers or {}).items():
                    self.send_header(k, str(v))
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if head_only or not body:
                    return
                # Read per response, so a test can slow the Hub down or speed it up between requests.
                chunk = max(1, self.hub.bytes_per_s // 50)
                for i in range(0, len(body), chunk):
                    self.wfile.write(body[i:i + chunk])
                    self.wfile.flush()
                    self.hub.pace.wait(0.02)      # the bandwidth limit; stop() lifts it

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
    # One browser for the module; its fake microphone plays the spoken clip.
    with chromium(fake_microphone_args(data["voice"])) as browser:
        data["browser"] = browser
        yield data


@pytest.fixture
def hub_app(env, tmp_path):
    """The studio on HuMo-1.7B with an empty weights folder, pointed at a stand-in Hub that is
    not answering yet (a test starts it when it wants it reachable)."""
    hub = SlowHub(free_port(), HUB_BYTES_PER_S)
    for repo_id, files in release_from_tiny(env["tiny"]).items():
        hub.add_repo(repo_id, files)
    app = StudioProcess(tmp_path / "hub-weights", tmp_path / "hub-outputs", tmp_path / "hub-app.log",
                        variant="humo-1.7b",
                        env={"HF_ENDPOINT": f"http://127.0.0.1:{hub.port}", "HF_HUB_OFFLINE": "0",
                             "HF_HOME": str(tmp_path / "hf-home"), "HF_HUB_DISABLE_TELEMETRY": "1"})
    try:
        with app:
            yield {"app": app, "hub": hub, "weights": tmp_path / "hub-weights"}
    finally:
        hub.stop()


@pytest.fixture(scope="module")
def tiny_app(env):
    root = env["root"]
    # Dynamo's INFO log says when it traces a compiled graph: proof that the DiT really ran compiled.
    with StudioProcess(env["tiny"], root / "outputs", root / "tiny-app.log", env={"TORCH_LOGS": "dynamo"}) as app:
        yield app


@pytest.fixture(scope="module")
def uncompiled_run(env, tiny_app) -> str:
    """A finished tiny run without compile on `tiny_app` (over the API): its engine is then loaded
    uncompiled. Returns the status line."""
    from gradio_client import Client, handle_file
    status = Client(tiny_app.url, verbose=False).predict(
        variant="tiny", mode="TA", prompt=PROMPT, audio=handle_file(str(env["voice"])), match_audio=False,
        frames=5, steps=2, seed=1, width=128, height=96, compile=False, api_name="/generate")[0]
    assert "Done:" in status, f"{status}\n{tiny_app.log()}"
    return status


@contextmanager
def studio_page(env, app: StudioProcess, name: str):
    """A fresh page (own context, microphone allowed) on `app`; on failure a screenshot and the
    app's log tail go with the error. Yields (page, page errors)."""
    context = env["browser"].new_context(viewport={"width": 1400, "height": 1300}, permissions=["microphone"])
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda err: errors.append(str(err)))
    try:
        open_studio(page, app.url)
        yield page, errors
    except Exception as err:
        shot = screenshot(page, f"failed-{name}")
        raise AssertionError(f"{err}\nscreenshot: {shot}\nstatus: {status_text(page)!r}\n"
                             f"audio: {page.locator('#audio-info').inner_text()!r}\napp log:\n{app.log()}") from err
    finally:
        context.close()
    assert app.alive(), f"the studio died:\n{app.log()}"


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
    with studio_page(env, hub_app["app"], "download-unreachable") as (page, errors):
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


def test_download_shows_progress_stops_and_resumes_then_the_weights_are_present(env, hub_app):
    hub = hub_app["hub"]
    hub.bytes_per_s = 150_000                     # slow: the first file takes seconds, so Stop lands inside it
    hub.start()
    with studio_page(env, hub_app["app"], "download") as (page, errors):
        page.evaluate(PROGRESS_JS)
        stop = page.locator("#download-stop")
        assert not stop.is_visible()
        page.locator("#download-weights").click()
        # Stop once the first file is partly here (progress comes every half MiB, a few seconds apart at this rate).
        page.wait_for_function("() => (window.__progress || []).some(t => /ema\\.pth \\((?!0 B)[0-9.]+ [KM]B of/.test(t))",
                               timeout=60_000)
        screenshot(page, "download-progress")
        stop.click()
        page.wait_for_function(
            "() => (document.querySelector('#weights-status')?.innerText || '').includes('already here')",
            timeout=60_000)
        text = weights_text(page)
        assert "weights are not ready" in text and "continues where it stopped" in text, text
        page.wait_for_function("() => !document.querySelector('#download-stop')?.offsetParent", timeout=10_000)
        partial = list((hub_app["weights"] / ".partial").rglob("*.part"))
        assert partial and 0 < partial[0].stat().st_size, partial
        kept = partial[0].stat().st_size

        hub.bytes_per_s = 1_500_000
        page.locator("#download-weights").click()
        page.wait_for_function(
            "() => { const t = document.querySelector('#weights-status')?.innerText || '';"
            " return t.includes('weights present') || t.includes('Problem'); }", timeout=120_000)
        screenshot(page, "download-done")
        text = weights_text(page)
        assert "weights present" in text and "Problem" not in text, f"{text}\n{hub_app['app'].log()}"
        # The second download asked only for the rest of the file the first one stopped in.
        ranges = [r for method, path, r in hub.requests if method == "GET" and r and "ema.pth" in path]
        assert ranges and any(r.startswith(f"bytes={kept}-") for r in ranges), (kept, ranges)
        assert not list((hub_app["weights"] / ".partial").rglob("*.part"))
        # While it ran, one bar named the file coming and where it was in the list, file after file.
        seen = page.evaluate("() => window.__progress")
        first = [next((i for i, t in enumerate(seen) if name in t and " of " in t), None)
                 for name in ("ema.pth", "Wan2.1_VAE.pth", "model.safetensors")]
        assert None not in first and first == sorted(first), seen
        assert any(re.search(r"file \d+ of 10", t) for t in seen), seen
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


# ----------------------------------------------------------------------------- microphone


def clip_seconds(page) -> float:
    text = page.locator("#audio-info").inner_text()
    m = re.search(r"Clip: ([\d.]+) s", text)
    assert m, f"no clip line: {text!r}"
    return float(m.group(1))


def record_clip(page, seconds: float) -> None:
    """Record from the (fake) microphone through the audio input's own controls."""
    box = page.locator("#audio-in")
    box.locator("button[aria-label='Record audio']").click()
    box.locator("button.record-button").click()
    # Record for `seconds` by the page's own clock (a recording length, not a wait for something).
    page.evaluate("() => { window.__recordStart = performance.now(); }")
    page.wait_for_function(f"() => performance.now() - window.__recordStart >= {seconds * 1000}",
                           timeout=int(seconds * 1000) + 30_000)
    box.locator("button.stop-button").click()
    page.wait_for_function(
        "() => { const t = document.querySelector('#audio-info')?.innerText || '';"
        " return t.includes('Clip:') || t.includes('Problem'); }", timeout=60_000)


def result_frames(page) -> int:
    info = page.locator("#result-info").inner_text()
    m = re.search(r"(\d+) frames at 25 fps", info)
    assert m, info
    return int(m.group(1))


def test_recorded_microphone_clip_drives_a_tiny_run(env, tiny_app):
    with studio_page(env, tiny_app, "microphone") as (page, errors):
        record_clip(page, 2.0)
        screenshot(page, "mic-recorded")
        info = page.locator("#audio-info").inner_text()
        assert "Problem" not in info, info
        seconds = clip_seconds(page)
        assert 1.5 <= seconds <= 4.0, info           # about the time the recorder ran
        # The recording is a real clip on the server: the page can play it back.
        assert page.locator("#audio-in audio, #audio-in [data-testid='waveform-Voice clip (upload or record)']").count()

        set_text(page, "prompt", PROMPT)
        upload_images(page, env["photo"])
        assert page.locator("#match-audio input[type=checkbox]").is_checked()
        set_number(page, "steps", 2)
        set_number(page, "seed", 11)
        page.locator("#generate-btn").click()
        text = wait_status(page, "Done:", "Problem", timeout_ms=180_000)
        assert "Done:" in text, f"run failed: {text}\n{tiny_app.log()}"
        assert video_ready_state(page) == 4
        # "Match the audio length": the video is as long as the recording (4n+1 frames at 25 fps).
        frames = result_frames(page)
        assert (frames - 1) % 4 == 0 and abs(frames / 25 - seconds) <= 0.25, (frames, seconds)
        screenshot(page, "mic-result")
        assert not errors, errors


# ----------------------------------------------------------------------------- compile


def entry_record(outputs: Path, entry_id: str) -> dict:
    return json.loads((outputs / entry_id / "settings.json").read_text())


TRACED = "torchdynamo start tracing"


def test_compile_checkbox_runs_compiled_and_says_so(env, tiny_app, uncompiled_run):
    assert TRACED not in tiny_app.log(), "an uncompiled run traced a graph"
    with studio_page(env, tiny_app, "compile") as (page, errors):
        page.locator("#perf-acc").get_by_text("Performance").first.click()
        page.wait_for_function(
            "() => !(document.querySelector('#plan-line')?.innerText || '').includes('Open this panel')",
            timeout=90_000)
        set_checkbox(page, "compile", True)
        # The engine that ran the last run was built without compile: the panel says it reloads.
        page.wait_for_function(
            "() => (document.querySelector('#engine-note')?.innerText || '').includes('compile on')", timeout=30_000)
        set_text(page, "prompt", PROMPT)
        upload_images(page, env["photo"])
        upload_audio(page, env["voice"])
        set_checkbox(page, "match-audio", False)
        set_number(page, "frames", 5)
        set_number(page, "steps", 2)
        set_number(page, "seed", 3)
        page.locator("#generate-btn").click()
        text = wait_status(page, "Done:", "Problem", timeout_ms=240_000)
        assert "Done:" in text, f"run failed: {text}\n{tiny_app.log()}"
        assert video_ready_state(page) == 4
        screenshot(page, "compile-result")
        info = page.locator("#result-info").inner_text()
        entry_id = re.search(r"saved to the gallery as `?([\w-]+)", info).group(1)
        record = entry_record(tiny_app.outputs_dir, entry_id)["settings"]
        studio = record["metadata"]["studio"]
        assert studio["compile"] is True, studio
        # What the engine really ran with, in the settings and on the result line.
        assert record["compiled"] in ("inductor", "aot_eager") and studio["compile_used"] == record["compiled"], record
        assert f"compiled ({record['compiled']})" in info, info
        assert TRACED in tiny_app.log(), "compile was on but no graph was traced"
        # After the run the engine matches the panel: no reload note.
        page.wait_for_function(
            "() => (document.querySelector('#engine-note')?.innerText || '').trim() === ''", timeout=30_000)
        assert not errors, errors


# ----------------------------------------------------------------------------- one bar over a download


def test_download_progress_counts_files_over_the_whole_download(env, tmp_path, monkeypatch):
    """studio.weights_panel.DownloadProgress fed by the real downloader (stand-in Hub, in process)."""
    import huggingface_hub.constants as hf_constants

    from engine import weights as W
    from studio.weights_panel import DownloadProgress

    hub = FakeHub()
    for repo_id, files in release_from_tiny(env["tiny"]).items():
        hub.add_repo(repo_id, files)
    hub.start()
    try:
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setattr(hf_constants, "HF_HUB_DISABLE_TELEMETRY", True)
        shown: list[tuple[float, str]] = []
        bar = DownloadProgress("humo-1.7b", str(tmp_path / "w"), lambda f, d: shown.append((f, d)))
        assert len(bar.files) == len(NEEDED_1_7B)
        W.download("humo-1.7b", tmp_path / "w", progress=bar)
    finally:
        hub.stop()
    fractions = [f for f, _ in shown]
    assert fractions == sorted(fractions) and fractions[-1] == pytest.approx(1.0), shown
    counted = [int(m.group(1)) for _, d in shown if (m := re.match(r"file (\d+) of 10 · ", d))]
    assert len(counted) == len(shown) and counted[0] == 1 and counted[-1] == 10, shown
    assert sorted(set(counted)) == list(range(1, 11)), shown
    assert any("dit: ema.pth (" in d and "1.3 MB" in d for _, d in shown), shown
