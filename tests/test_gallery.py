"""The gallery store: real SQLite files and real run folders in temporary directories."""
from __future__ import annotations

import errno
import json
import os
import shutil
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from engine.errors import EngineError, InputError, OutOfResources
from engine.events import ResultEvent
from engine.request import GenerationRequest
from studio.gallery import folders as gallery_folders
from studio.gallery import DB_NAME, PAGE_SIZE, RECORD_NAME, SCHEMA_VERSION, Gallery, make_title


def fake_video(folder: Path, name: str = "run.mp4", size: int = 4096) -> Path:
    """The store never decodes video: any bytes under an .mp4 name will do."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_bytes(os.urandom(size))
    return path


def settings_for(prompt: str, seed: int = 0, used_seed: int | None = None) -> dict:
    request = GenerationRequest(prompt=prompt, variant="tiny", seed=seed, audio="/somewhere/voice.wav",
                                out_path="/tmp/out.mp4")
    data = request.to_dict()
    data["resolved"] = {"steps": 4, "width": 128, "height": 96, "frames": 17, "fps": 25,
                        "seed": seed if used_seed is None else used_seed}
    return data


def run_folders(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.is_dir())


def stray_files(root: Path) -> list[str]:
    """Staging folders, trash folders and temporary files that a finished operation must not leave."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")
                  if p.name.startswith((".staging-", ".trash-")) or p.name.endswith(".tmp"))


@pytest.fixture
def src(tmp_path):
    return tmp_path / "src"


@pytest.fixture
def outputs(tmp_path):
    return tmp_path / "outputs"


def test_add_list_get_reuse_round_trip(src, outputs):
    video = fake_video(src)
    thumb = fake_video(src, "thumb.png", 300)
    prompt = "A woman in a red coat explains the train timetable to a friend at the station"
    with Gallery(outputs) as g:
        entry = g.add(video, settings_for(prompt, seed=-1, used_seed=1234),
                      {"total_s": 12.5, "denoise_s": 9.0}, thumbnail_path=thumb)

        assert entry.video.is_file() and entry.video.parent == outputs / entry.id
        assert entry.video.read_bytes() == video.read_bytes()
        assert entry.thumbnail is not None and entry.thumbnail.read_bytes() == thumb.read_bytes()
        assert video.exists(), "add copies by default"
        assert entry.variant == "tiny"
        assert entry.seed == 1234, "the seed that ran, not the requested -1"
        assert entry.duration == pytest.approx(17 / 25)
        assert entry.title == make_title(prompt) and entry.title.startswith("A woman in a red coat")
        assert entry.title.endswith("…") and len(entry.title) < len(prompt)
        assert entry.timings == {"total_s": 12.5, "denoise_s": 9.0}
        assert g.path_for(entry) == entry.folder == g.path_for(entry.id)

        record = json.loads((entry.folder / RECORD_NAME).read_text())
        assert record["id"] == entry.id and record["settings"]["prompt"] == prompt

        listed = g.list()
        assert [e.id for e in listed] == [entry.id]
        assert listed[0] == entry
        assert g.get(entry.id) == entry
        assert g.get("no-such-entry") is None
        assert g.count() == 1 and len(g) == 1

        form = g.reuse_settings(entry.id)
        assert form["prompt"] == prompt
        assert form["seed"] == 1234 and form["steps"] == 4 and form["frames"] == 17
        assert form["width"] == 128 and form["height"] == 96
        assert "out_path" not in form, "reusing settings must never overwrite the kept video"
        assert "resolved" not in form
        rebuilt = GenerationRequest.from_dict(form)
        assert rebuilt.prompt == prompt and rebuilt.seed == 1234 and rebuilt.audio == "/somewhere/voice.wav"
        with pytest.raises(KeyError):
            g.reuse_settings("missing-id")

        caption = g.gradio_items()
        assert caption == [(str(entry.thumbnail), entry.title)]
    assert stray_files(outputs) == []


