"""A studio started on an outputs folder it cannot write to (the real app in a child process): the
gallery stays readable, and generating, starring and deleting say which folder is not writable
instead of an unexpected error or "restart the studio"."""
from __future__ import annotations

import os
import shutil
import subprocess

import pytest
from gradio_client import Client, handle_file

from conftest_ui import StudioProcess, portrait, spoken_clip
from gallery_fixtures import fake_video

FOLDER = "studio-outputs"


def make_read_only(folder, on: bool) -> None:
    """No file can be made in `folder` (for root too: the folder is also made immutable)."""
    if not on:
        _immutable(folder, False)
    folder.chmod(0o555 if on else 0o755)
    if on:
        _immutable(folder, True)


def _immutable(folder, on: bool) -> None:
    if os.geteuid() == 0:
        chattr = shutil.which("chattr")
        assert chattr, "chattr is needed to make a folder read-only for root (apt-get install e2fsprogs)"
        subprocess.run([chattr, "+i" if on else "-i", str(folder)], check=True, capture_output=True)


@pytest.fixture(scope="module")
def studio(tmp_path_factory, tiny_weights):
    from engine.request import GenerationRequest
    from studio.gallery import Gallery

    root = tmp_path_factory.mktemp("studio-readonly")
    outputs = root / FOLDER
    with Gallery(outputs) as g:
        entry = g.add(fake_video(root, "older.mp4"), GenerationRequest(
            prompt="An older take in a quiet library.", variant="tiny", mode="TI", seed=4).to_dict(), {"total_s": 1.0})
    app = StudioProcess(tiny_weights, outputs, root / "app.log")
    try:
        make_read_only(outputs, True)
        app.start()
        yield {"app": app, "root": root, "run": entry.id, "client": Client(app.url, verbose=False),
               "photo": portrait(root / "portrait.png")}
    finally:
        app.stop()
        make_read_only(outputs, False)


def says_not_writable(s, text: str) -> None:
    assert f"the outputs folder {FOLDER} is not writable" in text, text
    assert str(s["root"]) not in text and "Unexpected" not in text and "Restart the studio;" not in text, text


def test_the_gallery_stays_readable(studio):
    client, run = studio["client"], studio["run"]
    found = client.predict("quiet library", "", "", False, 24, 0, api_name="/gallery_search")
    assert [e["id"] for e in found["entries"]] == [run], found
    _grid, count = client.predict("", "", "", False, api_name="/gallery_list")
    assert count == "Showing 1 of 1 run", count
    _video, _download, info, settings = client.predict(run, api_name="/gallery_get")
    assert "An older take in a quiet library." in info and settings["seed"] == 4, info
    assert client.predict(run, api_name="/reuse_settings")[2] == "An older take in a quiet library."


def test_changes_say_the_folder_is_not_writable(studio):
    client, run = studio["client"], studio["run"]
    with pytest.raises(Exception) as star:
        client.predict(run, True, api_name="/gallery_star")
    says_not_writable(studio, str(star.value))
    note = client.predict(run, api_name="/gallery_delete")[5]
    says_not_writable(studio, note)
    assert client.predict("", "", "", False, 24, 0, api_name="/gallery_search")["total"] == 1
    assert (studio["root"] / FOLDER / run).is_dir()


def test_generating_says_the_folder_is_not_writable(studio):
    status = studio["client"].predict(
        "tiny", "TI", "A person talks.", "", [handle_file(str(studio["photo"]))], None, 0, 0, "Original clip", False,
        1.0, "128x96", 128, 96, False, 9, 2, 5.0, 7.0, 4.0, 7.5, 1, api_name="/generate")[0]
    says_not_writable(studio, status)
    voice = spoken_clip(studio["root"] / "voice.wav", "Hello.")
    _vocals, _background, method = studio["client"].predict(handle_file(str(voice)), 0, 0, api_name="/isolate_voice")
    assert method.startswith("**Problem:** Cannot separate the voice")
    says_not_writable(studio, method)
