"""Weights: the variant -> files table, local checks, downloads from a stand-in Hub on 127.0.0.1."""
from __future__ import annotations

import hashlib
import json
import shutil
import socket
import sys
import time
from collections import namedtuple
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from engine import weights as W  # noqa: E402
from engine.__main__ import main as engine_main  # noqa: E402
from engine.errors import OutOfResources, WeightsError  # noqa: E402
from engine.humo.variants import VARIANTS  # noqa: E402

from weights_fixtures import Event, expected_files, fake_release, hub, safetensors_bytes, torch_zip  # noqa: E402,F401 (hub is a fixture)


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


def test_musetalk_download_fetches_its_files_into_its_layout_once(hub, tmp_path):
    rng = np.random.default_rng(13)
    hub.add_repo("TMElyralab/MuseTalk", {"musetalkV15/musetalk.json": b'{"sample_size": 32}',
                                         "musetalkV15/unet.pth": torch_zip(21), "musetalk/pytorch_model.bin": torch_zip(22)})
    hub.add_repo("stabilityai/sd-vae-ft-mse", {"config.json": b'{"latent_channels": 4}',
                                               "diffusion_pytorch_model.safetensors": safetensors_bytes(23),
                                               "diffusion_pytorch_model.bin": torch_zip(24)})
    hub.add_repo("openai/whisper-tiny", {"config.json": b'{"d_model": 384}', "pytorch_model.bin": torch_zip(25),
                                         "preprocessor_config.json": b'{"feature_size": 80}',
                                         "model.safetensors": safetensors_bytes(26)})
    hub.add_repo("ManyOtherFunctions/face-parse-bisent", {"79999_iter.pth": torch_zip(27),
                                                          "resnet18-5c106cde.pth": torch_zip(28)})
    hub.add_repo("yzd-v/DWPose", {"dw-ll_ucoco_384.onnx": rng.bytes(3000), "yolox_l.onnx": rng.bytes(3000)})
    wd = tmp_path / "weights"

    assert engine_main(["download", "--model", "musetalk-1.5", "--weights", str(wd)]) == 0
    assert set(hub.requested_files("GET")) == {
        "TMElyralab/MuseTalk:musetalkV15/musetalk.json", "TMElyralab/MuseTalk:musetalkV15/unet.pth",
        "stabilityai/sd-vae-ft-mse:config.json", "stabilityai/sd-vae-ft-mse:diffusion_pytorch_model.bin",
        "openai/whisper-tiny:config.json", "openai/whisper-tiny:pytorch_model.bin",
        "openai/whisper-tiny:preprocessor_config.json", "ManyOtherFunctions/face-parse-bisent:79999_iter.pth",
        "ManyOtherFunctions/face-parse-bisent:resnet18-5c106cde.pth", "yzd-v/DWPose:dw-ll_ucoco_384.onnx"}
    root = wd / "musetalk-1.5"
    assert (root / "musetalkV15" / "unet.pth").read_bytes() == torch_zip(21)
    assert (root / "sd-vae" / "diffusion_pytorch_model.bin").read_bytes() == torch_zip(24)
    assert (root / "whisper" / "preprocessor_config.json").is_file()
    assert (root / "face-parse-bisent" / "79999_iter.pth").is_file() and (root / "dwpose" / "dw-ll_ucoco_384.onnx").is_file()
    assert W.find("musetalk-1.5", wd).complete

    hub.requests.clear()                                 # complete: a second download asks the Hub nothing
    assert engine_main(["download", "--model", "musetalk-1.5", "--weights", str(wd)]) == 0
    assert hub.requested_files("GET") == []


def test_latentsync_download_fetches_the_restricted_finder_only_when_asked(hub, tmp_path, capsys):
    rng = np.random.default_rng(12)
    hub.add_repo("ByteDance/LatentSync-1.6", {"latentsync_unet.pt": torch_zip(13), "whisper/tiny.pt": torch_zip(14),
                                              "stage1.pt": torch_zip(15)})
    hub.add_repo("stabilityai/sd-vae-ft-mse", {"config.json": b'{"latent_channels": 4}',
                                               "diffusion_pytorch_model.safetensors": safetensors_bytes(16),
                                               "diffusion_pytorch_model.bin": torch_zip(17)})
    hub.add_repo("yzd-v/DWPose", {"dw-ll_ucoco_384.onnx": rng.bytes(3000), "yolox_l.onnx": rng.bytes(3000)})
    finder = {f"models/buffalo_l/{n}": rng.bytes(2000) for n in ("det_10g.onnx", "2d106det.onnx", "w600k_r50.onnx")}
    hub.add_repo("public-data/insightface", finder)
    wd = tmp_path / "weights"

    assert engine_main(["download", "--model", "latentsync-1.6", "--weights", str(wd)]) == 0
    fetched = set(hub.requested_files("GET"))
    assert fetched == {"ByteDance/LatentSync-1.6:latentsync_unet.pt", "ByteDance/LatentSync-1.6:whisper/tiny.pt",
                       "stabilityai/sd-vae-ft-mse:config.json",
                       "stabilityai/sd-vae-ft-mse:diffusion_pytorch_model.safetensors",
                       "yzd-v/DWPose:dw-ll_ucoco_384.onnx"}
    assert "non-commercial" not in capsys.readouterr().err
    parts = {c.key: c for c in W.find("latentsync-1.6", wd).components}
    assert parts["insightface"].optional and parts["insightface"].state == "missing"

    assert engine_main(["download", "--model", "latentsync-1.6", "--weights", str(wd), "--with-insightface"]) == 0
    new = set(hub.requested_files("GET")) - fetched
    assert new == {"public-data/insightface:models/buffalo_l/det_10g.onnx",
                   "public-data/insightface:models/buffalo_l/2d106det.onnx"}
    assert "non-commercial research use only" in capsys.readouterr().err
    folder = wd / "latentsync-1.6" / "auxiliary" / "models" / "buffalo_l"
    assert (folder / "det_10g.onnx").read_bytes() == finder["models/buffalo_l/det_10g.onnx"]
    assert W.find("latentsync-1.6", wd).complete
