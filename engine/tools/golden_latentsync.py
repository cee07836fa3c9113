"""LatentSync 1.6 golden cases (shared/golden/latentsync) through the real loaders.

Each `<case>.json` names its kind; every size, seed, step count and file name is read from it.
"""
from __future__ import annotations

import hashlib
import json
import re
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch

from engine.tools.golden import rel_error


def _io(folder: Path, meta: dict) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(folder / meta["io"]))


def _config_path(folder: Path, meta: dict) -> Path:
    return folder / meta["config"].split()[0]


def _unet(folder: Path, meta: dict):
    return _load_unet(str(folder / meta["checkpoint"]), str(_config_path(folder, meta)))


@lru_cache(maxsize=2)
def _load_unet(checkpoint: str, config: str):
    from engine.dub.latentsync.unet3d import load_unet, unet_config

    return load_unet(checkpoint, unet_config(config))


def _unet_case(folder: Path, meta: dict) -> float:
    io = _io(folder, meta)
    gen = torch.Generator().manual_seed(meta["seed"])
    sample = torch.randn(io["sample"].shape, generator=gen)
    audio = torch.randn(io["audio"].shape, generator=gen)
    if not (torch.equal(sample, io["sample"]) and torch.equal(audio, io["audio"])):
        raise ValueError("seeded inputs differ from the golden inputs")
    model = _unet(folder, meta)
    with torch.no_grad():
        out = model(io["sample"], io["timestep"].reshape(()), io["audio"])
    return rel_error(out, io["out"])


def _exact(what: str, ours, golden) -> None:
    if ours != golden:
        raise ValueError(f"{what}: ours {ours} != golden {golden}")


def _wav_int16(folder: Path, meta: dict) -> np.ndarray:
    """The case's int16 samples: its wav file, or the JSON recipe applied to speech.wav."""
    import soundfile

    if meta.get("wav"):
        samples = soundfile.read(str(folder / meta["wav"]), dtype="int16")[0]
    else:
        recipe = meta["recipe"]
        source = re.search(r"samples of (\S+\.wav)", recipe).group(1)
        s = soundfile.read(str(folder / source), dtype="int16")[0]
        copies = int(re.search(r"\[s\]\s*\*\s*(\d+)", recipe).group(1))
        shifts = [int(k) for k in re.findall(r"s\s*>>\s*(\d+)", recipe)]
        samples = np.concatenate([s] * copies + [s >> k for k in shifts])[: meta["samples"]]
    digest = hashlib.sha256(samples.astype("<i2").tobytes()).hexdigest()
    if meta.get("wav_sha256_i16") and digest != meta["wav_sha256_i16"]:
        raise ValueError(f"audio samples differ from the golden ones (sha256 {digest[:12]})")
    return samples


@lru_cache(maxsize=2)
def _whisper(path: str):
    from engine.dub.latentsync.audio import WhisperStates

    return WhisperStates(path)


def _audio_case(folder: Path, meta: dict) -> float:
    from engine.dub.latentsync.audio import chunk_count, encoder_windows, frame_chunks, frame_rows, log_mel

    io = _io(folder, meta)
    wave = _wav_int16(folder, meta).astype(np.float32) / 32768.0
    encoder = _whisper(str(folder / meta["whisper"]))
    mel = log_mel(wave, encoder.n_mels)
    _exact("mel frames", mel.shape[-1], meta["mel_frames"])
    _exact("encoder windows", [list(w) for w in encoder_windows(mel)], meta["segments_mel"])
    errors = [rel_error(mel, io["mel"]) if "mel" in io else rel_error(mel[:, io["mel.cols"]], io["mel.sel"])]
    features = encoder.features(wave)
    _exact("feature rows", features.shape[0], meta["feature_rows"])
    errors.append(rel_error(features, io["features"]) if "features" in io
                  else rel_error(features[io["features.rows"]], io["features.sel"]))
    errors.append(rel_error(features.double().sum(-1), io["features.row_sum"]))
    rows, fps = features.shape[0], meta["fps"]
    n = chunk_count(rows, fps)
    _exact("chunk count", n, meta["num_chunks"])
    index = [frame_rows(i, rows, fps, *meta["audio_feat_length"]) for i in range(n)]
    _exact("chunk rows", index, io["chunk_idx"].tolist())
    frames = io["chunks.frames"].tolist()
    errors.append(rel_error(frame_chunks(features, fps, meta["audio_feat_length"], frames), io["chunks.sel"]))
    return max(errors)


