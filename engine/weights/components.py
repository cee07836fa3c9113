"""The component table: which files of which Hub repository each variant needs.

A variant is a few *components* (DiT, VAE, text encoder, tokenizer, audio encoder, optional
vocal separator); each component is a handful of files from one Hub repository, laid out under
the weights folder as the official download commands lay them out.
"""
from __future__ import annotations

import os
import shlex
from dataclasses import dataclass

from engine.errors import WeightsError
from engine.humo.variants import VARIANTS, Variant, get_variant

DEFAULT_WEIGHTS_DIR = "weights"
WEIGHTS_DIR_ENV = "HUMO_WEIGHTS_DIR"

GB = 1000**3
MB = 1000**2

# Sizes of the released files, in bytes. They are approximate (rounded from the Hub's file
# listings) and only used for planning and display: exact sizes come from the Hub at download
# time and from the manifest afterwards.
APPROX_BYTES = {
    "HuMo-1.7B/ema.pth": int(3.5 * GB),
    "HuMo-17B/shards": int(34.0 * GB),
    "Wan2.1_VAE.pth": int(508 * MB),
    "models_t5_umt5-xxl-enc-bf16.pth": int(11.4 * GB),
    "google/umt5-xxl": int(21.5 * MB),
    "whisper-large-v3/model.safetensors": int(3.09 * GB),
    "Kim_Vocal_2.onnx": int(66.8 * MB),
    "musetalkV15/unet.pth": int(3.4 * GB),
    "sd-vae-ft-mse/diffusion_pytorch_model.bin": int(335 * MB),
    "whisper-tiny/pytorch_model.bin": int(151 * MB),
    "dw-ll_ucoco_384.onnx": int(134 * MB),
    "buffalo_l det_10g + 2d106det": int(21 * MB),
    "face-parse-bisent": int(100 * MB),
    "latentsync_unet.pt": int(5.07 * GB),
    "whisper/tiny.pt": int(75.6 * MB),
    "sd-vae-ft-mse/diffusion_pytorch_model.safetensors": int(335 * MB),
}


@dataclass(frozen=True)
class Component:
    """A set of files from one Hub repository (or made locally when `repo_id` is None).

    `files` are paths inside the repository; they land under `<weights>/<local_dir>/`.
    An entry ending in "/" is a folder that must exist and hold at least one file (only used
    for locally made weights, whose folder contents belong to the tool that makes them).
    `index` names a safetensors index json (one of `files`) whose weight_map lists more files:
    the shards, which sit next to it.
    """

    key: str
    label: str
    repo_id: str | None
    local_dir: str
    files: tuple[str, ...]
    approx_bytes: int
    index: str | None = None
    optional: bool = False
    revision: str = "main"
    licence: str = ""          # set when the files' licence restricts use: fetched only when asked for by name

    @property
    def allow_patterns(self) -> list[str]:
        """The same selection as `snapshot_download(allow_patterns=...)` patterns."""
        pats = list(self.files)
        if self.index:
            pats.append(f"{posix_dirname(self.index)}/*.safetensors" if "/" in self.index else "*.safetensors")
        return pats

    def local_rel(self, repo_path: str) -> str:
        """Path of a repository file relative to the weights folder."""
        return f"{self.local_dir}/{repo_path}" if self.local_dir else repo_path


def posix_dirname(path: str) -> str:
    return path.rsplit("/", 1)[0] if "/" in path else ""


HUMO_REPO = "bytedance-research/HuMo"
WAN_REPO = "Wan-AI/Wan2.1-T2V-1.3B"
WHISPER_REPO = "openai/whisper-large-v3"
SEPARATOR_REPO = "huangjackson/Kim_Vocal_2"

DIT_1_7B = Component(
    key="dit", label="HuMo-1.7B DiT", repo_id=HUMO_REPO, local_dir="HuMo",
    files=("HuMo-1.7B/ema.pth",), approx_bytes=APPROX_BYTES["HuMo-1.7B/ema.pth"])
# The index lists the shards; the zero_vae_*.pt files of the repo are not needed (the
# engine computes zero latents itself), nor the other model's folder.
DIT_17B = Component(
    key="dit", label="HuMo-17B DiT", repo_id=HUMO_REPO, local_dir="HuMo",
    files=("HuMo-17B/humo.safetensors.index.json",), index="HuMo-17B/humo.safetensors.index.json",
    approx_bytes=APPROX_BYTES["HuMo-17B/shards"])
