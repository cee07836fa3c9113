"""The tiny variant: random weights at tiny sizes, written in the released files' layouts.

Everything is written exactly as the real downloads are laid out, so the real loaders read it;
the studio labels it a pipeline check, never a real model.
"""
from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import torch

from engine.humo.variants import TINY, Variant

TINY_T5 = dict(d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4)
TINY_VAE_BASE_DIM = 8
TINY_WHISPER = dict(d_model=32, encoder_layers=32, encoder_attention_heads=2, encoder_ffn_dim=64,
                    decoder_layers=1, decoder_attention_heads=2, decoder_ffn_dim=64, num_mel_bins=128,
                    vocab_size=64, max_source_positions=1500, max_target_positions=32,
                    pad_token_id=0, bos_token_id=1, eos_token_id=2, decoder_start_token_id=1,
                    begin_suppress_tokens=None, suppress_tokens=None)
CORPUS = (
    "A woman speaks to the camera in a bright studio, smiling and nodding. A man sings on a stage "
    "under warm lights. The person talks, gestures with both hands, and looks at the viewer. "
    "Close-up portrait, natural light, realistic, high quality, detailed face, clear lip movement."
)


def official_dit_keys(num_layers: int) -> list[str]:
    """Key names of a HuMo DiT checkpoint in the official layout (as in HuMo-1.7B/ema.pth)."""
    keys = ["patch_embedding.weight", "patch_embedding.bias"]
    for mod in ("text_embedding.0", "text_embedding.2", "time_embedding.0", "time_embedding.2", "time_projection.1"):
        keys += [f"{mod}.weight", f"{mod}.bias"]
    for i in range(num_layers):
        b = f"blocks.{i}."
        keys.append(b + "modulation")
        for attn in ("self_attn", "cross_attn", "audio_cross_attn_wrapper.audio_cross_attn"):
            for p in "qkvo":
                keys += [f"{b}{attn}.{p}.weight", f"{b}{attn}.{p}.bias"]
            keys += [f"{b}{attn}.norm_q.weight", f"{b}{attn}.norm_k.weight"]
        keys += [b + "norm3.weight", b + "norm3.bias"]
        keys += [b + "ffn.0.weight", b + "ffn.0.bias", b + "ffn.2.weight", b + "ffn.2.bias"]
        keys += [b + "audio_cross_attn_wrapper.norm1_audio.weight", b + "audio_cross_attn_wrapper.norm1_audio.bias"]
    keys += ["head.modulation", "head.head.weight", "head.head.bias"]
    for name in ("audio_proj_glob_1", "audio_proj_glob_2", "audio_proj_glob_3", "audio_proj_glob_norm"):
        keys += [f"audio_proj.{name}.layer.weight", f"audio_proj.{name}.layer.bias"]
    return keys


def _write_dit(variant: Variant, path: Path) -> None:
    from engine.humo.convert import key_map
    from engine.humo.dit import dit_from_shape

    model = dit_from_shape(variant.dit)
    ours = model.state_dict()
    names = key_map(official_dit_keys(variant.dit.num_layers))
    assert set(names) == set(ours), "official key list and model disagree"
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {official: ours[name].contiguous() for name, official in names.items()}
    if path.name.endswith(".index.json"):
        _write_sharded(state, path)
    else:
        torch.save(state, path)


def _write_sharded(state: dict, index_path: Path, shards: int = 2) -> None:
    """Sharded safetensors + index, the layout of HuMo-17B/."""
    from safetensors.torch import save_file

    keys = sorted(state)
    stem = index_path.name[: -len(".safetensors.index.json")]
    weight_map = {}
    for i in range(shards):
        part = keys[i::shards]
        name = f"{stem}-{i + 1:05d}-of-{shards:05d}.safetensors"
        save_file({k: state[k] for k in part}, str(index_path.parent / name))
        weight_map.update({k: name for k in part})
    index_path.write_text(json.dumps({"metadata": {}, "weight_map": weight_map}, indent=1))


def _write_vae(path: Path) -> None:
    from engine.humo.vae import WAN21_VAE, build_vae_empty, vae_key_map

    official = json.loads(resources.files("engine.tools.data").joinpath("wan21_vae_keys.json").read_text())
    from diffusers import AutoencoderKLWan

    cfg = dict(WAN21_VAE, base_dim=TINY_VAE_BASE_DIM)
    model = AutoencoderKLWan(base_dim=cfg["base_dim"], z_dim=cfg["z_dim"], dim_mult=list(cfg["dim_mult"]),
                             num_res_blocks=cfg["num_res_blocks"], temperal_downsample=list(cfg["temperal_downsample"]),
                             attn_scales=[])
    ours = model.state_dict()
    names = vae_key_map(official)
    assert set(names) == set(ours), "VAE key list and model disagree"
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({off: ours[name].contiguous() for name, off in names.items()}, path)
    del build_vae_empty


def _write_tokenizer(folder: Path) -> int:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<pad>", "</s>", "<unk>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator([CORPUS] * 4, trainer=trainer)
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>",
                                   model_max_length=512)
    folder.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(str(folder))
    return tok.get_vocab_size()


def _write_t5(variant: Variant, path: Path, vocab: int) -> None:
    from transformers import UMT5EncoderModel

    from engine.humo.text import umt5_config, wan_t5_key_map

    cfg = umt5_config(vocab_size=vocab, **TINY_T5)
    assert cfg.d_model == variant.dit.text_dim
    model = UMT5EncoderModel(cfg)
    ours = model.state_dict()
    names = wan_t5_key_map(cfg.num_layers)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({wan: ours[name].contiguous() for name, wan in names.items()}, path)


def _write_whisper(variant: Variant, folder: Path) -> None:
    from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperForConditionalGeneration

    cfg = WhisperConfig(**TINY_WHISPER)
    assert cfg.d_model == variant.dit.audio_channels
    model = WhisperForConditionalGeneration(cfg)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(folder), safe_serialization=True)
    WhisperFeatureExtractor(feature_size=cfg.num_mel_bins).save_pretrained(str(folder))


def make_tiny(weights_dir: str | Path, seed: int = 0, variant: Variant = TINY) -> Path:
    """Write the tiny variant's complete weights under `weights_dir` (layout of `variant`'s file fields)."""
    root = Path(weights_dir)
    torch.manual_seed(seed)
    _write_dit(variant, root / variant.dit_files[0])
    _write_vae(root / variant.vae_file)
    vocab = _write_tokenizer(root / variant.tokenizer_dir)
    _write_t5(variant, root / variant.t5_file, vocab)
    _write_whisper(variant, root / variant.whisper_dir)
    from engine.humo.variants import TINY_17B

    if variant is TINY:
        _write_dit(TINY_17B, root / TINY_17B.dit_files[0])
    (root / "tiny" / "README.txt").write_text(
        "Tiny HuMo variant: RANDOM weights at tiny sizes, for checking the pipeline end to end.\n"
        "It does not make meaningful videos. Made by: python -m engine make-tiny\n")
    return root
