"""The repository as a Hugging Face Space: README front matter, and the app started the way a
Space starts it (`python app.py`, SPACE_ID set, no flags) answers the page and the API."""
from __future__ import annotations

import re
import subprocess
import sys
import urllib.request

from gradio_client import Client

from conftest_ui import ROOT, child_env, free_port, make_tiny_weights
from tests.waiting import wait_until


def front_matter() -> dict[str, str]:
    text = (ROOT / "README.md").read_text()
    assert text.startswith("---\n"), "the README has no Space front matter"
    block = text[4:text.index("\n---\n", 4)]
    return dict(line.split(":", 1) for line in block.splitlines() if ":" in line and not line.startswith("#"))


def test_readme_front_matter_makes_a_gradio_space():
    meta = {k.strip(): v.strip().strip('"') for k, v in front_matter().items()}
    assert meta["sdk"] == "gradio" and meta["app_file"] == "app.py"
    pinned = re.search(r"^gradio==([\d.]+)$", (ROOT / "requirements.txt").read_text(), re.M)
    assert pinned and meta["sdk_version"] == pinned.group(1), "the Space's gradio must be the pinned one"
    assert meta.get("suggested_hardware"), "a hardware hint for the Space"
    # A Space installs requirements.txt: the test tools stay out of it.
    assert "pytest" not in (ROOT / "requirements.txt").read_text()


def test_app_starts_as_a_space_does(tmp_path):
    """SPACE_ID set and no flags: the studio listens on 0.0.0.0 and keeps its files on the Space's
    persistent storage (here a temporary folder standing for /data); the page and the API answer."""
    data = tmp_path / "data"
    data.mkdir()
    make_tiny_weights(data / "weights")
    port = free_port()
    env = child_env(SPACE_ID="someone/humo-studio", GRADIO_SERVER_PORT=str(port), HUMO_VARIANT="tiny",
                    HUMO_SPACE_DATA=str(data))
    for name in ("HUMO_HOST", "HUMO_PORT", "HUMO_WEIGHTS_DIR", "HUMO_OUTPUTS_DIR"):
        env.pop(name, None)
    log_path = tmp_path / "space.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, "app.py"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                process_group=0)
        try:
            def page_answers() -> bool:
                assert proc.poll() is None, log_path.read_text()
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as resp:
                        return resp.status == 200 and b"HuMo Studio" in resp.read()
                except OSError:
                    return False

            wait_until(page_answers, 120, "the Space's page")
            assert f"0.0.0.0:{port}" in log_path.read_text(), log_path.read_text()
            status = Client(f"http://127.0.0.1:{port}/", verbose=False).predict("tiny", api_name="/weights_status")
            assert "weights present" in status, status
            ready = wait_until(lambda: "ready in" in log_path.read_text() and log_path.read_text(), 30, "the ready line")
            assert f"weights: {data / 'weights'}, outputs: {data / 'outputs'}" in ready, ready
        finally:
            proc.terminate()
            proc.wait(timeout=30)
