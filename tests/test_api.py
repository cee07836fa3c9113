"""The studio's API through gradio_client, against the real app and engine (tiny variant):
a generation streams its progress and ends with a playable MP4 that lands in the gallery;
reuse_settings returns the run's settings; a fast mode and a memory plan travel with the run;
/memory_plan answers with the engine's choice and estimate; bad input is a readable message."""
from __future__ import annotations

from pathlib import Path

import pytest
from gradio_client import Client, handle_file

from conftest_ui import StudioProcess, make_tiny_weights, portrait, spoken_clip
from tests.waiting import wait_until

PROMPT = "A man with short brown hair speaks to the camera."


@pytest.fixture(scope="module")
def studio(tmp_path_factory):
    root = tmp_path_factory.mktemp("studio-api")
    with StudioProcess(make_tiny_weights(root / "weights"), root / "outputs", root / "app.log") as app:
        client = Client(app.url, verbose=False, download_files=str(root / "downloads"))
        yield {"app": app, "client": client, "root": root,
               "photo": portrait(root / "portrait.png"), "voice": spoken_clip(root / "voice.wav", "Good morning!")}


def generate_args(s, prompt=PROMPT, width=128, steps=6, seed=99):
    # The order of the `generate` inputs (see studio.form.FORM_KEYS). The performance inputs
    # (plan, fast mode, attention, compile) come last and are left out here: callers written
    # before they existed must keep working.
    return ["tiny", "TIA", prompt, "", [handle_file(str(s["photo"]))], handle_file(str(s["voice"])), 0, 0,
            "Original clip", False, 1.0, "128x96" if width == 128 else "custom", width, 96, False, 17, steps, 5.0, 7.0, 4.0, 7.5, seed]


def test_api_lists_every_action(studio):
    names = set(studio["client"].view_api(print_info=False, return_format="dict")["named_endpoints"])
    for name in ("/generate", "/cancel", "/isolate_voice", "/gallery_list", "/gallery_get", "/gallery_delete",
                 "/reuse_settings", "/weights_status", "/make_tiny_weights", "/download_weights",
                 "/apply_preset", "/random_seed", "/memory_plan", "/gallery_search", "/gallery_star"):
        assert name in names, f"{name} missing from {sorted(names)}"


def test_make_tiny_weights_from_the_studio(tmp_path):
    """No weights at all: the studio starts anyway, and makes the tiny ones through the API."""
    with StudioProcess(tmp_path / "weights", tmp_path / "outputs", tmp_path / "app.log") as app:
        client = Client(app.url, verbose=False)
        assert "weights are not ready" in client.predict("tiny", api_name="/weights_status")
        status, _variant = client.predict("tiny", api_name="/make_tiny_weights")
        assert "weights present" in status, status
        assert (tmp_path / "weights" / "tiny").is_dir()


def test_preset_fills_the_settings(studio):
    out = studio["client"].predict("Pipeline check (tiny)", "tiny", 128, 96, 17, 4, 5.0, 7.0, 4.0, 7.5,
                                   api_name="/apply_preset")
    size, width, height, frames, steps = out[:5]
    assert (size, width, height, frames, steps) == ("128x96", 128, 96, 9, 2)


def test_generate_streams_progress_and_returns_video(studio):
    client = studio["client"]
    before = client.predict(api_name="/gallery_search")["total"]      # other tests of this module may have run
    job = client.submit(*generate_args(studio), api_name="/generate")
    job.result(timeout=300)
    outputs = job.outputs()
    assert len(outputs) >= 3, f"expected streamed updates, got {len(outputs)}"
    statuses = [o[0] for o in outputs if o and isinstance(o[0], str)]
    steps = [int(s.split('data-step="')[1].split('"')[0]) for s in statuses if 'data-step="' in s]
    assert steps and min(steps) < 6, statuses      # progress arrived while the run was going
    status, _preview, video, summary, _grid = outputs[-1]
    assert "Done:" in status, status
    video_path = video["video"] if isinstance(video, dict) else video
    data = Path(video_path).read_bytes()
    assert data[4:8] == b"ftyp" and len(data) > 1000
    assert "seed 99" in summary
    entry_id = status.split("Done:")[1].split("<")[0].strip()

    settings = client.predict(entry_id, api_name="/reuse_settings")
    assert settings[2] == PROMPT          # prompt
    assert settings[16] == 6 and settings[21] == 99   # steps, seed

    grid, count = client.predict(api_name="/gallery_list")
    assert f"of {before + 1} run" in count and len(grid) == min(before + 1, 24), count
    from engine.media import probe_mp4
    info = probe_mp4(video_path)
    meta = info["metadata"]["humo_studio"]     # the settings travel inside the MP4
    assert meta["prompt"] == PROMPT and meta["seed"] == 99 and meta["steps"] == 6
    assert meta["metadata"]["studio"]["lips"] == "Original clip"
    assert info["has_audio"] and info["frames"] == 17
    # Left-out performance inputs: exact mode with the launch plan (auto).
    assert meta["fast_mode"] is None and meta["metadata"]["studio"]["plan"] == "auto"
    assert list(settings[22:26]) == ["auto", "exact", "auto", False]


