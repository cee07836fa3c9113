"""Key manifests: the real model configs, built on empty weights, against the official key lists.

`check_manifest` returns a list of problems (empty = every official key maps to one of our
parameters with the right shape, and every parameter is fed by exactly one key).
"""
from __future__ import annotations


def _compare(ours: dict[str, tuple], names: dict[str, str], official: dict[str, list]) -> list[str]:
    problems = []
    for name, shape in ours.items():
        key = names.get(name)
        if key is None or key not in official:
            problems.append(f"parameter {name} has no official key")
        elif tuple(official[key]) != tuple(shape):
            problems.append(f"{key}: official shape {official[key]} != ours {list(shape)}")
    used = {names[n] for n in ours if n in names}
    leftover = sorted(set(official) - used)
    problems += [f"official key {k} is not used" for k in leftover]
    return problems


def check_manifest(kind: str, meta: dict) -> list[str]:
    official = meta["keys"]
    if kind == "dit":
        from engine.tools.golden import dit_shape_from_meta
        from engine.humo.convert import key_map
        from engine.humo.dit_loader import build_dit_empty

        model = build_dit_empty(dit_shape_from_meta(meta))
        ours = {n: tuple(p.shape) for n, p in model.state_dict().items()}
        problems = _compare(ours, key_map(list(official)), official)
        total = sum(p.numel() for p in model.parameters())
        if "parameters" in meta and total != meta["parameters"]:
            problems.append(f"parameter count {total} != official {meta['parameters']}")
        return problems
    if kind == "t5":
        from engine.humo.text import UMT5_XXL, build_umt5_empty, umt5_config, wan_t5_key_map

        cfg = umt5_config(**UMT5_XXL)
        model = build_umt5_empty(cfg)
        ours = {n: tuple(p.shape) for n, p in model.state_dict().items()}
        return _compare(ours, wan_t5_key_map(cfg.num_layers), official)
    if kind == "vae":
        from engine.humo.vae import WAN21_VAE, build_vae_empty, vae_key_map

        model = build_vae_empty(**WAN21_VAE)
        ours = {n: tuple(p.shape) for n, p in model.state_dict().items()}
        return _compare(ours, vae_key_map(list(official)), official)
    raise ValueError(f"unknown manifest kind {kind}")
