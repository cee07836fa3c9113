"""One request rule for every front end: the same table of raw settings goes through the resolver
(engine.request), the studio's form handler, the performance panel, `python -m engine
generate|plan|bench --dry-run`, and (for a few rows) the real app's /generate over gradio_client;
each gives the same answer: accepted, rounded with the same notice, or refused with the same sentence."""
from __future__ import annotations

import html
import math
import re
from pathlib import Path

import pytest

from engine.__main__ import main as engine_main
from engine.errors import InputError
from engine.request import resolve_request

ROOT = Path(__file__).resolve().parents[1]
PHOTO = str(ROOT / "assets" / "portrait.png")
BASE = {"variant": "tiny", "mode": "TI", "prompt": "A person talks to the camera.", "images": [PHOTO],
        "width": 128, "height": 96, "frames": 17, "steps": 2, "shift": 5.0, "scale_t": 7.0, "scale_i": 4.0,
        "seed": 3, "runs": 1}
SHAPE_KEYS = {"variant", "mode", "width", "height", "frames", "steps"}     # what plan and bench take

OK, NOTE, REFUSE = "ok", "note", "refuse"
# (changes to BASE, what every front end answers, the sentence it says)
TABLE = [
    ({}, OK, None),
    ({"width": 130}, NOTE, "Width 130 was rounded to 128 (a multiple of 16)."),
    ({"height": 90}, NOTE, "Height 90 was rounded to 96 (a multiple of 16)."),
    ({"steps": 2.5}, NOTE, "Steps 2.5 was rounded to 3."),
    ({"frames": 20}, NOTE, "Frames 20 was rounded to 17 (frame counts are 4k+1"),
    ({"frames": 0}, REFUSE, "Frames must be between 1 and 22501, not 0."),
    ({"frames": 30000}, REFUSE, "Frames must be between 1 and 22501, not 30000."),     # 15 minutes at most
    ({"frames": "abc"}, REFUSE, "Frames 'abc' is not a number: use a whole number between 1 and 22501."),
    ({"width": math.nan}, REFUSE, "Width must be a finite number, not nan"),
    ({"width": math.inf}, REFUSE, "Width must be a finite number, not inf"),
    ({"width": "abc"}, REFUSE, "Width 'abc' is not a number: use a multiple of 16 from 32 to 2048."),
    ({"width": 4000}, REFUSE, "Width must be between 32 and 2048 pixels, not 4000."),
    ({"height": 16}, REFUSE, "Height must be between 32 and 2048 pixels, not 16."),
    ({"steps": math.inf}, REFUSE, "Steps must be a finite number, not inf"),
    ({"steps": 0}, REFUSE, "Steps must be between 1 and 200, not 0."),
    ({"steps": 201}, REFUSE, "Steps must be between 1 and 200, not 201."),
    ({"scale_t": math.nan}, REFUSE, "Text guidance must be a finite number, not nan"),
    ({"scale_i": "abc"}, REFUSE, "Image guidance 'abc' is not a number"),
    ({"shift": math.nan}, REFUSE, "Shift must be a finite number, not nan"),
    ({"shift": 0}, REFUSE, "Shift must be more than 0 and at most 100, not 0."),
    ({"seed": "abc"}, REFUSE, "Seed 'abc' is not a number"),
    ({"seed": math.nan}, REFUSE, "Seed must be a finite number, not nan"),
    ({"seed": 2.5}, REFUSE, "Seed must be a whole number, not 2.5"),
    ({"seed": 2**31}, REFUSE, "Seed must be between -1 and 2147483647, not 2147483648."),
    ({"runs": 0}, REFUSE, "Runs must be between 1 and 16, not 0."),
    ({"runs": 17}, REFUSE, "Runs must be between 1 and 16, not 17."),
    ({"runs": "abc"}, REFUSE, "Runs 'abc' is not a number"),
    ({"prompt": ""}, REFUSE, "The prompt is empty"),
    ({"prompt": "   "}, REFUSE, "The prompt is empty"),
    ({"mode": "XY"}, REFUSE, "Unknown mode 'XY'"),
    ({"variant": "humo-99b"}, REFUSE, "Unknown model 'humo-99b'"),
    ({"window_length": 8, "window_overlap": 2, "window_schedule": "fixed"}, OK, None),
    ({"window_length": 1}, REFUSE, "Window length must be between 2 and 200, not 1."),
    ({"window_length": "abc"}, REFUSE, "Window length 'abc' is not a number"),
    ({"window_overlap": 25}, REFUSE, "Window overlap must be between 1 and 24, not 25."),
    ({"window_length": 8, "window_overlap": 8}, REFUSE, "Window overlap must be between 1 and 7, not 8."),
    ({"window_schedule": "random"}, REFUSE, "Window schedule 'random' is not one of: shifted, fixed."),
]
WINDOW_KEYS = ("window_length", "window_overlap", "window_schedule")
IDS = [",".join(f"{k}={v!r}" for k, v in change.items()) or "good" for change, _, _ in TABLE]


