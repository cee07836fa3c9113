"""LatentSync's audio features: whisper-tiny encoder states from an openai-format `tiny.pt`, cut per video frame.

What the official `Audio2Feature` computes (and this module reproduces):
- one log-mel of the whole file (n_fft 400, hop 160, 80 bins; floor at the file's maximum − 8);
- consecutive 3000-frame encoder windows, the last padded on the right with zeros of the
  normalised log-mel (a loud flat spectrum rather than silence), each encoded alone, keeping
  `window_frames // 2` steps (so the features jump at every 30 s boundary, where one window ends
  without right context and the next starts without left context);
- per step the 5 states (input of block 0 after the position add, outputs of blocks 0–3),
  without `ln_post`: features [rows, 5, 384];
- per video frame i a window of 10 rows around `int(i * 50 / fps)`, clamped at the edges,
  flattened to [50, 384]; `rows // 2 + 2` frames in all (one or two more than the audio lasts).

Options (official value first): `pad` "zeros" | "silence" (pad the last window with the log-mel
floor, i.e. true silence); `floor` "file" | "window" (floor per 30 s window); `windows` "cut" |
"overlap" (30 s windows every 20 s, each row taken from the window where it has context on both
sides: no jump at the boundaries).
"""
from __future__ import annotations

import math
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
WINDOWINGS = ("cut", "overlap")
OVERLAP_HOP = 2000    # mel columns (20 s) between overlapping windows; each row comes from a window that
                      # has at least 5 s of sound on both sides of it (except at the file's ends)


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
        return FeatureStream(self, wave, pad=pad, floor=floor).features()


class FeatureStream:
    """The same features as `WhisperStates.features`, computed one 30 s encoder window at a time.

    Only the log-mel columns of a window are made when it is encoded (the STFT frames of a window
    need 200 samples either side, reflected at the file's ends as `torch.stft` does), and the
    states of the last two windows used are kept: memory does not grow with the length of the
    voice. With floor "file" a first pass finds the loudest log-mel value, window by window.
    """

    KEEP = 2

    def __init__(self, whisper: "WhisperStates", wave: np.ndarray, *, pad: str = "zeros", floor: str = "file",
                 windows: str = "cut"):
        if pad not in PADS or floor not in FLOORS or windows not in WINDOWINGS:
            raise ValueError(f"pad must be one of {PADS}, floor one of {FLOORS} and windows one of {WINDOWINGS}")
        self.whisper, self.pad, self.floor = whisper, pad, floor
        self.wave = np.asarray(wave, np.float32)
        columns = len(self.wave) // HOP
        self.hop = WINDOW_FRAMES if windows == "cut" else OVERLAP_HOP
        starts = [0]
        while starts[-1] + WINDOW_FRAMES < columns:
            starts.append(starts[-1] + self.hop)
        self.windows = [(s, min(s + WINDOW_FRAMES, columns)) for s in starts] if columns else []
        last = self.windows[-1] if self.windows else (0, 0)
        self.rows = last[0] // 2 + (last[1] - last[0]) // 2
        self.loudest = None
        if floor == "file" and self.windows:
            self.loudest = max(float(self._raw(start, end).max()) for start, end in self.windows)
        self._kept: dict[int, torch.Tensor] = {}

    def _raw(self, start: int, end: int) -> torch.Tensor:
        """Plain log10 mel power of columns [start, end): exactly those columns of the whole-file STFT."""
        lo, hi = start * HOP - N_FFT // 2, (end - 1) * HOP + N_FFT // 2
        n = len(self.wave)
        if n <= N_FFT // 2:
            raise ValueError("the voice is too short for whisper features (under 1/80 s)")
        index = np.abs(np.arange(lo, hi))                    # reflected past both ends, as torch.stft pads
        index = np.where(index >= n, 2 * n - 2 - index, index)
        piece = self.wave[index]
        stft = torch.stft(torch.from_numpy(np.ascontiguousarray(piece)), N_FFT, HOP, window=torch.hann_window(N_FFT),
                          center=False, return_complex=True)
        power = stft.abs() ** 2
        return (mel_filters(self.whisper.n_mels) @ power).clamp(min=1e-10).log10()

    def window_states(self, k: int) -> torch.Tensor:
        """States [window_frames // 2, layers + 1, width] of encoder window k."""
        if k not in self._kept:
            start, end = self.windows[k]
            raw = self._raw(start, end)
            loudest = raw.max() if self.loudest is None else torch.tensor(self.loudest)
            part = (torch.maximum(raw, loudest - 8.0) + 4.0) / 4.0
            fill = 0.0 if self.pad == "zeros" else float((loudest - 8.0 + 4.0) / 4.0)  # the floor = silence
            window = F.pad(part, (0, WINDOW_FRAMES - (end - start)), value=fill)
            if len(self._kept) >= self.KEEP:
                self._kept.pop(next(iter(self._kept)))
            self._kept[k] = self.whisper.states(window)[: (end - start) // 2]
        return self._kept[k]

    def rows_of(self, k: int) -> range:
        """The feature rows window k gives (cut: all of its own; overlap: its middle, the ends at the file's ends)."""
        start, end = self.windows[k]
        if self.hop == WINDOW_FRAMES:
            return range(start // 2, start // 2 + (end - start) // 2)
        margin = (WINDOW_FRAMES - self.hop) // 4           # rows of context kept on each side
        first = 0 if k == 0 else start // 2 + margin
        last = self.rows if k == len(self.windows) - 1 else start // 2 + margin + self.hop // 2
        return range(first, last)

    def features(self) -> torch.Tensor:
        """All rows [rows, states, width] (what `WhisperStates.features` returns; held whole: for checks)."""
        return torch.cat([self.window_states(k)[r.start - self.windows[k][0] // 2: r.stop - self.windows[k][0] // 2]
                          for k, r in ((k, self.rows_of(k)) for k in range(len(self.windows)))])

    def frame_chunks(self, frames: list[int], fps: float = 25, feat_length=(2, 2)) -> torch.Tensor:
        """Per-frame audio chunks [len(frames), 10 * states, width], as `frame_chunks` of the whole features."""
        out = []
        for i in frames:
            rows = [self._row(r) for r in frame_rows(i, self.rows, fps, *feat_length)]
            out.append(torch.stack(rows).reshape(-1, rows[0].shape[-1]))
        return torch.stack(out)

    def _row(self, r: int) -> torch.Tensor:
        if self.hop == WINDOW_FRAMES:
            k = r // (WINDOW_FRAMES // 2)
        else:
            margin = (WINDOW_FRAMES - self.hop) // 4
            k = min(max(r - margin, 0) // (self.hop // 2), len(self.windows) - 1)
        return self.window_states(k)[r - self.windows[k][0] // 2]

    def frame_count(self, fps: float, rule: str = "audio") -> int:
        """Video frames to make: "audio" as many as the voice lasts at `fps`; "official" `rows // 2 + 2`."""
        if rule == "official":
            return chunk_count(self.rows, fps)
        return max(1, math.ceil(len(self.wave) * fps / SAMPLE_RATE))


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
