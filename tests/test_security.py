"""The studio against hostile requests, on the real app (child process, tiny variant, no accounts):
a raw Cancel naming no page stops nobody's run, Delete touches only gallery runs, a foreign Host
name is refused (DNS rebinding), uploads are served with nosniff, no server path reaches a
visitor or a downloaded video, and a huge search is answered with what is wrong."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import httpx
import pytest
from gradio_client import Client, handle_file

from conftest_ui import ROOT, StudioProcess, portrait, spoken_clip
from tests.waiting import wait_until


@pytest.fixture(scope="module")
def studio(tmp_path_factory, tiny_weights):
    root = tmp_path_factory.mktemp("studio-security")
    app = StudioProcess(tiny_weights, root / "outputs", root / "app.log")
    try:
        app.start()
        yield {"app": app, "root": root, "client": Client(app.url, verbose=False, download_files=str(root / "dl")),
               "photo": portrait(root / "portrait.png"), "voice": spoken_clip(root / "voice.wav", "Hello there.")}
    finally:
        app.stop()


def run_args(s, prompt="A person talks to the camera.", steps=2, seed=3):
    return ["tiny", "TIA", prompt, "", [handle_file(str(s["photo"]))], handle_file(str(s["voice"])), 0, 0,
            "Original clip", False, 1.0, "128x96", 128, 96, False, 9, steps, 5.0, 7.0, 4.0, 7.5, seed]


def server_paths(s) -> list[str]:
    """Where things are on the server: none of these may appear in what a visitor gets."""
    return [str(s["root"]), str(ROOT), tempfile.gettempdir().rstrip("/") + "/", str(Path.home()) + "/"]


def assert_no_server_path(s, text: str, what: str) -> None:
    for path in server_paths(s):
        assert path not in text, f"{what} shows the server path {path!r}: {text[:600]}"


def test_raw_cancel_without_a_page_stops_nothing(studio):
    owner = studio["client"]
    job = owner.submit(*run_args(studio, prompt="A long take nobody else may stop.", steps=100), api_name="/generate")
    wait_until(lambda: "Denoising" in str((job.outputs() or [[""]])[-1][0]), 120, "the run to start denoising")
    url = studio["app"].url + "gradio_api/run/cancel"
    for body in ({"data": []}, {"data": [], "session_hash": "made-up-page"}):
        answer = httpx.post(url, json=body, timeout=30)
        assert answer.status_code == 200, answer.text
        assert "started from another page" in answer.text, answer.text
    assert not job.done(), "a request naming no page stopped the run"
    steps_before = job.outputs()[-1][0]
    wait_until(lambda: job.outputs()[-1][0] != steps_before, 60, "the run to go on")
    assert "Denoising" in str(job.outputs()[-1][0])
    owner.predict(api_name="/cancel")
    job.result(timeout=60)
    assert "Cancelled. Ready for the next run." in job.outputs()[-1][0]


def test_delete_removes_only_gallery_runs(studio):
    outputs = studio["root"] / "outputs"
    stranger = outputs / "notarun"
    stranger.mkdir(parents=True, exist_ok=True)
    (stranger / "keep.txt").write_text("not a run")
    answer = studio["client"].predict("notarun", api_name="/gallery_delete")
    assert (stranger / "keep.txt").read_text() == "not a run", "a folder that is not a run was deleted"
    assert "No gallery entry 'notarun'" in answer[5], answer
    assert studio["client"].predict(".work", api_name="/gallery_delete")[5].startswith("**Problem:**")


def test_foreign_host_names_are_refused(studio):
    url, port = studio["app"].url, studio["app"].port
    refused = httpx.get(url + "config", headers={"Host": "evil.example"}, timeout=10)
    assert refused.status_code == 421, f"answered {refused.status_code} to Host: evil.example"
    assert "host name" in refused.json()["detail"], refused.text
    assert httpx.get(url + "gradio_api/info", headers={"Host": f"evil.example:{port}"}, timeout=10).status_code == 421
    for host in (f"localhost:{port}", f"127.0.0.1:{port}", "127.0.0.1", f"[::1]:{port}"):
        assert httpx.get(url + "config", headers={"Host": host}, timeout=10).status_code == 200, host


def test_uploads_are_served_with_nosniff(studio):
    url = studio["app"].url
    page = b"<html><script>alert(1)</script></html>"
    up = httpx.post(url + "gradio_api/upload", files={"files": ("note.txt", page, "text/plain")}, timeout=30)
    assert up.status_code == 200, up.text
    served = httpx.get(url + "gradio_api/file=" + up.json()[0], timeout=30)
    assert served.status_code == 200 and served.content == page
    assert served.headers.get("x-content-type-options") == "nosniff", dict(served.headers)


def test_no_server_paths_reach_visitors_or_videos(studio):
    from engine.media import probe_mp4

    s, client, url = studio, studio["client"], studio["app"].url
    assert_no_server_path(s, httpx.get(url + "config", timeout=30).text, "/config")
    weights = client.predict("tiny", api_name="/weights_status")
    assert "weights present in `" in weights
    assert_no_server_path(s, weights, "/weights_status")

    bad = s["root"] / "broken-clip.wav"
    bad.write_bytes(b"RIFF not really a wave file" * 10)
    described = client.predict(handle_file(str(bad)), api_name="/describe_audio")[0]
    assert described.startswith("Problem:") and "broken-clip.wav" in described, described
    assert_no_server_path(s, described, "an audio problem")

    status, _preview, video, _summary, _grid = client.predict(*run_args(s, prompt="Paths stay home."),
                                                              api_name="/generate")
    assert "Done:" in status, status
    entry_id = status.split("Done:")[1].split("<")[0].strip()

    meta = probe_mp4(video["video"] if isinstance(video, dict) else video)["metadata"]["humo_studio"]
    as_text = json.dumps(meta)
    assert_no_server_path(s, as_text, "the MP4 comment tag")
    assert meta["images"] == ["portrait.png"] and meta["metadata"]["studio"]["audio_source"] == "voice.wav", meta

    record_text = (s["root"] / "outputs" / entry_id / "settings.json").read_text()
    record = json.loads(record_text, parse_constant=lambda c: pytest.fail(f"{c} in settings.json"))
    assert record["settings"]["images"] == ["portrait.png"]
    assert_no_server_path(s, record_text, "settings.json")

    got = httpx.post(url + "gradio_api/run/gallery_get", json={"data": [entry_id]}, timeout=30)
    assert got.status_code == 200, got.text
    settings = got.json()["data"][3]
    assert settings["prompt"] == "Paths stay home." and settings["images"] == ["portrait.png"]
    assert_no_server_path(s, json.dumps(settings), "/gallery_get's settings")

    missing = client.predict("../../etc", api_name="/gallery_get")[2]
    assert "No gallery entry" in missing


def test_a_huge_search_says_it_is_too_long(studio):
    client = studio["client"]
    huge = "kitchen " * 130_000                    # about 1 MB
    with pytest.raises(Exception, match="search is too long"):
        client.predict(huge, "", "", False, 24, 0, api_name="/gallery_search")
    _grid, count = client.predict(huge, "", "", False, api_name="/gallery_list")
    assert "search is too long" in count and "Restart" not in count, count
    assert client.predict("kitchen", "", "", False, 24, 0, api_name="/gallery_search")["total"] >= 0
    # The refused search is not kept for the page: a run in the same session still redraws its gallery.
    status = client.predict(*run_args(studio, prompt="After a huge search."), api_name="/generate")[0]
    assert "Done" in status, status


def test_redaction_rules():
    """What `engine.redact` keeps (names, URLs, relative paths) and drops (the folders around them)."""
    from engine.redact import redact_settings, redact_text, settings_json, shown_path

    here = os.getcwd()
    assert shown_path(os.path.join(here, "outputs", "a.mp4")) == "outputs/a.mp4"
    assert shown_path("/srv/data/outputs") == "outputs" and shown_path("weights") == "weights"
    text = redact_text("Cannot read /tmp/gradio/3f2a/voice.wav: see http://127.0.0.1:7860/x and ./notes, `/srv/w`.")
    assert text == "Cannot read voice.wav: see http://127.0.0.1:7860/x and ./notes, `w`."
    settings = {"images": ["/tmp/up/me.png", "me2.png"], "scale_t": float("nan"), "prompt": "/imagine a/b /c d",
                "metadata": {"studio": {"audio_source": "/home/x/voice.mp3", "gain": float("inf")}}}
    assert redact_settings(settings) == {"images": ["me.png", "me2.png"], "scale_t": None, "prompt": "/imagine a/b /c d",
                                         "metadata": {"studio": {"audio_source": "voice.mp3", "gain": None}}}
    assert json.loads(settings_json(settings), parse_constant=lambda c: pytest.fail(c))["scale_t"] is None
    kept = json.loads(settings_json(settings, names_only=False), parse_constant=lambda c: pytest.fail(c))
    assert kept["images"] == ["/tmp/up/me.png", "me2.png"] and kept["metadata"]["studio"]["gain"] is None