def test_memory_plan_for_a_gpu_size(studio):
    """The 1.7B at 832×480, 97 frames, for given GPU sizes: a plan that fits, with its estimate."""
    client = studio["client"]
    roomy = client.predict("humo-1.7b", 832, 480, 97, "TIA", 80, api_name="/memory_plan")
    small = client.predict("humo-1.7b", 832, 480, 97, "TIA", 12, api_name="/memory_plan")
    for answer, gib in ((roomy, 80), (small, 12)):
        assert answer["plan"] and answer["device"] == "cuda" and answer["vram_gb"] == gib, answer
        est = answer["estimate"]
        assert est["plan"] == answer["plan"] and (est["width"], est["height"], est["frames"]) == (832, 480, 97)
        assert 0 < est["peak_bytes"] <= answer["budget_bytes"] < gib * 1024**3
        assert {p["name"] for p in est["parts"]} == {"text", "audio", "vae", "dit"}
        assert answer["description"].startswith(answer["plan"] + ":")
    # Less memory: a leaner plan, slower or lossy, never the same peak as the roomy one.
    assert small["estimate"]["peak_bytes"] < roomy["estimate"]["peak_bytes"]
    assert small["plan"] != roomy["plan"]
    none_fit = client.predict("humo-1.7b", 832, 480, 97, "TIA", 1, api_name="/memory_plan")
    assert none_fit["plan"] is None and "No memory plan fits" in none_fit["error"]


def test_memory_plan_for_this_machine(studio):
    import torch

    answer = studio["client"].predict("tiny", 128, 96, 17, "TI", api_name="/memory_plan")
    assert answer["mode"] == "TI" and answer["estimate"]["peak_bytes"] > 0
    if torch.cuda.is_available():
        assert answer["device"] == "cuda" and answer["plan"] and answer["budget_bytes"] > 0
    else:
        assert answer["device"] == "cpu" and answer["plan"] == "cpu" and answer["budget_bytes"] is None
        assert any("CPU" in n for n in answer["notes"])
    with pytest.raises(Exception, match="Unknown model"):
        studio["client"].predict("no-such-model", 128, 96, 17, api_name="/memory_plan")


def test_fast_mode_and_plan_travel_with_the_run(studio):
    from engine.humo.fast import FAST_MODES

    client = studio["client"]
    local = client.predict("tiny", 128, 96, 17, "TIA", api_name="/memory_plan")
    status, _preview, video, summary, _grid = client.predict(
        *generate_args(studio, steps=5, seed=7), "auto", "fewer-steps", "auto", False, api_name="/generate")
    assert "Done:" in status, status
    assert "fewer-steps (approximate)" in summary, summary
    entry_id = status.split("Done:")[1].split("<")[0].strip()

    from engine.media import probe_mp4
    meta = probe_mp4(video["video"] if isinstance(video, dict) else video)["metadata"]["humo_studio"]
    assert meta["fast_mode"] == "fewer-steps"
    assert meta["steps"] == FAST_MODES["fewer-steps"].steps_for(5) < 5      # the steps that ran
    studio_meta = meta["metadata"]["studio"]
    assert studio_meta["plan"] == "auto" and studio_meta["plan_used"] == local["plan"]

    settings = client.predict(entry_id, api_name="/reuse_settings")
    assert settings[16] == 5 and settings[21] == 7          # the steps asked for, the seed
    assert list(settings[22:26]) == ["auto", "fewer-steps", "auto", False]


def test_a_batch_with_random_seeds_over_the_api(studio):
    """`runs` (the last generate input): two runs, each with its own random seed (seed -1), both kept."""
    client = studio["client"]
    before = client.predict("", "", "", False, 1, 0, api_name="/gallery_search")["total"]
    status, _preview, video, summary, _grid = client.predict(
        *generate_args(studio, prompt="A batch over the API.", steps=2, seed=-1), "auto", "exact", "auto", False, 2,
        api_name="/generate")
    assert "Done: 2 runs (random seeds " in status, status
    seeds = [int(x) for x in status.split("random seeds ")[1].split(")")[0].split(", ")]
    assert len(seeds) == 2 and all(0 <= s < 2**31 for s in seeds) and seeds[0] != seeds[1]
    assert "2 of 2 runs done" in summary and "random seeds" in summary
    found = client.predict("batch over the api", "", "", False, 24, 0, api_name="/gallery_search")
    assert found["total"] == 2 and sorted(e["seed"] for e in found["entries"]) == sorted(seeds), found
    assert client.predict("", "", "", False, 1, 0, api_name="/gallery_search")["total"] == before + 2
    settings = client.predict(found["entries"][0]["id"], api_name="/reuse_settings")
    assert settings[21] == found["entries"][0]["seed"] and settings[26] == 1     # reuse: that seed, one run
    star = client.predict(found["entries"][1]["id"], api_name="/gallery_star")
    assert star == {"id": found["entries"][1]["id"], "starred": True}
    assert client.predict(found["entries"][1]["id"], False, api_name="/gallery_star")["starred"] is False


