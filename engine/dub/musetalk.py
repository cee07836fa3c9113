"""MuseTalk 1.5: whisper audio windows, VAE crops, one UNet pass at t = 0 per frame batch.

The models come from the released folder layout:

    musetalkV15/musetalk.json, musetalkV15/unet.pth      UNet2DConditionModel
    sd-vae/config.json, sd-vae/diffusion_pytorch_model.bin   AutoencoderKL (sd-vae-ft-mse)
    whisper/config.json, pytorch_model.bin, preprocessor_config.json   whisper encoder + log-mel

Numbers follow the official v1.5 inference (see shared/golden/musetalk/README.md); where the
official code does something surprising (int(fps), per-30-s normalisation) the surprise is kept
under `rule="official"` and a corrected variant is offered by name.
"""
from __future__ import annotations

import json
import math
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch

from engine.errors import InputError, WeightsError
from engine.weights.loading import load_into, read_checkpoint

SAMPLE_RATE = 16000
FEATURE_RATE = 50           # whisper encoder rows per second
PIECE_SAMPLES = 30 * SAMPLE_RATE
LATENT_SCALE_DEFAULT = 0.18215
AUDIO_TOKENS_PE_LEN = 5000


def _read_json(path: Path) -> dict:
    if not path.is_file():
        raise WeightsError(f"Config file {path} is missing.", hint="Check the MuseTalk models folder.")
    try:
        return json.loads(path.read_text())
    except ValueError as err:
        raise WeightsError(f"Config file {path} is not valid JSON ({err}).", hint="Re-download it.") from None


def _config(raw: dict) -> dict:
    """A released config without the bookkeeping keys diffusers keeps to itself."""
    return {k: v for k, v in raw.items() if not k.startswith("_")}


def _from_config(model_class, path: Path):
    """An empty (meta) diffusers model of `model_class` from the config file at `path`."""
    config = _config(_read_json(path))
    try:
        return _empty(lambda: model_class.from_config(config))
    except (TypeError, ValueError) as err:
        raise WeightsError(f"{path} is not a config for {model_class.__name__} ({err}).",
                           hint="Re-download it.") from None


def _empty(build):
    from accelerate import init_empty_weights

    with init_empty_weights():
        return build()


# sd-vae-ft-mse predates diffusers' attention rename; its mid-block attention keys use the old names.
_OLD_VAE_ATTENTION = {"to_q": "query", "to_k": "key", "to_v": "value", "to_out.0": "proj_attn"}


def _vae_names(module: torch.nn.Module, present: set[str]) -> dict[str, str]:
    names = {}
    for name in module.state_dict():
        key = name
        if name not in present and ".attentions." in name:
            for new, old in _OLD_VAE_ATTENTION.items():
                if f".{new}." in name:
                    key = name.replace(f".{new}.", f".{old}.")
        names[name] = key
    return names


def positional_encoding(n_tokens: int, dim: int, dtype=torch.float32) -> torch.Tensor:
    """The fixed sinusoid added to the audio tokens: channel 2k = sin, 2k+1 = cos (float32 table)."""
    position = torch.arange(0, AUDIO_TOKENS_PE_LEN, dtype=torch.float32).unsqueeze(1)
    div_term = torch.exp(torch.arange(0, dim, 2).float() * (-math.log(10000.0) / dim))
    table = torch.zeros(AUDIO_TOKENS_PE_LEN, dim)
    table[:, 0::2] = torch.sin(position * div_term)
    table[:, 1::2] = torch.cos(position * div_term)
    return table[:n_tokens].to(dtype)


def load_audio_16k(path: str | Path) -> np.ndarray:
    """A mono float32 signal at 16 kHz, resampled as the official code does (librosa, soxr_hq)."""
    import librosa

    wave, _ = librosa.load(str(path), sr=SAMPLE_RATE)
    return wave


