"""Context windows (engine.humo.windows): any length from a model trained on 97 frames.

The golden tiny checkpoints of both layouts (1.7B "append", 17B "channel") run the real sampler:
a video that fits one window gives the plain run's latents bit for bit; longer ones blend windows.
"""
from __future__ import annotations

import json

import pytest
import torch

from engine.humo.windows import WindowPlan, boundary_frames, seam_metric
from tests.conftest import GOLDEN


def golden_sampler(name: str):
    """(run(windows) -> final latents, T) for the golden sample case `name`, through the real loaders."""
    from engine.humo.conditions import channel_conditions
    from engine.humo.dit_loader import load_dit
    from engine.humo.sampler import Conditions, denoise, pad_text, seeded_noise
    from engine.tools.golden import _load_io, dit_shape_from_meta

    meta = json.loads((GOLDEN / f"{name}.json").read_text())
    shape = dit_shape_from_meta(json.loads((GOLDEN / meta["model_meta"]).read_text()))
    model = load_dit(shape, GOLDEN / meta["model"], dtype=torch.float32)
    io = _load_io(GOLDEN, meta["io"])
    T, R, h, w = meta["latent_frames"], meta["ref_frames"], meta["latent_h"], meta["latent_w"]
    reference = "channel" if shape.in_dim > shape.out_dim else "append"
    scales = {k: v for k, v in meta["scales"].items() if k.startswith("scale_")}

    def run(windows, frames: int = T):
        audio = io["audio"]
        if frames != T:   # a longer video: the golden audio windows repeated, the reference frames kept last
            reps = -(-frames // T)
            audio = torch.cat([audio[:T].repeat(reps, 1, 1, 1)[:frames], audio[T:]])
        cond = Conditions(text=pad_text(io["context"], shape.text_len), null=pad_text(io["context_null"], shape.text_len),
                          audio=audio, ref_frames=R, ref_latents=io["ref_latents"])
        if reference == "channel":
            zeros = io["zero_latents"]
            if frames != T:     # zero latents past the first frame are all alike (the VAE is causal)
                zeros = torch.cat([zeros[:, :1], zeros[:, 1:2].repeat(1, frames + R - 1, 1, 1)], dim=1)
            cond.y_c, cond.y_null = channel_conditions(zeros, io["ref_latents"], frames, R)
        with torch.no_grad():
            return denoise(lambda *a: model(*a, return_dict=False)[0], seeded_noise(meta["seed"], frames + R, h, w), cond,
                           reference=reference, mode=meta["mode"], scales=scales, steps=meta["steps"],
                           shift=meta["shift"], switch_t=meta["scales"].get("step_change"), windows=windows)

    return run, T, io["final"]


@pytest.mark.parametrize("case", ["sample_1.7b_tia", "sample_17b_tia"])
def test_a_video_that_fits_one_window_is_bit_identical(case):
    run, T, golden = golden_sampler(case)
    plain = run(None)
    for plan in (WindowPlan(length=T, overlap=1, schedule="fixed"), WindowPlan(length=25, overlap=6)):
        assert torch.equal(run(plan), plain), plan
    rel = (plain - golden).norm() / golden.norm()
    assert rel < 1e-4, rel


@pytest.mark.parametrize("case, schedule", [("sample_1.7b_ta", "fixed"), ("sample_17b_ta", "shifted")])
def test_a_longer_video_blends_windows(case, schedule):
    run, T, _ = golden_sampler(case)
    frames = 7
    plan = WindowPlan(length=3, overlap=1, schedule=schedule)
    assert plan.count(frames) == 3
    out = run(plan, frames)
    assert out.shape[1] == frames and torch.isfinite(out).all()
    single = run(WindowPlan(length=frames, overlap=1), frames)
    assert not torch.equal(out, single)          # the windows really ran, each on its own slice
    # Every window sees the same model on its slice: the blend stays in the plain run's range.
    assert out.abs().max() <= 4 * single.abs().max()


@pytest.mark.parametrize("T", [1, 25, 26, 40, 97, 1537])
@pytest.mark.parametrize("schedule", ["fixed", "shifted"])
def test_windows_cover_every_frame_at_every_step(T, schedule):
    plan = WindowPlan(length=25, overlap=6, schedule=schedule)
    for step in range(4):
        spans = plan.spans(T, step)
        covered = torch.zeros(T)
        for s, e in spans:
            assert 0 <= s < e <= T and e - s == min(25, T)
            covered[s:e] += plan.weights(s, e, T)
        assert (covered > 0).all(), (T, step, spans)
    if T >= 40 and schedule == "shifted":      # room to move (a 26-frame video has none)
        assert plan.spans(T, 0) != plan.spans(T, 1), "the shifted schedule moves its seams"


def test_bad_window_settings_are_refused_with_a_sentence():
    for kwargs in ({"length": 1}, {"overlap": 0}, {"overlap": 25}, {"schedule": "random"}):
        with pytest.raises(ValueError) as err:
            WindowPlan(**kwargs)
        assert "\n" not in str(err.value) and str(err.value).endswith(".")


def test_seam_metric_sees_a_cut():
    import numpy as np
    frames = np.zeros((20, 4, 4, 3), np.uint8)
    frames[:, :, :, 0] = np.arange(20)[:, None, None]         # a slow ramp: one step per frame
    frames[10:] += 40                                         # a jump at frame 10
    m = seam_metric(frames, [10])
    assert m["seam"] == pytest.approx((41 + 40 + 40) / 3) and m["inside"] == pytest.approx(1 / 3) and m["ratio"] > 10
    assert boundary_frames(WindowPlan(length=25, overlap=6, schedule="fixed"), 40) == [4 * 15 - 3, 4 * 25 - 3]


def test_a_ten_minute_clip_is_accepted_in_context_windows():
    """The engine's own check (before anything loads): a 10-minute clip makes a 15 000-frame video
    in shifted windows of 97 frames, and says so; past the 15-minute ceiling is refused."""
    from engine.errors import InputError
    from engine.humo.resolve import resolve
    from engine.request import GenerationRequest

    req = GenerationRequest(prompt="A long talk.", variant="tiny", mode="TA", audio="talk.wav")
    res = resolve(req, audio_samples=16000 * 600)
    assert res.frames == 14997 and res.windows is not None and res.windows.schedule == "shifted"
    assert res.windows.count(res.latent_frames) == 198      # ceil((3750 - 25) / 19) + 1
    assert any("198 overlapping context windows per step" in n for n in res.notices), res.notices
    assert res.settings(req)["window_length"] == 25
    with pytest.raises(InputError) as err:
        resolve(req, audio_samples=16000 * 960)
    assert "longer than the studio makes" in str(err.value)


def test_zero_video_latents_of_any_length_equal_the_whole_encode(tiny_weights):
    """The 17B layout's all-zero video: walked a chunk at a time and cut short at the encoder's
    fixed point, it equals the encode of the whole zero video bit for bit (here past that point)."""
    from engine.humo.vae import STRIDE_T, WanVAE

    vae = WanVAE(tiny_weights / "tiny" / "vae" / "Wan2.1_VAE.pth", dtype=torch.float32)
    for frames in (1, 2, 40):
        whole = vae.encode(torch.zeros(3, 1 + STRIDE_T * (frames - 1), 32, 48))
        got = vae.zero_latents(frames, 32, 48)
        assert got.shape == whole.shape == (16, frames, 4, 6)
        assert torch.equal(got, whole), frames
    # 6145 video frames (1537 latent frames) never exist as a video: only latents come back.
    long = vae.zero_latents(1537, 32, 48)
    assert long.shape == (16, 1537, 4, 6) and torch.equal(long[:, 40:], long[:, -1:].expand(-1, 1497, -1, -1))