def test_generate_takes_named_inputs_and_the_rest_default(studio):
    """The named form: only the inputs a caller cares about; the others take the page's values or
    the model's defaults. The old positional form (the tests above) keeps working."""
    client = studio["client"]
    names = [p["parameter_name"] for p in
             client.view_api(print_info=False, return_format="dict")["named_endpoints"]["/generate"]["parameters"]]
    assert names[:6] == ["variant", "mode", "prompt", "negative_prompt", "images", "audio"]
    assert names[-4:] == ["runs", "window_length", "window_overlap", "window_schedule"], names
    status, _preview, video, summary, _grid = client.predict(
        variant="tiny", mode="TA", prompt="Named inputs over the API.", audio=handle_file(str(studio["voice"])),
        match_audio=False, frames=9, steps=2, seed=11, width=128, height=96, api_name="/generate")
    assert "Done:" in status, status
    assert "9 frames" in summary and "128×96" in summary and "seed 11" in summary, summary
    assert Path(video).stat().st_size > 0
    refused = client.predict(variant="tiny", mode="TA", audio=handle_file(str(studio["voice"])), api_name="/generate")[0]
    assert "prompt is empty" in refused, refused


def test_cancel_from_another_page_leaves_the_run_alone(studio):
    """On a shared link each visitor is a page (session): only the page that started a run cancels it."""

    owner, other = studio["client"], Client(studio["app"].url, verbose=False)
    job = owner.submit(*generate_args(studio, prompt="A long take to cancel.", steps=100, seed=5),
                       api_name="/generate")
    def step_now() -> int:
        last = str((job.outputs() or [[""]])[-1][0])
        return int(last.split('data-step="')[1].split('"')[0]) if 'data-step="' in last else 0

    wait_until(step_now, 120, "the run to start denoising")
    refused = other.predict(api_name="/cancel")
    assert "started from another page" in refused, refused
    refused_at = step_now()
    wait_until(lambda: job.done() or step_now() >= refused_at + 2, 120, "two more steps after the refusal")
    assert not job.done() and "Denoising" in str(job.outputs()[-1][0]), "the other page stopped the run"
    owner.predict(api_name="/cancel")            # returns once the run's stream has said its last line
    job.result(timeout=60)
    final = job.outputs()[-1][0]
    assert "Cancelled. Ready for the next run." in final, final
    assert "Nothing to cancel" in owner.predict(api_name="/cancel")


def test_batch_seeds():
    import random

    from studio.form import MAX_SEED, batch_seeds
    assert batch_seeds(42, 4) == [42, 43, 44, 45]
    assert batch_seeds(MAX_SEED, 2) == [MAX_SEED, 0]
    drawn = batch_seeds(-1, 16, random.Random(3))
    assert len(set(drawn)) == 16 and all(0 <= s <= MAX_SEED for s in drawn)


def test_a_run_belongs_to_one_click_and_one_page():
    from studio.jobs import RunSlot
    slot = RunSlot()
    assert slot.stop_for("page-a") == ("none", None)      # nothing going: nothing to stop
    first = slot.begin(owner="page-a")
    assert not first.stopped, "a new run starts with a clean flag"
    assert slot.stop_for("page-b") == ("other", None) and not first.stopped
    assert slot.stop_for(None) == ("other", None) and not first.stopped   # no session owns nothing
    assert slot.stop_for("page-a") == ("stopped", first) and first.stopped
    second = slot.begin(owner="page-b")
    slot.end(first)                                     # the cancelled run winds down late
    assert slot.current is second and not second.stopped and first.wait_ended(0)
    slot.end(second)
    assert slot.current is None


def test_bad_input_is_a_message_and_the_app_keeps_serving(studio):
    client = studio["client"]
    status = client.predict(*generate_args(studio, width=8000), api_name="/generate")[0]
    assert "Width must be between 32 and 2048 pixels, not 8000." in status and "Traceback" not in status
    status = client.predict(*generate_args(studio, prompt=""), api_name="/generate")[0]
    assert "prompt is empty" in status
    status = client.predict(*generate_args(studio), "auto", "exact", "auto", False, 40, api_name="/generate")[0]
    assert "Runs must be between 1 and 16, not 40." in status and "Traceback" not in status
    assert "weights present" in client.predict("tiny", api_name="/weights_status")
