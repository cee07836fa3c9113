"""Long videos in the studio, without a browser: the estimate line shown before a run (windows
and time, scaled by the number of windows), the status line naming the window being denoised,
the window settings on their way through the form, presets and "reuse settings", and the
sampler's window progress (the same numbers with or without it)."""
from __future__ import annotations

import pytest
import torch

from engine.errors import InputError
from engine.events import StepEvent
from engine.options import about, run_estimate
from studio.performance import window_line


# ----------------------------------------------------------------------------- the estimate

def test_the_command_line_gives_the_estimate_before_a_long_video(capsys, tmp_path):
    from engine.__main__ import main
    from tests.conftest import ROOT

    speech = ROOT.parent / "shared" / "media"
    base = ["generate", "--dry-run", "--variant", "humo-1.7b", "--mode", "TA", "--prompt", "A talk.",
            "--out", str(tmp_path / "o.mp4")]
    assert main(base + ["--audio", str(speech / "speech_60s_16k.wav")]) == 0
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("estimate: ")]
    est = run_estimate("humo-1.7b", None, None, "auto", "TA", None, audio_seconds=60.0)
    assert len(lines) == 1 and f"{est['windows']} overlapping windows of 97 frames" in lines[0], err
    assert about(est["seconds"]) in lines[0]
    # A video that fits one window (97 frames of the 9 s clip): an ordinary run, no estimate.
    assert main(base + ["--audio", str(speech / "speech_9s_16k.wav"), "--frames", "97"]) == 0
    assert "estimate: " not in capsys.readouterr().err


def test_the_estimate_scales_with_the_windows():
    one = run_estimate("humo-1.7b", 832, 480, 97, "TIA", 50, on="cuda")
    assert one["windows"] == 1 and one["seconds"] is None           # an ordinary run: nothing estimated
    long = run_estimate("humo-1.7b", 832, 480, 1201, "TIA", 50, on="cuda")
    assert (long["latent_frames"], long["window_frames"], long["windows"]) == (301, 97, 16)
    assert long["seconds"] == pytest.approx(long["passes"] * long["pass_s"])
    # Twice the windows per step, twice the passes of the same window size: twice the time.
    double = run_estimate("humo-1.7b", 832, 480, 2 * 1200 + 1, "TIA", 50, on="cuda",
                          window_schedule="fixed")
    single = run_estimate("humo-1.7b", 832, 480, 1201, "TIA", 50, on="cuda", window_schedule="fixed")
    assert double["pass_s"] == single["pass_s"]
    assert double["seconds"] / single["seconds"] == pytest.approx(double["windows"] / single["windows"])
    assert run_estimate("humo-1.7b", 832, 480, 1201, "TIA", 25, on="cuda")["seconds"] < long["seconds"]
    assert long["pass_s"] == pytest.approx(4.2e14 / 4e14, rel=0.05)    # SPEC §6: one pass at 40 560 tokens


def test_the_estimate_follows_the_clip_and_the_one_rule():
    est = run_estimate("tiny", 128, 96, "auto", "TA", 2, audio_seconds=3.2, window_length=4, window_overlap=1,
                       on="cpu")
    assert (est["frames"], est["latent_frames"], est["windows"], est["window_frames"]) == (77, 20, 7, 13)
    assert run_estimate("tiny", 128, 96, "auto", "TA", 2, audio_seconds=600.0, on="cpu")["frames"] == 14997
    with pytest.raises(InputError, match="longer than the studio makes"):
        run_estimate("tiny", 128, 96, "auto", "TA", 2, audio_seconds=16 * 60.0)
    with pytest.raises(InputError, match="Window overlap must be between 1 and 3, not 4."):
        run_estimate("tiny", 128, 96, 201, "TI", 2, window_length=4, window_overlap=4)


def test_the_line_before_a_run(tmp_path):
    import numpy as np
    import soundfile as sf

    clip = tmp_path / "clip.wav"
    sf.write(str(clip), (0.2 * np.sin(np.arange(16000 * 4) / 9)).astype(np.float32), 16000)
    assert window_line("tiny", "TA", str(clip), 0, 0, True, 17, 128, 96, 2) == ""        # one window
    line = window_line("tiny", "TA", str(clip), 0, 0, True, 17, 128, 96, 2, 4, 1, "fixed")
    assert "Long video: 97 frames, 8 overlapping windows of 13 frames** (fixed) at each of 2 steps" in line
    assert "estimated denoising time" in line and "an estimate" in line, line
    trimmed = window_line("tiny", "TA", str(clip), 1, 3.2, True, 17, 128, 96, 2, 4, 1, "fixed")
    assert "Long video: 53 frames" in trimmed, trimmed                        # 2.2 s kept: 55 -> 53 frames
    assert window_line("tiny", "TA", str(clip), 0, 0, False, 401, 128, 96, 2).startswith("**Long video: 401 frames")
    assert window_line("tiny", "TA", None, 0, 0, True, 401, 128, 96, 2) == ""          # no clip yet
    assert window_line("tiny", "TA", str(clip), 0, 0, True, 17, 128, 96, 2, 4, 9) == \
        "**Problem:** Window overlap must be between 1 and 3, not 9."


def test_rough_durations():
    assert [about(s) for s in (0.2, 42, 600, 3 * 3600 + 300, 5 * 86400)] == \
        ["under a second", "about 42 s", "about 10 min", "about 3 h 05 min", "about 5 days"]