VAE = Component(
    key="vae", label="Wan2.1 VAE", repo_id=WAN_REPO, local_dir="Wan2.1-T2V-1.3B",
    files=("Wan2.1_VAE.pth",), approx_bytes=APPROX_BYTES["Wan2.1_VAE.pth"])
T5 = Component(
    key="t5", label="umT5-XXL text encoder (bf16)", repo_id=WAN_REPO, local_dir="Wan2.1-T2V-1.3B",
    files=("models_t5_umt5-xxl-enc-bf16.pth",), approx_bytes=APPROX_BYTES["models_t5_umt5-xxl-enc-bf16.pth"])
TOKENIZER = Component(
    key="tokenizer", label="umT5 tokenizer", repo_id=WAN_REPO, local_dir="Wan2.1-T2V-1.3B",
    files=tuple(f"google/umt5-xxl/{n}" for n in
                ("special_tokens_map.json", "spiece.model", "tokenizer.json", "tokenizer_config.json")),
    approx_bytes=APPROX_BYTES["google/umt5-xxl"])
# Only what the audio encoder needs: no decoder-only extras, tokenizer or other weight formats.
WHISPER = Component(
    key="whisper", label="Whisper large-v3 (audio encoder)", repo_id=WHISPER_REPO, local_dir="whisper-large-v3",
    files=("config.json", "preprocessor_config.json", "model.safetensors"),
    approx_bytes=APPROX_BYTES["whisper-large-v3/model.safetensors"])
SEPARATOR = Component(
    key="separator", label="Kim_Vocal_2 vocal separator", repo_id=SEPARATOR_REPO, local_dir="audio_separator",
    files=("Kim_Vocal_2.onnx",), approx_bytes=APPROX_BYTES["Kim_Vocal_2.onnx"], optional=True)

SHARED = (VAE, T5, TOKENIZER, WHISPER)


@dataclass(frozen=True)
class DubModel:
    """A dubbing model's entry in the table (duck-types the fields of `Variant` the weights code reads).

    Its files sit under `<weights>/<name>/` in the official `models/` layout, so the folder is
    the `models_dir` the model's loader reads.
    """
    name: str
    label: str
    random_weights: bool = False


INSIGHTFACE_LICENCE = ("insightface's buffalo_l models are licensed for non-commercial research use only; "
                       "without them LatentSync aligns faces from DWPose or the face box")
MUSETALK_1_5 = DubModel("musetalk-1.5", "MuseTalk 1.5")
MUSETALK_DIR = MUSETALK_1_5.name
MUSETALK_COMPONENTS = (
    Component("unet", "MuseTalk 1.5 UNet", "TMElyralab/MuseTalk", MUSETALK_DIR,
              ("musetalkV15/musetalk.json", "musetalkV15/unet.pth"), APPROX_BYTES["musetalkV15/unet.pth"]),
    Component("vae", "sd-vae-ft-mse", "stabilityai/sd-vae-ft-mse", f"{MUSETALK_DIR}/sd-vae",
              ("config.json", "diffusion_pytorch_model.bin"), APPROX_BYTES["sd-vae-ft-mse/diffusion_pytorch_model.bin"]),
    Component("whisper", "Whisper tiny (audio encoder)", "openai/whisper-tiny", f"{MUSETALK_DIR}/whisper",
              ("config.json", "pytorch_model.bin", "preprocessor_config.json"),
              APPROX_BYTES["whisper-tiny/pytorch_model.bin"]),
    Component("face_parsing", "BiSeNet face parsing", "ManyOtherFunctions/face-parse-bisent",
              f"{MUSETALK_DIR}/face-parse-bisent", ("79999_iter.pth", "resnet18-5c106cde.pth"),
              APPROX_BYTES["face-parse-bisent"]),
    # Without it the face track uses OpenCV's bundled Haar cascade (boxes, no landmarks).
    Component("dwpose", "DWPose face landmarks (ONNX)", "yzd-v/DWPose", f"{MUSETALK_DIR}/dwpose",
              ("dw-ll_ucoco_384.onnx",), APPROX_BYTES["dw-ll_ucoco_384.onnx"], optional=True),
)
LATENTSYNC_1_6 = DubModel("latentsync-1.6", "LatentSync 1.6")
LATENTSYNC_DIR = LATENTSYNC_1_6.name
LATENTSYNC_COMPONENTS = (
    Component("unet", "LatentSync 1.6 3D UNet", "ByteDance/LatentSync-1.6", LATENTSYNC_DIR,
              ("latentsync_unet.pt",), APPROX_BYTES["latentsync_unet.pt"]),
    Component("whisper", "Whisper tiny (openai format)", "ByteDance/LatentSync-1.6", LATENTSYNC_DIR,
              ("whisper/tiny.pt",), APPROX_BYTES["whisper/tiny.pt"]),
    Component("vae", "sd-vae-ft-mse", "stabilityai/sd-vae-ft-mse", f"{LATENTSYNC_DIR}/sd-vae",
              ("config.json", "diffusion_pytorch_model.safetensors"),
              APPROX_BYTES["sd-vae-ft-mse/diffusion_pytorch_model.safetensors"]),
    # The same optional landmark file as MuseTalk's (one copy, under musetalk-1.5/): steadier alignment.
    MUSETALK_COMPONENTS[-1],
    # The official face finder (engine.dub.face.insight), where the official checkpoints/ folder keeps it.
    Component("insightface", "insightface SCRFD + 106-point landmarks (ONNX)", "public-data/insightface",
              f"{LATENTSYNC_DIR}/auxiliary", ("models/buffalo_l/det_10g.onnx", "models/buffalo_l/2d106det.onnx"),
              APPROX_BYTES["buffalo_l det_10g + 2d106det"], optional=True, licence=INSIGHTFACE_LICENCE),
)
DUB_MODELS: dict[str, DubModel] = {MUSETALK_1_5.name: MUSETALK_1_5, LATENTSYNC_1_6.name: LATENTSYNC_1_6}


