"""The stand-in Hub of the weights tests: small files in the release formats, served on 127.0.0.1."""
from __future__ import annotations

import io
import json
import sys
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