# ----------------------------------------------------------------------------- during a run

def test_the_status_names_the_window_being_denoised():
    from studio.jobs import RunState, _apply
    from studio.status import status_html

    state = RunState()
    _apply(state, StepEvent(0, 40, 0.1, 0.0, window=1, windows=5))
    assert state.eta_s is None and state.fraction == 0.0          # nothing to extrapolate from yet
    _apply(state, StepEvent(2, 40, 10.0, 190.0, window=2, windows=5))
    line = status_html(state)
    assert "step 3/40 · window 2 of 5" in line and 'data-window="2" data-windows="5"' in line, line
    assert 'data-step="2"' in line and "ETA" in line
    assert state.fraction == pytest.approx((2 + 1 / 5) / 40)
    _apply(state, StepEvent(3, 40, 12.0, 150.0))                  # the step is done: no window until the next
    line = status_html(state)
    assert "step 3/40 ·" in line and "window" not in line, line


# ----------------------------------------------------------------------------- the form, presets, reuse

def test_the_window_settings_travel_through_the_form():
    from studio.form import API_DEFAULTS, FORM_KEYS, form_values, raw_request, resolve_form, values_from_settings

    assert FORM_KEYS[-3:] == ("window_length", "window_overlap", "window_schedule")
    old_caller = form_values(["tiny", "TI", "A person talks."] + [None] * 24)       # the 27 inputs before windows
    assert all(old_caller[k] is None and API_DEFAULTS[k] is None for k in FORM_KEYS[-3:])
    f = form_values(["tiny", "TI", "A person talks.", "", ["face.png"]] + [None] * 22 + [8, 2, "fixed"])
    f["match_audio"], f["frames"] = False, 201
    assert {k: raw_request(f)[k] for k in FORM_KEYS[-3:]} == {"window_length": 8, "window_overlap": 2,
                                                              "window_schedule": "fixed"}
    request = resolve_form(f).request
    assert (request.window_length, request.window_overlap, request.window_schedule) == (8, 2, "fixed")
    with pytest.raises(InputError, match="Window overlap must be between 1 and 7, not 9."):
        resolve_form({**f, "window_overlap": 9})
    values = values_from_settings({"variant": "tiny", "mode": "TA", "prompt": "x", "window_length": 8,
                                   "window_overlap": 2, "window_schedule": "fixed"}, "tiny")
    assert values[-3:] == [8, 2, "fixed"]
    assert values_from_settings({"variant": "tiny", "prompt": "x"}, "tiny")[-3:] == [None, None, "shifted"]


def test_a_preset_may_set_the_windows():
    from studio.presets import PresetError, apply, parse_preset

    preset = parse_preset({"name": "Long", "description": "d", "applies_to": ["tiny"], "window_length": 8,
                           "window_overlap": 2, "window_schedule": "Fixed"})
    current = {"variant": "tiny", "steps": 4, "window_length": None, "window_overlap": None, "window_schedule": "shifted"}
    assert apply(preset, current) == {**current, "window_length": 8, "window_overlap": 2, "window_schedule": "fixed"}
    for bad, says in (({"window_length": 1}, "Window length must be between 2 and 200, not 1."),
                      ({"window_overlap": 25}, "Window overlap must be between 1 and 24, not 25."),
                      ({"window_schedule": "random"}, "Window schedule 'random' is not one of: shifted, fixed."),
                      ({"window_length": True}, "the window settings are numbers")):
        with pytest.raises(PresetError, match=says):
            parse_preset({"name": "Bad", "description": "d", "applies_to": ["tiny"], **bad})


# ----------------------------------------------------------------------------- the sampler

def test_window_progress_changes_nothing_but_the_events():
    from engine.humo.sampler import Conditions, denoise_steps, seeded_noise
    from engine.humo.windows import WindowPlan, WindowStart

    T, R, h, w = 7, 1, 2, 2
    cond = Conditions(text=torch.ones(4, 3), null=torch.zeros(4, 3), audio=torch.randn(T + R, 8, 5, 2),
                      ref_frames=R, ref_latents=torch.randn(16, R, h, w))

    def model(x, t, text, audio, y):         # a stand-in network: depends on its inputs, cheap
        return 0.1 * x + audio.mean(dim=(2, 3, 4))[:, None, :, None, None] + text.mean() + t[:, None, None, None, None] / 1000

    def run(progress: bool):
        steps = denoise_steps(model, seeded_noise(0, T + R, h, w), cond, reference="append", mode="TA",
                              scales={"scale_t": 5.0, "scale_a": 5.5}, steps=3, shift=5.0,
                              windows=WindowPlan(3, 1, "shifted"), window_progress=progress)
        items = []
        while True:
            try:
                items.append(next(steps))
            except StopIteration as done:
                return items, done.value

    plain, final = run(False)
    told, final_told = run(True)
    assert torch.equal(final, final_told)
    assert all(isinstance(i, tuple) for i in plain) and [i[0] for i in plain] == [1, 2, 3]
    starts = [i for i in told if isinstance(i, WindowStart)]
    assert [i[0] for i in told if isinstance(i, tuple)] == [1, 2, 3]
    assert starts[0] == WindowStart(step=1, total=3, window=1, windows=3)
    assert {s.step for s in starts} == {1, 2, 3} and all(1 <= s.window <= s.windows for s in starts)
    assert len(starts) == sum(len(WindowPlan(3, 1, "shifted").spans(T, i)) for i in range(3))
