"""Reading checkpoint files and loading them into modules built on empty weights.

One code path serves the released checkpoints, the tiny variant and the golden tests:
`read_checkpoint` opens a `.pth` state dict, a `.safetensors` file or a sharded
`*.safetensors.index.json` lazily (mmap), and `load_into` checks every key and shape
before assigning the tensors, so a bad file fails with a message naming the file and key.
"""
from __future__ import annotations

import json
import logging
import zipfile
from pathlib import Path
from typing import Callable, Iterable

import torch

from engine.errors import WeightsError

log = logging.getLogger(__name__)


class Checkpoint:
    """A lazily-read mapping {key: tensor} over one or more files."""

    def __init__(self, path: Path, getters: dict[str, Callable[[], torch.Tensor]], shapes: dict[str, tuple], files: dict[str, Path]):
        self.path = path
        self._getters = getters
        self.shapes = shapes
        self.files = files  # key -> the file it lives in (for messages)

    def keys(self) -> list[str]:
        return list(self._getters)

    def get(self, key: str) -> torch.Tensor:
        return self._getters[key]()


def _fetch_hint(path: Path) -> str:
    return "Re-download it (python -m engine download --variant ...) or check the --weights folder."


def _read_pth(path: Path) -> Checkpoint:
    if not zipfile.is_zipfile(path):
        raise WeightsError(f"Weight file {path} is truncated or not a PyTorch checkpoint.", hint=_fetch_hint(path))
    try:
        sd = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
    except Exception as err:  # torch raises several types for damaged archives
        raise WeightsError(f"Weight file {path} could not be read ({type(err).__name__}: {err}).", hint=_fetch_hint(path)) from None
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict):
        raise WeightsError(f"Weight file {path} does not hold a state dict.", hint=_fetch_hint(path))
    tensors = {k: v for k, v in sd.items() if isinstance(v, torch.Tensor)}
    return Checkpoint(path, {k: (lambda v=v: v) for k, v in tensors.items()},
                      {k: tuple(v.shape) for k, v in tensors.items()}, {k: path for k in tensors})


def _open_safetensors(path: Path):
    from safetensors import safe_open

    if not path.is_file():
        raise WeightsError(f"Weight file {path} is missing.", hint=_fetch_hint(path))
    try:
        handle = safe_open(str(path), framework="pt", device="cpu")
    except Exception as err:
        raise WeightsError(f"Weight file {path} is truncated or corrupt ({err}).", hint=_fetch_hint(path)) from None
    return handle


def _read_safetensors(paths: Iterable[Path], root: Path) -> Checkpoint:
    getters, shapes, files = {}, {}, {}
    for path in paths:
        handle = _open_safetensors(path)
        for key in handle.keys():
            sl = handle.get_slice(key)
            shapes[key] = tuple(sl.get_shape())
            getters[key] = (lambda h=handle, k=key: h.get_tensor(k))
            files[key] = path
    return Checkpoint(root, getters, shapes, files)


def read_checkpoint(path: str | Path) -> Checkpoint:
    """Open a checkpoint: `.pth`/`.pt`, `.safetensors`, a `*.index.json`, or a folder holding one index."""
    path = Path(path)
    if path.is_dir():
        indexes = sorted(path.glob("*.safetensors.index.json"))
        singles = sorted(path.glob("*.safetensors"))
        if indexes:
            path = indexes[0]
        elif len(singles) == 1:
            path = singles[0]
        else:
            raise WeightsError(f"No checkpoint index or single .safetensors file found in {path}.", hint=_fetch_hint(path))
    if not path.exists():
        raise WeightsError(f"Weight file {path} is missing.", hint=_fetch_hint(path))
    if path.stat().st_size == 0:
        raise WeightsError(f"Weight file {path} is empty.", hint=_fetch_hint(path))
    name = path.name
    if name.endswith(".index.json"):
        try:
            index = json.loads(path.read_text())
            shard_names = sorted(set(index["weight_map"].values()))
        except Exception as err:
            raise WeightsError(f"Checkpoint index {path} is unreadable ({err}).", hint=_fetch_hint(path)) from None
        missing = [s for s in shard_names if not (path.parent / s).is_file()]
        if missing:
            raise WeightsError(f"Checkpoint shards missing next to {path}: {', '.join(missing)}.", hint=_fetch_hint(path))
        return _read_safetensors([path.parent / s for s in shard_names], path)
    if name.endswith(".safetensors"):
        return _read_safetensors([path], path)
    return _read_pth(path)


def load_into(
    module: torch.nn.Module,
    checkpoint: Checkpoint,
    names: dict[str, str],
    *,
    dtype: torch.dtype | None = None,
    keep_fp32: Callable[[str], bool] = lambda name: False,
    device: str | torch.device = "cpu",
    label: str = "model",
    ignore: Callable[[str], bool] = lambda key: False,
) -> list[str]:
    """Assign checkpoint tensors to `module` (built on empty weights).

    `names` maps our parameter name -> checkpoint key. A parameter without a key, or a key with
    the wrong shape, is an error naming the file and key. Checkpoint keys we do not use are
    returned (and logged) so the caller can report them; they are never silently dropped, except
    those `ignore` names on purpose (e.g. whisper's decoder, which HuMo never uses).
    """
    expected = dict(module.state_dict(keep_vars=True))
    missing = [n for n in expected if n not in names or names[n] not in checkpoint.shapes]
    if missing:
        first = missing[0]
        key = names.get(first, first)
        raise WeightsError(
            f"{label}: {len(missing)} weight(s) missing from {checkpoint.path}, first: '{key}'.",
            hint="The file is incomplete or belongs to another model; re-download it.",
        )
    state = {}
    converted: dict[tuple, torch.Tensor] = {}  # tied parameters (one key, several names) stay one tensor
    for ours, param in expected.items():
        key = names[ours]
        shape = tuple(checkpoint.shapes[key])
        if shape != tuple(param.shape):
            raise WeightsError(
                f"{label}: weight '{key}' in {checkpoint.files.get(key, checkpoint.path)} has shape {list(shape)}, "
                f"expected {list(param.shape)}.",
                hint="The file belongs to another model size or variant.",
            )
        target = param.dtype if dtype is None else (torch.float32 if keep_fp32(ours) else dtype)
        if (key, target) not in converted:
            tensor = checkpoint.get(key)
            converted[(key, target)] = tensor.to(device=device, dtype=target if tensor.is_floating_point() else tensor.dtype)
        state[ours] = converted[(key, target)]
    used = {names[n] for n in expected}
    unexpected = [k for k in checkpoint.keys() if k not in used and not ignore(k)]
    if unexpected:
        log.warning("%s: %d unused key(s) in %s ignored, first: %s", label, len(unexpected), checkpoint.path, ", ".join(unexpected[:5]))
    module.load_state_dict(state, strict=True, assign=True)
    return unexpected
