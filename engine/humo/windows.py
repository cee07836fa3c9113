"""Context windows: videos of any length from a model trained on 97 frames.

At every step the T latent frames are covered by overlapping windows of the trained length.
Each window is one ordinary run of the guidance passes: its own slice of the latents and of the
audio windows, the R reference frames appended as usual, and rotary positions from 0 as in a
normal run. The windows' predictions are blended with smooth weights (a raised-cosine ramp
over the overlap) and the sampler steps the whole latent, so every window sees its neighbours'
progress at the next step.

Schedules:
  fixed    the same windows at every step;
  shifted  on odd steps every window moves by half a stride, so no seam stays in one place.

A video that fits one window runs through exactly the same arithmetic as a plain run: one
window, weight 1 everywhere, so the blend returns the window's prediction bit for bit.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Generator

if TYPE_CHECKING:     # torch loads when windows are blended: counting them (a front end's estimate) needs none
    import torch

SCHEDULES = ("fixed", "shifted")
DEFAULT_LENGTH = 25        # latent frames per window: 97 video frames, the trained length
DEFAULT_OVERLAP = 6        # latent frames shared by neighbouring windows (24 video frames)
DEFAULT_SCHEDULE = "shifted"


@dataclass(frozen=True)
class WindowPlan:
    length: int = DEFAULT_LENGTH
    overlap: int = DEFAULT_OVERLAP
    schedule: str = DEFAULT_SCHEDULE

    def __post_init__(self):
        if self.length < 2:
            raise ValueError(f"A context window needs at least 2 latent frames, got {self.length}.")
        if not 0 < self.overlap < self.length:
            raise ValueError(f"The window overlap must be 1 to {self.length - 1} latent frames, got {self.overlap}.")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"Unknown window schedule {self.schedule!r}; choose {' or '.join(SCHEDULES)}.")

    @property
    def stride(self) -> int:
        return self.length - self.overlap

    def count(self, latent_frames: int) -> int:
        """Windows per network pass set for a video of `latent_frames` (on a fixed step)."""
        return len(self.spans(latent_frames, 0))

    def spans(self, latent_frames: int, step: int) -> list[tuple[int, int]]:
        """[start, end) of every window at sampler step `step` (0-based); together they cover all frames."""
        T, L = latent_frames, self.length
        if T <= L:
            return [(0, T)]
        starts = list(range(0, T - L + 1, self.stride))
        if starts[-1] + L < T:
            starts.append(T - L)
        if self.schedule == "shifted" and step % 2 == 1:
            shift = max(1, self.stride // 2)
            starts = sorted({0, *(min(s + shift, T - L) for s in starts)})
        return [(s, s + L) for s in starts]

    def weights(self, start: int, end: int, latent_frames: int) -> torch.Tensor:
        """Blend weights of one window's frames: a raised-cosine ramp over `overlap` frames on each
        side that has a neighbour, 1 elsewhere; always > 0."""
        import torch

        n = end - start
        w = torch.ones(n, dtype=torch.float32)
        ramp = torch.tensor([0.5 - 0.5 * math.cos(math.pi * (i + 1) / (self.overlap + 1))
                             for i in range(min(self.overlap, n))], dtype=torch.float32)
        if start > 0:
            w[: len(ramp)] = torch.minimum(w[: len(ramp)], ramp)
        if end < latent_frames:
            w[n - len(ramp):] = torch.minimum(w[n - len(ramp):], ramp.flip(0))
        return w


@dataclass(frozen=True)
class WindowStart:
    """Progress inside a sampler step: window `window` of `windows` (1-based) is about to be denoised."""
    step: int          # the step it belongs to, 1-based
    total: int         # steps in the run
    window: int
    windows: int


def window_predictions(predict: Callable, cond, latents: "torch.Tensor", plan: WindowPlan, step: int,
                       total: int = 0) -> Generator[WindowStart, None, "torch.Tensor"]:
    """The blended prediction for the whole latent [C, T + R, h, w], one window at a time.

    `predict(window_cond, window_latents)` returns one window's combined guidance prediction
    [C, L + R, h, w]; `cond.window(start, end)` gives that window's conditions. The R reference
    frames take part in every window; their predictions are averaged. Yields a WindowStart before
    each window's passes (so a front end can say which window is being denoised); returns the blend.
    """
    import torch

    R = cond.ref_frames
    T = latents.shape[1] - R
    acc = torch.zeros_like(latents, dtype=torch.float32)
    weight = torch.zeros(T + R, dtype=torch.float32, device=latents.device)
    spans = plan.spans(T, step)
    for k, (start, end) in enumerate(spans, 1):
        yield WindowStart(step + 1, total, k, len(spans))
        window_latents = torch.cat([latents[:, start:end], latents[:, T:]], dim=1)
        pred = predict(cond.window(start, end), window_latents).float()
        w = torch.cat([plan.weights(start, end, T), torch.ones(R)]).to(latents.device)
        n = end - start
        acc[:, start:end] += pred[:, :n] * w[:n, None, None]
        acc[:, T:] += pred[:, n:] * w[n:, None, None]
        weight[start:end] += w[:n]
        weight[T:] += w[n:]
    return acc / weight[None, :, None, None]


def seam_metric(frames, boundaries: list[int]) -> dict[str, float]:
    """How visible the window seams are: the mean absolute difference between consecutive frames
    at the given frame boundaries, against the same difference inside windows (uint8 frames
    [N, H, W, 3]; a ratio near 1 means no visible seam)."""
    import numpy as np

    frames = np.asarray(frames, dtype=np.float32)
    diffs = np.abs(frames[1:] - frames[:-1]).mean(axis=(1, 2, 3))     # diffs[i]: frame i -> i + 1
    at = [diffs[b - 1] for b in boundaries if 0 < b < len(frames)]
    inside = np.delete(diffs, [b - 1 for b in boundaries if 0 < b < len(frames)])
    seam = float(np.mean(at)) if at else 0.0
    base = float(np.mean(inside)) if len(inside) else 0.0
    return {"seam": seam, "inside": base, "ratio": seam / base if base > 0 else float("nan")}


def boundary_frames(plan: WindowPlan, latent_frames: int, step: int = 0) -> list[int]:
    """Video frames where a window of step `step` starts or ends inside the video (latent frame s
    begins at video frame 4s - 3)."""
    edges = {e for s, e in plan.spans(latent_frames, step) for e in (s, e)}
    return sorted(4 * e - 3 for e in edges if 0 < e < latent_frames)
