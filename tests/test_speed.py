"""Speed features keep the numbers: batched == sequential passes, every attention backend == SDPA,
compiled == eager (compiled once per shape); fast modes are labelled approximate and measured
against exact mode on the tiny variant."""
from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from engine import attention
from engine.errors import InputError
from engine.fast import FAST_MODES, fast_mode_cache, get_fast_mode
from engine.models.humo_dit import dit_from_shape
from engine.sampler import Conditions, denoise, seeded_noise
from engine.variants import TINY

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
            return model(x, t, text, audio, y)
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
        assert model.blocks[0].audio_attn.attention_backend == name
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
    req = dict(prompt="A person talks", mode="TI", images=[str(tmp_path / "face.png")], frames=5, steps=8,
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
