"""Sequence parallelism's arithmetic in one process: the slices, the frame-local audio attention on
a slice, and how ranks, heads and attention backends are matched (engine.parallel.sequence).
The runs over real ranks are in test_distributed.py."""
from __future__ import annotations

import pytest
import torch

from engine.errors import EngineError, InputError
from engine.humo.dit import frame_local_attention, frame_runs, slice_start
from engine.parallel import sequence
from engine.parallel.group import check_sequence_ways, sequence_from_env


@pytest.mark.parametrize("frame_tokens", [1, 5, 12, 48])
def test_frame_runs_cover_a_slice_in_order_and_name_each_tokens_frame(frame_tokens):
    total = 7 * frame_tokens
    for start in range(0, total):
        for length in range(1, total - start + 1, max(1, frame_tokens // 3)):
            runs = frame_runs(start, length, frame_tokens)
            frames = [first + i for first, count, tokens in runs for i in range(count) for _ in range(tokens)]
            assert frames == [(start + j) // frame_tokens for j in range(length)]
            assert len(runs) <= 3 and all(tokens <= frame_tokens for _, _, tokens in runs)


def test_slice_start_follows_tensor_split():
    for total in (12, 13, 144, 145):
        for ranks in (1, 2, 3, 4):
            pieces = torch.arange(total).tensor_split(ranks)
            assert [slice_start(total, ranks, r) for r in range(ranks)] == [int(p[0]) for p in pieces]


def test_audio_attention_on_a_slice_equals_the_same_rows_of_the_whole():
    torch.manual_seed(3)
    heads, dim, frames, frame_tokens, keys = 2, 16, 4, 6, 5
    q = torch.randn(2, frames * frame_tokens, dim)
    k, v = torch.randn(2, frames, keys, dim), torch.randn(2, frames, keys, dim)
    whole = frame_local_attention(q, k, v, heads, 0, frame_tokens)
    # The plain per-frame computation, written out.
    for f in range(frames):
        rows = slice(f * frame_tokens, (f + 1) * frame_tokens)
        ref = torch.nn.functional.scaled_dot_product_attention(
            q[:, rows].unflatten(-1, (heads, -1)).transpose(1, 2), k[:, f].unflatten(-1, (heads, -1)).transpose(1, 2),
            v[:, f].unflatten(-1, (heads, -1)).transpose(1, 2)).transpose(1, 2).flatten(2)
        torch.testing.assert_close(whole[:, rows], ref, rtol=1e-6, atol=1e-6)
    for ranks in (2, 3, 5):        # slices that start and end inside frames
        for r in range(ranks):
            lo, hi = slice_start(q.shape[1], ranks, r), slice_start(q.shape[1], ranks, r + 1)
            part = frame_local_attention(q[:, lo:hi], k, v, heads, lo, frame_tokens)
            torch.testing.assert_close(part, whole[:, lo:hi], rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("ways, heads, expected", [
    (2, 2, (1, 2)), (2, 12, (1, 2)), (8, 12, (2, 4)), (3, 40, (3, 1)), (6, 40, (3, 2)), (4, 40, (1, 4)), (1, 40, (1, 1)),
])
def test_heads_go_to_ulysses_as_far_as_they_divide_and_the_rest_to_ring(ways, heads, expected):
    ring, ulysses = sequence.split(ways, heads)
    assert (ring, ulysses) == expected and ring * ulysses == ways and heads % ulysses == 0


def test_describe_names_the_split():
    assert sequence.describe(1, 2) == "Ulysses 2"
    assert sequence.describe(3, 1) == "ring 3"
    assert sequence.describe(3, 2) == "Ulysses 2 × ring 3"


def test_backend_choice_for_split_passes():
    assert sequence.backend_for("native", 1, ["native"]) == ("native", None)
    assert sequence.backend_for("flash", 3, ["native", "flash"]) == ("flash", None)
    # FlashAttention 3 has no context-parallel path: FlashAttention 2, else cuDNN, is used, and said.
    backend, note = sequence.backend_for("_flash_3", 1, ["native", "_native_cudnn", "_flash_3"])
    assert backend == "_native_cudnn" and "instead of _flash_3" in note
    # A ring needs the log-sum-exp, which PyTorch's SDPA path does not return.
    with pytest.raises(InputError, match="ring attention"):
        sequence.backend_for("native", 3, ["native", "_native_math"])
    assert sequence.backend_for("native", 3, ["native", "_native_flash"])[0] == "_native_flash"


def test_token_counts_that_do_not_split_are_refused_in_one_line():
    sequence.check_tokens(2, 26 * 30 * 52, 26)
    sequence.check_tokens(1, 7, 1)
    with pytest.raises(InputError) as err:
        sequence.check_tokens(4, 3 * 7 * 5, 3)
    assert "105 tokens (3 latent frames × 35)" in str(err.value) and "\n" not in str(err.value)
    assert "64 pixels" in err.value.hint


def test_sequence_ways_must_divide_the_ranks():
    assert check_sequence_ways(2, 4) == 2 and check_sequence_ways("3", 6) == 3
    assert sequence_from_env(4, {}) == 1 and sequence_from_env(4, {"HUMO_SEQUENCE_WAYS": "4"}) == 4
    with pytest.raises(EngineError, match="does not divide the 4 ranks"):
        check_sequence_ways(3, 4)
    with pytest.raises(EngineError, match="not a whole number"):
        sequence_from_env(2, {"HUMO_SEQUENCE_WAYS": "two"})
    with pytest.raises(EngineError, match="does not divide"):
        check_sequence_ways(0, 2)
