"""Speed features keep the numbers: batched == sequential passes, every attention backend == SDPA,
compiled == eager (compiled once per shape); fast modes are labelled approximate and measured
against exact mode on the tiny variant."""
from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from engine import attention
from engine.errors import InputError
from engine.humo.fast import FAST_MODES, fast_mode_cache, get_fast_mode
from engine.humo.dit import dit_from_shape
from engine.humo.sampler import Conditions, denoise, seeded_noise
from engine.humo.variants import TINY

T, R, H, W = 4, 1, 12, 16
SCALES = dict(scale_t=7.0, scale_a=7.5, scale_i=4.0)


def tiny_model(in_dim=16, seed=0):
    torch.manual_seed(seed)
    return dit_from_shape(replace(TINY.dit, in_dim=in_dim)).eval().requires_grad_(False)


def conditions(channel=False):
    g = torch.Generator().manual_seed(1)
    s = TINY.dit
    cond = Conditions(text=torch.randn(512, s.text_dim, generator=g), null=0.1 * torch.randn(512, s.text_dim, generator=g),
                      audio=torch.randn(T + R, 8, 5, s.audio_channels, generator=g), ref_frames=R,
                      ref_latents=torch.randn(16, R, H, W, generator=g))
    if channel:
        cond.y_c = torch.randn(20, T + R, H, W, generator=g)
        cond.y_null = torch.randn(20, T + R, H, W, generator=g)
    return cond


def as_fn(model):
    def fn(x, t, text, audio, y):
        with torch.no_grad():
            return model(x, t, text, audio, y, return_dict=False)[0]
    return fn


def run(model_fn, cond, reference="append", steps=3, batched=True, mode="TIA"):
    return denoise(model_fn, seeded_noise(0, T + R, H, W), cond, reference=reference, mode=mode, scales=SCALES,
                   steps=steps, shift=5.0, switch_t=980 if reference == "channel" else None, batched=batched)


@pytest.mark.parametrize("reference,in_dim", [("append", 16), ("channel", 36)])
def test_batched_passes_equal_sequential_passes(reference, in_dim):
    model, cond = tiny_model(in_dim), conditions(reference == "channel")
    calls = []

    def counting(*args):
        calls.append(args[0].shape[0])
        return as_fn(model)(*args)

    seq = run(counting, cond, reference, batched=False)
    n_seq = len(calls)
    calls.clear()
    bat = run(counting, cond, reference, batched=True)
    assert calls and all(b >= 3 for b in calls) and len(calls) * 3 <= n_seq   # one forward per step
    assert torch.isfinite(bat).all() and bat.abs().max() > 0.1
    torch.testing.assert_close(bat, seq, rtol=0, atol=2e-5)


def test_every_available_backend_matches_native():
    model, cond = tiny_model(), conditions()
    names = attention.available_backends("cpu")
    assert names[0] == "native" and "_native_math" in names
    attention.apply_backend(model, "native")
    ref = run(as_fn(model), cond, steps=2)
    for name in names[1:]:
        attention.apply_backend(model, name)
        assert model.blocks[0].audio_attn.processor._attention_backend == name
        out = run(as_fn(model), cond, steps=2)
        torch.testing.assert_close(out, ref, rtol=0, atol=2e-5, msg=f"backend {name}")
    attention.apply_backend(model, "native")


def test_backend_choice_and_messages():
    assert attention.choose_backend(None, "cpu") == "native"
    assert attention.choose_backend("auto", "cpu", torch.float32) == "native"
    assert attention.choose_backend("sdpa", "cpu") == "native"
    assert attention.choose_backend("math", "cpu") == "_native_math"
    with pytest.raises(InputError, match="flash-attn"):
        attention.choose_backend("flash", "cpu")
    with pytest.raises(InputError, match="Unknown attention backend 'warp'"):
        attention.choose_backend("warp", "cpu")


