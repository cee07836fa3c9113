"""Dubbing with bf16 networks (the default on a GPU): both models run end to end with their UNet,
VAE and whisper in bfloat16 while the sampler, masks and blends stay float32, and the result is
the float32 dub up to bf16 rounding (here on the CPU, tiny weights, the real short clip)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.dub.pipeline import Dubber
from engine.dub.request import DubRequest
from engine.media.video_in import probe_video, read_frames
from tests.dub_fixtures import SPEECH_9S, TALK_704, prepared, wav_prefix


def test_a_dubber_on_a_gpu_defaults_to_bf16_networks_and_on_a_cpu_to_float32(tmp_path):
    assert Dubber(tmp_path, device="cuda").dtype == torch.bfloat16
    assert Dubber(tmp_path, device="cpu").dtype == torch.float32


@pytest.mark.parametrize("model, weights", [("musetalk-1.5", "musetalk_weights"), ("latentsync-1.6", "latentsync_weights")])
def test_bf16_networks_dub_like_float32(model, weights, request, tmp_path, track_cache):
    folder = request.getfixturevalue(weights)
    voice = wav_prefix(SPEECH_9S, tmp_path / "voice.wav", 0.4)       # 10 frames
    outputs = {}
    for dtype in (torch.float32, torch.bfloat16):
        dubber = Dubber(folder, device="cpu", dtype=dtype, cache_dir=track_cache)
        job, _ = prepared(dubber, DubRequest(model=model, video=str(TALK_704), audio=str(voice), steps=2,
                                             out_path=str(tmp_path / f"{dtype}.mp4"), preview=False))
        outputs[dtype] = np.stack([f for _, frames in dubber.output_frames(job) for f in frames]).astype(np.int16)
    exact, half = outputs[torch.float32], outputs[torch.bfloat16]
    source = np.concatenate(list(read_frames(probe_video(TALK_704), len(exact), max_frames=len(exact),
                                             pix_fmt="bgr24"))).astype(np.int16)
    assert exact.shape == half.shape == source.shape
    dubbed = (exact != source) | (half != source)
    assert 0 < dubbed.mean() < 0.25                         # the mouth region, not the frame
    # bf16 moves the dubbed pixels by a fraction of what the dub itself changes.
    change = np.abs(exact - source)[dubbed].mean()
    rounding = np.abs(exact - half)[dubbed].mean()
    assert rounding < 0.25 * change, (rounding, change)