def test_move_removes_source_and_title_override(src, outputs):
    video = fake_video(src)
    with Gallery(outputs) as g:
        entry = g.add(video, {"prompt": "hello there", "variant": "humo-1.7b", "seed": 5}, {},
                      title="  My take  ", move=True)
    assert not video.exists()
    assert entry.video.is_file()
    assert entry.title == "My take"
    assert entry.seed == 5 and entry.variant == "humo-1.7b" and entry.duration is None


def test_add_result_event(src, outputs):
    video = fake_video(src)
    result = ResultEvent(video_path=str(video), frames=97, width=832, height=480, fps=25, seed=77,
                         duration_s=3.88, timings={"total_s": 42.0},
                         settings=GenerationRequest(prompt="a talking head", variant="humo-1.7b").to_dict())
    with Gallery(outputs) as g:
        entry = g.add_result(result)
        assert entry.seed == 77 and entry.duration == pytest.approx(97 / 25)
        assert entry.timings == {"total_s": 42.0}
        form = g.reuse_settings(entry.id)
        assert (form["width"], form["height"], form["frames"], form["seed"]) == (832, 480, 97, 77)


def test_newest_first_paging_and_restart(src, outputs):
    g = Gallery(outputs)
    ids = []
    for i in range(5):
        ids.append(g.add(fake_video(src, f"v{i}.mp4"), settings_for(f"prompt number {i}", seed=i), {"i": i}).id)
        time.sleep(0.002)
    newest_first = ids[::-1]
    assert [e.id for e in g.list()] == newest_first
    assert [e.id for e in g.list(limit=2)] == newest_first[:2]
    assert [e.id for e in g.list(limit=2, offset=2)] == newest_first[2:4]
    assert g.list(limit=10, offset=5) == []
    before = g.list()
    g.close()

    again = Gallery(outputs)          # a restart: a new object on the same folder
    try:
        assert again.list() == before
        assert again.check().ok and again.recovered == []
        assert [again.reuse_settings(i)["seed"] for i in ids] == list(range(5))
    finally:
        again.close()


def test_delete_removes_files_and_row(src, outputs):
    with Gallery(outputs) as g:
        keep = g.add(fake_video(src, "a.mp4"), settings_for("keep me"), {})
        gone = g.add(fake_video(src, "b.mp4"), settings_for("delete me"), {}, thumbnail_path=fake_video(src, "t.png"))
        assert g.delete(gone.id) is True
        assert not gone.folder.exists()
        assert g.get(gone.id) is None
        assert [e.id for e in g.list()] == [keep.id]
        assert g.delete(gone.id) is False
        assert g.delete("../outputs") is False
    with Gallery(outputs) as g:
        assert [e.id for e in g.list()] == [keep.id], "a deleted entry must not come back after a restart"
    assert run_folders(outputs) == [keep.id]
    assert stray_files(outputs) == []


def corrupt_whole_file(db: Path) -> None:
    db.write_bytes(os.urandom(db.stat().st_size or 8192))


def corrupt_pages(db: Path) -> None:
    """Keep the SQLite header page, overwrite every page after the first two."""
    data = bytearray(db.read_bytes())
    assert len(data) > 3 * 4096
    data[2 * 4096:] = os.urandom(len(data) - 2 * 4096)
    db.write_bytes(bytes(data))


