"""Weights: the variant -> files table, local checks, downloads from a stand-in Hub on 127.0.0.1."""
from __future__ import annotations

import hashlib
import io
import json
import shutil
import socket
import sys
import time
import zipfile
from collections import namedtuple
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save as st_save

sys.path.insert(0, str(Path(__file__).parent))
from hub_server import FakeHub  # noqa: E402

import huggingface_hub.constants as hf_constants  # noqa: E402
from engine import weights as W  # noqa: E402
from engine.__main__ import main as engine_main  # noqa: E402
from engine.errors import OutOfResources, WeightsError  # noqa: E402
from engine.variants import VARIANTS  # noqa: E402


# ---------------------------------------------------------------------------------------------
# Small files in the formats of the real release
# ---------------------------------------------------------------------------------------------

def torch_zip(seed: int, n: int = 4000) -> bytes:
    """A zip laid out like torch.save's output (the format of the released .pth files)."""
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        for name, data in (("archive/data.pkl", b"\x80\x02}q\x00."), ("archive/data/0", rng.bytes(n)),
                           ("archive/version", b"3\n")):
            z.writestr(zipfile.ZipInfo(name, date_time=(2025, 1, 1, 0, 0, 0)), data)
    return buf.getvalue()


def safetensors_bytes(seed: int, shape=(32, 40)) -> bytes:
    rng = np.random.default_rng(seed)
    return st_save({"w": rng.standard_normal(shape).astype(np.float32),
                    "b": rng.standard_normal(shape[0]).astype(np.float32)})


def fake_release() -> dict[str, dict[str, bytes]]:
    """The real repositories' layout (plus files we must not fetch), with tiny contents."""
    shards = {f"humo-0000{i}-of-00002.safetensors": safetensors_bytes(10 + i) for i in (1, 2)}
    index = {"metadata": {"total_size": 0},
             "weight_map": {"blocks.0.w": "humo-00001-of-00002.safetensors",
                            "blocks.1.w": "humo-00002-of-00002.safetensors",
                            "head.w": "humo-00002-of-00002.safetensors"}}
    humo = {
        "HuMo-1.7B/ema.pth": torch_zip(1),
        "HuMo-17B/humo.safetensors.index.json": json.dumps(index).encode(),
        **{f"HuMo-17B/{k}": v for k, v in shards.items()},
        "zero_vae_129frame.pt": torch_zip(2),
        "zero_vae_720p_161frame.pt": torch_zip(3),
        "README.md": b"# HuMo\n",
    }
    wan = {
        "Wan2.1_VAE.pth": torch_zip(4),
        "models_t5_umt5-xxl-enc-bf16.pth": torch_zip(5, 6000),
        "diffusion_pytorch_model.safetensors": safetensors_bytes(6),
        "config.json": b'{"model_type": "t2v"}',
        "google/umt5-xxl/special_tokens_map.json": b'{"eos_token": "</s>"}',
        "google/umt5-xxl/spiece.model": np.random.default_rng(7).bytes(3000),
        "google/umt5-xxl/tokenizer.json": json.dumps({"model": {"vocab": ["a"] * 300}}).encode(),
        "google/umt5-xxl/tokenizer_config.json": b'{"model_max_length": 512}',
    }
    whisper = {
        "config.json": b'{"d_model": 1280}',
        "preprocessor_config.json": b'{"feature_size": 128}',
        "model.safetensors": safetensors_bytes(8),
        "pytorch_model.bin": torch_zip(9),
        "flax_model.msgpack": np.random.default_rng(10).bytes(2000),
        "tokenizer.json": b'{"x": 1}',
    }
    separator = {"Kim_Vocal_2.onnx": np.random.default_rng(11).bytes(5000)}
    return {W.HUMO_REPO: humo, W.WAN_REPO: wan, W.WHISPER_REPO: whisper, W.SEPARATOR_REPO: separator}


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """A stand-in Hub serving the release layout; huggingface_hub pointed at it, cache in tmp."""
    server = FakeHub()
    for repo_id, files in fake_release().items():
        server.add_repo(repo_id, files)
    server.start()
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    for name in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE",
                 W.WEIGHTS_DIR_ENV, W.DOWNLOAD_MODE_ENV, "HF_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    # huggingface_hub reads these at import time. The endpoint is passed explicitly by the code
    # under test; telemetry off keeps the library from calling its default endpoint on its own.
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hf_constants, "HF_HUB_DISABLE_TELEMETRY", True)
    monkeypatch.setattr(hf_constants, "HF_HOME", str(tmp_path / "hf-home"))
    yield server
    server.stop()


def expected_files(variant: str, with_separator: bool = False) -> set[str]:
    """What the variant must fetch, written out by hand from the release layout."""
    dit = {"humo-1.7b": {"bytedance-research/HuMo:HuMo-1.7B/ema.pth"},
           "humo-17b": {"bytedance-research/HuMo:HuMo-17B/humo.safetensors.index.json",
                        "bytedance-research/HuMo:HuMo-17B/humo-00001-of-00002.safetensors",
                        "bytedance-research/HuMo:HuMo-17B/humo-00002-of-00002.safetensors"}}[variant]
    shared = {"Wan-AI/Wan2.1-T2V-1.3B:Wan2.1_VAE.pth",
              "Wan-AI/Wan2.1-T2V-1.3B:models_t5_umt5-xxl-enc-bf16.pth",
              "Wan-AI/Wan2.1-T2V-1.3B:google/umt5-xxl/special_tokens_map.json",
              "Wan-AI/Wan2.1-T2V-1.3B:google/umt5-xxl/spiece.model",
              "Wan-AI/Wan2.1-T2V-1.3B:google/umt5-xxl/tokenizer.json",
              "Wan-AI/Wan2.1-T2V-1.3B:google/umt5-xxl/tokenizer_config.json",
              "openai/whisper-large-v3:config.json",
              "openai/whisper-large-v3:preprocessor_config.json",
              "openai/whisper-large-v3:model.safetensors"}
    sep = {"huangjackson/Kim_Vocal_2:Kim_Vocal_2.onnx"} if with_separator else set()
    return dit | shared | sep


