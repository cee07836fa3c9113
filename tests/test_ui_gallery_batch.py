"""A batch of runs and the gallery at scale, in a real browser: the real app (child process), the
real engine on the tiny variant, headless Debian Chromium.

The gallery starts with a few dozen older runs (kept by the real store), so the page has to page
them. The tests run in file order and build on each other: one run, a batch of two that land in
the gallery one by one, search, a star, the starred filter, a restart that keeps the star, and a
cancelled batch that stops its remaining runs.
"""
from __future__ import annotations

import re

import pytest
from gradio_client import Client

from conftest_ui import (StudioProcess, assert_no_page_errors, chromium, new_page, make_tiny_weights, open_studio, portrait, screenshot,
                         set_checkbox, set_number, set_text, spoken_clip, status_text, upload_audio, upload_images,
                         wait_status)
from tests.waiting import wait_until

SOLO = "A baker in a white apron talks about bread."           # made in the page by the run tests
BATCH = "A cellist in a bright hall explains her bowing."
JUGGLER = "A juggler in a green hat talks about his morning."      # kept before the studio starts
VIOLINIST = "A violinist in a dark studio explains her bowing."
OLDER = 30                      # older Text + Audio runs already in the gallery when the studio starts


def older_runs(outputs, thumb, count: int) -> dict[str, str]:
    """Runs kept earlier (with the studio's own store; any bytes will do for their videos): `count`
    Text + Audio takes, then one juggler (seed 7) and two violinist runs (seeds 300, 301) in
    Text + Image + Audio, for the search tests. Returns the ids of the juggler and of older take 3."""
    from engine.request import GenerationRequest
    from studio.gallery import Gallery

    video = outputs.parent / "older.mp4"
    video.write_bytes(b"\0\0\0\x18ftypisom" + bytes(4096))
    ids = {}
    with Gallery(outputs) as g:
        for i in range(count):
            settings = GenerationRequest(prompt=f"Older take {i}: a narrator reads the weather", variant="tiny",
                                         mode="TA", seed=i).to_dict()
            entry = g.add(video, settings, {"total_s": 1.0}, thumbnail_path=thumb)
            if i == 3:
                ids["older3"] = entry.id
        for prompt, seed in ((JUGGLER, 7), (VIOLINIST, 300), (VIOLINIST, 301)):
            settings = GenerationRequest(prompt=prompt, variant="tiny", mode="TIA", seed=seed).to_dict()
            entry = g.add(video, settings, {"total_s": 1.0}, thumbnail_path=thumb)
            if seed == 7:
                ids["juggler"] = entry.id
    return ids


def total_runs(env, query: str = "", starred: bool = False) -> int:
    return api(env, "/gallery_search", query, "", "", starred, 1, 0)["total"]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("studio-batch")
    weights = make_tiny_weights(root / "weights")
    inputs = root / "inputs"
    inputs.mkdir()
    data = {"root": root, "weights": weights, "outputs": root / "outputs",
            "photo": portrait(inputs / "portrait.png"),
            "voice": spoken_clip(inputs / "voice.wav", "Hello, this is a test.")}
    data["ids"] = older_runs(data["outputs"], data["photo"], OLDER)
    with StudioProcess(weights, data["outputs"], root / "app.log") as app:
        data["app"] = app
        with chromium() as browser:
            data["browser"] = browser
            yield data


@pytest.fixture
def page(env):
    page = new_page(env["browser"], viewport={"width": 1400, "height": 1300})
    open_studio(page, env["app"].url)
    yield page
    page.close()
    assert env["app"].alive(), f"the studio died:\n{env['app'].log()}"
    assert_no_page_errors(page)


def api(env, name: str, *args):
    """A call to one of the studio's API endpoints, as any gradio_client caller makes it."""
    return Client(env["app"].url, verbose=False).predict(*args, api_name=name)


def fill_tiny_run(page, env, prompt: str, seed: int, runs: int, steps: int = 2) -> None:
    set_text(page, "prompt", prompt)
    upload_images(page, env["photo"])
    upload_audio(page, env["voice"])
    set_checkbox(page, "match-audio", False)
    set_number(page, "frames", 9)
    set_number(page, "steps", steps)
    set_number(page, "seed", seed)
    set_number(page, "runs", runs)


