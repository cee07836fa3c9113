"""Test inputs made on the spot: spoken clips (espeak-ng), tones (numpy), other formats (ffmpeg),
images in awkward modes (Pillow), and a tiny stand-in ONNX model in the MDX-Net layout."""
from __future__ import annotations

import shutil
import struct
import subprocess
import wave as wavelib
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

from engine.media import ffmpeg_exe


# --------------------------------------------------------------------------- audio


def write_wav(path: Path, samples: np.ndarray, sr: int) -> Path:
    """16-bit PCM wav; samples float in [-1, 1], shape [n] or [n, channels]."""
    arr = np.asarray(samples, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr[:, None]
    pcm = (np.clip(arr, -1, 1) * 32767).round().astype("<i2")
    with wavelib.open(str(path), "wb") as w:
        w.setnchannels(arr.shape[1])
        w.setsampwidth(2)
        w.setframerate(sr)
        w.writeframes(pcm.tobytes())
    return Path(path)


def speak(path: Path, text: str = "Hello, this is a short test of the voice clip.", speed: int = 160) -> Path:
    """A spoken clip from espeak-ng (22.05 kHz mono wav)."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise RuntimeError("espeak-ng is required by the tests: apt-get install -y espeak-ng")
    subprocess.run([exe, "-s", str(speed), "-w", str(path), text], check=True, capture_output=True)
    return Path(path)


def convert(src: Path, dst: Path, *args: str) -> Path:
    """Re-encode with the bundled ffmpeg; the codec follows dst's extension unless args say otherwise."""
    subprocess.run([ffmpeg_exe(), "-v", "error", "-nostdin", "-y", "-i", str(src), *args, str(dst)],
                   check=True, capture_output=True)
    return Path(dst)


def tone_mix(n: int, sr: int, freqs=(220.0, 330.0, 440.0), amp: float = 0.15) -> np.ndarray:
    """A steady chord with a slow tremolo: a music-like background that repeats."""
    t = np.arange(n) / sr
    out = sum(np.sin(2 * np.pi * f * t) for f in freqs) / len(freqs)
    return (amp * out * (0.8 + 0.2 * np.sin(2 * np.pi * 0.5 * t))).astype(np.float32)


def read_wav_mono(path: Path) -> tuple[np.ndarray, int]:
    with wavelib.open(str(path), "rb") as w:
        sr, ch = w.getframerate(), w.getnchannels()
        data = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.float32) / 32768.0
    return data.reshape(-1, ch).mean(axis=1), sr


# --------------------------------------------------------------------------- images


def png_with_size_header(path: Path, width: int, height: int) -> Path:
    """A PNG whose header claims width x height (with a valid CRC) but carries almost no data:
    enough for an image library to read the size without allocating the pixels."""
    Image.new("L", (8, 8), 0).save(path)
    data = bytearray(Path(path).read_bytes())
    ihdr = data.index(b"IHDR")
    struct.pack_into(">II", data, ihdr + 4, width, height)
    crc = zlib.crc32(bytes(data[ihdr:ihdr + 17])) & 0xFFFFFFFF
    struct.pack_into(">I", data, ihdr + 17, crc)
    Path(path).write_bytes(bytes(data))
    return Path(path)


def rgb48_png(path: Path, rgb16: np.ndarray) -> Path:
    """A 16-bit-per-channel RGB PNG (Pillow cannot write these; ffmpeg can)."""
    h, w, _ = rgb16.shape
    subprocess.run([ffmpeg_exe(), "-v", "error", "-nostdin", "-y", "-f", "rawvideo", "-pix_fmt", "rgb48le",
                    "-s", f"{w}x{h}", "-i", "-", "-frames:v", "1", "-pix_fmt", "rgb48be", str(path)],
                   input=rgb16.astype("<u2").tobytes(), check=True, capture_output=True)
    return Path(path)


# --------------------------------------------------------------------------- a minimal ONNX model
# Protocol-buffer wire format written by hand, so the tests need no `onnx` package.


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field_bytes(num: int, payload: bytes) -> bytes:
    return _varint(num << 3 | 2) + _varint(len(payload)) + payload


def _field_int(num: int, value: int) -> bytes:
    return _varint(num << 3 | 0) + _varint(value)


def _value_info(name: str, dims: list) -> bytes:
    shape = b"".join(_field_bytes(1, _field_int(1, d) if isinstance(d, int) else _field_bytes(2, d.encode()))
                     for d in dims)
    tensor_type = _field_int(1, 1) + _field_bytes(2, shape)  # elem_type FLOAT, shape
    return _field_bytes(1, name.encode()) + _field_bytes(2, _field_bytes(1, tensor_type))


def _float_tensor(name: str, values: np.ndarray) -> bytes:
    vals = np.asarray(values, dtype="<f4")
    dims = b"".join(_field_int(1, d) for d in vals.shape)
    return dims + _field_int(2, 1) + _field_bytes(8, name.encode()) + _field_bytes(9, vals.tobytes())


def write_mdx_standin_onnx(path: Path, dim_f: int = 3072, dim_t: int = 256, scale=1.0) -> Path:
    """An ONNX model with the Kim_Vocal_2 input/output layout [batch, 4, dim_f, dim_t] that
    returns its input times `scale`: one number, or four (one per input channel)."""
    scale = np.asarray(scale, np.float32)
    scale = scale.reshape(1, 4, 1, 1) if scale.size == 4 else scale.reshape(1)
    node = (_field_bytes(1, b"input") + _field_bytes(1, b"scale") + _field_bytes(2, b"output")
            + _field_bytes(3, b"mul") + _field_bytes(4, b"Mul"))
    graph = (_field_bytes(1, node) + _field_bytes(2, b"standin")
             + _field_bytes(5, _float_tensor("scale", scale))
             + _field_bytes(11, _value_info("input", ["batch", 4, dim_f, dim_t]))
             + _field_bytes(12, _value_info("output", ["batch", 4, dim_f, dim_t])))
    opset = _field_bytes(1, b"") + _field_int(2, 13)
    model = _field_int(1, 7) + _field_bytes(8, opset) + _field_bytes(7, graph)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_bytes(model)
    return Path(path)