@pytest.mark.parametrize("corrupt", [corrupt_whole_file, corrupt_pages])
def test_corrupt_index_is_rebuilt_from_run_folders(src, outputs, corrupt):
    with Gallery(outputs) as g:
        for i in range(12):
            # Long prompts make the index span many pages, so page-level damage hits real rows.
            g.add(fake_video(src, f"v{i}.mp4"), settings_for(f"take {i} " + "words " * 200, seed=i),
                  {"total_s": float(i)}, thumbnail_path=fake_video(src, f"t{i}.png", 100) if i % 2 else None)
            time.sleep(0.002)
        before = g.list()
        forms = {e.id: g.reuse_settings(e.id) for e in before}
    db = outputs / DB_NAME
    assert not (outputs / (DB_NAME + "-wal")).exists() or (outputs / (DB_NAME + "-wal")).stat().st_size == 0
    corrupt(db)

    with Gallery(outputs) as g:
        report = g.check()
        assert report.corrupt_backup is not None
        backup = Path(report.corrupt_backup)
        assert backup.is_file() and backup.name.startswith(DB_NAME + ".corrupt-")
        assert sorted(report.recovered) == sorted(e.id for e in before)
        after = g.list()
        assert after == before, "entries, settings, timings, titles and order survive"
        assert {e.id: g.reuse_settings(e.id) for e in after} == forms
        # The new index is healthy and writable.
        new = g.add(fake_video(src, "new.mp4"), settings_for("after the crash"), {})
        assert g.list(limit=1)[0].id == new.id
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert conn.execute("SELECT COUNT(*) FROM entries").fetchone()[0] == len(before) + 1


def test_lost_index_rebuilt_and_lost_row_recovered(src, outputs):
    with Gallery(outputs) as g:
        a = g.add(fake_video(src, "a.mp4"), settings_for("first"), {})
        b = g.add(fake_video(src, "b.mp4"), settings_for("second"), {})
    # A crash after the folder was placed but before the row committed leaves a folder without a row.
    with sqlite3.connect(outputs / DB_NAME) as conn:
        conn.execute("DELETE FROM entries WHERE id = ?", (a.id,))
    with Gallery(outputs) as g:
        assert g.recovered == [a.id]
        assert {e.id for e in g.list()} == {a.id, b.id}
    # The index file removed altogether.
    for p in outputs.glob(DB_NAME + "*"):
        p.unlink()
    with Gallery(outputs) as g:
        assert sorted(g.recovered) == sorted([a.id, b.id])
        assert g.get(a.id) == a and g.get(b.id) == b


def test_unreadable_record_is_reported_not_fatal(src, outputs):
    with Gallery(outputs) as g:
        good = g.add(fake_video(src, "a.mp4"), settings_for("good"), {})
        bad = g.add(fake_video(src, "b.mp4"), settings_for("bad"), {})
    (bad.folder / RECORD_NAME).write_text("{ not json")
    (outputs / DB_NAME).write_bytes(b"garbage" * 1000)
    with Gallery(outputs) as g:
        report = g.check()
        assert report.unreadable_records == [bad.id] and not report.ok
        assert [e.id for e in g.list()] == [good.id]


def test_missing_video_is_hidden_and_reported(src, outputs):
    with Gallery(outputs) as g:
        a = g.add(fake_video(src, "a.mp4"), settings_for("first"), {})
        time.sleep(0.002)
        b = g.add(fake_video(src, "b.mp4"), settings_for("second"), {}, thumbnail_path=fake_video(src, "t.png"))
        time.sleep(0.002)
        c = g.add(fake_video(src, "c.mp4"), settings_for("third"), {})
        assert g.check().ok

        a.video.unlink()
        b.thumbnail.unlink()
        assert [e.id for e in g.list()] == [c.id, b.id]
        assert g.count() == 2
        assert [e.id for e in g.list(limit=1, offset=1)] == [b.id]
        assert g.gradio_items()[1] == (str(b.video), b.title), "no thumbnail: show the video"
        report = g.check()
        assert report.missing_videos == [a.id] and report.missing_thumbnails == [b.id] and not report.ok
        assert g.get(a.id) is not None and g.reuse_settings(a.id)["prompt"] == "first"

        report = g.check(repair=True)
        assert report.missing_videos == [a.id]
        assert g.get(a.id) is None and not a.folder.exists()
        assert g.check().missing_videos == []


