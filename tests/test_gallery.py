"""The gallery store: real SQLite files and real run folders in temporary directories."""
from __future__ import annotations

import errno
import json
import time
import os
import shutil
import sqlite3
import sys
import threading
from pathlib import Path

import pytest

from engine.errors import EngineError, InputError, OutOfResources
from engine.events import ResultEvent
from engine.request import GenerationRequest
from studio.gallery import folders as gallery_folders
from studio.gallery import DB_NAME, RECORD_NAME, SCHEMA_VERSION, Gallery, make_title

sys.path.insert(0, str(Path(__file__).parent))
from gallery_fixtures import fake_video, outputs, run_folders, settings_for, src, stray_files  # noqa: E402,F401 (src and outputs are fixtures)


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
        assert rebuilt.prompt == prompt and rebuilt.seed == 1234 and rebuilt.audio == "voice.wav"   # the name, not the server path
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
        b = g.add(fake_video(src, "b.mp4"), settings_for("second"), {}, thumbnail_path=fake_video(src, "t.png"))
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
        assert form["images"][1] == "other.png", "an input that was never there keeps its name (not its server path)"
        studio = form["metadata"]["studio"]
        assert Path(studio["audio_source"]).read_bytes() == upload_bytes and studio["trim_start"] == 1.5
        assert entry.settings["audio"] == voice.name, "the stored settings name the file the user gave, not its server path"
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
