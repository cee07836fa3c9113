"""The Dub tab in a real browser: the real app (child process) with tiny MuseTalk 1.5 weights,
headless Debian Chromium, the real talking-head clip and a short spoken voice."""
from __future__ import annotations

import re

import pytest
from gradio_client import Client

from conftest_ui import (StudioProcess, assert_no_page_errors, chromium, make_tiny_weights, new_page,
                         open_studio, screenshot, set_number, stem_durations)
from tests.dub_fixtures import TALK_704
from tests.test_dub_api import add_tiny_musetalk, short_voice


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("studio-dub")
    weights = add_tiny_musetalk(make_tiny_weights(root / "weights"))
    data = {"root": root, "short": short_voice(root / "short.wav", 0.8),
            "long": short_voice(root / "long.wav", 6.0)}
    data["kept"] = kept_run(root / "outputs", root / "kept.mp4")
    with StudioProcess(weights, root / "outputs", root / "app.log",
                       env={"HUMO_TRACK_CACHE": str(root / "tracks")}) as app:
        data["app"] = app
        with chromium() as browser:
            data["browser"] = browser
            yield data


def kept_run(outputs, video) -> str:
    """A run already in the gallery before the studio starts (kept by the studio's own store)."""
    import shutil

    from engine.request import GenerationRequest
    from studio.gallery import Gallery

    shutil.copy(TALK_704, video)
    settings = GenerationRequest(prompt="A presenter talks to the camera", variant="tiny", mode="TA").to_dict()
    with Gallery(outputs) as g:
        return g.add(video, settings, {"total_s": 1.0}).id


def open_dub_tab(env, voice):
    """A fresh page on the Dub tab with the clip, `voice` and batch size 2 filled in."""
    page = new_page(env["browser"], viewport={"width": 1400, "height": 1000})
    open_studio(page, env["app"].url)
    page.get_by_role("tab", name="Dub").click()
    page.locator("#dub-video input[type=file]").set_input_files(str(TALK_704))
    page.wait_for_selector("#dub-video video", timeout=90_000)
    page.locator("#dub-audio input[type=file]").set_input_files(str(voice))
    page.wait_for_function("() => (document.querySelector('#dub-audio-info')?.innerText || '').includes('Clip:')",
                           timeout=90_000)
    page.locator("#dub-settings").get_by_text("Settings").first.click()
    set_number(page, "dub-batch-size", 2)
    return page


def wait_dub_status(page, needle: str, timeout_ms: int = 180_000) -> str:
    page.wait_for_function(
        f"() => (document.querySelector('#dub-status')?.innerText || '').includes({needle!r})", timeout=timeout_ms)
    return page.locator("#dub-status").inner_text()


def test_check_then_run_plays_and_lands_in_gallery(env):
    page = open_dub_tab(env, env["short"])
    page.locator("#dub-check-btn").click()
    page.wait_for_function("() => (document.querySelector('#dub-check-info')?.innerText || '').includes('Crop box')",
                           timeout=120_000)
    info = page.locator("#dub-check-info").inner_text()
    assert "Face detector" in info, info
    page.locator("#dub-check-img").scroll_into_view_if_needed()     # the picture loads when it is in view
    page.wait_for_function("() => (document.querySelector('#dub-check-img img')?.naturalWidth || 0) > 0",
                           timeout=60_000)
    size = page.evaluate("() => { const i = document.querySelector('#dub-check-img img');"
                         " return i ? [i.naturalWidth, i.naturalHeight] : null; }")
    assert size == [704, 1216], size
    page.locator("#dub-run-btn").click()
    status = wait_dub_status(page, "Done:")
    entry_id = status.split("Done:")[1].strip().split()[0]
    page.wait_for_selector("#dub-result video", timeout=60_000)
    page.evaluate("() => { const v = document.querySelector('#dub-result video'); v.muted = true;"
                  " v.play().catch(() => {}); }")
    page.wait_for_function("() => document.querySelector('#dub-result video').readyState >= 4", timeout=60_000)
    assert "saved to the gallery" in page.locator("#dub-result-info").inner_text()
    screenshot(page, "dub-tab")
    page.get_by_role("tab", name="Gallery").click()
    page.wait_for_function("() => (document.querySelector('#gallery-grid')?.innerText || '').includes('Dub: ')",
                           timeout=60_000)
    found = Client(env["app"].url, verbose=False).predict(mode="dub", variant="musetalk-1.5",
                                                          api_name="/gallery_search")
    assert entry_id in [e["id"] for e in found["entries"] if e["mode"] == "dub"], (entry_id, found)
    assert_no_page_errors(page)
    page.close()