def test_compiled_blocks_match_eager_and_compile_once_per_shape():
    from engine.compile import compile_dit, is_compiled, reset_compiled

    model, cond = tiny_model(), conditions()
    eager = run(as_fn(model), cond, steps=2)
    graphs = []

    def counting_backend(gm, example_inputs):   # a real dynamo backend: runs the captured graph
        graphs.append(tuple(tuple(x.shape) for x in example_inputs if isinstance(x, torch.Tensor)))
        return gm.forward

    reset_compiled()
    try:
        compile_dit(model, backend=counting_backend)
        assert is_compiled(model)
        out = run(as_fn(model), cond, steps=2)            # 2 steps × 2 blocks, one shape
        assert len(graphs) == 1, "both blocks and every step share one compiled graph"
        torch.testing.assert_close(out, eager, rtol=0, atol=1e-5)
        run(as_fn(model), cond, steps=2, batched=False)   # a new shape: batch of 1
        assert len(graphs) == 2
        run(as_fn(model), cond, steps=3, batched=False)   # same shapes again: no new compile
        assert len(graphs) == 2
    finally:
        reset_compiled()


def test_fast_modes_are_labelled_approximate_and_exact_is_default():
    assert get_fast_mode(None) is None and get_fast_mode("exact") is None and get_fast_mode("") is None
    for name, mode in FAST_MODES.items():
        assert mode.approximate and "approximate" in mode.label.lower(), name
        assert mode.cache or mode.step_factor < 1, name
    assert FAST_MODES["fewer-steps"].steps_for(50) == 30
    with pytest.raises(InputError, match="Unknown fast mode 'turbo'"):
        get_fast_mode("turbo")


@pytest.fixture(scope="module")
def exact_20():
    model, cond = tiny_model(), conditions()
    return model, cond, run(as_fn(model), cond, steps=20)


# Bounds measured on this tiny model (20 steps): fast ≈ 6e-4, taylor ≈ 0.06 relative L2 difference.
@pytest.mark.parametrize("name,max_rel,min_hits", [("fast", 0.01, 1), ("faster", 0.08, 5), ("taylor", 0.15, 5)])
def test_cache_modes_skip_work_and_stay_close_to_exact(exact_20, name, max_rel, min_hits):
    model, cond, exact = exact_20
    blocks_run = []
    handle = model.blocks[1].register_forward_pre_hook(lambda *_: blocks_run.append(1))
    try:
        with fast_mode_cache(model, FAST_MODES[name], as_fn(model)) as (fn, stats):
            out = run(fn, cond, steps=20)
    finally:
        handle.remove()
    assert stats.calls == 20 and stats.hits >= min_hits, stats.summary()
    rel = ((out - exact).norm() / exact.norm()).item()
    assert 0 < rel < max_rel, f"{name}: relative difference {rel:.4f}"
    # the cache is gone afterwards: exact mode is exact again
    assert not model.is_cache_enabled
    torch.testing.assert_close(run(as_fn(model), cond, steps=20), exact, rtol=0, atol=0)


def test_engine_fast_mode_runs_batched_with_cache_and_records_it(tiny_weights, tmp_path):
    from PIL import Image

    from engine import Engine, GenerationRequest

    Image.new("RGB", (96, 128), (180, 120, 90)).save(tmp_path / "face.png")
    eng = Engine(tiny_weights, batch_passes=False)      # asks for sequential passes...
    req = dict(prompt="A person talks", variant="tiny", mode="TI", images=[str(tmp_path / "face.png")], frames=5, steps=8,
               preview=False, width=128, height=96)
    eng.load("tiny")
    batches = []
    handle = eng.parts["dit"].register_forward_pre_hook(lambda m, args: batches.append(args[0].shape[0]))
    try:
        events = list(eng.generate(GenerationRequest(**req, fast_mode="taylor", out_path=str(tmp_path / "t.mp4"))))
    finally:
        handle.remove()
    assert batches == [3] * 8                       # ...but a cache needs all passes in one forward
    notes = [e.message for e in events if e.kind == "notice"]
    assert any("approximate" in n.lower() and "differs from exact" in n for n in notes), notes
    assert any("3 of 8 network calls served from the cache" in n for n in notes), notes
    assert not any(e.kind == "preview" for e in events)
    result = events[-1]
    assert result.kind == "result" and result.settings["fast_mode"] == "taylor"
    assert not eng.parts["dit"].is_cache_enabled

    events = list(eng.generate(GenerationRequest(**req, fast_mode="fewer-steps", out_path=str(tmp_path / "f.mp4"))))
    steps = [e for e in events if e.kind == "step"]
    assert steps[-1].total == 5 and events[-1].settings["steps"] == 5   # 60 % of 8
    assert eng.attention_backend == "native"


