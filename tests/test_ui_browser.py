"""The studio end to end in a real browser: the real app (child process), the real engine on
the tiny variant (weights made by `python -m engine make-tiny`), headless Debian Chromium.

One app and one browser serve the whole module. Each test stands alone: the tests that need a
finished run (reuse, restart) get one from the `finished_run` fixture, made over the API.
"""
from __future__ import annotations

import re

import pytest

from conftest_ui import (ASSETS, StudioProcess, assert_no_page_errors, chromium, make_tiny_weights,
                        new_page, open_studio, portrait, run_record, screenshot, set_checkbox, set_number, set_text, spoken_clip, status_text,
                        stem_durations, upload_audio, upload_images, video_ready_state, wait_status, watch_run)

PROMPT = "A young man with short brown hair talks to the camera, blue sky behind him."


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("studio-browser")
    weights = make_tiny_weights(root / "weights")
    inputs = root / "inputs"
    inputs.mkdir()
    data = {
        "root": root,
        "weights": weights,
        "outputs": root / "outputs",
        "photo": portrait(inputs / "portrait.png"),
        "voice": spoken_clip(inputs / "voice.wav", "Hello there, nice to meet you."),
    }
    data["app"] = StudioProcess(weights, data["outputs"], root / "app.log")
    try:
        data["app"].start()
        with chromium() as browser:
            data["browser"] = browser
            yield data
    finally:
        data["app"].stop()


@pytest.fixture
def page(env):
    page = new_page(env["browser"], viewport={"width": 1400, "height": 1300})
    open_studio(page, env["app"].url)
    yield page
    page.close()
    assert env["app"].alive(), f"the studio died:\n{env['app'].log()}"
    assert_no_page_errors(page)


@pytest.fixture(scope="module")
def finished_run(env) -> str:
    """The gallery id of a finished tiny run with the form's settings (PROMPT, 8 steps, seed 1234,
    17 frames), made over the API so that a test needing one does not depend on another test."""
    from gradio_client import Client, handle_file

    client = Client(env["app"].url, verbose=False)
    status = client.predict(variant="tiny", mode="TIA", prompt=PROMPT, images=[handle_file(str(env["photo"]))],
                            audio=handle_file(str(env["voice"])), match_audio=False, frames=17, steps=8, seed=1234,
                            width=128, height=96, api_name="/generate")[0]
    found = re.search(r"Done: (\S+?)<", status) or re.search(r"Done: (\S+)", status)
    assert found, status
    return found.group(1)


def fill_tiny_run(page, env, prompt=PROMPT, steps=8, seed=1234, frames=17):
    set_text(page, "prompt", prompt)
    upload_images(page, env["photo"])
    upload_audio(page, env["voice"])
    set_checkbox(page, "match-audio", False)
    set_number(page, "frames", frames)
    set_number(page, "steps", steps)
    set_number(page, "seed", seed)


def gallery_ids(page, at_least: int = 1) -> int:
    """Open the Gallery tab; the number of tiles once at least `at_least` have appeared."""
    page.locator("#main-tabs").get_by_role("tab", name="Gallery").click()
    tiles = "#gallery-grid img, #gallery-grid video"
    page.wait_for_function(f"() => document.querySelectorAll({tiles!r}).length >= {at_least}", timeout=30_000)
    return page.locator(tiles).count()


def test_generate_streams_previews_then_plays_video_and_lands_in_gallery(env, page):
    fill_tiny_run(page, env)
    screenshot(page, "create-form")
    watch_run(page)
    page.locator("#generate-btn").click()
    text = wait_status(page, "Done:", "Problem", timeout_ms=180_000)
    assert "Done:" in text, f"run failed: {text}\n{env['app'].log()}"
    assert video_ready_state(page) == 4
    record = run_record(page)
    assert record["previews"], "no live preview was shown"
    assert record["videoAt"] is not None and record["previews"][0]["t"] < record["videoAt"], record
    assert max(record["steps"] or [0]) >= 1, "the progress never showed a step"
    info = page.locator("#result-info").inner_text()
    assert "saved to the gallery" in info and "seed 1234" in info
    screenshot(page, "result")

    page.reload()
    open_studio(page, env["app"].url)
    assert gallery_ids(page) >= 1
    screenshot(page, "gallery")


def test_reuse_settings_restores_the_form(env, page, finished_run):
    set_text(page, "prompt", "something else entirely")
    set_number(page, "steps", 3)
    set_number(page, "seed", 7)
    page.locator("#main-tabs").get_by_role("tab", name="Gallery").click()
    page.locator("#entry-id input, #entry-id textarea").first.fill(finished_run)
    page.locator("#entry-id input, #entry-id textarea").first.press("Enter")
    page.wait_for_function("() => (document.querySelector('#entry-info')?.innerText || '').trim().length > 0",
                           timeout=90_000)
    page.locator("#reuse-btn").click()
    page.wait_for_function(
        f"() => document.querySelector('#prompt textarea')?.value === {PROMPT!r}", timeout=90_000)
    assert page.locator("#steps input[type=number]").input_value() == "8"
    assert page.locator("#seed input[type=number]").input_value() == "1234"
    assert page.locator("#frames input[type=number]").input_value() == "17"
    assert page.locator("#tab-create").is_visible()


