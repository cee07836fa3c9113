"""Official HuMo checkpoint keys -> our module names.

diffusers' `convert_wan_transformer_to_diffusers` handles the Wan 2.1 part; its plain string
replacements also hit HuMo's audio keys ("cross_attn" inside "audio_cross_attn_wrapper"), so we
rename those mangled prefixes afterwards, and map the audio projection's wrapper names.
"""
from __future__ import annotations

from diffusers.loaders.single_file_utils import convert_wan_transformer_to_diffusers

# Prefixes that repackaged copies of the checkpoints carry in front of every key.
KNOWN_PREFIXES = ("model.diffusion_model.", "diffusion_model.", "module.", "model.")

_AUDIO_RENAMES = (
    # (what diffusers' conversion leaves, our name)
    ("audio_attn2_wrapper.audio_attn2.to_out.0.", "audio_attn.to_out."),
    ("audio_attn2_wrapper.audio_attn2.", "audio_attn."),
    ("audio_attn2_wrapper.norm1_audio.", "norm_audio."),
    ("audio_proj.audio_proj_glob_1.layer.", "audio_proj.linear_1."),
    ("audio_proj.audio_proj_glob_2.layer.", "audio_proj.linear_2."),
    ("audio_proj.audio_proj_glob_3.layer.", "audio_proj.linear_3."),
    ("audio_proj.audio_proj_glob_norm.layer.", "audio_proj.norm."),
)


def strip_common_prefix(keys: list[str]) -> str:
    """The known prefix that every key shares ('' if none)."""
    for prefix in KNOWN_PREFIXES:
        if keys and all(k.startswith(prefix) for k in keys):
            return prefix
    return ""


def official_to_ours(key: str) -> str:
    """Map one official (prefix-free) DiT key to our parameter name."""
    new = next(iter(convert_wan_transformer_to_diffusers({key: None})))
    for old, ours in _AUDIO_RENAMES:
        if old in new:
            new = new.replace(old, ours)
    return new


def key_map(official_keys: list[str]) -> dict[str, str]:
    """{our name: official key as stored} for a whole checkpoint (prefix stripped first)."""
    prefix = strip_common_prefix(official_keys)
    return {official_to_ours(k[len(prefix):]): k for k in official_keys}