class Answer:
    def __init__(self, kind: str, notes=(), message: str = ""):
        self.kind, self.notes, self.message = kind, list(notes), message

    def __repr__(self):
        return f"Answer({self.kind}, {self.notes}, {self.message!r})"


def check(answer: Answer, kind: str, text: str | None, where: str) -> None:
    if kind == REFUSE:
        assert answer.kind == REFUSE, f"{where}: {answer}"
        assert text in answer.message and "\n" not in answer.message.strip(), f"{where}: {answer}"
    else:
        assert answer.kind == OK, f"{where}: {answer}"
        if kind == NOTE:
            assert any(text in n for n in answer.notes), f"{where}: {answer}"
        else:
            assert not answer.notes, f"{where}: {answer}"


def cli_value(value) -> str:
    return str(value)


# ----------------------------------------------------------------------------- front ends

def via_resolver(raw: dict) -> Answer:
    try:
        _, notes = resolve_request(raw)
    except InputError as err:
        return Answer(REFUSE, message=str(err))
    return Answer(OK, notes)


def via_form(raw: dict) -> Answer:
    """The studio's form handler: the /generate inputs in API order, checked as the handler checks them."""
    from studio.form import FORM_KEYS, form_values, resolve_form

    values = {"variant": raw["variant"], "mode": raw["mode"], "prompt": raw["prompt"], "negative_prompt": "",
              "images": [{"path": PHOTO}], "audio": None, "trim_start": 0, "trim_end": 0, "lips": "Original clip",
              "mix_background": False, "background_gain": 1.0, "size": "custom", "width": raw["width"],
              "height": raw["height"], "match_audio": False, "frames": raw["frames"], "steps": raw["steps"],
              "shift": raw["shift"], "scale_t": raw["scale_t"], "scale_i": raw["scale_i"], "scale_a": 7.5,
              "seed": raw["seed"], "plan": "auto", "fast_mode": "exact", "attention": "auto", "compile": False,
              "runs": raw["runs"], **{k: raw.get(k) for k in WINDOW_KEYS}}
    try:
        resolved = resolve_form(form_values([values[k] for k in FORM_KEYS]))
    except InputError as err:
        return Answer(REFUSE, message=str(err))
    return Answer(OK, resolved.notices)


def run_cli(argv: list[str], capsys) -> Answer:
    capsys.readouterr()
    rc = engine_main(argv)
    out = capsys.readouterr()
    notes = [line[len("note: "):] for line in out.err.splitlines() if line.startswith("note: ")]
    errors = [line[len("error: "):] for line in out.err.splitlines() if line.startswith("error: ")]
    if rc == 0:
        assert not errors and out.out.strip(), out
        return Answer(OK, notes)
    assert rc == 2 and len(errors) == 1, (rc, out)
    return Answer(REFUSE, notes, errors[0])


