"""Start-up of the studio: fast, no model code imported, launch flags and their env twins,
--share without a reachable share server, --auth."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
from gradio_client import Client, handle_file

from conftest_ui import ROOT, StudioProcess, child_env, free_port, portrait


def test_first_page_without_torch(tmp_path):
    code = ("import json, sys; from pathlib import Path; from studio.startup_bench import in_process; "
            f"print(json.dumps(in_process(Path({str(tmp_path)!r}))))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=child_env(), capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["heavy_modules"] == [], f"model code imported at start-up: {result['heavy_modules']}"
    assert result["page_s"] > 0          # how fast is measured by `python -m studio.startup_bench`, not here


def test_flags_win_over_environment(monkeypatch):
    from studio.accounts import Account
    from studio.config import parse_config

    monkeypatch.setenv("HUMO_HOST", "0.0.0.0")
    monkeypatch.setenv("HUMO_PORT", "9000")
    monkeypatch.setenv("HUMO_VARIANT", "humo-17b")
    monkeypatch.setenv("HUMO_WEIGHTS_DIR", "/srv/w")
    monkeypatch.setenv("HUMO_OUTPUTS_DIR", "/srv/o")
    monkeypatch.setenv("HUMO_AUTH", "ann:secret")
    monkeypatch.setenv("HUMO_SHARE", "1")
    monkeypatch.setenv("HUMO_PLAN", "model-offload+fp8")
    c = parse_config([])
    assert (c.host, c.port, c.variant, c.weights_dir, c.outputs_dir, c.auth, c.share, c.plan) == \
        ("0.0.0.0", 9000, "humo-17b", "/srv/w", "/srv/o", [Account("ann", "secret")], True, "model-offload+fp8")
    c = parse_config(["--port", "7000", "--variant", "tiny", "--auth", "bo:pw", "--plan", "auto"])
    assert (c.port, c.variant, c.auth, c.plan) == (7000, "tiny", [Account("bo", "pw")], "auto")
    with pytest.raises(SystemExit):
        parse_config(["--auth", "nopassword"])
    with pytest.raises(SystemExit):
        parse_config(["--plan", "full++fp8"])
    monkeypatch.delenv("HUMO_PLAN")
    assert parse_config([]).plan == "auto"


def test_launch_plan_is_the_page_default_and_the_engine_plan(tmp_path):
    """--plan reaches the page's Performance panel; an unusable one is a readable message at the run."""
    app = StudioProcess(tmp_path / "w", tmp_path / "o", tmp_path / "log.txt", extra_args=("--plan", "no-such-plan"))
    app.start()
    try:
        client = Client(app.url, verbose=False)
        params = client.view_api(print_info=False, return_format="dict")["named_endpoints"]["/generate"]["parameters"]
        defaults = {p["label"]: p["parameter_default"] for p in params}
        assert (defaults["Memory plan"], defaults["Fast mode"], defaults["Runs (1–16)"]) == ("no-such-plan", "exact", 1), \
            params[-5:]
        photo = portrait(tmp_path / "portrait.png")
        status = client.predict("tiny", "TI", "A person talks.", "", [handle_file(str(photo))], None, 0, 0,
                                "Original clip", False, 1.0, "128x96", 128, 96, False, 9, 2, 5.0, 7.0, 4.0, 7.5, 1,
                                api_name="/generate")[0]
        assert "Unknown memory plan part 'no-such-plan'" in status and "Traceback" not in status, status
    finally:
        app.stop()


def test_share_without_network_keeps_serving_and_says_why(tmp_path):
    dead = free_port()   # nothing listens here: the share server is unreachable
    app = StudioProcess(tmp_path / "w", tmp_path / "o", tmp_path / "log.txt", extra_args=("--share",),
                        env={"GRADIO_SHARE_SERVER_ADDRESS": f"127.0.0.1:{dead}"})
    app.start()
    try:
        log = app.log()
        assert "No share link" in log and "not reachable" in log, log
        assert "weights are not ready" in Client(app.url, verbose=False).predict("tiny", api_name="/weights_status")
    finally:
        app.stop()


def test_auth_is_required(tmp_path):
    app = StudioProcess(tmp_path / "w", tmp_path / "o", tmp_path / "log.txt", extra_args=("--auth", "ann:secret"))
    app.start()
    try:
        with pytest.raises(Exception):
            Client(app.url, verbose=False).predict("tiny", api_name="/weights_status")
        client = Client(app.url, auth=("ann", "secret"), verbose=False)
        assert "Tiny" in client.predict("tiny", api_name="/weights_status")
    finally:
        app.stop()