# --- GPU attention kernels: what diffusers hands them, checked on the CPU -----------------------
# FlashAttention 2/3 and SageAttention only run on CUDA. Their calls are checked here against the
# contracts their documentation states, with reference kernels that compute plain softmax
# attention in float32: everything between our model and the kernel (diffusers' dispatcher and
# backend functions, layouts, dtypes, arguments) is the real code.
def _sdpa_nhd(q, k, v, scale):
    out = torch.nn.functional.scaled_dot_product_attention(
        q.float().transpose(1, 2), k.float().transpose(1, 2), v.float().transpose(1, 2), scale=scale)
    return out.transpose(1, 2).to(q.dtype).contiguous()


def _check_nhd(q, k, v, head_dims, calls):
    assert q.dim() == k.dim() == v.dim() == 4, "layout [batch, seq, heads, head_dim]"
    assert q.dtype == k.dtype == v.dtype and q.dtype in (torch.float16, torch.bfloat16), q.dtype
    assert q.shape[0] == k.shape[0] == v.shape[0] and q.shape[2] == k.shape[2] == v.shape[2]
    assert k.shape[1] == v.shape[1] and q.shape[3] == k.shape[3] == v.shape[3]
    assert q.shape[3] in head_dims, q.shape
    assert q.stride(-1) == k.stride(-1) == v.stride(-1) == 1, "last dimension contiguous"
    calls.append((q.shape[0], q.shape[1], k.shape[1]))


