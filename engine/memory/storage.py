"""How component weights are stored and moved: fp8 layerwise casting for the DiT, bitsandbytes
8-bit / NF4 layers for the umT5 encoder, its tied embedding, and moves that reach bitsandbytes states."""
from __future__ import annotations

import torch

# HuMoAudioProjection casts its input to linear_1's weight dtype, which is the storage dtype (fp8)
# under layerwise casting; it is small (39 M parameters in the real models), so it stays unquantized.
FP8_EXTRA_SKIP = ("audio_proj",)


class Fp8Linear(torch.nn.Linear):
    """A linear layer whose weight and bias are stored in float8 e4m3 and cast to the compute dtype
    inside `forward`. The same numbers as diffusers' layerwise casting (fp8 -> bf16 is exact), but
    a plain cast in the graph rather than a hook that recasts the module: torch.compile traces it
    without a graph break, and nothing is cast back after the call."""

    compute_dtype: torch.dtype = torch.bfloat16

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dt = self.compute_dtype
        bias = None if self.bias is None else self.bias.to(dt)
        return torch.nn.functional.linear(x, self.weight.to(dt), bias)


def fp8_skip_patterns(model) -> tuple[str, ...]:
    """The module-name patterns kept out of fp8: diffusers' defaults, the model's own
    (`_keep_in_fp32_modules`, `_skip_layerwise_casting_patterns`) and ours."""
    from diffusers.hooks.layerwise_casting import DEFAULT_SKIP_MODULES_PATTERN

    patterns = tuple(DEFAULT_SKIP_MODULES_PATTERN) + FP8_EXTRA_SKIP
    patterns += tuple(getattr(model, "_keep_in_fp32_modules", None) or ())
    patterns += tuple(getattr(model, "_skip_layerwise_casting_patterns", None) or ())
    return tuple(dict.fromkeys(patterns))


def _fp8_targets(module, patterns, prefix: str = ""):
    """(name, module) of every layer diffusers' layerwise casting would cast: the same walk and rule
    (a layer whose dotted name matches a pattern is skipped with everything under it)."""
    import re

    from diffusers.hooks._common import _GO_LC_SUPPORTED_PYTORCH_LAYERS

    if prefix and any(re.search(p, prefix) for p in patterns):
        return
    if isinstance(module, _GO_LC_SUPPORTED_PYTORCH_LAYERS):
        yield prefix, module
        return
    for name, child in module.named_children():
        yield from _fp8_targets(child, patterns, f"{prefix}.{name}" if prefix else name)


def enable_fp8(model, compute_dtype: torch.dtype) -> None:
    """Store the DiT's linear weights in float8 e4m3 and cast each layer up only while it runs.

    Linear layers become `Fp8Linear` (compile-friendly); any other layer type the rule selects
    (none in the HuMo DiT) gets diffusers' layerwise-casting hook."""
    from diffusers.hooks.layerwise_casting import apply_layerwise_casting_hook

    for _name, layer in list(_fp8_targets(model, fp8_skip_patterns(model))):
        if type(layer) is torch.nn.Linear or isinstance(layer, Fp8Linear):
            layer.to(dtype=torch.float8_e4m3fn)
            layer.__class__ = Fp8Linear
            layer.compute_dtype = compute_dtype
        else:
            apply_layerwise_casting_hook(layer, torch.float8_e4m3fn, compute_dtype, non_blocking=False)


def tie_text_embeddings(model) -> None:
    """umT5's `shared` and `encoder.embed_tokens` come from one checkpoint tensor; the loader can
    leave two copies (one per name) when it converts dtype or device. Keep one: 2.1 GB for XXL."""
    shared, embed = getattr(model, "shared", None), getattr(model.encoder, "embed_tokens", None)
    if shared is not None and embed is not None and shared.weight is not embed.weight \
            and shared.weight.shape == embed.weight.shape:
        embed.weight = shared.weight


# umT5's feed-forward output projection (`DenseReluDense.wo`) takes activations beyond float16's
# range in the XXL model. bitsandbytes' 8-bit matmul casts its input to float16, so 8-bit mode keeps
# these layers in the compute dtype (transformers keeps them unquantized for T5/umT5 for the same
# reason: `_keep_in_fp32_modules = ["wo"]`). NF4 computes in bf16 and quantizes them too.
INT8_KEEP = (".wo",)


def quantizable_linears(model, mode: str = "nf4") -> list[torch.nn.Linear]:
    """The umT5 linears bitsandbytes quantizes in `mode`: the encoder blocks' nn.Linear layers
    (in 8-bit mode, all but the feed-forward output projections)."""
    keep = INT8_KEEP if mode == "int8" else ()
    return [m for name, m in model.named_modules() if isinstance(m, torch.nn.Linear) and ".block." in f".{name}"
            and not name.endswith(keep)]


def quantize_linears(model: torch.nn.Module, mode: str, compute_dtype: torch.dtype, device: str) -> None:
    """Replace the umT5 block linears by bitsandbytes 8-bit or NF4 layers, quantized on `device`."""
    import warnings

    import bitsandbytes as bnb

    # Expected: 8-bit matmuls quantize their float inputs through float16.
    warnings.filterwarnings("ignore", message="MatMul8bitLt: inputs will be cast")
    targets = {id(m) for m in quantizable_linears(model, mode)}
    for parent in list(model.modules()):
        for child_name, child in list(parent.named_children()):
            if id(child) not in targets:
                continue
            w = child.weight.data.to(torch.float32)
            if mode == "int8":
                new = bnb.nn.Linear8bitLt(child.in_features, child.out_features, bias=child.bias is not None,
                                          has_fp16_weights=False, threshold=0.0)
                new.weight = bnb.nn.Int8Params(w, requires_grad=False, has_fp16_weights=False)
            else:
                new = bnb.nn.Linear4bit(child.in_features, child.out_features, bias=child.bias is not None,
                                        compute_dtype=compute_dtype, quant_type="nf4", compress_statistics=True)
                new.weight = bnb.nn.Params4bit(w, requires_grad=False, quant_type="nf4", compress_statistics=True)
                # bitsandbytes repacks 4-bit weights on some CPUs at the first call (it needs whole blocks
                # per row, and changes the layout the estimate counts): keep the one GPU-style layout.
                new.support_avx512bf16_for_cpu = False
            if child.bias is not None:
                new.bias = torch.nn.Parameter(child.bias.data, requires_grad=False)
            new = new.to(device)
            if mode == "int8":
                new.init_8bit_state()  # the row scales live in the layer state from now on (moved by .to)
            setattr(parent, child_name, new.eval())


def _is_bnb(m: torch.nn.Module) -> bool:
    return type(m).__module__.startswith("bitsandbytes")


def move_module(module: torch.nn.Module, device) -> None:
    """module.to(device), plus the bitsandbytes layer states that Module.to does not reach."""
    module.to(device)
    for m in module.modules():
        if _is_bnb(m):
            m.to(device)
