"""Vocal isolation: split a clip into a voice stem and a background stem.

Two methods, and the result always says which one ran:
- "Kim_Vocal_2 (ONNX)": the MDX-Net vocal model, run with onnxruntime, when its file is
  on disk (`<models_dir>/audio_separator/Kim_Vocal_2.onnx`). It is never downloaded here.
- "spectral (REPET-SIM)": a training-free separation. Frames of the magnitude spectrogram
  are replaced by the median of their most similar frames elsewhere in the clip; what
  repeats (music, hum, steady noise) is the background, what does not is the voice.

The background stem is always the input minus the vocals, so the two stems add up to the
input exactly and `mix(vocals, background)` gives the original clip back.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.errors import InputError, WeightsError

METHOD_ONNX = "Kim_Vocal_2 (ONNX)"
METHOD_SPECTRAL = "spectral (REPET-SIM)"
KIM_VOCAL_FILE = "Kim_Vocal_2.onnx"

# Published model data for Kim_Vocal_2 (MDX-Net): 44.1 kHz stereo, STFT n_fft 7680, hop 1024,
# periodic Hann window, centered; the network sees the lowest 3072 bins x 256 frames as
# [batch, 4 (left re, left im, right re, right im), 3072, 256] and returns the vocal
# spectrogram in the same layout; the output is scaled by the compensation factor 1.009.
MDX_SR = 44100
MDX_N_FFT = 7680
MDX_HOP = 1024
MDX_DIM_F = 3072
MDX_DIM_T = 256
MDX_COMPENSATE = 1.009

# REPET-SIM settings at 16 kHz (scaled for other rates).
SIM_N_FFT_16K = 1024
SIM_WIDTH_S = 1.0          # neighbours must be at least this far apart in time
SIM_SEGMENT_S = 30.0       # similarity is searched within segments of this length (memory bound)
SIM_NEIGHBOURS = 40        # similar frames whose median is the repeating part
SIM_MARGIN = 0.5           # voice/repeating balance of the soft mask (lower keeps more voice)
SIM_POWER = 2.0


@dataclass
class Separation:
    vocals: np.ndarray
    background: np.ndarray
    method: str
    note: str
    sr: int = 16000


def find_kim_vocal_model(models_dir: str | Path | None) -> Path | None:
    """The Kim_Vocal_2 ONNX file under `models_dir`, if present."""
    if models_dir is None:
        return None
    root = Path(models_dir)
    for candidate in (root / "audio_separator" / KIM_VOCAL_FILE, root / KIM_VOCAL_FILE):
        if candidate.is_file() and candidate.stat().st_size > 0:
            return candidate
    return None


def _as_mono(wave) -> np.ndarray:
    arr = np.asarray(wave, dtype=np.float32)
    if arr.ndim == 2:
        arr = arr.mean(axis=0 if arr.shape[0] <= 2 < arr.shape[1] else 1)
    if arr.ndim != 1:
        raise InputError(f"Audio must be mono samples, got shape {tuple(np.shape(wave))}.")
    if arr.size == 0:
        raise InputError("The audio is empty: there is nothing to separate.")
    return np.nan_to_num(arr)


def separate_vocals(wave, sr: int, method: str = "auto", models_dir: str | Path | None = None) -> Separation:
    """Split `wave` (float mono at `sr`) into vocals and background.

    method: "auto" (the ONNX model when its file is present, else spectral), "onnx" or "spectral".
    """
    wave = _as_mono(wave)
    method = (method or "auto").lower()
    if method not in ("auto", "onnx", "kim_vocal_2", "spectral", "repet-sim", "repet"):
        raise InputError(f"Unknown vocal separation method {method!r}.", hint='Use "auto", "onnx" or "spectral".')
    model = find_kim_vocal_model(models_dir)
    fallback_reason = None
    if method in ("onnx", "kim_vocal_2") and model is None:
        where = Path(models_dir) / "audio_separator" / KIM_VOCAL_FILE if models_dir else KIM_VOCAL_FILE
        raise WeightsError(f"The vocal model {KIM_VOCAL_FILE} is not on disk (looked for {where}).",
                           hint='Download it, or choose the "spectral" separation.')
    if model is not None and method in ("auto", "onnx", "kim_vocal_2"):
        try:
            vocals = separate_mdx_onnx(wave, sr, model)
        except WeightsError as err:
            if method != "auto":
                raise
            fallback_reason = str(err)
        else:
            return Separation(vocals, (wave - vocals).astype(np.float32), METHOD_ONNX,
                              f"Voice isolated with the Kim_Vocal_2 model ({model.name}).", sr)
    vocals = separate_repet_sim(wave, sr)
    if fallback_reason:
        note = (f"The Kim_Vocal_2 model could not run ({fallback_reason}); used the spectral REPET-SIM "
                "separation instead, which is rougher.")
    elif method == "auto":
        note = ("Voice isolated with the spectral REPET-SIM method (no Kim_Vocal_2 model on disk): it removes "
                "repeating music and steady noise, and is rougher than the model.")
    else:
        note = "Voice isolated with the spectral REPET-SIM method: it removes repeating music and steady noise."
    return Separation(vocals, (wave - vocals).astype(np.float32), METHOD_SPECTRAL, note, sr)


def mix(vocals, background, gain: float = 1.0) -> np.ndarray:
    """vocals + gain * background (the shorter one zero-padded), scaled down only if it would clip."""
    v = np.asarray(vocals, dtype=np.float32).reshape(-1)
    b = np.asarray(background, dtype=np.float32).reshape(-1)
    n = max(v.size, b.size)
    out = np.zeros(n, np.float32)
    out[: v.size] += v
    out[: b.size] += np.float32(gain) * b
    peak = float(np.max(np.abs(out))) if n else 0.0
    if peak > 1.0:
        out /= peak
    return out


# --------------------------------------------------------------------------- REPET-SIM


def separate_repet_sim(wave: np.ndarray, sr: int) -> np.ndarray:
    """The vocal stem by REPET-SIM soft masking (the background is wave - vocals).

    librosa's own recipe: `nn_filter` replaces every frame by the median of its most
    cosine-similar frames at least `SIM_WIDTH_S` away (what repeats), and `softmask` keeps
    each bin as voice in proportion to how far it stands above that repeating part.
    """
    import librosa

    scale = sr / 16000.0
    n_fft = int(2 ** round(np.log2(SIM_N_FFT_16K * scale)))
    hop = n_fft // 4
    spec = librosa.stft(wave, n_fft=n_fft, hop_length=hop) if wave.size >= n_fft else None
    if spec is None or spec.shape[1] < 5:
        return wave.copy()  # too short to say what repeats: keep it all as voice
    mag = np.abs(spec)
    n_frames = mag.shape[1]
    width = max(1, int(round(SIM_WIDTH_S * sr / hop)))
    seg = max(4 * width, int(round(SIM_SEGMENT_S * sr / hop)))
    repeating = np.empty_like(mag)
    for start in range(0, n_frames, seg):
        stop = min(n_frames, start + seg)
        if stop - start < seg // 2 and start > 0:
            start = max(0, stop - seg)  # a short tail borrows frames from before it
        block = mag[:, start:stop]
        w = min(width, max(1, (block.shape[1] - 1) // 2 - 1))
        k = max(1, min(SIM_NEIGHBOURS, block.shape[1] - 2 * w))
        repeating[:, start:stop] = librosa.decompose.nn_filter(block, aggregate=np.median, metric="cosine",
                                                               width=w, k=k)
    repeating = np.minimum(mag, repeating)
    mask = librosa.util.softmask(mag - repeating, SIM_MARGIN * repeating, power=SIM_POWER)
    vocals = librosa.istft(mask * spec, hop_length=hop, n_fft=n_fft, length=wave.size)
    return vocals.astype(np.float32)


# --------------------------------------------------------------------------- MDX-Net (ONNX)


def _onnx_runner(model_path: Path):
    try:
        import onnxruntime as ort
    except ImportError as err:
        raise WeightsError("onnxruntime is not installed, so the Kim_Vocal_2 model cannot run.",
                           hint="Reinstall the requirements.") from err
    providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in ort.get_available_providers()]
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    try:
        return ort.InferenceSession(str(model_path), sess_options=opts, providers=providers or None)
    except Exception as err:  # onnxruntime raises its own exception types
        raise WeightsError(f"The vocal model {model_path.name} could not be loaded: it may be damaged or incomplete.",
                           hint="Download it again.") from err


def _mdx_dims(runner) -> tuple[int, int]:
    shape = runner.get_inputs()[0].shape
    dim_f = shape[2] if len(shape) == 4 and isinstance(shape[2], int) else MDX_DIM_F
    dim_t = shape[3] if len(shape) == 4 and isinstance(shape[3], int) else MDX_DIM_T
    if len(shape) == 4 and isinstance(shape[1], int) and shape[1] != 4:
        raise WeightsError(f"The vocal model expects {shape[1]} input channels, not the MDX-Net layout of 4.",
                           hint=f"Use the {KIM_VOCAL_FILE} model file.")
    return dim_f, dim_t


def _stereo_spec_to_input(spec: np.ndarray, dim_f: int) -> np.ndarray:
    """[2 channels, bins, frames] complex -> [1, 4, dim_f, frames] float32."""
    x = np.stack([spec.real, spec.imag], axis=1)  # [2, 2, bins, frames]
    return x.reshape(1, 4, spec.shape[1], spec.shape[2])[:, :, :dim_f].astype(np.float32)


def _output_to_stereo_spec(out: np.ndarray, n_bins: int) -> np.ndarray:
    """[1, 4, dim_f, frames] -> [2, bins, frames] complex, bins above dim_f set to zero."""
    out = out.reshape(2, 2, out.shape[2], out.shape[3])
    spec = np.zeros((2, n_bins, out.shape[3]), np.complex64)
    spec[:, : out.shape[2]] = out[:, 0] + 1j * out[:, 1]
    return spec


def separate_mdx_onnx(wave: np.ndarray, sr: int, model_path: str | Path) -> np.ndarray:
    """The vocal stem from the Kim_Vocal_2 MDX-Net model, as float32 mono at `sr`."""
    import librosa

    model_path = Path(model_path)
    runner = _onnx_runner(model_path)
    dim_f, dim_t = _mdx_dims(runner)
    in_name = runner.get_inputs()[0].name
    n_fft, hop = MDX_N_FFT, MDX_HOP
    n_bins = n_fft // 2 + 1
    chunk = hop * (dim_t - 1)          # samples per network call: exactly dim_t STFT frames
    trim = n_fft // 2                  # edge samples of each chunk that are thrown away
    gen = chunk - 2 * trim             # new samples each chunk contributes
    if gen <= 0:
        raise WeightsError(f"The vocal model's frame count ({dim_t}) is too small for n_fft {n_fft}.")

    x = wave if sr == MDX_SR else librosa.resample(wave, orig_sr=sr, target_sr=MDX_SR)
    x = x.astype(np.float32)
    n = x.size
    stereo = np.stack([x, x])  # the model is trained on stereo; a mono voice goes to both sides
    pad_end = gen - n % gen if n % gen else 0
    padded = np.concatenate([np.zeros((2, trim), np.float32), stereo,
                             np.zeros((2, pad_end + trim), np.float32)], axis=1)
    pieces = []
    window = "hann"
    try:
        for start in range(0, padded.shape[1] - 2 * trim, gen):
            seg = padded[:, start:start + chunk]
            spec = librosa.stft(seg, n_fft=n_fft, hop_length=hop, window=window, center=True, pad_mode="reflect")
            out = runner.run(None, {in_name: _stereo_spec_to_input(spec, dim_f)})[0]
            if out.shape != (1, 4, dim_f, spec.shape[2]):
                raise WeightsError(f"The vocal model returned shape {tuple(out.shape)}, expected "
                                   f"{(1, 4, dim_f, spec.shape[2])}: it is not an MDX-Net vocal model.",
                                   hint=f"Use the {KIM_VOCAL_FILE} model file.")
            y = librosa.istft(_output_to_stereo_spec(out, n_bins), n_fft=n_fft, hop_length=hop,
                              window=window, center=True, length=chunk)
            pieces.append(y[:, trim:chunk - trim])
    except WeightsError:
        raise
    except Exception as err:  # onnxruntime errors carry their own types
        raise WeightsError(f"The vocal model {model_path.name} failed to run: {str(err).splitlines()[0][:200]}",
                           hint="Download it again or use the spectral separation.") from err
    vocals = np.concatenate(pieces, axis=1)[:, :n].mean(axis=0) * MDX_COMPENSATE
    if sr != MDX_SR:
        vocals = librosa.resample(vocals, orig_sr=MDX_SR, target_sr=sr)
    out = np.zeros(wave.size, np.float32)
    m = min(out.size, vocals.size)
    out[:m] = vocals[:m]
    return out
