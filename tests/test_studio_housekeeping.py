"""The real app (a child process, tiny variant) keeps its disk flat: crash leftovers in the work
folder go at start, uploads over the limit are refused (and the page says the limit), a run leaves
no copy of its video or previews in Gradio's temp folder, and the work folder keeps only a few
previews."""
from __future__ import annotations

import json
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest
from gradio_client import Client, handle_file

from conftest_ui import StudioProcess, portrait

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def studio(tmp_path_factory, tiny_weights):
    root = tmp_path_factory.mktemp("studio-housekeeping")
    work = root / "outputs" / ".work"
    work.mkdir(parents=True)
    leftovers = [work / ".run-20261130-101010-abcdef.mp4.1a2b3c4d.part.mp4",   # a write cut short
                 work / "run-20261130-101010-abcdef.mp4",                      # finished, never saved
                 work / "run-20261130-101010-abcdef.thumb.png",
                 work / "trim-0123456789abcdef.wav"]
    for path in leftovers:
        path.write_bytes(b"\0" * 1000)
    temp = root / "gradio-tmp"
    app = StudioProcess(tiny_weights, root / "outputs", root / "app.log", extra_args=("--max-upload-mb", "1"),
                        env={"GRADIO_TEMP_DIR": str(temp)}).start()
    yield {"app": app, "root": root, "work": work, "temp": temp, "leftovers": leftovers,
           "client": Client(app.url, verbose=False, download_files=str(root / "downloads"))}
    app.stop()


def test_crash_leftovers_in_the_work_folder_go_at_start(studio):
    assert not [p.name for p in studio["leftovers"] if p.exists()]


def upload(url: str, name: str, data: bytes) -> tuple[int, str]:
    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"{name}\"\r\n"
            "Content-Type: application/octet-stream\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    req = urllib.request.Request(url + "gradio_api/upload", data=body,
                                 headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def test_uploads_over_the_limit_are_refused_and_the_page_says_the_limit(studio):
    url = studio["app"].url
    code, text = upload(url, "big.wav", b"\0" * (2 * 2**20))
    assert code == 413, (code, text)
    code, text = upload(url, "small.wav", b"\0" * (100 * 2**10))
    assert code == 200 and json.loads(text), (code, text)
    with urllib.request.urlopen(url + "config", timeout=30) as resp:
        config = resp.read().decode()
    assert "up to 1 MB per file" in config


def test_a_run_leaves_no_copies_in_the_temp_folder(studio, tmp_path):
    """The finished MP4 and its thumbnail are served from the outputs folder, the previews from the
    work folder (only the newest few kept): Gradio's temp folder holds the uploads only."""
    client = studio["client"]
    photo = portrait(tmp_path / "face.png")
    args = ["tiny", "TI", "A person talks to the camera.", "", [handle_file(str(photo))], None, 0, 0,
            "Original clip", False, 1.0, "custom", 64, 64, False, 5, 12, 5.0, 7.0, 4.0, 7.5, 1,
            "auto", "exact", "auto", False, 1]
    job = client.submit(*args, api_name="/generate")
    job.result(timeout=600)
    outputs = job.outputs()
    status, _preview, video, _summary, _grid = outputs[-1]
    assert "Done:" in status, status
    previews = {o[1] for o in outputs if isinstance(o[1], str) and o[1]}
    assert len(previews) >= 2, outputs                  # previews streamed while it ran
    in_temp = sorted(p.name for p in studio["temp"].rglob("*") if p.is_file() and p.stat().st_size)
    assert not [n for n in in_temp if n.endswith((".mp4", ".png", ".webp", ".jpg")) and n != photo.name], in_temp
    kept = list(studio["work"].glob("preview-*.png"))
    assert 1 <= len(kept) <= 8, kept                    # 12 steps made 12 previews; the newest 8 stay
    assert not list(studio["work"].glob("run-*")), list(studio["work"].iterdir())