def via_cli_generate(raw: dict, capsys, tmp_path) -> Answer:
    argv = ["generate", "--dry-run", "--variant", raw["variant"], "--mode", raw["mode"], "--prompt", raw["prompt"],
            "--image", PHOTO, "--size", f"{raw['width']}x{raw['height']}", "--out", str(tmp_path / "out.mp4")]
    for key, flag in (("frames", "--frames"), ("steps", "--steps"), ("shift", "--shift"), ("scale_t", "--scale-t"),
                      ("scale_i", "--scale-i"), ("seed", "--seed"), ("runs", "--runs")):
        argv += [flag, cli_value(raw[key])]
    for key in WINDOW_KEYS:
        if key in raw:
            argv += ["--" + key.replace("_", "-"), cli_value(raw[key])]
    return run_cli(argv, capsys)


def via_cli_shape(command: str, raw: dict, capsys) -> Answer:
    argv = [command, "--dry-run", "--variant", raw["variant"], "--mode", raw["mode"],
            "--size", f"{raw['width']}x{raw['height']}", "--frames", cli_value(raw["frames"]),
            "--steps", cli_value(raw["steps"])]
    return run_cli(argv, capsys)


def via_panel(raw: dict) -> Answer:
    """The performance panel's /memory_plan (size and frames; it estimates for the default steps)."""
    from studio.performance import memory_plan

    try:
        out = memory_plan(raw["variant"], raw["width"], raw["height"], raw["frames"], raw["mode"])
    except InputError as err:
        return Answer(REFUSE, message=str(err))
    return Answer(OK, out["notices"])


# ----------------------------------------------------------------------------- the table

@pytest.mark.parametrize("change,kind,text", TABLE, ids=IDS)
def test_every_front_end_gives_the_same_answer(change, kind, text, capsys, tmp_path):
    raw = {**BASE, **change}
    answers = {"resolver": via_resolver(raw), "studio form": via_form(raw)}
    answers["generate"] = via_cli_generate(raw, capsys, tmp_path)
    if set(change) <= SHAPE_KEYS:
        answers["plan"] = via_cli_shape("plan", raw, capsys)
        answers["bench"] = via_cli_shape("bench", raw, capsys)
        if "steps" not in change:
            answers["panel"] = via_panel(raw)
    for where, answer in answers.items():
        check(answer, kind, text, where)
    # Not only the expected words: the very same sentence and notices everywhere.
    first = answers["resolver"]
    for where, answer in answers.items():
        assert answer.message == first.message, (where, answer, first)
        if kind == NOTE:
            assert [n for n in answer.notes if n in first.notes] == first.notes, (where, answer, first)


def test_the_variant_must_be_given():
    from engine.request import GenerationRequest

    with pytest.raises(TypeError):
        GenerationRequest(prompt="A person talks.")          # no silent default model
    with pytest.raises(InputError, match="No model was chosen"):
        resolve_request({k: v for k, v in BASE.items() if k != "variant"})


def test_a_batch_gets_its_seeds_from_the_rule():
    import random

    resolved = resolve_request({**BASE, "seed": 2**31 - 1, "runs": 3})
    assert resolved.seeds == [2**31 - 1, 0, 1] and [r.seed for r in resolved.requests()] == resolved.seeds
    drawn = resolve_request({**BASE, "seed": -1, "runs": 4}, rng=random.Random(5))
    assert drawn.random_seed and len(set(drawn.seeds)) == 4


# ----------------------------------------------------------------------------- the real app (API)

def finite(change: dict) -> bool:
    return not any(isinstance(v, float) and not math.isfinite(v) for v in change.values())


# gradio_client cannot send NaN or infinities (its JSON encoder refuses them): those rows go as raw HTTP.
API_ROWS = [row for row in TABLE if row[1] == REFUSE and set(row[0]) & {"width", "scale_t", "shift", "seed", "runs", "prompt"}
            and row[0] != {"seed": 2**31}]