def test_cancel_stops_a_run_and_the_next_run_works(env, page):
    fill_tiny_run(page, env, steps=100, seed=5)
    set_number(page, "width", 256)
    set_number(page, "height", 192)
    page.locator("#generate-btn").click()
    try:
        page.wait_for_function(
            "() => Number(document.querySelector('#run-status [data-step]')?.dataset.step || 0) >= 1",
            timeout=180_000)
    except Exception:
        raise AssertionError(f"the run never reached step 1: status {status_text(page)!r}\n{env['app'].log()}") \
            from None
    page.locator("#cancel-btn").click()
    try:
        text = wait_status(page, "Cancelled", timeout_ms=120_000)
    except Exception:
        raise AssertionError(f"no cancel: status {status_text(page)!r}\n{env['app'].log()}") from None
    assert "Ready for the next run" in text
    wait_run_ended(env)
    assert "Cancelled" in status_text(page), "the cancelled run kept going"
    screenshot(page, "cancelled")

    set_number(page, "steps", 2)
    set_number(page, "width", 128)
    set_number(page, "height", 96)
    page.locator("#generate-btn").click()
    text = wait_status(page, "Done:", "Problem", timeout_ms=180_000)
    assert "Done:" in text, text
    assert video_ready_state(page) == 4


def test_vocal_preview_gives_two_playable_stems(env, page):
    upload_audio(page, ASSETS / "music_voice.wav")
    page.locator("#vocal-acc").get_by_text("Vocal isolation").first.click()
    page.locator("#isolate-btn").click()
    page.wait_for_function("() => (document.querySelector('#sep-method')?.innerText || '').includes('Method')",
                           timeout=120_000)
    assert re.search(r"Method: (spectral|Kim_Vocal_2)", page.locator("#sep-method").inner_text(), re.I)
    durations = stem_durations(page)
    assert len(durations) == 2 and all(d > 5.0 for d in durations), durations
    page.locator("#stem-vocals").scroll_into_view_if_needed()
    screenshot(page, "vocal-isolation")


def test_gallery_survives_an_app_restart(env, finished_run):
    app: StudioProcess = env["app"]
    app.stop()
    app.start()
    page = new_page(env["browser"], viewport={"width": 1400, "height": 1000})
    try:
        open_studio(page, app.url)
        assert gallery_ids(page) >= 1
        page.locator("#entry-id input, #entry-id textarea").first.fill(finished_run)
        page.locator("#entry-id input, #entry-id textarea").first.press("Enter")
        assert video_ready_state(page, "#entry-video video") == 4
        assert_no_page_errors(page)
    finally:
        page.close()


def wait_run_ended(env) -> None:
    """Wait until the studio has no run going (its stream has sent its last line): a Cancel from
    another client then finds nothing to cancel."""
    from gradio_client import Client

    from tests.waiting import wait_until
    client = Client(env["app"].url, verbose=False)
    wait_until(lambda: "Nothing to cancel" in client.predict(api_name="/cancel"), 60, "the run to end")


def open_performance(page) -> str:
    """Open the Performance panel; returns its plan line once the engine has filled it in."""
    page.locator("#perf-acc").get_by_text("Performance").first.click()
    page.wait_for_function("() => (document.querySelector('#plan-line')?.innerText || '').includes('GiB')",
                           timeout=90_000)
    return page.locator("#plan-line").inner_text()


def test_performance_panel_and_controls_follow_mode_and_model(env, page):
    """The Performance panel names the plan auto picks here, with its estimated peak, and marks every
    fast mode approximate. Only the guidance the model + mode use is shown; Text + Image has no audio."""
    import torch

    from engine.humo.fast import FAST_MODES

    line = open_performance(page)
    assert "Tiny" in line and "128×96" in line, line
    assert ("No GPU here: the run uses the CPU" in line) != torch.cuda.is_available(), line
    assert re.search(r"(auto picks|plan) `?[a-z0-9+-]+`?", line) and "Estimated" in line, line
    page.locator("#fast-mode input").click()
    options = [t.replace("✓", "").strip() for t in page.get_by_role("listbox").get_by_role("option").all_inner_texts()]
    assert options[0] == "Exact (default)", options
    assert len(options) == 1 + len(FAST_MODES) and all("(approximate)" in o for o in options[1:]), options
    page.get_by_role("option", name=re.compile("^Faster")).click()
    page.wait_for_function("() => (document.querySelector('#fast-info')?.innerText || '').includes('differs')",
                           timeout=30_000)
    assert FAST_MODES["faster"].description in page.locator("#fast-info").inner_text()
    page.locator("#perf-acc").scroll_into_view_if_needed()
    screenshot(page, "performance")

    assert page.locator("#scale-i").is_visible() and page.locator("#scale-a").is_visible()
    page.locator("#mode-tabs").get_by_role("tab", name="Text + Image", exact=True).click()
    page.locator("#audio-in").wait_for(state="hidden", timeout=10_000)
    assert not page.locator("#scale-a").is_visible() and page.locator("#scale-i").is_visible()
    page.locator("#mode-tabs").get_by_role("tab", name="Text + Audio", exact=True).click()
    page.locator("#ref-images").wait_for(state="hidden", timeout=10_000)
    assert page.locator("#audio-in").is_visible() and not page.locator("#scale-i").is_visible()
    page.locator("#mode-tabs").get_by_role("tab", name="Text + Image + Audio", exact=True).click()
    page.locator("#variant input").click()
    page.get_by_role("option", name=re.compile("HuMo-17B")).click()
    page.locator("#scale-i").wait_for(state="hidden", timeout=10_000)
    assert page.locator("#steps input[type=number]").input_value() == "50"
    assert "Download weights" in page.locator("#download-weights").inner_text()
    assert "python -m engine download --variant humo-17b" in page.locator("#weights-status").inner_text()
    # The plan line follows the model and its size.
    page.wait_for_function("() => (document.querySelector('#plan-line')?.innerText || '').includes('HuMo-17B')",
                           timeout=90_000)
