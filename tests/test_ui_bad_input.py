"""Bad input in the browser: each case shows a readable message in the page (no traceback)
and the studio keeps serving, proven by a good run at the end."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from conftest_ui import (assert_no_page_errors, new_page, StudioProcess, chromium, long_clip, make_tiny_weights, open_studio, portrait,
                        silent_clip, set_checkbox, set_number, set_text, spoken_clip, upload_audio,
                        upload_images, wait_status)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("studio-bad-input")
    weights = make_tiny_weights(root / "weights")
    inputs = root / "inputs"
    inputs.mkdir()
    corrupt = inputs / "corrupt.wav"
    corrupt.write_bytes(b"RIFF\x10\x00\x00\x00WAVEfmt " + np.random.default_rng(0).bytes(3000))
    huge_cmyk = inputs / "huge_cmyk.jpg"
    Image.new("CMYK", (8000, 6000), (30, 60, 90, 10)).save(huge_cmyk, quality=80)
    data = {
        "photo": portrait(inputs / "portrait.png"),
        "voice": spoken_clip(inputs / "voice.wav", "Testing, one two three."),
        "silent": silent_clip(inputs / "silent.wav"),
        "long": long_clip(inputs / "ten_minutes.wav"),
        "too_long": long_clip(inputs / "sixteen_minutes.wav", seconds=16 * 60.0),
        "corrupt": corrupt,
        "huge_cmyk": huge_cmyk,
    }
    with StudioProcess(weights, root / "outputs", root / "app.log") as app:
        data["app"] = app
        with chromium() as browser:
            data["browser"] = browser
            yield data


@pytest.fixture
def page(env):
    """A fresh page of the studio with a prompt and the portrait: each test sets the rest itself."""
    page = new_page(env["browser"], viewport={"width": 1400, "height": 1300})
    open_studio(page, env["app"].url)
    set_text(page, "prompt", "A person talks.")
    upload_images(page, env["photo"])
    yield page
    assert_no_page_errors(page)
    page.close()


def generate_and_read(page, *expected: str, timeout_ms: int = 120_000) -> str:
    """Press Generate; wait until the status shows one of `expected`; no traceback anywhere."""
    before = page.locator("#run-status").inner_text()
    page.locator("#generate-btn").click()
    try:
        text = wait_status(page, *expected, timeout_ms=timeout_ms, previous=before)
    except Exception:
        raise AssertionError(f"status never showed {expected}: {page.locator('#run-status').inner_text()!r}")
    body = page.locator("body").inner_text()
    assert "Traceback" not in body and 'File "' not in body
    return text


def test_empty_prompt(env, page):
    set_text(page, "prompt", "   ")
    text = generate_and_read(page, "prompt is empty")
    assert "Problem" in text


def test_size_not_multiple_of_16_is_rounded_with_a_notice(env, page):
    upload_audio(page, env["voice"])
    set_number(page, "width", 130)
    before = page.locator("#run-status").inner_text()
    page.locator("#generate-btn").click()
    # The notice is a toast shown as the run starts (it fades after a few seconds).
    page.get_by_text("Width 130 was rounded to 128 (a multiple of 16).").first.wait_for(timeout=60_000)
    wait_status(page, "Done:", timeout_ms=300_000, previous=before)


def test_corrupt_audio(env, page):
    upload_audio(page, env["corrupt"])
    text = generate_and_read(page, "damaged", "no audio", "not an audio")
    assert "Problem" in text, text


def test_silent_audio(env, page):
    upload_audio(page, env["silent"])
    text = generate_and_read(page, "silent")
    assert "Problem" in text, text


def test_clip_past_the_ceiling_is_refused(env, page):
    upload_audio(page, env["too_long"])
    set_checkbox(page, "match-audio", True)
    text = generate_and_read(page, "too long", "longer than")
    assert "Problem" in text or "long" in text, text


def test_huge_cmyk_photo_then_good_run(env, page):
    """An 8000x6000 CMYK JPEG is reduced and converted with a notice; the run then works."""
    upload_images(page, env["huge_cmyk"])
    page.wait_for_function("() => (document.querySelector('#image-info')?.innerText || '')"
                           ".includes('huge_cmyk.jpg: 2048×1536')", timeout=60_000)
    assert "reduced to 2048x1536" in page.locator("#image-info").inner_text()
    upload_audio(page, env["voice"])
    set_checkbox(page, "match-audio", False)
    set_number(page, "frames", 9)
    set_number(page, "steps", 2)
    text = generate_and_read(page, "Done:", "Problem", timeout_ms=180_000)
    assert "Done:" in text, text