def _masks_case(folder: Path, meta: dict) -> float:
    from engine.dub.latentsync.masks import fixed_mask, latent_mask, masked_inputs

    io = _io(folder, meta)
    png = folder / meta["mask_png"]
    errors = []
    for key in sorted(k for k in io if k.startswith("mask_u8.")):
        r = int(key.split(".")[1])
        mask = fixed_mask(png, r)
        if not torch.equal(mask[0], mask[1]) or not torch.equal(mask[0], mask[2]):
            raise ValueError("mask channels differ")
        u8 = (mask[0] * 255).round().to(torch.uint8)
        if not torch.equal(u8, io[key]) or not torch.equal(mask[0], io[key].double() / 255.0):
            raise ValueError(f"fixed mask at {r} differs from the golden one")
        errors.append(rel_error(latent_mask(mask[None, :1], (r // 8, r // 8))[0, 0], io[f"mask_latent.{r}"]))
    pixels, masked, _ = masked_inputs(io["faces"], fixed_mask(png, meta["resolution"]))
    errors += [rel_error(pixels, io["pixel_values"]), rel_error(masked.float(), io["masked_pixel_values_f32"])]
    return max(errors)


@lru_cache(maxsize=2)
def _vae(path: str):
    from engine.dub.latentsync.pipeline_core import load_vae

    return load_vae(path)


def _denoise_case(folder: Path, meta: dict) -> float:
    from engine.dub.latentsync.ddim import make_scheduler
    from engine.dub.latentsync.masks import fixed_mask
    from engine.dub.latentsync.pipeline_core import Settings, initial_noise, prepare_chunk, run_chunk

    io = _io(folder, meta)
    unet, vae = _unet(folder, meta), _vae(str(folder / meta["vae"]))
    r = meta["resolution"]
    mask = fixed_mask(folder / meta["mask_png"], r)
    faces, audio = io["faces"], io["audio"]
    torch.manual_seed(meta["seed"])
    noise = initial_noise((r // 8, r // 8))
    cond = prepare_chunk(vae, faces, mask)
    if not torch.equal(noise, io["noise"]):
        raise ValueError("seeded noise differs from the golden noise")
    errors = [rel_error(cond.mask_latents, io["mask_latents"]), rel_error(cond.masked_latents, io["masked_latents"]),
              rel_error(cond.ref_latents, io["ref_latents"])]
    params = meta.get("deepcache_params") or {}
    found = re.search(r"cache_interval=(\d+)", str(meta.get("deepcache", "")))
    interval = params.get("cache_interval") or (int(found.group(1)) if found else 3)
    for tag, run in meta["runs"].items():
        _exact(f"{tag} timesteps", make_scheduler(run["steps"], meta.get("scheduler_config")).timesteps.tolist(), run["timesteps"])
        settings = Settings(steps=run["steps"], guidance_scale=run["guidance_scale"],
                            deepcache_interval=interval if run["deepcache"] else None,
                            scheduler_config=meta.get("scheduler_config"))
        steps = []
        torch.manual_seed(meta["seed"])
        noise = initial_noise((r // 8, r // 8))
        pasted, final = run_chunk(unet, vae, faces, audio, noise, mask, settings, on_step=lambda i, x: steps.append(x))
        errors.append(rel_error(final, io[f"{tag}.final"]))
        if f"{tag}.steps" in io:
            errors.append(rel_error(torch.stack(steps), io[f"{tag}.steps"]))
        if f"{tag}.pasted" in io:
            from engine.dub.latentsync.pipeline_core import decode

            keep = meta["decoded_frames"]
            errors.append(rel_error(decode(vae, final)[keep], io[f"{tag}.decoded"]))
            errors.append(rel_error(pasted[keep], io[f"{tag}.pasted"]))
    return max(errors)


UINT8_LEVELS = 3       # uint8 images: no value off by more than this many levels...
UINT8_FRACTION = 0.01  # ...and at most this fraction of values off at all (README: truncating warps, float steps)


def _uint8_close(what: str, ours, golden: torch.Tensor) -> None:
    """uint8 images agree within a few levels on a small fraction of values (the README's rule)."""
    ours = torch.as_tensor(np.asarray(ours)).to(torch.int16)
    if ours.shape != golden.shape:
        raise ValueError(f"{what}: shape {tuple(ours.shape)} != golden {tuple(golden.shape)}")
    diff = (ours - golden.to(torch.int16)).abs()
    off = float((diff > 0).float().mean())
    if diff.max() > UINT8_LEVELS or off > UINT8_FRACTION:
        raise ValueError(f"{what}: {off:.2%} of values differ, by up to {int(diff.max())} levels")


def _affine_case(folder: Path, meta: dict) -> float:
    from engine.dub.face.align import FaceAligner

    io = _io(folder, meta)
    frames, landmarks = io["frames"].numpy(), io["landmarks"].numpy()
    errors = []
    for r in meta["resolutions"]:
        aligner, keep = FaceAligner(r), meta["keep"][str(r)]
        aligned, biases = [], []
        for frame, lmk in zip(frames, landmarks):
            aligned.append(aligner.align(frame, lmk))
            biases.append(aligner.p_bias.clone())
        _exact(f"R{r} crop box", list(aligned[0].box), meta[f"box_{r}"])
        if not np.array_equal(np.stack([a.points for a in aligned]), io[f"r{r}.landmarks3"].numpy()):
            raise ValueError(f"R{r}: alignment points differ")
        errors += [rel_error(torch.stack([a.matrix for a in aligned]), io[f"r{r}.matrix"]),
                   rel_error(torch.stack(biases), io[f"r{r}.p_bias"])]
        if keep["warped"]:
            _uint8_close(f"R{r} warped", np.stack([aligned[i].warped for i in keep["warped"]]), io[f"r{r}.warped"])
        _uint8_close(f"R{r} face", torch.stack([aligned[i].face for i in keep["face"]]), io[f"r{r}.face"])
        restored = []
        for i in keep["restore"]:
            face_in = (255 - aligned[i].face).float() / 127.5 - 1
            restored.append(aligner.restore(frames[i], face_in, aligned[i].matrix))
        _uint8_close(f"R{r} restored", np.stack(restored), io[f"r{r}.restored"])
    return max(errors)


def _pipeline_case(folder: Path, meta: dict) -> float:
    from engine.dub.latentsync.pipeline_core import Settings, lipsync_clip

    io = _io(folder, meta)
    if meta.get("weight_dtype", "float32") != "float32":
        raise ValueError("only float32 golden pipelines are reproduced on CPU")
    unet, vae = _unet(folder, meta), _vae(str(folder / meta["vae"]))
    whisper = _whisper(str(folder / meta["whisper"]))
    wave = _wav_int16(folder, meta).astype(np.float32) / 32768.0
    dc = meta["deepcache_params"]
    if dc.get("cache_branch_id", 0) != 0:
        raise ValueError("only DeepCache branch 0 is implemented")
    settings = Settings(steps=meta["steps"], guidance_scale=meta["guidance_scale"],
                        deepcache_interval=dc["cache_interval"] if meta["deepcache"] else None,
                        chunk_frames=meta["num_frames"], scheduler_config=meta.get("scheduler_config"))
    data = _config_path(folder, meta)
    feat_length = meta.get("audio_feat_length") or _yaml_data(data).get("audio_feat_length", [2, 2])
    torch.manual_seed(meta["seed"])
    result = lipsync_clip(unet, vae, whisper, io["frames"].numpy(), io["landmarks"].numpy(), wave,
                          resolution=meta["resolution"], mask_path=folder / meta["mask_png"], settings=settings,
                          fps=meta["video_fps"], feat_length=feat_length)
    _exact("frame order", result.order, io["frame_order"].tolist())
    _exact("output frames", len(result.frames), meta["output_frames"])
    if not torch.equal(result.noise, io["noise"]):
        raise ValueError("seeded noise differs from the golden noise")
    errors = [rel_error(result.features, io["features"]), rel_error(result.matrices, io["matrix"]),
              rel_error(result.latents, io["final_latents"])]
    _uint8_close("output frames", result.frames, io["out_frames"])
    return max(errors)


def _yaml_data(path: Path) -> dict:
    import yaml

    return (yaml.safe_load(path.read_text()) or {}).get("data", {})


_KINDS = {"pipeline": _pipeline_case, "affine": _affine_case, "unet": _unet_case, "audio": _audio_case, "masks": _masks_case, "denoise": _denoise_case}


@contextmanager
def one_thread():
    """Run on one torch thread: these tiny models make thousands of small ops, where a second thread
    only adds synchronisation (on a busy 2-core machine a UNet call took 20 s with 2 threads, 0.2 s with
    one). The official results are the same with 1 and 2 threads."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _run(kind: str, folder: Path, meta: dict) -> float:
    with one_thread(), torch.no_grad():
        return _KINDS[kind](folder, meta)


def discover(folder: Path) -> Iterator[tuple[str, Callable[[], float]]]:
    """(`latentsync:<case>`, runner) for every case JSON of a known kind; a runner returns the largest
    relative error of its float checks and raises when an exact check fails."""
    folder = Path(folder)
    for path in sorted(folder.glob("*.json")):
        meta = json.loads(path.read_text())
        kind = meta.get("kind") if isinstance(meta, dict) else None
        if kind in _KINDS:
            name = path.name[: -len(".json")]
            yield f"latentsync:{name}", (lambda m=meta, k=kind: _run(k, folder, m))