def test_concurrent_adds_from_threads_and_two_stores(src, outputs):
    first, second = Gallery(outputs), Gallery(outputs)   # two stores: like two processes on one folder
    errors: list[BaseException] = []
    added: list[str] = []
    lock = threading.Lock()

    def worker(store: Gallery, n: int) -> None:
        try:
            for i in range(5):
                video = fake_video(src / f"w{n}", f"{i}.mp4", 2048)
                entry = store.add(video, settings_for(f"worker {n} clip {i}", seed=n * 100 + i), {"n": n})
                store.list(limit=5)                      # readers interleaved with writers
                with lock:
                    added.append(entry.id)
        except BaseException as err:                     # pragma: no cover - reported below
            errors.append(err)

    threads = [threading.Thread(target=worker, args=(first if n % 2 else second, n)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    try:
        assert errors == []
        assert len(added) == 40 and len(set(added)) == 40
        assert first.count() == second.count() == 40
        assert sorted(e.id for e in first.list(limit=100)) == sorted(added)
        seeds = sorted(e.seed for e in second.list(limit=100))
        assert seeds == sorted(n * 100 + i for n in range(8) for i in range(5))
    finally:
        first.close()
        second.close()
    assert run_folders(outputs) == sorted(added)
    assert stray_files(outputs) == []
    with sqlite3.connect(outputs / DB_NAME) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_source_that_disappears_leaves_nothing(src, outputs, monkeypatch):
    with Gallery(outputs) as g:
        kept = g.add(fake_video(src, "kept.mp4"), settings_for("kept"), {})
        missing = src / "never-written.mp4"
        with pytest.raises(InputError, match="does not exist"):
            g.add(missing, settings_for("missing"), {})

        # The source vanishes while it is being copied: half the bytes are already written.
        vanishing = fake_video(src, "vanishing.mp4", 64 * 1024)

        def copy_then_vanish(fin, fout, length=0):
            fout.write(fin.read(1000))
            vanishing.unlink()
            raise FileNotFoundError(errno.ENOENT, "No such file or directory", str(vanishing))

        monkeypatch.setattr(shutil, "copyfileobj", copy_then_vanish)
        with pytest.raises(InputError, match="disappeared"):
            g.add(vanishing, settings_for("vanishing"), {})
        monkeypatch.undo()
        assert [e.id for e in g.list()] == [kept.id]
        assert g.check().ok
    assert run_folders(outputs) == [kept.id]
    assert stray_files(outputs) == []


def test_disk_full_raises_out_of_resources_and_keeps_gallery(src, outputs, monkeypatch):
    with Gallery(outputs) as g:
        kept = g.add(fake_video(src, "kept.mp4"), settings_for("kept"), {})
        real_fsync = os.fsync

        def fsync_disk_full(fd):
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(gallery_folders.os, "fsync", fsync_disk_full)
        with pytest.raises(OutOfResources) as info:
            g.add(fake_video(src, "big.mp4"), settings_for("too big"), {})
        monkeypatch.setattr(gallery_folders.os, "fsync", real_fsync)
        message = str(info.value)
        assert "disk is full" in message and "Free some disk space" in message and "\n" not in message

        assert [e.id for e in g.list()] == [kept.id]
        assert kept.video.is_file()

        # Too little free space is refused before anything is written.
        usage = shutil.disk_usage(outputs)
        monkeypatch.setattr(gallery_folders.shutil, "disk_usage",
                            lambda path: usage._replace(free=10_000))
        with pytest.raises(OutOfResources, match=r"Not enough disk space .*0\.0 MB free"):
            g.add(fake_video(src, "big2.mp4", 50_000), settings_for("too big again"), {})
        monkeypatch.undo()
        assert stray_files(outputs) == [] and run_folders(outputs) == [kept.id]

        later = g.add(fake_video(src, "later.mp4"), settings_for("after freeing space"), {})
        assert g.count() == 2 and later.video.is_file()
    assert run_folders(outputs) == sorted([kept.id, later.id])
    assert stray_files(outputs) == []


def test_failed_insert_removes_the_copied_files(src, outputs):
    with Gallery(outputs, timeout=0.2) as g:
        kept = g.add(fake_video(src, "kept.mp4"), settings_for("kept"), {})
        # Another process holds the write lock longer than this store waits.
        blocker = sqlite3.connect(outputs / DB_NAME, isolation_level=None)
        blocker.execute("BEGIN EXCLUSIVE")
        try:
            with pytest.raises(EngineError, match="gallery index") as info:
                g.add(fake_video(src, "blocked.mp4"), settings_for("blocked"), {})
            assert not isinstance(info.value, OutOfResources)
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        assert run_folders(outputs) == [kept.id]
        assert stray_files(outputs) == []
        assert [e.id for e in g.list()] == [kept.id]


def test_crash_leftovers_are_cleaned_on_open(src, outputs):
    with Gallery(outputs) as g:
        a = g.add(fake_video(src, "a.mp4"), settings_for("survivor"), {})
    # A staging folder from an add that crashed an hour ago, and a delete that never committed.
    stale = outputs / ".staging-20200101-000000-000-abcdef"
    stale.mkdir()
    (stale / "partial.mp4").write_bytes(b"half")
    old = time.time() - 2 * 3600
    os.utime(stale, (old, old))
    fresh = outputs / ".staging-20990101-000000-000-abcdef"   # may belong to another process right now
    fresh.mkdir()
    os.replace(a.folder, outputs / (".trash-" + a.id))
    with Gallery(outputs) as g:
        assert not stale.exists()
        assert fresh.exists()
        assert [e.id for e in g.list()] == [a.id], "an uncommitted delete is rolled back"
        assert a.video.is_file()


def test_newer_schema_is_refused_clearly(src, outputs):
    Gallery(outputs).close()
    with sqlite3.connect(outputs / DB_NAME) as conn:
        assert conn.execute("SELECT version FROM schema_version").fetchall() == [(SCHEMA_VERSION,)]
        conn.execute("UPDATE schema_version SET version = 99")
    with pytest.raises(EngineError, match="newer version"):
        Gallery(outputs)
    assert (outputs / DB_NAME).is_file(), "a newer index is never moved aside or rebuilt"


def test_make_title():
    assert make_title("") == "Untitled"
    assert make_title(None) == "Untitled"
    assert make_title("  short   prompt ") == "short prompt"
    long = "one two three four five six seven eight nine ten"
    assert make_title(long) == "one two three four five six seven eight…"
    assert len(make_title("x" * 500)) <= 61


def test_inputs_are_kept_for_reuse(src, outputs):
    voice = fake_video(src, "upload-voice.wav", 5000)
    face = fake_video(src, "upload-face.png", 700)
    upload = fake_video(src, "upload-original.mp3", 9000)
    settings = GenerationRequest(prompt="talk", variant="tiny", images=[str(face), "/gone/other.png"],
                                 audio=str(voice), seed=3,
                                 metadata={"studio": {"audio_source": str(upload), "trim_start": 1.5}}).to_dict()
    with Gallery(outputs) as g:
        entry = g.add(fake_video(src, "v.mp4"), settings, {})
        voice_bytes, face_bytes, upload_bytes = voice.read_bytes(), face.read_bytes(), upload.read_bytes()
        for path in (voice, face, upload):
            path.unlink()              # the upload cache is cleaned
        form = g.reuse_settings(entry.id)
        assert Path(form["audio"]).parent == entry.folder / "inputs"
        assert Path(form["audio"]).read_bytes() == voice_bytes
        assert Path(form["images"][0]).read_bytes() == face_bytes
        assert form["images"][1] == "/gone/other.png", "an input that was never there stays as requested"
        studio = form["metadata"]["studio"]
        assert Path(studio["audio_source"]).read_bytes() == upload_bytes and studio["trim_start"] == 1.5
        assert entry.settings["audio"] == str(voice), "the stored settings say what the user gave"
        without = g.add(fake_video(src, "w.mp4"), {**settings, "audio": str(fake_video(src, "x.wav"))}, {},
                        keep_inputs=False)
        assert not (without.folder / "inputs").exists()
    (outputs / DB_NAME).write_bytes(b"\0" * 4096)
    with Gallery(outputs) as g:
        assert Path(g.reuse_settings(entry.id)["audio"]).read_bytes() == voice_bytes


def test_index_corrupted_while_open_is_rebuilt_on_next_call(src, outputs):
    with Gallery(outputs) as g:
        for i in range(10):
            g.add(fake_video(src, f"v{i}.mp4"), settings_for(f"clip {i} " + "words " * 300), {})
        expected = g.list()
        with sqlite3.connect(outputs / DB_NAME) as other:
            other.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        db = outputs / DB_NAME
        data = bytearray(db.read_bytes())
        data[4096:] = os.urandom(len(data) - 4096)
        with open(db, "r+b") as f:     # damaged in place, under the open connection
            f.write(data)
        g._conn.execute("PRAGMA shrink_memory")   # drop cached pages so the damage is seen
        assert g.list() == expected
        assert g.corrupt_backup is not None and g.corrupt_backup.is_file()
        assert g.count() == 10


# ---------------------------------------------------------------------- search, filters, paging, stars

def run_settings(prompt: str, variant: str = "tiny", mode: str = "TIA", seed: int = 0) -> dict:
    request = GenerationRequest(prompt=prompt, variant=variant, mode=mode, seed=seed, out_path="/tmp/out.mp4")
    data = request.to_dict()
    data["resolved"] = {"frames": 17, "fps": 25, "seed": seed}
    return data


PROMPTS = ["A Woman in a red coat at the station", "an old man reads the NEWS", "Zoë sings in the kitchen",
           "a woman laughs on the beach", "A dog barks"]


def many_runs(g: Gallery, src: Path, n: int) -> list:
    """n runs cycling through prompts, variants and modes; returned oldest first."""
    variants, modes = ("tiny", "humo-1.7b", "humo-17b"), ("TA", "TIA", "TI")
    video = fake_video(src, "shared.mp4", 256)
    # (i + i // 3) % 3 walks the modes out of step with the variants, so every pair occurs.
    return [g.add(video, run_settings(f"{PROMPTS[i % len(PROMPTS)]} take {i}", variants[i % 3],
                                      modes[(i + i // 3) % 3], seed=i), {}) for i in range(n)]


def test_query_searches_filters_and_pages_in_sqlite(src, outputs):
    with Gallery(outputs) as g:
        runs = many_runs(g, src, 60)
        newest = runs[::-1]

        page = g.query()
        assert [e.id for e in page.entries] == [e.id for e in newest[:PAGE_SIZE]] and page.total == 60
        assert page.more and PAGE_SIZE == 24
        page3 = g.query(offset=48)
        assert [e.id for e in page3.entries] == [e.id for e in newest[48:]] and not page3.more
        assert g.count() == 60 and len(g) == 60

        def expect(pred):
            return [e.id for e in newest if pred(e)]

        # Search: words of the prompt, any case (Unicode case folding too), all words must appear.
        woman = g.query("WOMAN", limit=100)
        assert [e.id for e in woman.entries] == expect(lambda e: "woman" in e.prompt.lower())
        assert woman.total == len(woman.entries) == 24
        assert [e.id for e in g.query("zoË KITCHEN").entries] == expect(lambda e: e.prompt.startswith("Zoë"))[:24]
        assert g.query("woman beach", limit=100).total == len(expect(lambda e: "beach" in e.prompt))
        assert g.query("beach station").total == 0
        take7 = expect(lambda e: "take" in e.prompt and "7" in e.prompt)
        assert [e.id for e in g.query(" take  7 ", limit=100).entries] == take7 and len(take7) == 6
        assert [e.id for e in g.query('"TAKE 7"').entries] == expect(lambda e: e.prompt.endswith("take 7"))
        assert g.query('"take  7" woman').total == 0 and g.query('"dog barks" take').total == 12
        assert g.query("%").total == 0 and g.query("_").total == 0, "no LIKE wildcards"
        assert g.query("   ").total == 60

        # Filters, alone and with each other and the search.
        for variant in ("tiny", "humo-1.7b", "humo-17b"):
            got = g.query(variant=variant, limit=100)
            assert [e.id for e in got.entries] == expect(lambda e: e.variant == variant) and got.total > 0
        for mode in ("TA", "TIA", "TI"):
            got = g.query(mode=mode, limit=100)
            assert [e.id for e in got.entries] == expect(lambda e: e.mode == mode) and got.total > 0
        both = expect(lambda e: "woman" in e.prompt.lower() and e.variant == "humo-1.7b" and e.mode == "TIA")
        got = g.query("woman", variant="humo-1.7b", mode="TIA", limit=100)
        assert [e.id for e in got.entries] == both and got.total == len(both) > 0
        assert g.variants() == ["humo-1.7b", "humo-17b", "tiny"]

        # Paging inside a filter: the pages join up to the whole filtered list.
        tiny = expect(lambda e: e.variant == "tiny")
        pages = [g.query(variant="tiny", limit=7, offset=o) for o in range(0, len(tiny), 7)]
        assert [e.id for p in pages for e in p.entries] == tiny
        assert all(p.total == len(tiny) for p in pages) and not pages[-1].more and pages[0].more

        # Stars.
        starred = [newest[3].id, newest[30].id, newest[59].id]
        for entry_id in starred:
            assert g.set_starred(entry_id) is True
        assert g.set_starred("no-such-entry") is False
        only = g.query(starred=True)
        assert [e.id for e in only.entries] == starred and only.total == 3
        assert all(e.starred for e in only.entries) and g.get(starred[0]).starred
        assert not g.get(newest[0].id).starred
        assert g.toggle_star(starred[1]) is False and g.toggle_star(starred[1]) is True
        assert g.toggle_star(starred[2]) is False
        assert [e.id for e in g.query(starred=True).entries] == starred[:2]
        assert g.toggle_star("nope") is None
        # The star is in the run's record too.
        record = json.loads((outputs / starred[0] / RECORD_NAME).read_text())
        assert record["starred"] is True

    with sqlite3.connect(outputs / DB_NAME) as conn:
        plan = " ".join(row[-1] for row in conn.execute(
            "EXPLAIN QUERY PLAN SELECT * FROM entries WHERE missing = 0 AND starred = 1 "
            "ORDER BY created_at DESC, id DESC LIMIT 24"))
        assert "USING INDEX" in plan and "TEMP B-TREE" not in plan, plan


def test_stars_survive_a_restart_and_a_rebuilt_index(src, outputs):
    with Gallery(outputs) as g:
        a = g.add(fake_video(src, "a.mp4"), run_settings("first"), {})
        b = g.add(fake_video(src, "b.mp4"), run_settings("second"), {})
        g.set_starred(b.id)
    with Gallery(outputs) as g:
        assert [e.id for e in g.query(starred=True).entries] == [b.id]
    for p in outputs.glob(DB_NAME + "*"):
        p.unlink()
    with Gallery(outputs) as g:
        assert sorted(g.recovered) == sorted([a.id, b.id])
        assert [e.id for e in g.query(starred=True).entries] == [b.id]
        assert [e.id for e in g.query("SECOND").entries] == [b.id]


def test_missing_videos_leave_the_pages_and_the_counts(src, outputs):
    with Gallery(outputs) as g:
        runs = many_runs(g, src, 10)
        # Each run has its own copy of the video in its folder: remove two of them.
        runs[9].video.unlink()
        runs[5].video.unlink()
        page = g.query(limit=4)
        expected = [runs[i].id for i in (8, 7, 6, 4)]
        assert [e.id for e in page.entries] == expected and page.total == 8
        assert [e.id for e in g.query(limit=4, offset=4).entries] == [runs[i].id for i in (3, 2, 1, 0)]
    with Gallery(outputs) as g:
        assert g.count() == 8                  # flagged again on open
        assert g.check().missing_videos == sorted([runs[9].id, runs[5].id], reverse=True)


# The index as the first released version of the studio wrote it (schema version 1).
V1_SCHEMA = """
CREATE TABLE schema_version (version INTEGER NOT NULL);
CREATE TABLE entries (
    id         TEXT PRIMARY KEY,
    created_at TEXT NOT NULL,
    title      TEXT NOT NULL,
    variant    TEXT,
    seed       INTEGER,
    duration   REAL,
    video      TEXT NOT NULL,
    thumbnail  TEXT,
    settings   TEXT NOT NULL,
    timings    TEXT NOT NULL,
    inputs     TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX entries_created ON entries (created_at DESC, id DESC);
INSERT INTO schema_version (version) VALUES (1);
"""


def old_gallery(src: Path, outputs: Path, n: int) -> list[dict]:
    """A version-1 gallery: run folders and an index with the version-1 tables and rows."""
    outputs.mkdir(parents=True)
    rows = []
    conn = sqlite3.connect(outputs / DB_NAME)
    conn.executescript(V1_SCHEMA)
    conn.execute("PRAGMA journal_mode = WAL")
    for i in range(n):
        entry_id = f"20240101-1200{i:02d}-000-abc{i:03d}"
        folder = outputs / entry_id
        fake_video(folder, entry_id + ".mp4", 128)
        settings = run_settings(f"Old take {i}: " + ("A SINGER on stage" if i % 2 else "a teacher explains"),
                                variant="humo-1.7b" if i % 3 else "tiny", mode=("TA", "TIA", "TI")[i % 3], seed=i)
        title = make_title(settings["prompt"])
        # The version-1 code wrote no record for these folders: only the index knows them, so
        # a run that survives here survived the migration (nothing could rebuild it).
        row = (entry_id, f"2024-01-01T12:00:{i:02d}.000+00:00", title, settings["variant"], i, 0.68,
               f"{entry_id}/{entry_id}.mp4", None, json.dumps(settings), json.dumps({"total_s": i}), "{}")
        conn.execute("INSERT INTO entries (id, created_at, title, variant, seed, duration, video, thumbnail, "
                     "settings, timings, inputs) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", row)
        rows.append({"id": entry_id, "prompt": settings["prompt"], "variant": settings["variant"],
                     "mode": settings["mode"], "seed": i, "title": title})
    conn.commit()
    conn.close()
    return rows


def test_an_old_gallery_is_migrated_and_keeps_every_run(src, outputs):
    rows = old_gallery(src, outputs, 30)
    newest = rows[::-1]
    with Gallery(outputs) as g:
        assert g.recovered == [] and g.corrupt_backup is None and g.unreadable_records == []
        assert [e.id for e in g.list(limit=100)] == [r["id"] for r in newest]
        for entry, row in zip(g.list(limit=100), newest):
            assert (entry.title, entry.variant, entry.seed, entry.mode, entry.prompt) == (
                row["title"], row["variant"], row["seed"], row["mode"], row["prompt"])
            assert not entry.starred and entry.timings == {"total_s": row["seed"]}
        # The old rows take part in the new queries.
        assert g.query("singer").total == 15
        assert [e.id for e in g.query("SINGER", mode="TA", variant="humo-1.7b", limit=50).entries] == [
            r["id"] for r in newest if "SINGER" in r["prompt"] and r["mode"] == "TA" and r["variant"] == "humo-1.7b"]
        assert g.set_starred(rows[4]["id"]) and [e.id for e in g.query(starred=True).entries] == [rows[4]["id"]]
        new = g.add(fake_video(src, "new.mp4"), run_settings("a new run"), {})
        assert g.query().entries[0].id == new.id and g.count() == 31
    with sqlite3.connect(outputs / DB_NAME) as conn:
        assert conn.execute("SELECT version FROM schema_version").fetchall() == [(SCHEMA_VERSION,)]
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
        assert {"entries_created", "entries_starred", "entries_variant", "entries_mode"} <= names
    with Gallery(outputs) as g:                 # opening again: nothing to migrate, the star kept
        assert g.count() == 31 and [e.id for e in g.query(starred=True).entries] == [rows[4]["id"]]
