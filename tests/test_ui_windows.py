"""A long video from the page, in a real browser (the real app and engine on the tiny variant,
headless Debian Chromium): the window settings set under Settings, the line before the run
with the windows and the estimated time, the status naming the window being denoised, and a
video as long as the clip."""
from __future__ import annotations

import numpy as np
import pytest

from conftest_ui import (StudioProcess, assert_no_page_errors, chromium, make_tiny_weights, new_page,
                         open_studio, set_number, set_text, upload_audio, wait_status)

WATCH_WINDOWS_JS = """
() => {
  window.__windows = [];
  const st = document.querySelector('#run-status');
  new MutationObserver(() => {
    const line = st.querySelector('[data-window]');
    if (line) window.__windows.push(line.innerText);
  }).observe(st, {subtree: true, childList: true, attributes: true, characterData: true});
}
"""


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    import soundfile as sf

    root = tmp_path_factory.mktemp("studio-windows-browser")
    clip = root / "clip.wav"
    t = np.arange(int(3.2 * 16000)) / 16000
    sf.write(str(clip), (0.2 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), 16000)
    with StudioProcess(make_tiny_weights(root / "weights"), root / "outputs", root / "app.log") as app:
        with chromium() as browser:
            yield {"app": app, "browser": browser, "clip": clip}


def test_a_long_video_from_the_page(env):
    page = new_page(env["browser"], viewport={"width": 1400, "height": 1300})
    open_studio(page, env["app"].url)
    page.locator("#mode-tabs").get_by_role("tab", name="Text + Audio", exact=True).click()
    set_text(page, "prompt", "A long take, window by window.")
    upload_audio(page, env["clip"])
    set_number(page, "steps", 6)
    page.locator("#windows-acc").get_by_text("Long videos: context windows").first.click()
    set_number(page, "window-length", 4)
    set_number(page, "window-overlap", 1)
    page.wait_for_function(
        "() => (document.querySelector('#window-estimate')?.innerText || '')"
        ".includes('7 overlapping windows of 13 frames')", timeout=60_000)
    line = page.locator("#window-estimate").inner_text()
    assert "Long video: 77 frames" in line and "at each of 6 steps" in line and "estimated denoising time" in line, line

    page.evaluate(WATCH_WINDOWS_JS)
    page.locator("#generate-btn").click()
    text = wait_status(page, "Done:", "Problem", timeout_ms=180_000)
    assert "Done:" in text, f"run failed: {text}\n{env['app'].log()}"
    seen = page.evaluate("() => window.__windows")
    assert any("window" in s and "of 7" in s for s in seen), seen[:5]
    info = page.locator("#result-info").inner_text()
    assert "77 frames" in info and "context windows of 13 frames (shifted)" in info, info
    assert_no_page_errors(page)
    page.close()
