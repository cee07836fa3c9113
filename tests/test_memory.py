"""Memory plans: exact weight bytes, the plan CLI's choices, and every CPU-runnable plan against
the plain CPU run on the tiny variant (real loaders, real bitsandbytes / diffusers hooks)."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from engine import Engine, GenerationRequest, memory
from engine.memory import GIB, Job, Plan, estimate, parse_plan
from engine.humo.dit import dit_from_shape
from engine.humo.variants import get_variant
from tests.conftest import ROOT
from tests.waiting import wait_until

V17, V170, TINY = get_variant("humo-1.7b"), get_variant("humo-17b"), get_variant("tiny")


# -- plans as strings ---------------------------------------------------------------------------
def test_plan_names_round_trip_and_options_parse():
    for text in ("full", "fp8", "model-offload", "block-offload+blocks-2", "cpu", "model-offload+fp8+text-nf4",
                 "block-offload+fp8+text-cpu+vae-tiling+sequential", "cpu+model-offload", "cpu+vae-tiling-64"):
        plan = parse_plan(text)
        assert parse_plan(plan.name) == plan, text
        assert plan.name in memory.describe(plan)
    assert parse_plan("full", device="cpu").device == "cpu"
    for option in memory.plan_options(V17):
        if option != "auto":
            parse_plan(option)
    with pytest.raises(memory.InputError, match="Unknown memory plan part 'turbo'"):
        parse_plan("full+turbo")


def test_the_cpu_plan_is_refused_on_a_gpu_engine_and_not_offered_there():
    with pytest.raises(memory.InputError, match="start it with --device cpu"):
        parse_plan("cpu+vae-tiling", device="cuda")
    assert parse_plan("cpu+vae-tiling", device="cpu").device == "cpu"
    assert "cpu" not in memory.plan_options(V17, device="cuda")
    assert "cpu" in memory.plan_options(V17, device="cpu") and "cpu" in memory.plan_options(V17)


def test_auto_on_a_machine_without_gpu_is_the_cpu_plan():
    plan = memory.resolve_plan("auto", TINY, Job(128, 96, 9), "cpu")
    assert plan == Plan(device="cpu") and plan.compute_dtype == torch.float32


# -- weights: the estimate against independent counts at the real shapes ---------------------------
def _manifest_numel(path) -> int:
    keys = json.loads(path.read_text())["keys"]
    total = 0
    for shape in keys.values():
        n = 1
        for s in shape:
            n *= s
        total += n
    return total


def test_dit_weight_bytes_are_exact_at_real_shapes(golden_dir):
    from engine.humo.dit_loader import _fp32_matcher, build_dit_empty

    for variant, manifest in ((V17, "humo-1.7B.keys.json"), (V170, "humo-17B.keys.json")):
        model = build_dit_empty(variant.dit)
        keep = _fp32_matcher(model)
        numel = sum(p.numel() for p in model.parameters())
        assert numel == _manifest_numel(golden_dir / manifest) == json.loads((golden_dir / manifest).read_text())["parameters"]
        kept = sum(p.numel() for n, p in model.named_parameters() if keep(n))
        buffers = sum(b.numel() * b.element_size() for b in model.buffers())
        # Every linear layer inside the blocks is what fp8 layerwise casting stores in one byte.
        block_linear = sum(p.numel() for n, m in model.named_modules() if n.startswith("blocks.")
                           and isinstance(m, torch.nn.Linear) for p in m.parameters())
        for plan, per_param in ((Plan(), 2), (Plan(device="cpu"), 4)):
            assert estimate(plan, variant, Job(832, 480, 97)).parts[3].weights == \
                4 * kept + per_param * (numel - kept) + buffers
        fp8 = estimate(Plan(fp8=True), variant, Job(832, 480, 97)).parts[3].weights
        assert fp8 == 4 * kept + block_linear + 2 * (numel - kept - block_linear) + buffers
    # SPEC §6: DiT 3.5 GB / 34 GB in bf16.
    assert estimate(Plan(), V17, Job(832, 480, 97)).parts[3].weights == pytest.approx(3.5e9, rel=0.02)
    assert estimate(Plan(), V170, Job(832, 480, 97)).parts[3].weights == pytest.approx(34.1e9, rel=0.01)


def test_text_vae_audio_weight_bytes_are_exact_at_real_shapes(golden_dir):
    parts = {p.name: p.weights for p in estimate(Plan(), V17, Job(832, 480, 97)).parts}
    # The umT5 file holds the token embedding once; the plan keeps one copy too (shared == embed_tokens).
    assert parts["text"] == 2 * _manifest_numel(golden_dir / "umt5-xxl-encoder.keys.json")
    assert parts["vae"] == 2 * _manifest_numel(golden_dir / "wan2.1-vae.keys.json")
    assert parts["text"] == pytest.approx(11.4e9, rel=0.01) and parts["vae"] == pytest.approx(0.25e9, rel=0.03)
    from accelerate import init_empty_weights
    from transformers import WhisperConfig
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    with init_empty_weights():
        enc = WhisperEncoder(WhisperConfig(d_model=1280, encoder_layers=32, encoder_attention_heads=20,
                                           encoder_ffn_dim=5120, num_mel_bins=128, max_source_positions=1500))
    assert parts["audio"] == 2 * sum(t.numel() for t in enc.state_dict().values())
    assert parts["audio"] == pytest.approx(1.27e9, rel=0.02)
    # bitsandbytes storage, from the layer shapes (exactness against real layers: the tiny test below).
    int8 = {p.name: p.weights for p in estimate("model-offload+text-int8", V17, Job(832, 480, 97)).parts}["text"]
    nf4 = {p.name: p.weights for p in estimate("model-offload+text-nf4", V17, Job(832, 480, 97)).parts}["text"]
    embed = 256384 * 4096 * 2
    wo = 24 * 10240 * 4096 * 2      # feed-forward output projections stay bf16 in 8-bit mode (fp16 overflow)
    assert int8 == pytest.approx(embed + wo + (parts["text"] - embed - wo) / 2, rel=0.01)
    # NF4: half a byte per weight plus a one-byte absmax per 64 (nested statistics).
    assert nf4 == pytest.approx(embed + (parts["text"] - embed) / 2 * (0.5 + 1 / 64), rel=0.001)


# -- choosing plans -------------------------------------------------------------------------------
def _plan_cli(*args):
    return subprocess.run([sys.executable, "-m", "engine", "plan", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)


def test_plan_cli_fits_the_1_7b_at_480p_in_8_gb():
    proc = _plan_cli("--variant", "humo-1.7b", "--size", "832x480", "--frames", "97", "--vram-gb", "8", "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["tokens"] == 26 * 1560
    assert data["peak_bytes"] <= data["budget_bytes"] <= 8 * GIB
    assert {p["name"] for p in data["parts"]} == {"text", "audio", "vae", "dit"}
    for part in data["parts"]:
        assert part["stage_peak"] <= data["budget_bytes"]
        assert part["weights"] > 0 and part["activations"] > 0


def test_plan_cli_fits_the_17b_at_720p_in_24_gb_and_prints_a_table():
    proc = _plan_cli("--variant", "humo-17b", "--size", "1280x720", "--frames", "97", "--vram-gb", "24")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "93,600 DiT tokens" in out and "estimated peak" in out
    for label in ("text encoder", "audio encoder", "VAE", "DiT"):
        assert label in out
    choice = memory.choose_plan(V170, Job(1280, 720, 97), vram_gb=24)
    assert choice.plan.name in out
    # 34 GB of bf16 (or 17 GB of fp8) weights cannot sit on a 24 GB card: the DiT must stream its blocks.
    assert choice.plan.offload == "block"
    dit = choice.estimate.parts[3]
    assert dit.name == "dit" and dit.resident < dit.weights / 10
    assert choice.estimate.peak <= choice.budget <= 24 * GIB


def test_plan_cli_fails_cleanly_when_nothing_fits():
    proc = _plan_cli("--variant", "humo-17b", "--size", "1280x720", "--frames", "97", "--vram-gb", "2")
    assert proc.returncode == 2
    assert "No memory plan fits HuMo-17B" in proc.stderr and "Traceback" not in proc.stderr
    assert proc.stderr.count("\n") == 1


def test_auto_takes_the_fastest_plan_that_fits_at_every_budget():
    job = Job(1280, 720, 97)
    seen = []
    for gb in (24, 40, 48, 80, 141):
        choice = memory.choose_plan(V170, job, vram_gb=gb)
        assert choice.estimate.peak <= choice.budget
        seen.append(choice.estimate.overhead_s)
        # Nothing faster (by the same ranking) also fits.
        for plan in memory.candidate_plans():
            est = estimate(plan, V170, job)
            if est.peak <= choice.budget:
                assert memory.speed_key(est) >= memory.speed_key(choice.estimate)
    assert seen == sorted(seen, reverse=True)            # more memory never makes it slower
    assert memory.choose_plan(V170, job, vram_gb=141).plan == Plan()
    assert memory.choose_plan(V17, Job(832, 480, 97), vram_gb=80).plan == Plan()


def test_activations_grow_with_tokens_and_batch():
    a = memory.dit_activation_bytes(V170.dit, Job(1280, 720, 97), 1, torch.bfloat16)
    b = memory.dit_activation_bytes(V170.dit, Job(1280, 720, 97), 3, torch.bfloat16)
    c = memory.dit_activation_bytes(V170.dit, Job(832, 480, 97), 1, torch.bfloat16)
    assert b == 3 * a and c < a / 2
    # 93 600 tokens × (8·5120 + 4·13824) bytes (the feed-forward phase) × slack 1.25 ≈ 10.5 GiB.
    assert 10 * GIB < a < 13 * GIB
    tiled = memory.vae_activation_bytes(96, Job(1280, 720, 97), torch.bfloat16, 256, decode=True)
    whole = memory.vae_activation_bytes(96, Job(1280, 720, 97), torch.bfloat16, None, decode=True)
    assert tiled < whole / 2


# -- every CPU-runnable plan on the tiny variant ---------------------------------------------------
def _run(weights, plan: str, frames=9):
    engine = Engine(weights, device="cpu", plan=plan)
    engine.load("tiny")
    seen = {}
    vae = engine.parts["vae"]
    decode_stream = vae.decode_stream

    def recording_decode(latents):      # records what the real (streamed) decode received and returned
        seen["latents"], chunks = latents.clone(), []
        for chunk in decode_stream(latents):
            chunks.append(chunk.clone())
            seen["video"] = torch.cat(chunks, dim=1)    # the writer may stop reading after the last frame
            yield chunk

    vae.decode_stream = recording_decode
    request = GenerationRequest(prompt="A woman talks to the camera", variant="tiny", mode="TIA",
                                images=[str(ROOT / "assets" / "portrait.png")], audio=str(ROOT / "assets" / "voice.wav"),
                                frames=frames, steps=2, width=128, height=96, seed=5, preview=False)
    events = list(engine.generate(request))
    assert events[-1].kind == "result"
    return engine, seen


@pytest.fixture(scope="module")
def reference(tiny_weights):
    return _run(tiny_weights, "cpu")[1]


def _rel(a, b):
    return float((a - b).norm() / b.norm())


# Relative L2 differences to the plain CPU run, measured on this tiny variant (random weights, which
# magnify quantization and tile seams far beyond what trained weights show):
#   fp8 DiT 0.026 (latents) / 0.035 (video); text int8 0.0008 / 0.0019; text nf4 0.21 / 0.32;
#   VAE tiles of 96 px on 128×96 frames: 0.0007 / 0.20 (latents move through the tiled reference
#   encode only); model offload, block offload and sequential passes: exactly 0.
# Bounds are the measured values with headroom.
CPU_PLANS = {
    "cpu+model-offload": (0.0, 0.0),
    "cpu+block-offload": (0.0, 0.0),
    "cpu+sequential": (0.0, 0.0),
    "cpu+fp8": (0.05, 0.06),
    "cpu+text-int8": (0.003, 0.006),
    "cpu+text-nf4": (0.35, 0.5),
    "cpu+vae-tiling-96": (0.003, 0.3),
}


@pytest.mark.parametrize("plan", list(CPU_PLANS))
def test_cpu_plans_match_the_plain_run_and_hold_the_estimated_bytes(tiny_weights, reference, plan):
    engine, seen = _run(tiny_weights, plan)
    assert engine.plan == parse_plan(plan)
    lat_bound, video_bound = CPU_PLANS[plan]
    lat, video = _rel(seen["latents"], reference["latents"]), _rel(seen["video"], reference["video"])
    assert lat <= lat_bound and video <= video_bound, (plan, lat, video)
    if lat_bound:
        assert lat > 0 or video > 0          # the plan really changed something
    est = {p.name: p.weights for p in estimate(engine.plan, TINY, Job(128, 96, 9)).parts}
    real = {name: memory.module_bytes(memory._module(part)) for name, part in engine.parts.items()}
    assert real == est


def test_plain_cpu_weights_match_the_estimate(tiny_weights):
    engine = Engine(tiny_weights, device="cpu", plan="cpu")
    engine.load("tiny")
    est = {p.name: p.weights for p in estimate("cpu", TINY, Job(128, 96, 9)).parts}
    assert {n: memory.module_bytes(memory._module(p)) for n, p in engine.parts.items()} == est


def test_model_offload_swaps_weights_back_without_copies():
    module = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4))
    module.register_buffer("table", torch.arange(3.0))
    before = [t.data_ptr() for t in list(module.parameters()) + list(module.buffers())]
    placement = memory.Placement(parse_plan("cpu+model-offload"), "cpu")
    placement.stage("dit", module)
    assert placement.current is not None
    placement.release()
    assert [t.data_ptr() for t in list(module.parameters()) + list(module.buffers())] == before


def test_idle_timeout_unloads_the_parts(tiny_weights):
    engine = Engine(tiny_weights, device="cpu", plan="cpu", idle_unload_s=0.3)
    list(engine.generate(GenerationRequest(prompt="A man talks", variant="tiny", mode="TA",
                                           audio=str(ROOT / "assets" / "voice.wav"), frames=5, steps=1,
                                           preview=False)))
    assert engine.parts
    wait_until(lambda: not engine.parts, 10, "the idle engine to unload")
    assert not engine.parts and engine.plan is None


def test_int8_text_encoder_keeps_feed_forward_outputs_out_of_float16():
    """bitsandbytes' 8-bit matmul casts its input to float16; umT5-XXL's feed-forward output layer
    sees activations beyond float16's range (why transformers keeps T5's `wo` unquantized). Here the
    feed-forward weights are scaled up until those activations pass 65504."""
    from transformers import UMT5Config, UMT5EncoderModel

    from engine.memory.storage import quantizable_linears, quantize_linears

    cfg = UMT5Config(vocab_size=100, d_model=64, d_kv=32, d_ff=128, num_layers=2, num_heads=2,
                     feed_forward_proj="gated-gelu")

    def build():
        torch.manual_seed(0)
        model = UMT5EncoderModel(cfg).eval().requires_grad_(False).to(torch.bfloat16)
        for block in model.encoder.block:
            block.layer[-1].DenseReluDense.wi_0.weight.mul_(400)
            block.layer[-1].DenseReluDense.wi_1.weight.mul_(400)
        return model

    ids = torch.randint(0, 100, (1, 12), generator=torch.Generator().manual_seed(1))
    ref_model = build()
    ff = ref_model.encoder.block[0].layer[-1].DenseReluDense
    with torch.no_grad():
        ref = ref_model(input_ids=ids).last_hidden_state.float()
        x = ref_model.encoder.block[0].layer[-1].layer_norm(ref_model.encoder.embed_tokens(ids))
        assert (ff.act(ff.wi_0(x)) * ff.wi_1(x)).abs().max() > 65504      # the case this guards against
    names = {n for n, m in ref_model.named_modules() if m in quantizable_linears(ref_model, "int8")}
    assert names and not any(n.endswith(".wo") for n in names)
    assert len(quantizable_linears(ref_model, "nf4")) == len(names) + cfg.num_layers
    model = build()
    quantize_linears(model, "int8", torch.bfloat16, "cpu")
    assert type(model.encoder.block[0].layer[-1].DenseReluDense.wo) is torch.nn.Linear
    assert type(model.encoder.block[0].layer[-1].DenseReluDense.wi_0).__name__ == "Linear8bitLt"
    with torch.no_grad():
        out = model(input_ids=ids).last_hidden_state.float()
    assert torch.isfinite(out).all()
    assert _rel(out, ref) < 0.05


def test_block_offload_options_are_what_diffusers_takes():
    import inspect

    from diffusers.hooks import apply_group_offloading
    from diffusers.models.modeling_utils import ModelMixin

    from engine.memory.placement import group_offload_options

    gpu = group_offload_options(parse_plan("block-offload+blocks-2"), "cuda")
    assert gpu["use_stream"] and gpu["record_stream"] and gpu["num_blocks_per_group"] == 2
    assert gpu["onload_device"] == torch.device("cuda") and gpu["offload_device"] == torch.device("cpu")
    cpu = group_offload_options(parse_plan("cpu+block-offload"), "cpu")
    assert not cpu["use_stream"] and not cpu["record_stream"]   # diffusers refuses record_stream without a stream
    for options in (gpu, cpu):
        inspect.signature(ModelMixin.enable_group_offload).bind(None, **options)
        inspect.signature(apply_group_offloading).bind(torch.nn.Linear(1, 1), **options)
    # the CPU options really apply (the GPU ones need CUDA streams): blocks stay in CPU memory
    model = dit_from_shape(TINY.dit).eval()
    model.enable_group_offload(**cpu)
    x = torch.randn(1, 16, 2, 4, 4)
    (out,) = model(x, torch.tensor([500.0]), torch.randn(1, 7, TINY.dit.text_dim), torch.randn(1, 2, 8, 5, 32),
                   return_dict=False)
    assert out.shape == x.shape and torch.isfinite(out).all()


def test_a_video_longer_than_a_window_needs_the_activations_of_one_window():
    one = Job(832, 480, 97)
    long = Job(832, 480, 6145)
    assert long.tokens(V17.dit) == one.tokens(V17.dit) == 26 * 30 * 52
    assert memory.dit_activation_bytes(V17.dit, long, 1, torch.bfloat16) == \
        memory.dit_activation_bytes(V17.dit, one, 1, torch.bfloat16)
    # Streamed decode and zero-video encode: a window's worth; tiled decode holds the whole video.
    for decode in (True, False):
        assert memory.vae_activation_bytes(96, long, torch.bfloat16, None, decode) == \
            memory.vae_activation_bytes(96, one, torch.bfloat16, None, decode)
    assert memory.vae_activation_bytes(96, long, torch.bfloat16, 256, True) > \
        10 * memory.vae_activation_bytes(96, one, torch.bfloat16, 256, True)
    # The solver's latents do grow with the length; a shorter window means fewer tokens per pass.
    assert memory.latents_bytes(long) > 50 * memory.latents_bytes(one)
    assert Job(832, 480, 6145, window_length=13).tokens(V17.dit) == 14 * 30 * 52
    # What the pipeline asks for: a 4-minute video at 480p fits a 24 GB card.
    from engine.options import auto_plan
    assert auto_plan("humo-1.7b", 832, 480, 6145, vram_gb=24)["plan"] is not None
