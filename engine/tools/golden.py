"""Run golden cases (files in the format of shared/golden) through the engine's real loaders.

Each case returns (name, relative error, detail). Used by `python -m engine check-golden DIR`
and by the test suite, so both check exactly the same thing.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import torch

TOLERANCE = 1e-4


@dataclass
class CaseResult:
    name: str
    rel_error: float
    detail: str = ""
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.rel_error <= TOLERANCE


def rel_error(ours: torch.Tensor, ref: torch.Tensor) -> float:
    ours, ref = ours.double(), ref.double()
    if ours.shape != ref.shape:
        raise ValueError(f"shape {tuple(ours.shape)} != golden {tuple(ref.shape)}")
    denom = ref.norm().item()
    return (ours - ref).norm().item() / (denom if denom > 0 else 1.0)


def _load_io(folder: Path, name: str) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(folder / name))


def dit_shape_from_meta(meta: dict):
    from engine.humo.variants import DiTShape

    c, a = meta["config"], meta.get("audio", {})
    return DiTShape(dim=c["dim"], ffn_dim=c["ffn_dim"], num_heads=c["num_heads"], num_layers=c["num_layers"],
                    in_dim=c["in_dim"], text_dim=c["text_dim"], out_dim=c["out_dim"], freq_dim=c["freq_dim"],
                    text_len=c["text_len"], eps=c["eps"], patch_size=tuple(c["patch_size"]),
                    audio_channels=a.get("channels", 1280), audio_intermediate_dim=a.get("intermediate_dim", 512),
                    audio_dim=a.get("dim", 1536))


def _dit_case(folder: Path, meta: dict, dtype: torch.dtype = torch.float32, float32_residual: bool = True) -> float:
    """One DiT forward through the real loader; in `dtype` with the inputs cast as the pipeline casts them."""
    from engine.humo.dit_loader import load_dit

    model = load_dit(dit_shape_from_meta(meta), folder / meta["checkpoint"], dtype=dtype)
    model.float32_residual = float32_residual
    io = _load_io(folder, meta["io"])
    y = io["y"][None].to(dtype) if "y" in io else None
    with torch.no_grad():
        (out,) = model(io["x"][None].to(dtype), io["t"].reshape(1), io["context"][None].to(dtype),
                       io["audio"][None].to(dtype), y=y, return_dict=False)
    return rel_error(out[0].float(), io["out"])


def _sample_case(folder: Path, meta: dict, dtype: torch.dtype = torch.float32, float32_residual: bool = True) -> float:
    """The whole denoising loop (float32 solver state, the DiT in `dtype`) through the real loader."""
    from engine.humo.dit_loader import load_dit
    from engine.humo.conditions import channel_conditions
    from engine.humo.sampler import Conditions, denoise, pad_text, seeded_noise

    dit_meta = json.loads((folder / meta["model_meta"]).read_text())
    shape = dit_shape_from_meta(dit_meta)
    model = load_dit(shape, folder / meta["model"], dtype=dtype)
    model.float32_residual = float32_residual
    io = _load_io(folder, meta["io"])
    T, R, h, w = meta["latent_frames"], meta["ref_frames"], meta["latent_h"], meta["latent_w"]
    noise = seeded_noise(meta["seed"], T + R, h, w)
    if "noise" in io and not torch.equal(noise, io["noise"]):
        raise ValueError("seeded noise differs from the golden noise")
    cond = Conditions(text=pad_text(io["context"], shape.text_len), null=pad_text(io["context_null"], shape.text_len),
                      audio=io["audio"], ref_frames=R, ref_latents=io["ref_latents"])
    reference = "channel" if shape.in_dim > shape.out_dim else "append"
    if reference == "channel":
        cond.y_c, cond.y_null = channel_conditions(io["zero_latents"], io["ref_latents"], T, R)

    def velocity(x, t, text, audio, y):
        cast = (lambda v: None if v is None else v.to(dtype))
        return model(cast(x), t, cast(text), cast(audio), cast(y), return_dict=False)[0].float()

    scales = meta["scales"]
    with torch.no_grad():
        out = denoise(velocity, noise, cond, reference=reference, mode=meta["mode"],
                      scales={k: v for k, v in scales.items() if k.startswith("scale_")}, steps=meta["steps"],
                      shift=meta["shift"], switch_t=scales.get("step_change"))
    return rel_error(out, io["final"])


def _t5_case(folder: Path, meta: dict) -> float:
    from engine.humo.text import load_umt5, umt5_config

    c = meta["config"]
    cfg = umt5_config(c["vocab"], c["dim"], c["dim_attn"] // c["num_heads"], c["dim_ffn"], c["num_layers"],
                      c["num_heads"], c["num_buckets"])
    model = load_umt5(folder / meta["checkpoint"], cfg, dtype=torch.float32)
    io = _load_io(folder, meta["io"])
    with torch.no_grad():
        out = model(input_ids=io["ids"], attention_mask=io["mask"]).last_hidden_state
    mask = io["mask"].bool()
    return rel_error(out[mask], io["out"][mask])


def _vae_case(folder: Path, meta: dict) -> float:
    from engine.humo.vae import WanVAE

    vae = WanVAE(folder / meta["checkpoint"], dtype=torch.float32)
    io = _load_io(folder, meta["io"])
    return max(rel_error(vae.encode(io["video"]), io["latent"]), rel_error(vae.decode(io["latent"]), io["decoded"]))


def _unipc_case(folder: Path, meta: dict, name: str) -> float:
    from engine.humo.sampler import make_scheduler

    case = meta["cases"][name]
    io = _load_io(folder, "unipc.io.safetensors")
    scheduler = make_scheduler(case["steps"], case["shift"])
    if scheduler.timesteps.tolist() != case["timesteps"]:
        raise ValueError("timesteps differ")
    err_sigmas = rel_error(scheduler.sigmas, torch.tensor(case["sigmas"], dtype=torch.float32))
    x = io[f"{name}.start"].clone()
    for t in scheduler.timesteps:
        v = torch.tanh(x) * (t / 1000) - 0.3 * x
        x = scheduler.step(v, t, x, return_dict=False)[0]
    return max(err_sigmas, rel_error(x, io[f"{name}.end"]))


def _audio_enc_case(folder: Path, meta: dict) -> float:
    from engine.humo.audio import group_hidden_states

    io = _load_io(folder, "audio.io.safetensors")
    return rel_error(group_hidden_states(io["enc.in"]), io["enc.out"])


def _audio_window_case(folder: Path, meta: dict, name: str) -> float:
    from engine.humo.audio import latent_windows

    io = _load_io(folder, "audio.io.safetensors")
    return rel_error(latent_windows(io["window.in"], meta["cases"][name]["end"]), io[f"window.out.{name}"])


def _keys_case(folder: Path, meta: dict, kind: str) -> float:
    """Every official key maps to one of our parameters with the right shape; nothing left over."""
    from engine.tools import manifests

    problems = manifests.check_manifest(kind, meta)
    if problems:
        raise ValueError("; ".join(problems[:3]) + (f" (+{len(problems) - 3} more)" if len(problems) > 3 else ""))
    return 0.0


def discover(folder: str | Path) -> Iterator[tuple[str, Callable[[], float]]]:
    """(case name, runner) for every case found in a golden folder and its model subfolders.

    A folder whose README names MuseTalk or LatentSync holds that model's cases; the top folder
    holds HuMo's. `check-golden golden/musetalk` runs one subfolder alone.
    """
    folder = Path(folder)
    family = _family(folder)
    if family is not None:
        yield from family(folder)
        return
    for sub in sorted(p for p in folder.iterdir() if p.is_dir() and _family(p) is not None):
        yield from _family(sub)(sub)
    for path in sorted(folder.glob("*.json")):
        meta = json.loads(path.read_text())
        stem = path.name[: -len(".json")]
        if stem.endswith(".keys"):
            keys = meta.get("keys", {})
            kind = "dit" if "config" in meta else ("t5" if "token_embedding.weight" in keys else "vae")
            yield f"keys:{stem[:-5]}", (lambda m=meta, k=kind: _keys_case(folder, m, k))
        elif "solver" in meta and "cases" in meta:
            for name in meta["cases"]:
                yield f"unipc:{name}", (lambda m=meta, n=name: _unipc_case(folder, m, n))
        elif "enc" in meta and "window" in meta:
            yield "audio:features", (lambda m=meta: _audio_enc_case(folder, m))
            for name in meta["cases"]:
                yield f"audio:windows_{name}", (lambda m=meta, n=name: _audio_window_case(folder, m, n))
        elif "model_meta" in meta:
            yield f"sample:{stem}", (lambda m=meta: _sample_case(folder, m))
        elif "config" in meta and "in_dim" in meta["config"]:
            yield f"dit:{stem}", (lambda m=meta: _dit_case(folder, m))
        elif "config" in meta and "vocab" in meta["config"]:
            yield f"t5:{stem}", (lambda m=meta: _t5_case(folder, m))
        elif "config" in meta and "z_dim" in meta["config"]:
            yield f"vae:{stem}", (lambda m=meta: _vae_case(folder, m))


def _family(folder: Path):
    """The discover function of a model's golden subfolder, or None for HuMo's own folder."""
    readme = folder / "README.md"
    head = readme.read_text(errors="replace")[:400] if readme.is_file() else ""
    if "MuseTalk" in head:
        from engine.tools.golden_musetalk import discover as musetalk_cases
        return musetalk_cases
    if "LatentSync" in head:
        from engine.tools.golden_latentsync import discover as latentsync_cases
        return latentsync_cases
    return None


def run_case(name: str, runner: Callable[[], float]) -> CaseResult:
    try:
        return CaseResult(name, runner())
    except Exception as err:  # a case that cannot run is a failure, reported, not a crash
        return CaseResult(name, float("inf"), error=f"{type(err).__name__}: {err}")


def run_all(folder: str | Path) -> list[CaseResult]:
    return [run_case(name, runner) for name, runner in discover(folder)]
