"""Prompt cleaning and the umT5-XXL text encoder, loaded from Wan's own `.pth` key layout."""
from __future__ import annotations

import html
import re
from collections import OrderedDict
from pathlib import Path

import torch
from accelerate import init_empty_weights
from transformers import UMT5Config, UMT5EncoderModel

from engine.errors import InputError, WeightsError
from engine.weights.loading import load_into, read_checkpoint

TEXT_LEN = 512

DEFAULT_NEGATIVE = (
    "色调艳丽，过曝，静态，细节模糊不清，字幕，风格，作品，画作，画面，静止，整体发灰，最差质量，低质量，JPEG压缩残留，"
    "丑陋的，残缺的，多余的手指，画得不好的手部，画得不好的脸部，畸形的，毁容的，形态畸形的肢体，手指融合，静止不动的画面，"
    "杂乱的背景，三条腿，背景人很多，倒着走"
)

# Wan's umT5-XXL encoder (models_t5_umt5-xxl-enc-bf16.pth).
UMT5_XXL = dict(vocab_size=256384, d_model=4096, d_kv=64, d_ff=10240, num_layers=24, num_heads=64,
                relative_attention_num_buckets=32, relative_attention_max_distance=128)


def clean_prompt(text: str) -> str:
    """ftfy fix, HTML-unescape twice, collapse whitespace, strip (as the official tokenizer wrapper)."""
    import ftfy

    text = ftfy.fix_text(text)
    text = html.unescape(html.unescape(text))
    return re.sub(r"\s+", " ", text).strip()


def umt5_config(vocab_size, d_model, d_kv, d_ff, num_layers, num_heads, relative_attention_num_buckets=32,
                relative_attention_max_distance=128) -> UMT5Config:
    return UMT5Config(vocab_size=vocab_size, d_model=d_model, d_kv=d_kv, d_ff=d_ff, num_layers=num_layers,
                      num_heads=num_heads, relative_attention_num_buckets=relative_attention_num_buckets,
                      relative_attention_max_distance=relative_attention_max_distance,
                      feed_forward_proj="gated-gelu", dropout_rate=0.0, layer_norm_epsilon=1e-6)


def wan_t5_key_map(num_layers: int) -> dict[str, str]:
    """{transformers UMT5EncoderModel name: Wan .pth key}."""
    names = {"shared.weight": "token_embedding.weight", "encoder.embed_tokens.weight": "token_embedding.weight",
             "encoder.final_layer_norm.weight": "norm.weight"}
    for i in range(num_layers):
        ours, wan = f"encoder.block.{i}.layer.", f"blocks.{i}."
        names[ours + "0.layer_norm.weight"] = wan + "norm1.weight"
        for p in "qkvo":
            names[ours + f"0.SelfAttention.{p}.weight"] = wan + f"attn.{p}.weight"
        names[ours + "0.SelfAttention.relative_attention_bias.weight"] = wan + "pos_embedding.embedding.weight"
        names[ours + "1.layer_norm.weight"] = wan + "norm2.weight"
        names[ours + "1.DenseReluDense.wi_0.weight"] = wan + "ffn.gate.0.weight"
        names[ours + "1.DenseReluDense.wi_1.weight"] = wan + "ffn.fc1.weight"
        names[ours + "1.DenseReluDense.wo.weight"] = wan + "ffn.fc2.weight"
    return names


def build_umt5_empty(config: UMT5Config) -> UMT5EncoderModel:
    with init_empty_weights():
        return UMT5EncoderModel(config)


def load_umt5(path: str | Path, config: UMT5Config, *, dtype=torch.bfloat16, device="cpu") -> UMT5EncoderModel:
    checkpoint = read_checkpoint(path)
    model = build_umt5_empty(config)
    load_into(model, checkpoint, wan_t5_key_map(config.num_layers), dtype=dtype, device=device, label="umT5 text encoder")
    return model.eval().requires_grad_(False)


def infer_config_from_checkpoint(path: str | Path) -> UMT5Config:
    """The encoder's sizes, read from the checkpoint's shapes (so tiny and XXL share one loader)."""
    ck = read_checkpoint(path)
    vocab, d_model = ck.shapes["token_embedding.weight"]
    layers = len({k.split(".")[1] for k in ck.keys() if k.startswith("blocks.")})
    d_ff = ck.shapes["blocks.0.ffn.fc1.weight"][0]
    buckets, heads = ck.shapes["blocks.0.pos_embedding.embedding.weight"]
    inner = ck.shapes["blocks.0.attn.q.weight"][0]
    return umt5_config(vocab, d_model, inner // heads, d_ff, layers, heads, buckets)


class TextEncoder:
    """Tokenize + encode prompts, with an in-memory cache per prompt (the XXL encoder is 11 GB)."""

    def __init__(self, checkpoint: str | Path, tokenizer_dir: str | Path, *, dtype=torch.bfloat16, device="cpu",
                 cache_size: int = 64):
        from transformers import AutoTokenizer

        if not Path(tokenizer_dir).is_dir():
            raise WeightsError(f"Tokenizer folder {tokenizer_dir} is missing.",
                               hint="Fetch it with: python -m engine download --variant ...")
        self.tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
        self.model = load_umt5(checkpoint, infer_config_from_checkpoint(checkpoint), dtype=dtype, device=device)
        self.cache: OrderedDict[str, torch.Tensor] = OrderedDict()
        self.cache_size = cache_size

    @property
    def device(self):
        return next(self.model.parameters()).device

    def tokenize(self, texts: list[str]):
        return self.tokenizer(texts, padding="max_length", truncation=True, max_length=TEXT_LEN,
                              add_special_tokens=True, return_tensors="pt")

    def token_count(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=True, truncation=False, verbose=False)["input_ids"])

    @torch.no_grad()
    def encode_ids(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        out = self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device)).last_hidden_state
        return out

    def encode(self, text: str) -> tuple[torch.Tensor, list[str]]:
        """[L, dim] float32 on the CPU for one cleaned prompt, and notices (e.g. truncation)."""
        notices = []
        cleaned = clean_prompt(text)
        if cleaned in self.cache:
            self.cache.move_to_end(cleaned)
            return self.cache[cleaned], notices
        n = self.token_count(cleaned)
        if n > TEXT_LEN:
            notices.append(f"The prompt is {n} tokens long; only the first {TEXT_LEN} are used.")
        batch = self.tokenize([cleaned])
        hidden = self.encode_ids(batch["input_ids"], batch["attention_mask"])
        length = int(batch["attention_mask"].sum())
        emb = hidden[0, :length].float().cpu()
        self.cache[cleaned] = emb
        while len(self.cache) > self.cache_size:
            self.cache.popitem(last=False)
        return emb, notices


def check_prompt(text: str | None) -> str:
    if text is None or not clean_prompt(text):
        raise InputError("The prompt is empty: describe the person, the scene and what happens.")
    return text