def window_rows(n_samples: int, fps: float, n_rows: int, rule: str = "official",
                pad_left: int = 2, pad_right: int = 2) -> np.ndarray:
    """Feature rows held by each frame's window: int64 [n_frames, 2*(pad_left+pad_right+1)], -1 = zero row.

    rule "official" (MuseTalk 1.5 as released): fps is truncated with int() (29.97 -> 29);
    n_frames = floor(n_samples/16000 * int(fps)); with q = 50/int(fps) (a double, computed once)
    and p = ceil(q), the stack gets 2p zero rows in front and 6p behind (never more zeros than
    the clip has rows); frame i reads 10 rows from floor(i*q) of the padded stack, so the float
    product decides (at 29 fps frames 145, 290, ... start one row early).
    rule "exact" (a deliberate deviation): the real fps as an exact fraction (29.97 = 2997/100)
    sets the frame count and window starts, floor(50*i/fps) - 2p, so windows stay in step with
    a video played at a fractional rate (the official rule gives 29 windows per second for 29.97
    fps footage, so the mouth runs ahead by about two seconds per minute). Zero rows pad both ends as
    far as needed. For integer fps both rules agree except on the float-rounding frames.
    """
    if rule not in ("official", "exact"):
        raise InputError(f"Unknown audio window rule '{rule}'; use 'official' or 'exact'.")
    if not fps or fps <= 0:
        raise InputError(f"The frame rate must be positive (got {fps}).")
    width = 2 * (pad_left + pad_right + 1)
    if rule == "official":
        fps_i = int(fps)
        if fps_i < 1:
            raise InputError(f"The frame rate {fps} is below 1 fps, which MuseTalk cannot follow.")
        step = FEATURE_RATE / fps_i
        n_frames = math.floor(n_samples / SAMPLE_RATE * fps_i)
        p = math.ceil(step)
        left, right = min(p * pad_left, n_rows), min(p * 3 * pad_right, n_rows)
        starts = np.array([math.floor(i * step) for i in range(n_frames)], dtype=np.int64)
    else:
        rate = Fraction(fps).limit_denominator(10000)
        n_frames = math.floor(Fraction(n_samples) * rate / SAMPLE_RATE)
        p = math.ceil(Fraction(FEATURE_RATE) / rate)
        left = p * pad_left
        starts = np.array([(FEATURE_RATE * i * rate.denominator) // rate.numerator for i in range(n_frames)],
                          dtype=np.int64)
        right = max(0, int(starts[-1]) + width - left - n_rows) if n_frames else 0
    if n_frames and starts[-1] + width > left + n_rows + right:
        raise InputError(f"The audio is too short for a {width}-row window at {fps} fps; "
                         "give at least half a second of speech.")
    rows = starts[:, None] + np.arange(width)[None, :] - left
    rows[(rows < 0) | (rows >= n_rows)] = -1
    return rows


class MuseTalk:
    """The MuseTalk 1.5 networks and the numeric steps between them (no face handling)."""

    def __init__(self, unet, vae, whisper_encoder, feature_extractor, device="cpu", dtype=torch.float32):
        self.unet, self.vae, self.whisper = unet, vae, whisper_encoder
        self.feature_extractor = feature_extractor
        self.device, self.dtype = torch.device(device), dtype
        self.scaling_factor = float(getattr(vae.config, "scaling_factor", None) or LATENT_SCALE_DEFAULT)
        self._pe: torch.Tensor | None = None

    # ---- loading -------------------------------------------------------------------------
    @classmethod
    def load(cls, models_dir: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> "MuseTalk":
        """Build the three networks from a folder laid out like the official download."""
        models_dir = Path(models_dir)
        if not models_dir.is_dir():
            raise WeightsError(f"MuseTalk models folder {models_dir} does not exist.",
                               hint="Download the MuseTalk weights or point --weights at them.")
        unet = cls._load_unet(models_dir / "musetalkV15", device, dtype)
        vae = cls._load_vae(models_dir / "sd-vae", device, dtype)
        encoder, extractor = cls._load_whisper(models_dir / "whisper", device, dtype)
        return cls(unet, vae, encoder, extractor, device=device, dtype=dtype)

    @staticmethod
    def _load_unet(folder: Path, device, dtype):
        from diffusers import UNet2DConditionModel

        unet = _from_config(UNet2DConditionModel, folder / "musetalk.json")
        ckpt = read_checkpoint(folder / "unet.pth")
        load_into(unet, ckpt, {n: n for n in unet.state_dict()}, dtype=dtype, device=device, label="MuseTalk UNet")
        return unet.eval().requires_grad_(False)

    @staticmethod
    def _load_vae(folder: Path, device, dtype):
        from diffusers import AutoencoderKL

        vae = _from_config(AutoencoderKL, folder / "config.json")
        weights = folder / "diffusion_pytorch_model.bin"
        if not weights.exists() and (folder / "diffusion_pytorch_model.safetensors").exists():
            weights = folder / "diffusion_pytorch_model.safetensors"
        ckpt = read_checkpoint(weights)
        load_into(vae, ckpt, _vae_names(vae, set(ckpt.keys())), dtype=dtype, device=device, label="MuseTalk VAE")
        return vae.eval().requires_grad_(False)

    @staticmethod
    def _load_whisper(folder: Path, device, dtype):
        from transformers import WhisperConfig, WhisperFeatureExtractor
        from transformers.models.whisper.modeling_whisper import WhisperEncoder

        _read_json(folder / "config.json")
        _read_json(folder / "preprocessor_config.json")
        config = WhisperConfig.from_pretrained(str(folder))
        config._attn_implementation = "sdpa"
        encoder = _empty(lambda: WhisperEncoder(config))
        weights = folder / "pytorch_model.bin"
        if not weights.exists() and (folder / "model.safetensors").exists():
            weights = folder / "model.safetensors"
        ckpt = read_checkpoint(weights)
        prefix = "model.encoder." if any(k.startswith("model.encoder.") for k in ckpt.keys()) else "encoder."
        load_into(encoder, ckpt, {n: prefix + n for n in encoder.state_dict()}, dtype=dtype, device=device,
                  label="whisper encoder", ignore=lambda k: not k.startswith(prefix))
        extractor = WhisperFeatureExtractor.from_pretrained(str(folder))
        return encoder.eval().requires_grad_(False), extractor

    # ---- audio ---------------------------------------------------------------------------
    def mel(self, wave_16k: np.ndarray) -> torch.Tensor:
        """Log-mel of each 30 s piece on its own (each piece normalised by its own maximum): [pieces, mels, 3000]."""
        wave = np.asarray(wave_16k, dtype=np.float32)
        if wave.ndim != 1 or wave.size == 0:
            raise InputError("The audio is empty or not mono; give a spoken clip of at least a fraction of a second.")
        pieces = [wave[i:i + PIECE_SAMPLES] for i in range(0, wave.size, PIECE_SAMPLES)]
        return torch.cat([self.feature_extractor(p, sampling_rate=SAMPLE_RATE, return_tensors="pt").input_features
                          for p in pieces])

    @torch.no_grad()
    def _encoder_states(self, mel: torch.Tensor) -> torch.Tensor:
        """The five hidden states MuseTalk stacks: embeddings, layers 1..n-1, final norm of layer n. [1, 1500, 5, D]."""
        enc = self.whisper
        x = torch.nn.functional.gelu(enc.conv1(mel))
        x = torch.nn.functional.gelu(enc.conv2(x)).permute(0, 2, 1)
        x = x + enc.embed_positions.weight[: x.shape[1]]
        states = [x]
        for layer in enc.layers:
            x = layer(x, None)
            x = x[0] if isinstance(x, tuple) else x
            states.append(x)
        states[-1] = enc.layer_norm(x)
        return torch.stack(states, dim=2)

    def voice_features(self, wave_16k: np.ndarray) -> "VoiceFeatures":
        """The same features as `audio_features`, made one 30 s piece at a time as frames need them."""
        return VoiceFeatures(self, wave_16k)

    def piece_states(self, wave_16k: np.ndarray, k: int) -> torch.Tensor:
        """Feature rows of 30 s piece k of a voice: [1500, 5, D] (the last piece's tail past the voice included)."""
        piece = np.asarray(wave_16k, dtype=np.float32)[k * PIECE_SAMPLES:(k + 1) * PIECE_SAMPLES]
        mel = self.feature_extractor(piece, sampling_rate=SAMPLE_RATE, return_tensors="pt").input_features
        param = next(self.whisper.parameters())
        return self._encoder_states(mel.to(param.device, param.dtype))[0].to(self.dtype)

    def audio_features(self, wave_16k: np.ndarray) -> torch.Tensor:
        """Whisper features of a 16 kHz mono signal: [1, floor(len/16000*50), 5, 384]."""
        mel = self.mel(wave_16k)
        param = next(self.whisper.parameters())
        stacked = torch.cat([self._encoder_states(m[None].to(param.device, param.dtype)) for m in mel], dim=1)
        rows = math.floor(len(wave_16k) / SAMPLE_RATE * FEATURE_RATE)
        return stacked[:, :rows].to(self.dtype)

    @staticmethod
    def audio_windows(features: torch.Tensor, n_samples: int, fps: float, rule: str = "official",
                      frames: range | None = None, pad_left: int = 2, pad_right: int = 2) -> torch.Tensor:
        """Per-frame audio windows [n_frames, 10*5, D] (token 5*t + l = time step t, hidden state l).

        Which feature rows each frame gets is `window_rows` (see there for the two rules); rows
        marked -1 are zeros. `frames` picks a range of output frames (to stream long clips).
        """
        index = window_rows(n_samples, fps, features.shape[1], rule, pad_left, pad_right)
        if frames is not None:
            index = index[frames]
        if isinstance(features, VoiceFeatures):
            return features.gather(index).reshape(index.shape[0], -1, features.shape[3])
        index = torch.from_numpy(index)
        zero_row = features.new_zeros((1,) + tuple(features.shape[2:]))
        table = torch.cat([features[0], zero_row])            # row -1 picks the zero row
        windows = table[index.clamp(min=-1)]                  # [n, 10, 5, D]
        return windows.reshape(index.shape[0], -1, features.shape[3])


    # ---- VAE -----------------------------------------------------------------------------
    def _to_vae(self, crops_bgr_uint8: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """(masked, full) VAE inputs in [-1, 1]; the masked copy has its lower half black before normalising."""
        crops = np.asarray(crops_bgr_uint8)
        if crops.ndim != 4 or crops.shape[-1] != 3 or crops.dtype != np.uint8:
            raise InputError("Face crops must be uint8 BGR images of shape [B, H, W, 3].")
        rgb = np.ascontiguousarray(crops[..., ::-1])
        # divide in float64 as the official code does; NCHW-contiguous: a channels-last input sends
        # the encoder to a less precise GroupNorm kernel (1e-4 off on flat regions)
        x = torch.from_numpy((rgb / 255.0).astype(np.float32)).permute(0, 3, 1, 2).contiguous()
        masked = x.clone()
        masked[:, :, x.shape[2] // 2:] = 0
        param = next(self.vae.parameters())
        return [((t - 0.5) / 0.5).to(param.device, param.dtype) for t in (masked, x)]

    @torch.no_grad()
    def posterior(self, crops_bgr_uint8: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Encoder posterior mean and std, [B, 2, 4, h, w] (index 0 masked, 1 full)."""
        masked, full = self._to_vae(crops_bgr_uint8)
        means, stds = [], []
        for x in (masked, full):
            dist = self.vae.encode(x).latent_dist
            means.append(dist.mean)
            stds.append(dist.std)
        return torch.stack(means, dim=1), torch.stack(stds, dim=1)

    def encode(self, crops_bgr_uint8: np.ndarray, generator: torch.Generator | None = None) -> torch.Tensor:
        """Latents [B, 8, h, w]: (masked, full) x scaling factor, sampled from the posterior.

        Draw order as the official code: for each crop, one normal draw for the masked image, then one
        for the full image, each of shape [1, 4, h, w], from `generator` or the global RNG.
        """
        mean, std = self.posterior(crops_bgr_uint8)
        noise = torch.empty_like(mean)
        for b in range(mean.shape[0]):
            for k in range(2):
                noise[b, k] = torch.randn((1,) + tuple(mean.shape[2:]), generator=generator,
                                          dtype=mean.dtype, device=generator.device if generator else "cpu")[0]
        latents = (mean + std * noise.to(mean.device)) * self.scaling_factor
        return latents.flatten(1, 2)

    @torch.no_grad()
    def decode_float(self, latents: torch.Tensor) -> torch.Tensor:
        """The VAE decoder's output before clamping, [B, 3, H, W] RGB in about [-1, 1]."""
        param = next(self.vae.parameters())
        z = (1 / self.scaling_factor) * latents.to(param.device, param.dtype)  # a multiply, as official
        return self.vae.decode(z).sample

    def decode(self, latents: torch.Tensor) -> np.ndarray:
        """uint8 BGR faces [B, H, W, 3] (x/2 + 0.5, clamp, x 255, round half to even)."""
        image = (self.decode_float(latents) / 2 + 0.5).clamp(0, 1)
        image = image.permute(0, 2, 3, 1).float().cpu().numpy()
        return np.ascontiguousarray((image * 255).round().astype(np.uint8)[..., ::-1])

    # ---- UNet ----------------------------------------------------------------------------
    def add_positional_encoding(self, windows: torch.Tensor) -> torch.Tensor:
        if self._pe is None or self._pe.shape != windows.shape[1:]:
            self._pe = positional_encoding(windows.shape[1], windows.shape[2])
        return windows + self._pe.to(windows.device, windows.dtype)

    @torch.no_grad()
    def predict(self, latents: torch.Tensor, windows: torch.Tensor) -> torch.Tensor:
        """The UNet's one pass at t = 0: [B, 8, h, w] latents + [B, 50, 384] windows -> [B, 4, h, w]."""
        if latents.shape[0] != windows.shape[0]:
            raise InputError(f"{latents.shape[0]} latents but {windows.shape[0]} audio windows; give one window per frame.")
        param = next(self.unet.parameters())
        audio = self.add_positional_encoding(windows.to(param.device, param.dtype))
        t = torch.tensor([0], device=param.device)
        return self.unet(latents.to(param.device, param.dtype), t, encoder_hidden_states=audio).sample


class VoiceFeatures:
    """MuseTalk's whisper features of one voice, made one 30 s piece at a time when frames need them
    (the last two pieces are kept): exactly `MuseTalk.audio_features`, without holding the rows of a
    long voice (10 minutes would be 30,000 rows, 230 MB)."""

    KEEP = 2

    def __init__(self, model: "MuseTalk", wave_16k: np.ndarray):
        self.model = model
        self.wave = np.asarray(wave_16k, dtype=np.float32)
        if self.wave.ndim != 1 or self.wave.size == 0:
            raise InputError("The audio is empty or not mono; give a spoken clip of at least a fraction of a second.")
        config = model.whisper.config
        rows = math.floor(len(self.wave) / SAMPLE_RATE * FEATURE_RATE)
        self.shape = (1, rows, config.encoder_layers + 1, config.d_model)
        self._kept: dict[int, torch.Tensor] = {}

    def piece(self, k: int) -> torch.Tensor:
        if k not in self._kept:
            if len(self._kept) >= self.KEEP:
                self._kept.pop(next(iter(self._kept)))
            self._kept[k] = self.model.piece_states(self.wave, k)
        return self._kept[k]

    def gather(self, index: np.ndarray) -> torch.Tensor:
        """Rows `index` ([n, w] int, -1 = a zero row) -> [n, w, states, D]."""
        per_piece = PIECE_SAMPLES // SAMPLE_RATE * FEATURE_RATE
        out = torch.zeros(*index.shape, *self.shape[2:], dtype=self.model.dtype)
        for (i, j), r in np.ndenumerate(index):
            if r >= 0:
                out[i, j] = self.piece(int(r) // per_piece)[int(r) % per_piece]
        return out