def test_the_voice_stems_can_be_heard_before_the_run(env):
    page = open_dub_tab(env, env["short"])
    page.locator("#dub-vocal-acc").get_by_text("Vocal isolation").first.click()
    page.locator("#dub-isolate-btn").click()
    page.wait_for_function("() => (document.querySelector('#dub-sep-method')?.innerText || '').includes('Method')",
                           timeout=120_000)
    durations = stem_durations(page, "dub-")
    assert len(durations) == 2 and all(abs(d - 0.8) < 0.05 for d in durations), durations
    assert_no_page_errors(page)
    page.close()


def test_cancel_of_a_longer_run(env):
    page = open_dub_tab(env, env["long"])
    page.locator("#dub-run-btn").click()
    wait_dub_status(page, "frame ")          # the frame loop has started
    page.locator("#dub-cancel-btn").click()
    status = wait_dub_status(page, "Cancelled", timeout_ms=120_000)
    assert "Cancelled" in status and "Done" not in status, status
    assert env["app"].alive()
    assert_no_page_errors(page)
    page.close()


def test_dub_this_video_from_the_gallery(env):
    page = new_page(env["browser"], viewport={"width": 1400, "height": 1000})
    open_studio(page, env["app"].url)
    page.get_by_role("tab", name="Gallery").click()
    box = page.locator("#entry-id textarea, #entry-id input[type=text]").first
    box.fill(env["kept"])
    box.press("Enter")
    page.wait_for_selector("#entry-video video", timeout=60_000)
    page.locator("#dub-this-btn").click()
    page.wait_for_selector("#dub-video video", state="visible", timeout=60_000)
    assert page.get_by_role("tab", name="Dub").get_attribute("aria-selected") == "true"
    src = page.evaluate("() => document.querySelector('#dub-video video').src")
    assert src.endswith(".mp4"), src
    assert_no_page_errors(page)
    page.close()


def test_latentsync_choice_makes_its_weights_and_dubs(env):
    page = open_dub_tab(env, env["short"])
    assert not page.locator("#dub-latentsync-settings").is_visible()
    page.locator("#dub-model input").click()
    page.get_by_role("option", name=re.compile("^LatentSync 1.6")).click()
    page.locator("#dub-latentsync-settings").wait_for(state="visible", timeout=30_000)
    page.locator("#dub-musetalk-settings").wait_for(state="hidden", timeout=30_000)
    page.wait_for_function("() => (document.querySelector('#dub-weights')?.innerText || '')"
                           ".includes('LatentSync 1.6')", timeout=30_000)
    weights_line = page.locator("#dub-weights").inner_text()
    if "weights present" not in weights_line:                 # a fresh studio: make them from the page
        assert "download --model latentsync-1.6" in weights_line, weights_line
        page.locator("#dub-make-tiny").click()
        page.wait_for_function("() => (document.querySelector('#dub-weights')?.innerText || '')"
                               ".includes('weights present')", timeout=180_000)
    # The official face finder's files are offered with their licence where the page names them.
    assert "non-commercial research use only" in page.locator("#dub-weights").inner_text()
    page.locator("#dub-latentsync-settings").get_by_text("LatentSync settings").first.click()
    set_number(page, "dub-steps", 2)
    page.locator("#dub-run-btn").click()
    status = wait_dub_status(page, "Done:", timeout_ms=300_000)
    entry_id = status.split("Done:")[1].strip().split()[0]
    page.wait_for_selector("#dub-result video", timeout=60_000)
    found = Client(env["app"].url, verbose=False).predict(mode="dub", variant="latentsync-1.6",
                                                          api_name="/gallery_search")
    entry = next(e for e in found["entries"] if e["id"] == entry_id)
    assert entry["mode"] == "dub", entry
    assert_no_page_errors(page)
    page.close()