WATCH_JS = """
() => {
  // The whole page is watched: a tab's content is only in the page while the tab is open.
  const seen = window.__batch = {status: [], tiles: []};
  new MutationObserver(() => {
    const st = document.querySelector('#run-status')?.textContent || '';
    if (st && seen.status[seen.status.length - 1] !== st) seen.status.push(st);
    const grid = document.querySelector('#gallery-grid');
    const caps = grid ? grid.innerText : null;
    if (caps !== null && seen.tiles[seen.tiles.length - 1]?.caps !== caps)
      seen.tiles.push({caps, status: seen.status[seen.status.length - 1] || ''});
  }).observe(document.body, {subtree: true, childList: true, characterData: true, attributes: true});
}
"""


def create_tab(page) -> None:
    page.locator("#main-tabs").get_by_role("tab", name="Create").click()
    page.locator("#generate-btn").wait_for(timeout=30_000)


def open_gallery(page) -> None:
    page.locator("#main-tabs").get_by_role("tab", name="Gallery").click()
    page.locator("#gallery-count").get_by_text("Showing").first.wait_for(timeout=30_000)


def tiles(page) -> int:
    return page.locator("#gallery-grid img, #gallery-grid video").count()


def count_line(page) -> str:
    return page.locator("#gallery-count").inner_text().strip()


def wait_count(page, text: str, timeout_ms: int = 30_000) -> str:
    page.wait_for_function(f"() => (document.querySelector('#gallery-count')?.innerText || '').includes({text!r})",
                           timeout=timeout_ms)
    return count_line(page)


def test_the_gallery_pages_older_runs(env, page):
    total = total_runs(env)
    assert OLDER + 3 <= total <= 48, total          # two pages of 24 hold them all
    open_gallery(page)
    assert wait_count(page, f"Showing 24 of {total} runs")
    assert tiles(page) == 24
    page.locator("#gallery-more").click()
    wait_count(page, f"Showing {total} of {total} runs")
    page.wait_for_function(f"() => document.querySelectorAll('#gallery-grid img').length === {total}", timeout=30_000)
    assert not page.locator("#gallery-more").is_visible()


def test_one_run_then_a_batch_of_two_each_landing_in_the_gallery(env, page):
    before = total_runs(env)
    fill_tiny_run(page, env, SOLO, seed=717, runs=1)
    page.locator("#generate-btn").click()
    text = wait_status(page, "Done:", "Problem", timeout_ms=180_000)
    assert "Done:" in text, f"run failed: {text}\n{env['app'].log()}"

    page.evaluate(WATCH_JS)
    set_text(page, "prompt", BATCH)
    set_number(page, "seed", 500)
    set_number(page, "runs", 2)
    page.locator("#generate-btn").click()
    wait_status(page, "Run 2 of 2", "Problem", timeout_ms=240_000)
    # While the second run goes, the first one is in the gallery already.
    open_gallery(page)
    page.wait_for_function("() => (document.querySelector('#gallery-grid')?.innerText || '').includes('seed 500')",
                           timeout=30_000)
    create_tab(page)
    text = wait_status(page, "Done: 2 runs", "Problem", timeout_ms=240_000)
    assert "Done: 2 runs (seeds 500–501)" in text, f"batch failed: {text}\n{env['app'].log()}"
    assert len(re.findall(r"\d{8}-\d{6}-\d{3}-[0-9a-f]{6}", text)) == 2
    seen = page.evaluate("() => window.__batch")
    statuses = seen["status"]
    first = [i for i, t in enumerate(statuses) if "Run 1 of 2" in t and "seed 500" in t]
    second = [i for i, t in enumerate(statuses) if "Run 2 of 2" in t and "seed 501" in t]
    assert first and second and first[0] < second[0], statuses
    early = [t for t in seen["tiles"] if "seed 500" in t["caps"] and "seed 501" not in t["caps"]]
    assert early and all("Run 2 of 2" in t["status"] for t in early), seen["tiles"]
    summary = page.locator("#result-info").inner_text()
    assert "2 of 2 runs done" in summary and "seed 500" in summary and "seed 501" in summary
    screenshot(page, "batch-done")

    open_gallery(page)
    assert wait_count(page, f"of {before + 3} runs")
    captions = page.locator("#gallery-grid").inner_text()
    assert "seed 501" in captions and "seed 500" in captions and "seed 717" in captions
    # Newest first: the batch's second run, its first, then the single run.
    assert captions.index("seed 501") < captions.index("seed 500") < captions.index("seed 717")


def test_search_star_and_the_starred_filter(env, page):
    total = total_runs(env)
    try:
        search_star_and_filter(env, page, total)
    finally:
        api(env, "/gallery_star", env["ids"]["juggler"], False)      # leave no star behind for other tests


