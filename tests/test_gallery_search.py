"""The gallery at scale: search, filters, pages and stars in SQLite, and old galleries migrated."""
from __future__ import annotations

import json
import sqlite3
import sys
from pathlib import Path

from engine.request import GenerationRequest
from studio.gallery import DB_NAME, PAGE_SIZE, RECORD_NAME, SCHEMA_VERSION, Gallery, make_title

sys.path.insert(0, str(Path(__file__).parent))
from gallery_fixtures import fake_video, outputs, src  # noqa: E402,F401 (src and outputs are fixtures)


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