def _flash2(calls):
    def flash_attn_func(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                        softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
        _check_nhd(q, k, v, range(8, 257, 8), calls)
        assert dropout_p == 0.0 and not causal and tuple(window_size) == (-1, -1)
        out = _sdpa_nhd(q, k, v, softmax_scale)
        return (out, None, None) if return_attn_probs else out
    return flash_attn_func


def _flash3(calls):
    def flash_attn_func(q, k, v, softmax_scale=None, causal=False, qv=None, q_descale=None, k_descale=None,
                        v_descale=None, window_size=(-1, -1), attention_chunk=0, softcap=0.0, num_splits=1,
                        pack_gqa=None, deterministic=False, sm_margin=0, return_attn_probs=False):
        _check_nhd(q, k, v, (64, 96, 128, 192, 256), calls)
        assert not causal and qv is None and q_descale is None
        out = _sdpa_nhd(q, k, v, softmax_scale)
        lse = torch.zeros(q.shape[0], q.shape[2], q.shape[1], dtype=torch.float32)   # [B, H, Sq]
        return (out, lse) if return_attn_probs else out
    return flash_attn_func


def _sage(calls):
    def sageattn(q, k, v, tensor_layout="HND", is_causal=False, sm_scale=None, return_lse=False, **kwargs):
        assert tensor_layout == "NHD", "diffusers passes [batch, seq, heads, head_dim]"
        _check_nhd(q, k, v, (64, 128), calls)
        assert not is_causal and not return_lse
        return _sdpa_nhd(q, k, v, sm_scale)
    return sageattn


@pytest.fixture
def gpu_kernels(monkeypatch):
    """The three GPU backends wired to reference kernels; yields the list of (batch, q_len, kv_len) calls."""
    import diffusers.models.attention_dispatch as ad

    calls: list = []
    monkeypatch.setattr(ad, "_CAN_USE_FLASH_ATTN", True)
    monkeypatch.setattr(ad, "_CAN_USE_FLASH_ATTN_3", True)
    monkeypatch.setattr(ad, "_CAN_USE_SAGE_ATTN", True)
    monkeypatch.setattr(ad, "flash_attn_func", _flash2(calls))
    monkeypatch.setattr(ad, "flash_attn_3_func", _flash3(calls))
    monkeypatch.setattr(ad, "sageattn", _sage(calls))
    # diffusers' FA3 wrapper is a CUDA-only custom op; its Python body (kept by torch) is the code that
    # calls FlashAttention 3 and unpacks its (out, lse) answer.
    monkeypatch.setattr(ad, "_wrapped_flash_attn_3", ad._wrapped_flash_attn_3._init_fn)
    yield calls


@pytest.mark.parametrize("backend", ["flash", "_flash_3", "sage"])
def test_gpu_attention_backends_get_what_their_kernels_accept(gpu_kernels, backend, monkeypatch):
    from diffusers.models.attention_dispatch import _AttentionBackendRegistry

    shape = replace(TINY.dit, dim=256, num_heads=2, ffn_dim=256, num_layers=1)   # head_dim 128, as the real models
    torch.manual_seed(0)
    model = dit_from_shape(shape).eval().requires_grad_(False).to(torch.bfloat16)
    g = torch.Generator().manual_seed(3)
    B, F, h, w = 2, 3, 4, 6
    x = torch.randn(B, 16, F, h, w, generator=g, dtype=torch.bfloat16)
    text = torch.randn(B, 20, shape.text_dim, generator=g, dtype=torch.bfloat16)
    audio = torch.randn(B, F, 8, 5, shape.audio_channels, generator=g, dtype=torch.bfloat16)
    t = torch.tensor([999.0, 500.0])
    attention.apply_backend(model, "native")
    ref = model(x, t, text, audio).sample.float()
    # diffusers' own argument checks (device, dtype, shapes) run before each kernel; they ask for a
    # CUDA tensor for SageAttention, which a CPU run cannot give.
    monkeypatch.setattr(_AttentionBackendRegistry, "_checks_enabled", backend != "sage")
    attention.apply_backend(model, backend)
    out = model(x, t, text, audio).sample.float()
    tokens = F * (h // 2) * (w // 2)
    # self-attention over all tokens, text over the 512 padded rows (no mask), audio frame by frame over 16 tokens
    assert sorted(set(gpu_kernels)) == sorted({(B, tokens, tokens), (B, tokens, 512), (B * F, tokens // F, 16)})
    torch.testing.assert_close(out, ref, rtol=0.05, atol=0.05)
    assert ((out - ref).norm() / ref.norm()).item() < 0.01
    attention.apply_backend(model, "native")


def test_switching_back_to_sdpa_really_leaves_the_previous_backend():
    from diffusers.models.attention_dispatch import AttentionBackendName, _AttentionBackendRegistry

    default = _AttentionBackendRegistry._active_backend
    model = tiny_model()
    attention.apply_backend(model, "_native_math")
    assert _AttentionBackendRegistry._active_backend == default, "the process-wide default is left alone"
    attention.apply_backend(model, "native")
    backends = {m.processor._attention_backend for m in model.modules() if hasattr(m, "processor")}
    assert {type(m.processor).__name__ for m in model.modules() if hasattr(m, "processor")} == \
        {"WanAttnProcessor", "HuMoAudioAttnProcessor"}
    assert backends == {AttentionBackendName.NATIVE}
    # and it computes what a model that never left SDPA computes, bit for bit
    fresh = tiny_model()
    cond = conditions()
    torch.testing.assert_close(run(as_fn(model), cond, steps=2), run(as_fn(fresh), cond, steps=2), rtol=0, atol=0)


def test_tiny_engine_in_bfloat16_stays_within_bf16_rounding_of_float32(tiny_weights, tmp_path):
    """Every real user runs bf16 on CUDA; the same code runs here in bf16 on the CPU, end to end."""
    import numpy as np
    from PIL import Image

    from engine import Engine, GenerationRequest
    from tests.media_fixtures import write_wav

    Image.new("RGB", (96, 128), (180, 120, 90)).save(tmp_path / "face.png")
    n = 16000
    wave = 0.2 * np.sin(2 * np.pi * 220 * np.arange(n) / 16000) * np.sin(np.pi * np.arange(n) / n)
    write_wav(tmp_path / "v.wav", wave.astype(np.float32), 16000)
    runs = {}
    for dtype in (torch.float32, torch.bfloat16):
        eng = Engine(tiny_weights, device="cpu", dtype=dtype)
        eng.load("tiny")
        dit, vae, seen = eng.parts["dit"], eng.parts["vae"], {}
        decode_stream = vae.decode_stream

        def observe(z, decode_stream=decode_stream, seen=seen):   # the real streamed decode, recorded
            seen["latents"], chunks = z.clone(), []
            for chunk in decode_stream(z):
                chunks.append(chunk)
                seen["video"] = torch.cat(chunks, dim=1)
                yield chunk

        vae.decode_stream = observe
        events = list(eng.generate(GenerationRequest(
            prompt="A person talks", variant="tiny", mode="TIA", images=[str(tmp_path / "face.png")], audio=str(tmp_path / "v.wav"),
            frames=5, steps=4, width=128, height=96, preview=False, out_path=str(tmp_path / f"{dtype}.mp4"))))
        assert events[-1].kind == "result"
        dtypes = {name: p.dtype for name, p in dit.named_parameters()}
        runs[dtype] = seen, dtypes
    (ref, _), (low, dtypes) = runs[torch.float32], runs[torch.bfloat16]
    assert dtypes["blocks.0.attn1.to_q.weight"] == torch.bfloat16 and dtypes["proj_out.weight"] == torch.bfloat16
    assert dtypes["blocks.0.norm_audio.weight"] == torch.float32            # kept in float32, as diffusers does
    assert dtypes["condition_embedder.time_embedder.linear_1.weight"] == torch.float32
    for key, bound in (("latents", 0.03), ("video", 0.06)):   # measured 0.013 / 0.03; bf16 has 8 mantissa bits
        a, b = ref[key].float(), low[key].float()
        assert torch.isfinite(b).all()
        rel = ((b - a).norm() / a.norm()).item()
        assert 1e-4 < rel < bound, f"{key}: bf16 vs float32 relative error {rel:.4f}"


def test_fp8_storage_matches_layerwise_casting_and_compiles_to_one_graph():
    """fp8 DiT weights: the same layers and the same numbers as diffusers' layerwise casting, but
    cast inside the layer, so torch.compile makes one graph per shape instead of one per linear."""
    from diffusers.hooks.layerwise_casting import DEFAULT_SKIP_MODULES_PATTERN

    from engine.compile import compile_dit, reset_compiled
    from engine.memory.storage import FP8_EXTRA_SKIP, Fp8Linear, enable_fp8

    hooked, ours, cond = tiny_model(), tiny_model(), conditions()
    hooked.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn, compute_dtype=torch.float32,
                                    skip_modules_pattern=tuple(DEFAULT_SKIP_MODULES_PATTERN) + FP8_EXTRA_SKIP)
    enable_fp8(ours, torch.float32)
    fp8 = lambda m: {n for n, p in m.named_parameters() if p.dtype == torch.float8_e4m3fn}  # noqa: E731
    assert fp8(ours) == fp8(hooked) and len(fp8(ours)) > 0
    assert any(isinstance(m, Fp8Linear) for m in ours.modules())
    reference = run(as_fn(hooked), cond, steps=2)
    eager = run(as_fn(ours), cond, steps=2)
    torch.testing.assert_close(eager, reference, rtol=0, atol=0)
    assert (eager - run(as_fn(tiny_model()), cond, steps=2)).abs().max() > 0   # fp8 really rounds

    graphs = []

    def counting_backend(gm, example_inputs):
        graphs.append(len(example_inputs))
        return gm.forward

    reset_compiled()
    try:
        compile_dit(ours, backend=counting_backend)
        out = run(as_fn(ours), cond, steps=2)
        assert len(graphs) == 1, f"fp8 blocks broke into {len(graphs)} graphs"
        torch.testing.assert_close(out, eager, rtol=0, atol=1e-5)
    finally:
        reset_compiled()