def search_star_and_filter(env, page, total: int) -> None:
    open_gallery(page)
    set_text(page, "gallery-search", "JUGGLER green")
    page.locator("#gallery-search input, #gallery-search textarea").first.press("Enter")
    assert wait_count(page, "Showing 1 of 1 matching run") == f"Showing 1 of 1 matching run ({total} in all)"
    assert tiles(page) == 1 and "juggler" in page.locator("#gallery-grid").inner_text().lower()
    page.locator("#gallery-grid img").first.click()
    page.wait_for_function("() => (document.querySelector('#entry-id input, #entry-id textarea')?.value || '')"
                           f" === {env['ids']['juggler']!r}", timeout=30_000)
    star = page.locator("#entry-star")
    assert "☆ Star" in star.inner_text()
    star.click()
    page.wait_for_function("() => document.querySelector('#entry-star').innerText.includes('★ Starred')",
                           timeout=30_000)
    page.wait_for_function("() => document.querySelector('#gallery-grid').innerText.includes('★')", timeout=30_000)

    set_text(page, "gallery-search", "")
    page.locator("#gallery-search input, #gallery-search textarea").first.press("Enter")
    wait_count(page, f"Showing 24 of {total} runs")
    set_checkbox(page, "gallery-starred", True)
    assert wait_count(page, "matching run (") == f"Showing 1 of 1 matching run ({total} in all)"
    assert tiles(page) == 1 and "juggler" in page.locator("#gallery-grid").inner_text().lower()
    screenshot(page, "gallery-starred")

    # The search finds the batch (both runs), and the mode filter leaves out the older Text + Audio runs.
    set_checkbox(page, "gallery-starred", False)
    set_text(page, "gallery-search", "violinist")
    page.locator("#gallery-search input, #gallery-search textarea").first.press("Enter")
    assert wait_count(page, "Showing 2 of 2 matching runs")
    page.locator("#gallery-mode input").click()
    page.get_by_role("option", name="Text + Audio", exact=True).click()
    wait_count(page, "No run matches")
    assert tiles(page) == 0


def test_the_star_survives_a_restart(env):
    older3 = env["ids"]["older3"]
    assert api(env, "/gallery_star", older3)["starred"] is True
    total = total_runs(env)
    app: StudioProcess = env["app"]
    app.stop()
    app.start()
    page = new_page(env["browser"], viewport={"width": 1400, "height": 1100})
    try:
        open_studio(page, app.url)
        open_gallery(page)
        assert wait_count(page, f"Showing 24 of {total} runs")
        set_checkbox(page, "gallery-starred", True)
        wait_count(page, "matching run (")
        found = api(env, "/gallery_search", "", "", "", True, 24, 0)
        assert older3 in [e["id"] for e in found["entries"]] and all(e["starred"] for e in found["entries"])
        assert tiles(page) == found["total"]
        assert "★ Older take 3" in page.locator("#gallery-grid").inner_text()
        assert_no_page_errors(page)
    finally:
        page.close()
        api(env, "/gallery_star", older3, False)


def test_cancel_stops_the_current_run_and_the_rest_of_the_batch(env, page):
    before = api(env, "/gallery_search", "", "", "", False, 1, 0)["total"]
    fill_tiny_run(page, env, "A choir sings in a stone church.", seed=50, runs=3, steps=40)
    page.evaluate(WATCH_JS)
    page.locator("#generate-btn").click()
    wait_status(page, "Run 1 of 3 saved", "Problem", timeout_ms=180_000)
    page.wait_for_function(
        "() => { const t = document.querySelector('#run-status')?.innerText || '';"
        " return t.includes('Run 2 of 3') && Number(document.querySelector('#run-status [data-step]')"
        "?.dataset.step || 0) >= 1; }", timeout=180_000)
    page.locator("#cancel-btn").click()
    try:
        text = wait_status(page, "Cancelled", timeout_ms=120_000)
    except Exception as err:
        history = page.evaluate("() => window.__batch.status")
        raise AssertionError(f"no 'Cancelled' after Cancel: {err}\nstatus now: {status_text(page)!r}\n"
                             f"status history (last 8): {history[-8:]}\napp log:\n{env['app'].log()}") from err
    assert "Ready for the next run" in text, text
    wait_until(lambda: "Nothing to cancel" in api(env, "/cancel"), 60, "the batch's stream to end")
    assert "Cancelled" in status_text(page)
    statuses = page.evaluate("() => window.__batch.status")
    assert not any("Run 3 of 3" in t for t in statuses), statuses
    after = api(env, "/gallery_search", "choir", "", "", False, 24, 0)
    assert after["total"] == 1 and after["entries"][0]["seed"] == 50, after
    assert api(env, "/gallery_search", "", "", "", False, 1, 0)["total"] == before + 1
