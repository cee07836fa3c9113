"""LatentSync building blocks beyond the golden numbers: strict loading, the released config,
batched guidance, DeepCache, the named fix options and bad input."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.dub.face.align import FaceAligner, three_points
from engine.dub.latentsync.audio import WhisperStates, chunk_count, frame_rows
from engine.dub.latentsync.ddim import guided_audio
from engine.dub.latentsync.pipeline_core import frame_order
from engine.dub.latentsync.unet3d import DeepCacheState, LatentSyncUNet3D, load_unet, unet_config
from engine.errors import InputError, WeightsError
from tests.conftest import GOLDEN

FOLDER = GOLDEN / "latentsync"
CHECKPOINT = FOLDER / "latentsync_unet.pt"
TINY = FOLDER / "unet_tiny.yaml"


@pytest.fixture(autouse=True)
def _one_thread():
    from engine.tools.golden_latentsync import one_thread

    with one_thread():
        yield


@pytest.fixture(scope="module")
def unet():
    return load_unet(CHECKPOINT, unet_config(TINY))


def _state():
    return torch.load(CHECKPOINT, map_location="cpu", weights_only=True)["state_dict"]


def test_missing_key_names_the_file_and_the_key(tmp_path):
    state = _state()
    del state["up_blocks.3.motion_modules.1.temporal_transformer.proj_out.weight"]
    path = tmp_path / "latentsync_unet.pt"
    torch.save({"state_dict": state}, path)
    with pytest.raises(WeightsError) as err:
        load_unet(path, unet_config(TINY))
    assert str(path) in str(err.value) and "up_blocks.3.motion_modules.1.temporal_transformer.proj_out.weight" in str(err.value)


def test_misshaped_key_names_the_file_and_the_key(tmp_path):
    state = _state()
    state["conv_in.weight"] = torch.zeros(32, 9, 3, 3)
    path = tmp_path / "latentsync_unet.pt"
    torch.save({"state_dict": state}, path)
    with pytest.raises(WeightsError) as err:
        load_unet(path, unet_config(TINY))
    assert "'conv_in.weight'" in str(err.value) and str(path) in str(err.value) and "[32, 9, 3, 3]" in str(err.value)


def test_released_config_has_the_sd15_layout():
    from accelerate import init_empty_weights

    config = unet_config()
    with init_empty_weights():
        model = LatentSyncUNet3D(config)
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert shapes["conv_in.weight"] == (320, 13, 3, 3)
    assert shapes["up_blocks.3.resnets.0.conv1.weight"] == (320, 960, 3, 3)  # 640 from below + a 320 skip
    assert shapes["down_blocks.2.attentions.1.transformer_blocks.0.attn2.to_k.weight"] == (1280, 384)
    assert shapes["up_blocks.0.motion_modules.2.temporal_transformer.transformer_blocks.0.attention_blocks.1.pos_encoder.pe"] == (1, 24, 1280)
    assert not any(k.startswith("mid_block.motion_modules") for k in shapes)


def test_a_config_without_model_settings_is_refused(tmp_path):
    path = tmp_path / "stage2.yaml"
    path.write_text("data:\n  num_frames: 16\n")
    with pytest.raises(WeightsError, match="block_out_channels"):
        unet_config(path)


def test_guidance_batch_equals_two_separate_passes(unet):
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(1, 13, 3, 16, 16, generator=gen)
    audio = torch.randn(3, 50, 384, generator=gen)
    with torch.no_grad():
        batched = unet(torch.cat([x, x]), torch.tensor(501), guided_audio(audio, 1.5))
        uncond = unet(x, torch.tensor(501), torch.zeros_like(audio))
        cond = unet(x, torch.tensor(501), audio)
    separate = torch.cat([uncond, cond])
    assert ((batched - separate).norm() / separate.norm()).item() < 1e-5


def test_deepcache_reuses_deep_features_between_full_steps(unet):
    gen = torch.Generator().manual_seed(4)
    x0, x1 = torch.randn(2, 1, 13, 2, 16, 16, generator=gen)
    audio = torch.randn(2, 50, 384, generator=gen)
    cache = DeepCacheState(3)
    with torch.no_grad():
        full0 = unet(x0, torch.tensor(951), audio)
        cached0 = unet(x0, torch.tensor(951), audio, cache=cache, step=0)
        full1 = unet(x1, torch.tensor(901), audio)
        cached1 = unet(x1, torch.tensor(901), audio, cache=cache, step=1)
    assert torch.equal(full0, cached0)  # a full step is the plain UNet
    assert cache.kept is not None and not cache.is_full(1) and cache.is_full(3)
    assert not torch.allclose(cached1, full1)  # step 1 reused the deep features of step 0


def test_chunk_windows_are_clamped_and_counted_like_the_official_loop():
    assert chunk_count(39) == 21 and chunk_count(152) == 78
    assert frame_rows(0, 39) == [0, 0, 0, 0, 0, 1, 2, 3, 4, 5]
    assert frame_rows(20, 39) == [36, 37, 38, 38, 38, 38, 38, 38, 38, 38]


def test_frame_loop_goes_forward_and_backward():
    assert frame_order(8, 3) == [0, 1, 2, 2, 1, 0, 0, 1]
    assert frame_order(2, 5) == [0, 1]


def test_silence_padding_changes_only_the_last_encoder_window():
    whisper = WhisperStates(FOLDER / "whisper" / "tiny.pt")
    rng = np.random.default_rng(0)
    wave = (rng.standard_normal(16000 * 31) * 0.05).astype(np.float32)  # 31 s: a full window and 1 s
    official = whisper.features(wave)
    fixed = whisper.features(wave, pad="silence")
    assert official.shape == fixed.shape == (1550, 5, 384)
    assert torch.equal(official[:1500], fixed[:1500])
    assert not torch.allclose(official[1500:], fixed[1500:])
    with pytest.raises(ValueError):
        whisper.features(wave, pad="noise")


def test_whisper_file_in_another_layout_is_refused(tmp_path):
    path = tmp_path / "tiny.pt"
    torch.save({"state_dict": {"w": torch.zeros(2)}}, path)
    with pytest.raises(WeightsError, match="openai-format"):
        WhisperStates(path)


def _affine_inputs():
    from safetensors.torch import load_file

    io = load_file(str(FOLDER / "affine.io.safetensors"))
    return io["frames"].numpy(), io["landmarks"].numpy()


def test_align_then_restore_gives_back_the_frame_around_the_face():
    frames, landmarks = _affine_inputs()
    aligner = FaceAligner(256)
    aligned = aligner.align(frames[0], landmarks[0])
    face = aligned.face.float() / 127.5 - 1
    restored = aligner.restore(frames[0], face, aligned.matrix)
    diff = np.abs(restored.astype(int) - frames[0].astype(int))
    assert restored.shape == frames[0].shape and restored.dtype == np.uint8
    assert diff.mean() < 3.0  # warped there and back: only resampling blur


def test_alignment_options():
    frames, landmarks = _affine_inputs()
    official, rounded, still = FaceAligner(256), FaceAligner(256, rounding="round"), FaceAligner(256, smoothing="off")
    pixels = FaceAligner(256, smoothing="pixels")
    for frame, lmk in zip(frames, landmarks):
        a, b, c, d = official.align(frame, lmk), rounded.align(frame, lmk), still.align(frame, lmk), pixels.align(frame, lmk)
    diff = np.abs(a.warped.astype(int) - b.warped.astype(int))
    assert diff.max() == 1 and (b.warped.astype(int) >= a.warped.astype(int)).all()
    assert still.p_bias is None
    shift = (d.matrix - c.matrix)[:, 2].abs().max()
    assert shift > 10 * (a.matrix - c.matrix)[:, 2].abs().max()  # pixels: a real shift, not hundredths
    with pytest.raises(ValueError):
        FaceAligner(256, smoothing="strong")


def test_landmarks_of_the_wrong_shape_are_refused():
    with pytest.raises(InputError, match="106 face landmarks"):
        three_points(np.zeros((68, 2)))