Event = namedtuple("Event", "component file done total")


# ---------------------------------------------------------------------------------------------
# The table
# ---------------------------------------------------------------------------------------------

def test_table_covers_every_variant_path_and_keeps_the_models_apart():
    for name in ("humo-1.7b", "humo-17b", "tiny"):
        v = VARIANTS[name]
        comps = W.components_for(v)
        local = [c.local_rel(f) for c in comps for f in c.files]
        for needed in (*v.dit_files, v.vae_file, v.t5_file):
            assert needed in local, (name, needed)
        for folder in (v.tokenizer_dir, v.whisper_dir):
            assert any(p.startswith(folder.rstrip("/") + "/") for p in local), (name, folder)
        text = " ".join(local)
        assert "zero_vae" not in text
    assert "HuMo-17B" not in " ".join(c.local_rel(f) for c in W.components_for("humo-1.7b") for f in c.files)
    assert "HuMo-1.7B" not in " ".join(c.local_rel(f) for c in W.components_for("humo-17b") for f in c.files)
    assert all(c.repo_id is None for c in W.components_for("tiny"))
    assert [c.key for c in W.components_for("humo-1.7b", include_optional=False)] == \
        ["dit", "vae", "t5", "tokenizer", "whisper"]


# ---------------------------------------------------------------------------------------------
# Downloads
# ---------------------------------------------------------------------------------------------

def test_download_1_7b_fetches_only_its_files_with_progress_and_manifest(hub, tmp_path):
    wd = tmp_path / "weights"
    events: list[Event] = []
    status = W.download("humo-1.7b", wd, progress=lambda *a: events.append(Event(*a)))

    assert status.complete
    fetched = set(hub.requested_files("GET"))
    assert fetched == expected_files("humo-1.7b")
    release = fake_release()
    assert (wd / "HuMo/HuMo-1.7B/ema.pth").read_bytes() == release[W.HUMO_REPO]["HuMo-1.7B/ema.pth"]
    assert (wd / "whisper-large-v3/model.safetensors").read_bytes() == release[W.WHISPER_REPO]["model.safetensors"]
    assert not (wd / "audio_separator").exists()

    # progress: per file, monotonic, ending at the file's size
    by_file: dict[str, list[Event]] = {}
    for e in events:
        if not e.file.endswith("(checking sha256)"):
            by_file.setdefault(e.file, []).append(e)
    local_dirs = {W.HUMO_REPO: "HuMo", W.WAN_REPO: "Wan2.1-T2V-1.3B", W.WHISPER_REPO: "whisper-large-v3"}
    assert set(by_file) == {f"{local_dirs[r]}/{p}" for r, p in (x.split(":", 1) for x in expected_files("humo-1.7b"))}
    ema = by_file["HuMo/HuMo-1.7B/ema.pth"]
    assert ema[0].component == "dit"
    size = len(release[W.HUMO_REPO]["HuMo-1.7B/ema.pth"])
    assert ema[-1].done == ema[-1].total == size
    assert [e.done for e in ema] == sorted(e.done for e in ema)

    # the manifest records sizes and the Hub's sha256 for large files
    manifest = json.loads((wd / W.MANIFEST_NAME).read_text())["files"]
    entry = manifest["HuMo/HuMo-1.7B/ema.pth"]
    assert entry["size"] == size
    assert entry["sha256"] == hashlib.sha256(release[W.HUMO_REPO]["HuMo-1.7B/ema.pth"]).hexdigest()
    assert manifest["Wan2.1-T2V-1.3B/google/umt5-xxl/tokenizer_config.json"]["sha256"] is None

    # a complete folder is served from disk: no network at all the second time
    hub.requests.clear()
    again = W.download("humo-1.7b", wd)
    assert again.complete and hub.requests == []


def test_download_17b_reads_the_index_and_fetches_its_shards_only(hub, tmp_path):
    wd = tmp_path / "weights"
    status = W.download("humo-17b", wd, include_optional=True)
    assert status.complete
    assert set(hub.requested_files("GET")) == expected_files("humo-17b", with_separator=True)
    dit = next(c for c in status.components if c.key == "dit")
    assert sorted(f.path for f in dit.files) == [
        "HuMo/HuMo-17B/humo-00001-of-00002.safetensors", "HuMo/HuMo-17B/humo-00002-of-00002.safetensors",
        "HuMo/HuMo-17B/humo.safetensors.index.json"]
    assert (wd / "audio_separator/Kim_Vocal_2.onnx").is_file()

    # a shard that goes missing is named, and fetched again alone
    (wd / "HuMo/HuMo-17B/humo-00002-of-00002.safetensors").unlink()
    st = W.find("humo-17b", wd)
    assert not st.complete and st.missing_files == ["HuMo/HuMo-17B/humo-00002-of-00002.safetensors"]
    hub.requests.clear()
    W.download("humo-17b", wd)
    assert hub.requested_files("GET") == ["bytedance-research/HuMo:HuMo-17B/humo-00002-of-00002.safetensors"]