@pytest.fixture(scope="module")
def studio(tmp_path_factory, tiny_weights):
    from gradio_client import Client

    from conftest_ui import StudioProcess

    root = tmp_path_factory.mktemp("studio-rule")
    app = StudioProcess(tiny_weights, root / "outputs", root / "app.log").start()
    yield {"app": app, "client": Client(app.url, verbose=False, download_files=str(root / "downloads")),
           "outputs": root / "outputs"}
    app.stop()


def api_args(raw: dict) -> list:
    from gradio_client import handle_file

    return [raw["variant"], raw["mode"], raw["prompt"], "", [handle_file(PHOTO)], None, 0, 0, "Original clip", False,
            1.0, "custom", raw["width"], raw["height"], False, raw["frames"], raw["steps"], raw["shift"],
            raw["scale_t"], raw["scale_i"], 7.5, raw["seed"], "auto", "exact", "auto", False, raw["runs"],
            *(raw.get(k) for k in WINDOW_KEYS)]   # plain HTTP sends every input (gradio_client fills left-out ones)


def raw_http_generate(url: str, raw: dict) -> str:
    """/generate over plain HTTP with the body as a browser could send it (NaN and Infinity as bare
    JSON words); returns the last status line."""
    import json
    import urllib.request
    import uuid

    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"portrait.png\"\r\n"
            f"Content-Type: image/png\r\n\r\n").encode() + Path(PHOTO).read_bytes() + f"\r\n--{boundary}--\r\n".encode()
    req = urllib.request.Request(url + "gradio_api/upload", data=body,
                                 headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    with urllib.request.urlopen(req, timeout=60) as resp:
        uploaded = json.loads(resp.read())[0]
    args = api_args(raw)
    args[4] = [{"path": uploaded, "meta": {"_type": "gradio.FileData"}}]
    payload = json.dumps({"data": args}, allow_nan=True).encode()       # NaN / Infinity, as JavaScript sends
    req = urllib.request.Request(url + "gradio_api/call/generate", data=payload,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as resp:
        event_id = json.loads(resp.read())["event_id"]
    last = None
    with urllib.request.urlopen(url + f"gradio_api/call/generate/{event_id}", timeout=120) as resp:
        for line in resp.read().decode().splitlines():
            if line.startswith("data:") and line[5:].strip().startswith("["):
                last = json.loads(line[5:])
    assert last is not None, "no data came back"
    return last[0]


def status_text(status_html: str) -> str:
    return html.unescape(re.sub(r"<[^>]+>", " ", status_html))


def test_the_app_gives_the_same_answers(studio):
    """A few refusals through /generate: the handler's sentence, never an empty error; then a rounded
    value (steps 2.5, frames 7, width 130) makes a video with the rounded settings, and settings.json is valid JSON."""
    import json

    client = studio["client"]
    assert len(API_ROWS) >= 6
    for change, _, text in API_ROWS:
        raw = {**BASE, **change}
        if finite(change):
            status = status_text(client.predict(*api_args(raw), api_name="/generate")[0])
        else:
            status = status_text(raw_http_generate(studio["app"].url, raw))
        expected = via_resolver(raw).message
        assert text in expected and expected in status, (change, status)
        assert "Problem" in status and "Unexpected" not in status
    raw = {**BASE, "steps": 2.5, "frames": 7, "width": 130}
    status, _preview, video, _summary, _grid = client.predict(*api_args(raw), api_name="/generate")
    assert "Done:" in status, status
    from engine.media import probe_mp4

    meta = probe_mp4(video["video"] if isinstance(video, dict) else video)["metadata"]["humo_studio"]
    assert (meta["steps"], meta["frames"], meta["width"]) == (3, 5, 128), meta
    records = list(studio["outputs"].rglob("settings.json"))
    assert records
    for path in records:
        json.loads(path.read_text(), parse_constant=lambda name: pytest.fail(f"{path} holds a bare {name}"))
