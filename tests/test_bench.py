"""The benchmark: its FLOP count against PyTorch's own counter and SPEC §6, and the report it prints."""
from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from engine.__main__ import main
from engine.attention import apply_backend
from engine.tools.bench import random_dit
from engine.tools.flops import pass_flops
from engine.humo.variants import HUMO_1_7B, HUMO_17B, TINY


@pytest.mark.parametrize("in_dim,frames,h,w,batch", [(16, 3, 4, 6, 1), (36, 2, 6, 4, 2)])
def test_flop_count_matches_torch_flop_counter(in_dim, frames, h, w, batch):
    shape = replace(TINY.dit, in_dim=in_dim)
    model = random_dit(shape, "cpu", torch.float32)
    apply_backend(model, "_native_math")      # attention as plain matmuls, which the counter sees
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 16, frames, h, w, generator=g)
    y = torch.randn(batch, in_dim - 16, frames, h, w, generator=g) if in_dim > 16 else None
    text = torch.randn(batch, 300, shape.text_dim, generator=g)            # padded to 512 inside
    audio = torch.randn(batch, frames, 8, 5, shape.audio_channels, generator=g)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        (out,) = model(x, torch.full((batch,), 500.0), text, audio, y, return_dict=False)
    assert torch.isfinite(out).all()
    ours = pass_flops(shape, frames, h, w, batch=batch)
    assert ours["total"] == counter.get_total_flops()
    per_op = {str(k): v for k, v in counter.get_flop_counts()["Global"].items()}
    assert ours["patch_embed"] == per_op["aten.convolution"]


def test_flop_count_matches_spec_table():
    small = pass_flops(HUMO_1_7B.dit, 26, 480 // 8, 832 // 8)
    assert small["tokens"] == 26 * 1560
    assert small["total"] == pytest.approx(4.2e14, rel=0.02)
    assert small["attention"] / small["total"] == pytest.approx(0.72, abs=0.015)
    big = pass_flops(HUMO_17B.dit, 26, 720 // 8, 1280 // 8)
    assert big["tokens"] == 26 * 3600
    assert big["total"] == pytest.approx(9.8e15, rel=0.02)
    assert big["attention"] / big["total"] == pytest.approx(0.73, abs=0.015)


def test_random_weights_keep_fp32_modules_and_stay_finite():
    model = random_dit(replace(HUMO_1_7B.dit, num_layers=1), "cpu", torch.bfloat16)
    dtypes = {n: p.dtype for n, p in model.named_parameters()}
    assert dtypes["blocks.0.ffn.net.0.proj.weight"] == torch.bfloat16
    assert dtypes["blocks.0.norm_audio.weight"] == torch.float32
    assert dtypes["blocks.0.scale_shift_table"] == torch.float32
    assert not any(p.is_meta for p in model.parameters())


def test_bench_prints_its_table(capsys):
    argv = ["bench", "--variant", "tiny", "--size", "64x48", "--frames", "5", "--compile-backend", "aot_eager",
            "--repeat", "1"]
    assert main(argv) == 0
    text = capsys.readouterr().out
    for field in ("FLOPs per pass", "attention", "per pass", "per step", "per video", "TFLOP/s", "of peak",
                  "eager, sequential", "eager, batched", "compiled, batched", "batched / sequential",
                  "compiled / eager", "peak memory", "measured 2048³ float32 matmul", "16 network passes"):
        assert field in text, field
    expected = pass_flops(TINY.dit, 3, 6, 8)["total"]
    assert f"{expected:.3e}" in text


def test_bench_json_report(capsys):
    argv = ["bench", "--variant", "tiny", "--size", "64x48", "--frames", "9", "--no-compile", "--repeat", "1",
            "--mode", "TA", "--steps", "10", "--json"]
    assert main(argv) == 0
    r = json.loads(capsys.readouterr().out)
    assert (r["latent_frames"], r["tokens"], r["passes_per_step"], r["steps"]) == (4, 4 * 3 * 4, 3, 10)
    assert r["flops_per_pass"] == pass_flops(TINY.dit, 4, 6, 8)["total"]
    assert r["compiled"] is None and set(r["pass_s"]) == {"sequential", "batched"}
    assert all(v > 0 for v in r["pass_s"].values())
    assert r["video_s"]["network_passes"] == 30
    assert r["video_s"]["best"] == pytest.approx(r["step_s"]["best"] * 10)
    assert 0 < r["peak_fraction"]["batched"] and r["peak_flops"] > 1e9
    assert r["peak_memory_gib"]["batched"] > 0
    assert r["batched_over_sequential"] == pytest.approx(r["pass_s"]["batched"] / r["pass_s"]["sequential"])


def test_bench_bad_size_is_a_message(capsys):
    assert main(["bench", "--variant", "tiny", "--size", "4000x48"]) == 2
    assert "Width must be between 32 and 2048 pixels, not 4000" in capsys.readouterr().err


def test_gpu_suite_covers_both_models_at_their_real_sizes_under_a_plan():
    from engine.tools.bench import suite_configs

    configs = suite_configs("gpu", "cuda", torch.bfloat16)
    runs = {(c.variant.name, c.width, c.height, c.frames, c.plan, c.layers, c.compile) for c in configs}
    assert ("humo-1.7b", 832, 480, 97, "full", None, True) in runs
    assert ("humo-17b", 1280, 720, 97, "block-offload", 4, True) in runs
    assert ("humo-17b", 1280, 720, 97, "fp8", 4, True) in runs
    assert all(c.dtype == torch.bfloat16 and c.device == "cuda" for c in configs)
    assert any("extrapolated" in n for c in configs for n in c.notes)


def test_suite_on_fewer_layers_extrapolates_and_keeps_to_its_time_limit():
    from engine.tools.bench import BenchConfig, run_suite
    from engine.tools.bench_report import format_report, format_summary

    cfgs = [BenchConfig(variant=TINY, width=64, height=48, frames=5, layers=1, compile=False, repeat=1, warmup=1),
            BenchConfig(variant=TINY, width=64, height=48, frames=5, compile=False, repeat=1, warmup=1)]
    seen = []
    reports = run_suite(cfgs, limit_s=None, on_report=seen.append)
    assert seen == reports and len(reports) == 2
    part, whole = reports
    assert whole["all_layers"] is None and part["layers"] == 1 and part["full_layers"] == 2
    a = part["all_layers"]
    factor = pass_flops(TINY.dit, 3, 6, 8)["total"] / pass_flops(replace(TINY.dit, num_layers=1), 3, 6, 8)["total"]
    assert 1.5 < factor < 2 and a["flops_factor"] == pytest.approx(factor)
    for key, s in part["pass_s"].items():
        assert a["pass_s"][key] == pytest.approx(s * factor)
    assert a["video_s"] == pytest.approx(part["step_s"]["best"] * factor * part["steps"])
    text = format_report(part)
    assert "all 2 layers (extrapolated: measured with 1 of 2 blocks" in text
    summary = format_summary(reports)
    assert summary.count("tiny 64x48x5") == 2 and "extrapolated from 1 blocks" in summary
    skipped = run_suite(cfgs, limit_s=0)
    assert [r["skipped"] for r in skipped] == ["time limit (0 s) reached"] * 2
    assert "skipped: time limit" in format_summary(skipped)


def test_gpu_suite_needs_a_gpu(capsys):
    assert main(["bench", "--suite", "gpu", "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "needs a CUDA GPU" in err and "Traceback" not in err