def _tiny_components(v: Variant) -> tuple[Component, ...]:
    """The tiny variant's files are written by `python -m engine make-tiny DIR`, never downloaded."""
    return (
        Component("dit", "tiny DiT", None, "", tuple(v.dit_files), 0),
        Component("vae", "tiny VAE", None, "", (v.vae_file,), 0),
        Component("t5", "tiny text encoder", None, "", (v.t5_file,), 0),
        Component("tokenizer", "tiny tokenizer", None, "", (v.tokenizer_dir.rstrip("/") + "/",), 0),
        Component("whisper", "tiny audio encoder", None, "", (v.whisper_dir.rstrip("/") + "/",), 0),
    )


COMPONENTS: dict[str, tuple[Component, ...]] = {
    "humo-1.7b": (DIT_1_7B, *SHARED, SEPARATOR),
    "humo-17b": (DIT_17B, *SHARED, SEPARATOR),
    "tiny": _tiny_components(VARIANTS["tiny"]),
    MUSETALK_1_5.name: MUSETALK_COMPONENTS,
    LATENTSYNC_1_6.name: LATENTSYNC_COMPONENTS,
}


def components_for(variant: Variant | DubModel | str, include_optional: bool = True) -> tuple[Component, ...]:
    v = _variant(variant)
    comps = COMPONENTS.get(v.name)
    if comps is None and isinstance(v, Variant):
        comps = _tiny_components(v) if v.random_weights else ()
    return tuple(c for c in comps if include_optional or not c.optional)


def default_weights_dir() -> str:
    return os.environ.get(WEIGHTS_DIR_ENV) or DEFAULT_WEIGHTS_DIR


def fetch_command(variant: Variant | str, weights_dir: str | os.PathLike | None = None,
                  with_separator: bool = False) -> str:
    """The exact command that gets a variant's files into `weights_dir`."""
    v = _variant(variant)
    wd = shlex.quote(str(weights_dir if weights_dir is not None else default_weights_dir()))
    if isinstance(v, DubModel):
        return f"python -m engine download --model {v.name} --weights {wd}"
    if v.random_weights:
        return f"python -m engine make-tiny {wd}"
    extra = " --with-separator" if with_separator else ""
    return f"python -m engine download --variant {v.name} --weights {wd}{extra}"


def _variant(variant: Variant | DubModel | str) -> Variant | DubModel:
    if isinstance(variant, (Variant, DubModel)):
        return variant
    if variant in DUB_MODELS:
        return DUB_MODELS[variant]
    try:
        return get_variant(variant)
    except KeyError as err:
        raise WeightsError(str(err.args[0])) from None
