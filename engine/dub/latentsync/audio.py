"""LatentSync's audio features: whisper-tiny encoder states from an openai-format `tiny.pt`, cut per video frame.

What the official `Audio2Feature` computes (and this module reproduces):
- one log-mel of the whole file (n_fft 400, hop 160, 80 bins; floor at the file's maximum − 8);
- consecutive 3000-frame encoder windows, the last padded on the right with zeros of the
  normalised log-mel (a loud flat spectrum: the known glitch every 30 s), each encoded alone,
  keeping `window_frames // 2` steps;
- per step the 5 states (input of block 0 after the position add, outputs of blocks 0–3),
  without `ln_post`: features [rows, 5, 384];
- per video frame i a window of 10 rows around `int(i * 50 / fps)`, clamped at the edges,
  flattened to [50, 384]; `rows // 2 + 2` frames in all (one or two more than the audio lasts).

Options (official value first): `pad` "zeros" | "silence" (pad the last window with the log-mel
floor, i.e. true silence); `floor` "file" | "window" (floor per 30 s window).
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from engine.errors import WeightsError

SAMPLE_RATE = 16000
N_FFT = 400
HOP = 160
WINDOW_FRAMES = 3000  # mel frames per encoder window (30 s)
PADS = ("zeros", "silence")
FLOORS = ("file", "window")


@lru_cache(maxsize=4)
def mel_filters(n_mels: int) -> torch.Tensor:
    """whisper's mel filter bank (librosa slaney filters, as in whisper's mel_filters.npz)."""
    import librosa

    return torch.from_numpy(librosa.filters.mel(sr=SAMPLE_RATE, n_fft=N_FFT, n_mels=n_mels))


def official_samples(wave: np.ndarray) -> np.ndarray:
    """float audio as the official loader sees it: 16-bit samples divided by 32768 (identity for PCM16 input)."""
    return (np.clip(np.round(np.asarray(wave, np.float64) * 32768.0), -32768, 32767) / 32768.0).astype(np.float32)


def _floored(log: torch.Tensor) -> torch.Tensor:
    return (torch.maximum(log, log.max() - 8.0) + 4.0) / 4.0


def log_mel(wave: np.ndarray | torch.Tensor, n_mels: int = 80, floor: bool = True) -> torch.Tensor:
    """Whole-file whisper log-mel [n_mels, samples // 160], floored at the file's maximum − 8 and
    normalised; `floor=False` gives the plain log10 power."""
    wave = torch.as_tensor(np.asarray(wave, np.float32))
    stft = torch.stft(wave, N_FFT, HOP, window=torch.hann_window(N_FFT), return_complex=True)
    power = stft[..., :-1].abs() ** 2
    log = (mel_filters(n_mels) @ power).clamp(min=1e-10).log10()
    return _floored(log) if floor else log


def encoder_windows(mel: torch.Tensor) -> list[tuple[int, int]]:
    """[start, end) mel columns of each encoder window."""
    n = mel.shape[-1]
    return [(s, min(s + WINDOW_FRAMES, n)) for s in range(0, n, WINDOW_FRAMES)]


_KEY_MAP = (("attn.query", "self_attn.q_proj"), ("attn.key", "self_attn.k_proj"), ("attn.value", "self_attn.v_proj"),
            ("attn.out", "self_attn.out_proj"), ("attn_ln", "self_attn_layer_norm"), ("mlp.0", "fc1"),
            ("mlp.2", "fc2"), ("mlp_ln", "final_layer_norm"))


def _openai_key(ours: str) -> str:
    """transformers WhisperEncoder parameter name -> key in an openai-format checkpoint."""
    if ours == "embed_positions.weight":
        return "encoder.positional_embedding"
    if ours.startswith("layer_norm."):
        return "encoder.ln_post." + ours.split(".", 1)[1]
    for theirs, mine in _KEY_MAP:
        ours = ours.replace(f".{mine}.", f".{theirs}.")
    return "encoder." + ours.replace("layers.", "blocks.", 1)


class WhisperStates:
    """The encoder of an openai-format whisper checkpoint (`tiny.pt`), as transformers' `WhisperEncoder`."""

    def __init__(self, path: str | Path, *, dtype=torch.float32, device="cpu"):
        from accelerate import init_empty_weights
        from transformers import WhisperConfig
        from transformers.models.whisper.modeling_whisper import WhisperEncoder

        from engine.weights.loading import Checkpoint, load_into, read_checkpoint

        path = Path(path)
        read_checkpoint(path)  # says what is wrong with a missing, empty or truncated file
        try:
            data = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
            dims, state = data["dims"], data["model_state_dict"]
        except Exception:
            raise WeightsError(f"{path} is not an openai-format whisper checkpoint (no 'dims' / 'model_state_dict').",
                               hint="Use whisper/tiny.pt from the LatentSync release.") from None
        checkpoint = Checkpoint(path, {k: (lambda v=v: v) for k, v in state.items()},
                                {k: tuple(v.shape) for k, v in state.items()}, {k: path for k in state})
        config = WhisperConfig(num_mel_bins=dims["n_mels"], max_source_positions=dims["n_audio_ctx"],
                               d_model=dims["n_audio_state"], encoder_attention_heads=dims["n_audio_head"],
                               encoder_layers=dims["n_audio_layer"], encoder_ffn_dim=4 * dims["n_audio_state"],
                               activation_function="gelu", dropout=0.0, attention_dropout=0.0, activation_dropout=0.0)
        with init_empty_weights():
            self.model = WhisperEncoder(config)
        names = {n: _openai_key(n) for n in self.model.state_dict()}
        load_into(self.model, checkpoint, names, dtype=dtype, device=device, label="whisper encoder",
                  ignore=lambda key: key.startswith("decoder."))
        self.model.eval().requires_grad_(False)
        self.n_mels = dims["n_mels"]
        self.dtype = dtype

    @torch.no_grad()
    def states(self, mel_window: torch.Tensor) -> torch.Tensor:
        """One padded window [n_mels, 3000] -> [steps, layers + 1, width] (no ln_post)."""
        captured: list[torch.Tensor] = []
        layers = self.model.layers
        hooks = [layers[0].register_forward_pre_hook(lambda m, args: captured.append(args[0]))]
        hooks += [layer.register_forward_hook(lambda m, a, out: captured.append(out[0] if isinstance(out, tuple) else out))
                  for layer in layers]
        try:
            device = next(self.model.parameters()).device
            self.model(mel_window[None].to(device, self.dtype))
        finally:
            for hook in hooks:
                hook.remove()
        return torch.stack(captured, dim=2)[0].float().cpu()

    def features(self, wave: np.ndarray, pad: str = "zeros", floor: str = "file") -> torch.Tensor:
        """16 kHz mono float audio -> features [rows, layers + 1, width], rows = sum of window_frames // 2.

        pad: "zeros" (official) or "silence" for the right padding of the last window;
        floor: "file" (official: the loudest moment of the whole file sets the log-mel floor) or
        "window" (each 30 s window sets its own, so a passage no longer depends on audio far away).
        """
        if pad not in PADS or floor not in FLOORS:
            raise ValueError(f"pad must be one of {PADS} and floor one of {FLOORS}")
        raw = log_mel(wave, self.n_mels, floor=False)
        mel = _floored(raw)
        rows = []
        for start, end in encoder_windows(raw):
            loudest = raw.max() if floor == "file" else raw[:, start:end].max()
            part = mel[:, start:end] if floor == "file" else _floored(raw[:, start:end])
            fill = 0.0 if pad == "zeros" else float((loudest - 8.0 + 4.0) / 4.0)  # the floor = silence
            window = F.pad(part, (0, WINDOW_FRAMES - (end - start)), value=fill)
            rows.append(self.states(window)[: (end - start) // 2])
        return torch.cat(rows)


def chunk_count(rows: int, fps: float = 25, rate: int = 50) -> int:
    """Video frames the official pipeline makes for `rows` feature rows (`rows // 2 + 2` at 25 fps).

    It appends chunks until the centre of the one just appended lies past the last row.
    """
    i = 0
    while int(i * rate / fps) <= rows:
        i += 1
    return i + 1


def frame_rows(frame: int, rows: int, fps: float = 25, before: int = 2, after: int = 2, rate: int = 50) -> list[int]:
    """Feature rows gathered for video frame `frame`: 2*(before+after)+2 rows around its centre, clamped."""
    centre = int(frame * rate / fps)
    return [min(max(r, 0), rows - 1) for r in range(centre - 2 * before, centre + 2 * after + 2)]


def frame_chunks(features: torch.Tensor, fps: float = 25, feat_length=(2, 2), frames: range | None = None) -> torch.Tensor:
    """Per-frame audio chunks [N, 10 * states, width] (official order: row, then state)."""
    rows = features.shape[0]
    frames = range(chunk_count(rows, fps)) if frames is None else frames
    index = torch.tensor([frame_rows(i, rows, fps, *feat_length) for i in frames], dtype=torch.long)
    return features[index].reshape(len(frames), -1, features.shape[-1])