@pytest.mark.parametrize("mode", ["resume", "hub"])
def test_download_resumes_after_the_connection_drops(hub, tmp_path, monkeypatch, mode):
    monkeypatch.setenv("HUMO_DOWNLOAD", mode)
    # Past huggingface_hub's 10 MB read chunk, so part of the file is on disk when the link drops.
    data = np.random.default_rng(3).bytes(24 * 1024 * 1024)
    hub.add_repo("test/big", {"big.bin": data})
    hub.drop_once("test/big", "big.bin", after=15 * 1024 * 1024)
    comp = W.Component("dit", "big test file", "test/big", "big", ("big.bin",), len(data))

    status = W.download("humo-1.7b", tmp_path / "w", components=[comp])

    assert status.complete
    assert (tmp_path / "w/big/big.bin").read_bytes() == data
    gets = [(p, r) for m, p, r in hub.requests if m == "GET" and p.endswith("/big.bin")]
    assert len(gets) == 2
    assert gets[0][1] is None
    start = int(gets[1][1].removeprefix("bytes=").rstrip("-"))
    assert 0 < start <= 15 * 1024 * 1024  # the second request continues where the first stopped


def test_truncated_file_from_the_hub_is_rejected(hub, tmp_path):
    wd = tmp_path / "weights"
    full = fake_release()[W.WAN_REPO]["models_t5_umt5-xxl-enc-bf16.pth"]
    hub.truncate(W.WAN_REPO, "models_t5_umt5-xxl-enc-bf16.pth", len(full) // 2)
    with pytest.raises(WeightsError) as err:
        W.download("humo-1.7b", wd)
    msg = str(err.value)
    assert "models_t5_umt5-xxl-enc-bf16.pth" in msg and "damaged" in msg
    assert "python -m engine download --variant humo-1.7b" in msg
    st = W.find("humo-1.7b", wd)
    assert "Wan2.1-T2V-1.3B/models_t5_umt5-xxl-enc-bf16.pth" in st.missing_files  # the bad copy is gone
    assert "Wan2.1-T2V-1.3B/models_t5_umt5-xxl-enc-bf16.pth" not in \
        json.loads((wd / W.MANIFEST_NAME).read_text())["files"]

    hub._truncated.clear()
    assert W.download("humo-1.7b", wd).complete
    assert (wd / "Wan2.1-T2V-1.3B/models_t5_umt5-xxl-enc-bf16.pth").read_bytes() == full


def test_truncated_files_on_disk_are_found_and_fetched_again(hub, tmp_path):
    wd = tmp_path / "weights"
    W.download("humo-17b", wd)
    ema_free = W.find("humo-17b", wd)
    assert ema_free.complete

    def cut(rel: str, keep: float) -> None:
        p = wd / rel
        data = p.read_bytes()
        p.write_bytes(data[: int(len(data) * keep)])

    cut("Wan2.1-T2V-1.3B/Wan2.1_VAE.pth", 0.9)
    cut("HuMo/HuMo-17B/humo-00001-of-00002.safetensors", 0.7)
    st = W.find("humo-17b", wd)
    assert not st.complete
    assert set(st.incomplete_files) == {"Wan2.1-T2V-1.3B/Wan2.1_VAE.pth",
                                        "HuMo/HuMo-17B/humo-00001-of-00002.safetensors"}
    details = {f.path: f.detail for c in st.components for f in c.files}
    assert details["Wan2.1-T2V-1.3B/Wan2.1_VAE.pth"].startswith("truncated")

    # without the manifest the formats still give truncation away
    (wd / W.MANIFEST_NAME).unlink()
    st = W.find("humo-17b", wd)
    assert set(st.incomplete_files) == {"Wan2.1-T2V-1.3B/Wan2.1_VAE.pth",
                                        "HuMo/HuMo-17B/humo-00001-of-00002.safetensors"}

    hub.requests.clear()
    fixed = W.download("humo-17b", wd)
    assert fixed.complete
    assert set(hub.requested_files("GET")) == {
        "Wan-AI/Wan2.1-T2V-1.3B:Wan2.1_VAE.pth",
        "bytedance-research/HuMo:HuMo-17B/humo-00001-of-00002.safetensors"}


def test_check_file_formats(tmp_path):
    good = tmp_path / "a.safetensors"
    good.write_bytes(safetensors_bytes(1))
    assert W.check_file(good) is None
    longer = tmp_path / "b.safetensors"
    longer.write_bytes(safetensors_bytes(1) + b"xx")
    assert W.check_file(longer).startswith("wrong size")
    header_only = tmp_path / "c.safetensors"
    header_only.write_bytes(safetensors_bytes(1)[:20])
    assert W.check_file(header_only).startswith("truncated")
    pth = tmp_path / "d.pth"
    pth.write_bytes(torch_zip(1)[:-30])
    assert W.check_file(pth).startswith("truncated")
    pth.write_bytes(torch_zip(1))
    assert W.check_file(pth) is None
    assert W.check_file(pth, expected_size=pth.stat().st_size + 1).startswith("truncated")
    js = tmp_path / "e.json"
    js.write_bytes(b'{"weight_map": {')
    assert W.check_file(js).startswith("unreadable")


# ---------------------------------------------------------------------------------------------
# Offline, unreachable, disk space
# ---------------------------------------------------------------------------------------------

def test_offline_fails_at_once_naming_files_and_command(hub, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    wd = tmp_path / "weights"
    t0 = time.monotonic()
    with pytest.raises(WeightsError) as err:
        W.download("humo-1.7b", wd)
    assert time.monotonic() - t0 < 2.0
    msg = str(err.value)
    assert "HuMo/HuMo-1.7B/ema.pth" in msg and "Wan2.1-T2V-1.3B/Wan2.1_VAE.pth" in msg
    assert f"python -m engine download --variant humo-1.7b --weights {wd}" in msg
    assert "\n" not in msg
    assert hub.requests == []


def test_unreachable_hub_fails_at_once(hub, tmp_path, monkeypatch):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    monkeypatch.setenv("HF_ENDPOINT", dead)
    t0 = time.monotonic()
    with pytest.raises(WeightsError) as err:
        W.download("humo-17b", tmp_path / "weights")
    assert time.monotonic() - t0 < 2.0
    msg = str(err.value)
    assert "HuMo/HuMo-17B/humo.safetensors.index.json" in msg and "cannot reach" in msg
    assert "python -m engine download --variant humo-17b" in msg


def test_offline_with_a_complete_folder_needs_no_network(hub, tmp_path, monkeypatch):
    wd = tmp_path / "weights"
    W.download("humo-1.7b", wd)
    hub.requests.clear()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert W.download("humo-1.7b", wd).complete
    assert W.require("humo-1.7b", wd).complete
    assert hub.requests == []


def test_not_enough_disk_space_stops_before_downloading(hub, tmp_path, monkeypatch):
    Usage = namedtuple("Usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: Usage(10**12, 10**12 - 5000, 5000))
    with pytest.raises(OutOfResources) as err:
        W.download("humo-1.7b", tmp_path / "weights")
    msg = str(err.value)
    assert "Not enough disk space" in msg and "5.0 kB free" in msg and "needs" in msg
    assert hub.requested_files("GET") == []  # only metadata was asked for

    need = sum(len(fake_release()[r][p]) for r, p in (x.split(":", 1) for x in expected_files("humo-1.7b")))
    free = need + W.DISK_MARGIN_BYTES + 10
    monkeypatch.setattr(shutil, "disk_usage", lambda path: Usage(10**12, 10**12 - free, free))
    assert W.download("humo-1.7b", tmp_path / "weights").complete


# ---------------------------------------------------------------------------------------------
# The Hugging Face cache, status, summary, CLI
# ---------------------------------------------------------------------------------------------

def test_find_uses_the_hugging_face_cache(hub, tmp_path):
    from huggingface_hub import snapshot_download

    snapshot_download(W.WHISPER_REPO, allow_patterns=W.WHISPER.allow_patterns, endpoint=hub.url,
                      cache_dir=str(tmp_path / "hf-home" / "hub"))
    assert "openai/whisper-large-v3:pytorch_model.bin" not in hub.requested_files("GET")
    hub.requests.clear()
    st = W.find("humo-1.7b", tmp_path / "empty-weights")
    whisper = next(c for c in st.components if c.key == "whisper")
    assert whisper.state == "present"
    assert {f.source for f in whisper.files} == {"cache"}
    assert all(Path(f.location).is_file() for f in whisper.files)
    assert "whisper-large-v3/model.safetensors" not in st.missing_files
    assert "HuMo/HuMo-1.7B/ema.pth" in st.missing_files
    assert hub.requests == []


def test_status_json_and_summary(hub, tmp_path, capsys):
    wd = tmp_path / "weights"
    W.download("humo-1.7b", wd)
    capsys.readouterr()

    assert engine_main(["status", "--weights", str(wd), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    by_name = {v["variant"]: v for v in out["variants"]}
    small, big, tiny = by_name["humo-1.7b"], by_name["humo-17b"], by_name["tiny"]
    assert small["complete"] and small["missing"] == [] and small["command"] is None
    on_disk = sum(p.stat().st_size for p in wd.rglob("*") if p.is_file()
                  and ".cache" not in p.parts and p.name != W.MANIFEST_NAME)
    assert small["size_on_disk"] == on_disk
    assert not big["complete"] and big["missing"] == ["HuMo/HuMo-17B/humo.safetensors.index.json"]
    assert big["command"] == f"python -m engine download --variant humo-17b --weights {wd}"
    assert big["bytes_to_download"] >= W.APPROX_BYTES["HuMo-17B/shards"]
    assert not tiny["complete"] and tiny["command"] == f"python -m engine make-tiny {wd}"
    sep = next(c for c in small["components"] if c["key"] == "separator")
    assert sep["optional"] and sep["state"] == "missing"

    (wd / "HuMo/HuMo-1.7B/ema.pth").write_bytes(b"PK\x03\x04 cut")
    assert engine_main(["status", "--weights", str(wd)]) == 0
    text = capsys.readouterr().out
    assert "HuMo-1.7B: incomplete" in text and "HuMo/HuMo-1.7B/ema.pth" in text
    assert "python -m engine download --variant humo-1.7b" in text

    summary = {s["variant"]: s for s in W.weights_summary(wd)}
    assert summary["humo-1.7b"]["incomplete"] == ["HuMo/HuMo-1.7B/ema.pth"]
    assert summary["humo-17b"]["complete"] is False and summary["humo-17b"]["command"]
    assert summary["tiny"]["random_weights"] is True


def test_tiny_is_never_downloaded(hub, tmp_path):
    wd = tmp_path / "weights"
    with pytest.raises(WeightsError) as err:
        W.download("tiny", wd)
    assert "make-tiny" in str(err.value)
    v = VARIANTS["tiny"]
    for rel in (*v.dit_files, v.vae_file, v.t5_file):
        (wd / rel).parent.mkdir(parents=True, exist_ok=True)
        (wd / rel).write_bytes(torch_zip(1))
    for folder in (v.tokenizer_dir, v.whisper_dir):
        (wd / folder).mkdir(parents=True, exist_ok=True)
        (wd / folder / "config.json").write_text("{}")
    assert W.download("tiny", wd).complete
    assert hub.requests == []


def test_cli_download_shows_progress_and_fails_cleanly_offline(hub, tmp_path, capsys, monkeypatch):
    wd = tmp_path / "weights"
    assert engine_main(["download", "--variant", "humo-1.7b", "--weights", str(wd), "--with-separator"]) == 0
    captured = capsys.readouterr()
    assert "HuMo-1.7B: complete" in captured.out
    assert "HuMo/HuMo-1.7B/ema.pth: 100%" in captured.err
    assert (wd / "audio_separator/Kim_Vocal_2.onnx").is_file()

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert engine_main(["download", "--variant", "humo-17b", "--weights", str(wd)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err
    assert "HuMo/HuMo-17B/humo.safetensors.index.json" in err


def test_locate_gives_loader_paths_from_folder_and_cache(hub, tmp_path):
    from huggingface_hub import snapshot_download

    wd = tmp_path / "weights"
    with pytest.raises(WeightsError) as err:
        W.locate("humo-1.7b", wd)
    assert "python -m engine download --variant humo-1.7b" in str(err.value)

    # the audio encoder only in the Hugging Face cache, the rest in the weights folder
    snapshot_download(W.WHISPER_REPO, allow_patterns=W.WHISPER.allow_patterns, endpoint=hub.url,
                      cache_dir=str(tmp_path / "hf-home" / "hub"))
    W.download("humo-1.7b", wd)
    assert not (wd / "whisper-large-v3").exists()  # found in the cache, not fetched again
    paths = W.locate("humo-1.7b", wd)
    assert paths["dit_files"] == [str(wd / "HuMo/HuMo-1.7B/ema.pth")]
    assert paths["vae_file"] == str(wd / "Wan2.1-T2V-1.3B/Wan2.1_VAE.pth")
    assert paths["tokenizer_dir"] == str(wd / "Wan2.1-T2V-1.3B/google/umt5-xxl")
    whisper = Path(paths["whisper_dir"])
    assert str(whisper).startswith(str(tmp_path / "hf-home" / "hub"))
    assert (whisper / "model.safetensors").read_bytes() == fake_release()[W.WHISPER_REPO]["model.safetensors"]
    assert paths["separator"] is None


def test_cancel_stops_the_download_and_keeps_finished_files(hub, tmp_path):
    import threading

    from engine.errors import Cancelled

    wd = tmp_path / "weights"
    cancel = threading.Event()
    seen: list[str] = []

    def progress(component, file, done, total):
        seen.append(file)
        if file.endswith("models_t5_umt5-xxl-enc-bf16.pth"):
            cancel.set()

    with pytest.raises(Cancelled):
        W.download("humo-1.7b", wd, progress=progress, cancel=cancel)
    st = W.find("humo-1.7b", wd)
    assert "Wan2.1-T2V-1.3B/models_t5_umt5-xxl-enc-bf16.pth" in st.missing_files
    assert not (wd / "Wan2.1-T2V-1.3B/models_t5_umt5-xxl-enc-bf16.pth").exists()
    assert (wd / "HuMo/HuMo-1.7B/ema.pth").is_file()  # finished before the cancel: kept
    assert "whisper-large-v3/model.safetensors" not in seen  # nothing started after it

    hub.requests.clear()
    assert W.download("humo-1.7b", wd).complete
    assert "bytedance-research/HuMo:HuMo-1.7B/ema.pth" not in hub.requested_files("GET")


# ---------------------------------------------------------------------------------------------
# Resuming across runs: partial files under <weights>/.partial/
# ---------------------------------------------------------------------------------------------

MiB = 1024 * 1024


def big_file(hub, seed: int = 20, size: int = 24 * MiB, repo: str = "test/big"):
    """A file of many read chunks, so bytes reach the disk mid-file."""
    data = np.random.default_rng(seed).bytes(size)
    hub.add_repo(repo, {"big.bin": data})
    return data, W.Component("dit", "big test file", repo, "big", ("big.bin",), len(data))


def partial_of(wd: Path, rel: str) -> Path:
    return wd / ".partial" / (rel + ".part")


def file_gets(hub, name: str) -> list[str | None]:
    """The Range header of each GET of the file `name` (None: from the start)."""
    return [r for m, p, r in hub.requests if m == "GET" and urlsplit_path(p).endswith("/" + name)]


def urlsplit_path(p: str) -> str:
    from urllib.parse import unquote, urlsplit

    return unquote(urlsplit(p).path)


def cancel_mid_file(hub, repo_id: str, repo_path: str, written, run) -> None:
    """Cancel `run(cancel)` (a download in a thread) once `written()` says 10 MiB are on disk.

    The hub stalls after 15 MiB, so the bytes up to there reach the disk (in read chunks); then
    the cancel is set and the hub sends the rest, which the cancelled transfer refuses.
    """
    import threading

    from engine.errors import Cancelled

    cancel = threading.Event()
    outcome: list[BaseException | None] = []

    def target() -> None:
        try:
            run(cancel)
            outcome.append(None)
        except BaseException as err:  # noqa: BLE001 - handed to the test thread
            outcome.append(err)

    hub.stall_once(repo_id, repo_path, 15 * MiB)
    worker = threading.Thread(target=target, daemon=True)
    worker.start()
    deadline = time.monotonic() + 30
    while written() < 10 * MiB:
        assert worker.is_alive() and time.monotonic() < deadline, outcome
        time.sleep(0.02)
    cancel.set()
    hub.release(finish=True)
    worker.join(30)
    assert len(outcome) == 1 and isinstance(outcome[0], Cancelled), outcome


def size_of(path: Path) -> int:
    return path.stat().st_size if path.is_file() else 0


def interrupted_run(hub, wd: Path, comp, data: bytes) -> int:
    """A first run that is cancelled mid-file; returns the bytes it left in the partial file."""
    part = partial_of(wd, "big/big.bin")
    cancel_mid_file(hub, comp.repo_id, "big.bin", lambda: size_of(part),
                    lambda cancel: W.download("humo-1.7b", wd, components=[comp], cancel=cancel))
    kept = size_of(part)
    assert 0 < kept < len(data)
    assert part.read_bytes() == data[:kept]
    assert not (wd / "big/big.bin").exists()
    return kept


def test_cancelled_download_resumes_with_range_in_the_next_run(hub, tmp_path):
    data, comp = big_file(hub)
    wd = tmp_path / "w"
    kept = interrupted_run(hub, wd, comp, data)
    sidecar = json.loads((wd / ".partial/big/big.bin.part.json").read_text())
    assert sidecar["size"] == len(data) and sidecar["sha256"] == hashlib.sha256(data).hexdigest()
    assert sidecar["repo_id"] == "test/big" and sidecar["repo_path"] == "big.bin"

    # the partial file never counts as the file
    st = W.find("humo-1.7b", wd, components=[comp])
    assert not st.complete and st.missing_files == ["big/big.bin"]
    assert st.partial_files == {"big/big.bin": kept}
    assert st.bytes_to_download == len(data) - kept

    hub.requests.clear()
    events, messages = [], []
    status = W.download("humo-1.7b", wd, components=[comp], progress=lambda *a: events.append(Event(*a)),
                        on_message=messages.append)
    assert status.complete
    assert file_gets(hub, "big.bin") == [f"bytes={kept}-"]  # only the rest was asked for
    assert (wd / "big/big.bin").read_bytes() == data
    assert not (wd / ".partial").exists()  # partial, sidecar and lock gone
    mine = [e for e in events if e.file == "big/big.bin"]
    assert mine[0].done == kept and mine[0].total == len(data)  # the resumed offset counts as done
    assert mine[-1].done == len(data)
    assert any(m.startswith(f"Resuming big/big.bin at {W.format_bytes(kept)} of {W.format_bytes(len(data))}")
               for m in messages), messages
    assert any("already here from before" in m for m in messages)
    manifest = json.loads((wd / W.MANIFEST_NAME).read_text())["files"]
    assert manifest["big/big.bin"]["sha256"] == hashlib.sha256(data).hexdigest()


def test_file_changed_on_the_hub_between_runs_is_fetched_from_zero(hub, tmp_path):
    data, comp = big_file(hub)
    wd = tmp_path / "w"
    interrupted_run(hub, wd, comp, data)

    new_data, _ = big_file(hub, seed=21, size=20 * MiB)  # a new upload of the same path
    hub.requests.clear()
    messages = []
    assert W.download("humo-1.7b", wd, components=[comp], on_message=messages.append).complete
    assert file_gets(hub, "big.bin") == [None]
    assert (wd / "big/big.bin").read_bytes() == new_data
    assert any("again from zero" in m and "changed on the Hub" in m for m in messages), messages
    assert not (wd / ".partial").exists()


def test_damaged_partial_is_caught_by_sha256_and_fetched_again(hub, tmp_path):
    data, comp = big_file(hub)
    wd = tmp_path / "w"
    kept = interrupted_run(hub, wd, comp, data)
    part = partial_of(wd, "big/big.bin")
    with open(part, "r+b") as f:  # a few bytes that differ from the Hub's (bad disk, crash)
        f.seek(kept // 2)
        f.write(bytes(b ^ 0xFF for b in data[kept // 2: kept // 2 + 16]))

    hub.requests.clear()
    messages = []
    assert W.download("humo-1.7b", wd, components=[comp], on_message=messages.append).complete
    assert file_gets(hub, "big.bin") == [f"bytes={kept}-", None]  # resumed, caught, fetched again
    assert (wd / "big/big.bin").read_bytes() == data
    assert any("failed its check after resuming" in m and "sha256" in m for m in messages), messages
    assert not (wd / ".partial").exists()


def test_resumed_file_that_fails_again_from_zero_is_removed_and_reported(hub, tmp_path):
    data, comp = big_file(hub)
    wd = tmp_path / "w"
    kept = interrupted_run(hub, wd, comp, data)
    hub.corrupt("test/big", "big.bin")  # the Hub now serves bad bytes under the same size and sha256
    hub.requests.clear()
    with pytest.raises(WeightsError) as err:
        W.download("humo-1.7b", wd, components=[comp])
    msg = str(err.value)
    assert "big/big.bin is damaged after download" in msg and "sha256" in msg and "\n" not in msg
    assert file_gets(hub, "big.bin") == [f"bytes={kept}-", None]  # resumed, then once from zero
    assert not (wd / "big/big.bin").exists() and not (wd / ".partial").exists()


def test_status_lists_partial_files_and_disk_check_counts_them(hub, tmp_path, capsys, monkeypatch):
    big_ema = torch_zip(1, 24 * MiB)
    release = fake_release()
    hub.add_repo(W.HUMO_REPO, {**release[W.HUMO_REPO], "HuMo-1.7B/ema.pth": big_ema})
    wd = tmp_path / "weights"
    part = partial_of(wd, "HuMo/HuMo-1.7B/ema.pth")
    cancel_mid_file(hub, W.HUMO_REPO, "HuMo-1.7B/ema.pth", lambda: size_of(part),
                    lambda cancel: W.download("humo-1.7b", wd, cancel=cancel))
    kept = size_of(part)
    assert 0 < kept < len(big_ema)

    assert engine_main(["status", "--weights", str(wd), "--variant", "humo-1.7b"]) == 0
    text = capsys.readouterr().out
    assert "missing: HuMo/HuMo-1.7B/ema.pth" in text
    assert f"partial: {W.format_bytes(kept)} of {W.format_bytes(len(big_ema))}, will resume" in text
    assert engine_main(["status", "--weights", str(wd), "--variant", "humo-1.7b", "--json"]) == 0
    js = json.loads(capsys.readouterr().out)["variants"][0]
    assert js["partial"] == {"HuMo/HuMo-1.7B/ema.pth": kept} and not js["complete"]
    assert "HuMo/HuMo-1.7B/ema.pth" in js["missing"]

    # the free-disk check asks only for what is not on disk yet
    sizes = {W.HUMO_REPO: {**release[W.HUMO_REPO], "HuMo-1.7B/ema.pth": big_ema}}
    need = sum(len((sizes.get(r) or release[r])[p]) for r, p in
               (x.split(":", 1) for x in expected_files("humo-1.7b")))
    Usage = namedtuple("Usage", "total used free")
    free = need - kept + W.DISK_MARGIN_BYTES - 10
    monkeypatch.setattr(shutil, "disk_usage", lambda path: Usage(10**12, 10**12 - free, free))
    with pytest.raises(OutOfResources) as err:
        W.download("humo-1.7b", wd)
    assert W.format_bytes(need - kept + W.DISK_MARGIN_BYTES) in str(err.value)
    free += 20
    monkeypatch.setattr(shutil, "disk_usage", lambda path: Usage(10**12, 10**12 - free, free))
    hub.requests.clear()
    assert W.download("humo-1.7b", wd).complete
    assert file_gets(hub, "ema.pth") == [f"bytes={kept}-"]
    assert (wd / "HuMo/HuMo-1.7B/ema.pth").read_bytes() == big_ema


def test_resume_through_a_storage_redirect_of_a_xet_backed_file(hub, tmp_path, monkeypatch):
    """Like the Hub: /resolve/ answers 302 to another host, here with Xet headers; Range still works there."""
    monkeypatch.setenv("HF_TOKEN", "hf_test_token_for_the_stand_in_hub")
    hub.use_cdn(xet=True)
    data, comp = big_file(hub)
    wd = tmp_path / "w"
    kept = interrupted_run(hub, wd, comp, data)
    hub.cdn_requests.clear()
    hub.authorization.clear()
    assert W.download("humo-1.7b", wd, components=[comp]).complete
    assert [(m, r) for m, _, r, _ in hub.cdn_requests] == [("GET", f"bytes={kept}-")]
    at_hub = [a for m, p, a in hub.authorization if m == "GET" and "/resolve/" in p]
    assert at_hub == ["Bearer hf_test_token_for_the_stand_in_hub"]  # the Hub gets the token...
    assert all(auth is None for *_, auth in hub.cdn_requests)  # ...the storage host never does
    assert (wd / "big/big.bin").read_bytes() == data


def test_another_download_of_the_same_file_is_refused(hub, tmp_path):
    from filelock import FileLock

    data, comp = big_file(hub, size=2 * MiB)
    wd = tmp_path / "w"
    (wd / ".partial/big").mkdir(parents=True)
    with FileLock(str(wd / ".partial/big/big.bin.part.lock")):
        with pytest.raises(WeightsError) as err:
            W.download("humo-1.7b", wd, components=[comp])
    assert "Another download of big/big.bin" in str(err.value)
    assert W.download("humo-1.7b", wd, components=[comp]).complete


def test_hub_mode_uses_hf_hub_download_and_keeps_no_partial(hub, tmp_path, monkeypatch):
    monkeypatch.setenv("HUMO_DOWNLOAD", "hub")
    data, comp = big_file(hub)
    wd = tmp_path / "w"
    # huggingface_hub's own per-process temporary file: deleted when the transfer stops
    cancel_mid_file(hub, "test/big", "big.bin", lambda: max(map(size_of, wd.rglob("*.incomplete")), default=0),
                    lambda cancel: W.download("humo-1.7b", wd, components=[comp], cancel=cancel))
    assert list(wd.rglob("*.incomplete")) == [] and not (wd / ".partial").exists()
    hub.requests.clear()
    assert W.download("humo-1.7b", wd, components=[comp]).complete
    assert file_gets(hub, "big.bin") == [None]  # from zero: no resume across runs in this mode
    assert (wd / "big/.cache/huggingface/download/big.bin.metadata").is_file()  # hf_hub_download's note
    assert (wd / "big/big.bin").read_bytes() == data

    monkeypatch.setenv("HUMO_DOWNLOAD", "fast")
    with pytest.raises(WeightsError) as err:
        W.download("humo-1.7b", tmp_path / "other", components=[comp])
    assert "HUMO_DOWNLOAD" in str(err.value) and "'hub'" in str(err.value)


def test_killed_cli_download_resumes_in_the_next_process(hub, tmp_path):
    """Ctrl-C, SIGTERM, then a hard kill of `python -m engine download`; each next run continues the file."""
    import os
    import signal
    import subprocess

    big_ema = torch_zip(1, 48 * MiB)
    hub.add_repo(W.HUMO_REPO, {**fake_release()[W.HUMO_REPO], "HuMo-1.7B/ema.pth": big_ema})
    wd = tmp_path / "weights"
    part = partial_of(wd, "HuMo/HuMo-1.7B/ema.pth")
    env = {**os.environ, "HF_ENDPOINT": hub.url, "HF_HOME": str(tmp_path / "hf-home"), "HF_HUB_OFFLINE": "0",
           "HF_HUB_DISABLE_TELEMETRY": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    cmd = [sys.executable, "-m", "engine", "download", "--variant", "humo-1.7b", "--weights", str(wd)]

    def run_until_partial_has(at_least: int, sig: int) -> subprocess.CompletedProcess:
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + 60
            while not (part.is_file() and part.stat().st_size >= at_least):
                assert proc.poll() is None, proc.communicate()
                assert time.monotonic() < deadline, "the download never reached the stall"
                time.sleep(0.05)
            proc.send_signal(sig)
            out, err = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
            hub.release()
        return subprocess.CompletedProcess(cmd, proc.returncode, out, err)

    # 1) Ctrl-C while the Hub stalls after 15 MiB (10 MiB have reached the disk)
    hub.stall_once(W.HUMO_REPO, "HuMo-1.7B/ema.pth", 15 * MiB)
    first = run_until_partial_has(10 * MiB, signal.SIGINT)
    assert first.returncode == 130
    assert "interrupted" in first.stderr and "run the same command again to resume" in first.stderr
    assert "Traceback" not in first.stderr
    kept1 = part.stat().st_size

    # 2) the next process resumes, then gets SIGTERM (a shutdown, a closed terminal: SIGHUP alike)
    hub.stall_once(W.HUMO_REPO, "HuMo-1.7B/ema.pth", 12 * MiB)
    second = run_until_partial_has(kept1 + 10 * MiB, signal.SIGTERM)
    assert second.returncode == 130 and "run the same command again to resume" in second.stderr
    assert f"Resuming HuMo/HuMo-1.7B/ema.pth at {W.format_bytes(kept1)}" in second.stderr
    kept2 = part.stat().st_size

    # 3) the next one is killed outright: nothing of ours runs, the bytes on disk still count
    hub.stall_once(W.HUMO_REPO, "HuMo-1.7B/ema.pth", 12 * MiB)
    third = run_until_partial_has(kept2 + 10 * MiB, signal.SIGKILL)
    assert third.returncode == -signal.SIGKILL
    kept3 = part.stat().st_size
    assert part.read_bytes() == big_ema[:kept3]

    # 4) and the last one finishes it
    hub.requests.clear()
    assert W.download("humo-1.7b", wd).complete
    assert file_gets(hub, "ema.pth") == [f"bytes={kept3}-"]
    assert (wd / "HuMo/HuMo-1.7B/ema.pth").read_bytes() == big_ema
    assert not (wd / ".partial").exists()
    gets = [r for m, p, r in hub.requests if m == "GET"]
    assert gets and all(r is None for r in gets[1:])  # the other files were fetched whole


def test_after_a_restart_only_the_flushed_part_of_a_partial_is_trusted(hub, tmp_path, monkeypatch):
    from engine.weights import resume

    monkeypatch.setattr(resume, "CHECKPOINT_BYTES", 4 * MiB)
    data, comp = big_file(hub)
    wd = tmp_path / "w"
    sidecar = wd / ".partial/big/big.bin.part.json"
    seen_durable = []

    def written() -> int:  # while the transfer runs, whole checkpoints get flushed and recorded as durable
        durable = json.loads(sidecar.read_text())["durable"] if sidecar.is_file() else 0
        seen_durable.append(durable)
        return durable

    cancel_mid_file(hub, "test/big", "big.bin", written,
                    lambda cancel: W.download("humo-1.7b", wd, components=[comp], cancel=cancel))
    kept = size_of(partial_of(wd, "big/big.bin"))
    assert 4 * MiB <= seen_durable[-1] <= kept  # flushed mid-transfer, before the stop
    record = json.loads(sidecar.read_text())
    assert record["durable"] == kept and record["boot_id"] == resume.boot_id()

    # What a power cut leaves: more bytes on disk than were flushed, written in an earlier boot.
    with open(partial_of(wd, "big/big.bin"), "ab") as f:
        f.write(b"\0" * (3 * MiB))
    sidecar.write_text(json.dumps({**record, "boot_id": "an-earlier-boot"}))
    assert W.find("humo-1.7b", wd, components=[comp]).partial_files == {"big/big.bin": kept}

    hub.requests.clear()
    messages = []
    assert W.download("humo-1.7b", wd, components=[comp], on_message=messages.append).complete
    assert file_gets(hub, "big.bin") == [f"bytes={kept}-"]
    assert (wd / "big/big.bin").read_bytes() == data
    assert any("before the machine restarted" in m for m in messages), messages


def test_connection_lost_for_good_keeps_the_partial_for_a_later_run(hub, tmp_path, monkeypatch):
    """The link drops mid-file and the Hub stays away, so the run gives up; later, it continues."""
    import threading

    data, comp = big_file(hub)
    wd = tmp_path / "w"
    part = partial_of(wd, "big/big.bin")
    hub.stall_once("test/big", "big.bin", 15 * MiB)
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            W.download("humo-1.7b", wd, components=[comp])
            outcome.append(None)
        except BaseException as err:  # noqa: BLE001 - handed to the test thread
            outcome.append(err)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    deadline = time.monotonic() + 30
    while size_of(part) < 10 * MiB:
        assert worker.is_alive() and time.monotonic() < deadline, outcome
        time.sleep(0.02)
    hub.stop()  # nobody listens any more: huggingface_hub's retries run out
    hub.release()
    worker.join(60)
    err = outcome[0]
    assert isinstance(err, WeightsError), outcome
    kept = size_of(part)
    msg = str(err)
    assert "big/big.bin" in msg and f"{W.format_bytes(kept)} fetched so far are kept" in msg and "\n" not in msg

    back = FakeHub()  # the Hub is back (at another address, even)
    back.add_repo("test/big", {"big.bin": data})
    with back:
        monkeypatch.setenv("HF_ENDPOINT", back.url)
        assert W.download("humo-1.7b", wd, components=[comp]).complete
        assert file_gets(back, "big.bin") == [f"bytes={kept}-"]
    assert (wd / "big/big.bin").read_bytes() == data
