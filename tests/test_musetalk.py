"""MuseTalk behaviour the golden cases do not pin: the exact-time window rule, streaming ranges,
the output cycle with a face-less frame, mask modes and loader errors."""
from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
import torch

from engine.dub.blend import face_mask, jaw_kernel
from engine.dub.cycle import output_source, output_sources
from engine.dub.face.crop import face_box, track_boxes
from engine.dub.musetalk import FEATURE_RATE, MuseTalk, window_rows
from engine.errors import InputError, WeightsError
from tests.conftest import GOLDEN

MUSETALK = GOLDEN / "musetalk"


def test_exact_rule_keeps_29_97_fps_windows_on_time_for_ten_minutes():
    seconds, fps = 600, 29.97
    rows = window_rows(seconds * 16000, fps, seconds * FEATURE_RATE, rule="exact")
    assert rows.shape == (math.floor(seconds * fps), 10)
    p = math.ceil(FEATURE_RATE / fps)
    frame = np.arange(rows.shape[0])
    frame_row = frame * FEATURE_RATE / fps                # where frame i sits in feature rows
    starts = rows[:, 0] + 2 * p                            # padded start = frame time (floored)
    inner = rows[:, 0] >= 0
    drift = frame_row[inner] - starts[inner]
    assert drift.min() > -1e-9 and drift.max() < 1, (drift.min(), drift.max())
    # every window is 10 consecutive rows (or zero padding at the very start/end)
    inside = (rows >= 0).all(axis=1)
    assert (np.diff(rows[inside], axis=1) == 1).all()


def test_official_rule_drifts_at_29_97_fps_as_released():
    seconds = 600
    rows = window_rows(seconds * 16000, 29.97, seconds * FEATURE_RATE, rule="official")
    assert rows.shape[0] == seconds * 29                   # int(29.97) windows per second
    last = rows.shape[0] - 1
    played_at = last / 29.97 * FEATURE_RATE                # where that frame is shown in a 29.97 fps video
    assert rows[last, 0] + 4 - played_at > 900             # almost 20 s late after ten minutes


def test_official_rule_float_product_starts_frame_145_one_row_early_at_29_fps():
    rows = window_rows(10 * 16000, 29, 10 * FEATURE_RATE, rule="official")
    exact = window_rows(10 * 16000, 29, 10 * FEATURE_RATE, rule="exact")
    assert rows[145, 0] == 245 and exact[145, 0] == 246
    assert (rows[144] == exact[144]).all() and (rows[146] == exact[146]).all()


@pytest.mark.parametrize("rule", ["official", "exact"])
def test_window_ranges_stream_the_same_windows(rule):
    features = torch.randn(1, 400, 5, 8)
    n_samples = 8 * 16000
    whole = MuseTalk.audio_windows(features, n_samples, 29.97, rule=rule)
    parts = [MuseTalk.audio_windows(features, n_samples, 29.97, rule=rule, frames=range(a, min(a + 50, whole.shape[0])))
             for a in range(0, whole.shape[0], 50)]
    assert torch.equal(torch.cat(parts), whole)
    assert whole.shape[1:] == (50, 8)


def test_too_short_audio_and_bad_rules_are_refused_in_one_line():
    with pytest.raises(InputError, match="too short"):
        window_rows(1000, 25, 3)         # 3 rows get only 3 zero rows each side: 9 < 10
    with pytest.raises(InputError, match="rule"):
        window_rows(16000, 25, 50, rule="nearest")
    with pytest.raises(InputError, match="positive"):
        window_rows(16000, 0, 50)


def test_output_cycle_with_a_faceless_frame_matches_the_recorded_official_run():
    meta = json.loads((MUSETALK / "pipeline_noface.json").read_text())
    has_face = [meta["no_face_frame"] != f for f in range(meta["input_frames"])]
    sources = output_sources(meta["output_frames"], has_face)
    assert [s.latent_frame for s in sources] == meta["latent_source_frame"]
    assert [s.frame if s.written else None for s in sources] == meta["pasted_frame"]
    assert [s.index for s in sources if s.written] == meta["written_indices"]
    assert all(output_source(s.index, has_face) == s for s in sources)


def test_no_face_anywhere_is_one_clear_error():
    keypoints = np.zeros((3, 133, 2), np.float32)
    with pytest.raises(InputError, match="No face"):
        track_boxes(keypoints, [np.zeros((0, 5))] * 3)
    with pytest.raises(InputError, match="No face"):
        output_sources(5, [False, False])
    assert face_box(np.zeros((68, 2)), None) is None


def test_mask_modes():
    classes = np.zeros((512, 512), np.int64)
    classes[150:300, 150:360] = 1        # skin
    classes[200:240, 240:270] = 10       # nose
    classes[260:280, 230:280] = 12       # lip
    classes[320:400, 200:310] = 14       # neck
    raw, neck, jaw = (face_mask(classes, m) for m in ("raw", "neck", "jaw"))
    assert set(np.unique(raw)) == {0, 255}
    assert raw[170, 200] == 255 and raw[350, 250] == 0 and neck[350, 250] == 255
    assert raw[220, 250] == 0 and jaw[220, 250] == 0     # the nose is never replaced
    assert jaw[303, 255] == 255 and raw[303, 255] == 0   # jaw mode reaches past the skin
    assert jaw_kernel()[:10].sum() == 0 and jaw_kernel()[20].sum() == 21
    with pytest.raises(InputError, match="mode"):
        face_mask(classes, "mouth")


def _models_copy(tmp_path):
    folder = tmp_path / "models"
    shutil.copytree(MUSETALK / "models", folder)
    for path in folder.rglob("*"):
        path.chmod(0o644 if path.is_file() else 0o755)
    return folder


def test_loader_names_the_file_and_key_of_a_missing_or_misshaped_weight(tmp_path):
    folder = _models_copy(tmp_path)
    unet = folder / "musetalkV15" / "unet.pth"
    state = torch.load(unet, weights_only=True)
    key = "conv_in.weight"
    state.pop(key)
    torch.save(state, unet)
    with pytest.raises(WeightsError, match="unet.pth.*conv_in.weight"):
        MuseTalk.load(folder)
    vae = folder / "sd-vae" / "diffusion_pytorch_model.bin"
    vae_state = torch.load(vae, weights_only=True)
    name = "encoder.mid_block.attentions.0.query.weight"
    vae_state[name] = vae_state[name][:, :-1]
    torch.save(vae_state, vae)
    shutil.copy(MUSETALK / "models" / "musetalkV15" / "unet.pth", unet)
    with pytest.raises(WeightsError, match=r"query\.weight.*diffusion_pytorch_model\.bin"):
        MuseTalk.load(folder)


def test_missing_models_folder_is_a_weights_error(tmp_path):
    with pytest.raises(WeightsError, match="does not exist"):
        MuseTalk.load(tmp_path / "nowhere")


def test_golden_discovery_finds_every_musetalk_case_and_skips_the_json_only_one():
    from engine.tools.golden import discover

    names = {name for name, _ in discover(GOLDEN)}
    assert {"musetalk:unet", "musetalk:audio_fps25", "musetalk:audio_fps30", "musetalk:audio_long",
            "musetalk:vae", "musetalk:crop", "musetalk:blend", "musetalk:pipeline"} <= names
    assert not any("noface" in n for n in names)


def test_voice_features_are_made_piece_by_piece_with_the_whole_numbers(golden_dir):
    from engine.dub.musetalk import VoiceFeatures, window_rows
    from engine.media.audio import load_audio
    from tests.dub_fixtures import SPEECH_60S

    model = MuseTalk.load(golden_dir / "musetalk" / "models")
    wave = load_audio(SPEECH_60S, 16000)[: 16000 * 34]                 # a full 30 s piece and a partial one
    whole = model.audio_features(wave)
    lazy = model.voice_features(wave)
    assert lazy.shape == tuple(whole.shape)
    n = window_rows(len(wave), 25, whole.shape[1], "exact").shape[0]
    frames = [0, 1, 372, 373, 374, 375, 376, n - 1]                   # around the 30 s piece boundary and the end
    ours = model.audio_windows(lazy, len(wave), 25, "exact", frames=frames)
    assert torch.equal(ours, model.audio_windows(whole, len(wave), 25, "exact", frames=frames))
    assert len(lazy._kept) <= VoiceFeatures.KEEP
