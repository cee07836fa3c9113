"""Flow-matching UniPC sampling with HuMo's guidance passes (SPEC §4)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Generator

import numpy as np
import torch
from diffusers import UniPCMultistepScheduler

from engine.humo.guidance import Pass, Plan, combine, plan_for

if TYPE_CHECKING:
    from engine.humo.windows import WindowPlan
    from engine.parallel import ParallelGroup

LATENT_CHANNELS = 16


def make_scheduler(steps: int, shift: float) -> UniPCMultistepScheduler:
    """UniPC (order 2, bh2, x0 prediction) on HuMo's explicit sigma grid: bit-exact with the official solver."""
    scheduler = UniPCMultistepScheduler(
        num_train_timesteps=1000, solver_order=2, prediction_type="flow_prediction", predict_x0=True,
        solver_type="bh2", lower_order_final=True, use_flow_sigmas=True, flow_shift=float(shift),
    )
    # The official solver takes sigma_max from its float32 training grid (0.999 rounded to
    # float32), then works in float64: using the same start makes every sigma bit-identical.
    sigma_max = float(np.float32(1 - 1 / 1000))
    sigmas = np.linspace(sigma_max, 0.0, steps + 1)[:-1]
    scheduler.set_timesteps(sigmas=sigmas, device="cpu")
    return scheduler


def seeded_noise(seed: int, frames: int, h: int, w: int) -> torch.Tensor:
    """float32 N(0, 1) noise [16, frames, h, w] from a CPU generator: the same on every machine."""
    gen = torch.Generator().manual_seed(int(seed))
    return torch.randn(LATENT_CHANNELS, frames, h, w, dtype=torch.float32, generator=gen)


@dataclass
class Conditions:
    """Everything the passes choose from. Tensors are unbatched; text is zero-padded to text_len."""
    text: torch.Tensor                  # [text_len, text_dim]
    null: torch.Tensor                  # [text_len, text_dim]
    audio: torch.Tensor                 # [T + R, 8, 5, C]
    ref_frames: int                     # R
    ref_latents: torch.Tensor | None    # [16, R, h, w] ("append" layout)
    y_c: torch.Tensor | None = None     # [20, T + R, h, w] ("channel" layout)
    y_null: torch.Tensor | None = None

    def window(self, start: int, end: int) -> "Conditions":
        """The conditions of a context window over latent frames [start, end) (see windows.py):
        those frames' audio, the reference frames as in any run, and for the channel layout the
        mask and zero latents of a normal run of that length."""
        T = self.audio.shape[0] - self.ref_frames
        n = end - start

        def like_a_run(y):   # mask and zero latents of an n-frame run, then the reference part
            return None if y is None else torch.cat([y[:, :n], y[:, T:]], dim=1)

        return Conditions(text=self.text, null=self.null, audio=torch.cat([self.audio[start:end], self.audio[T:]]),
                          ref_frames=self.ref_frames, ref_latents=self.ref_latents,
                          y_c=like_a_run(self.y_c), y_null=like_a_run(self.y_null))

    def pass_inputs(self, p: Pass, latents: torch.Tensor):
        text = self.text if p.text == "text" else self.null
        audio = self.audio if p.audio == "audio" else torch.zeros_like(self.audio)
        x, y = latents, None
        if p.image in ("ref", "zero"):
            r = self.ref_frames
            ref = self.ref_latents if p.image == "ref" else torch.zeros_like(self.ref_latents)
            x = torch.cat([latents[:, :-r], ref.to(latents.dtype)], dim=1)
        else:
            y = self.y_c if p.image == "y_c" else self.y_null
        return x, text, audio, y


def pad_text(embeddings: torch.Tensor, text_len: int) -> torch.Tensor:
    """[L, D] -> [text_len, D] with zero rows (HuMo attends to all rows, unmasked)."""
    pad = text_len - embeddings.shape[0]
    if pad < 0:
        return embeddings[:text_len]
    return torch.cat([embeddings, embeddings.new_zeros(pad, embeddings.shape[1])])


ModelFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor]


def run_passes(model: ModelFn, plan: Plan, cond: Conditions, latents: torch.Tensor, t: torch.Tensor,
               batched: bool, check_cancel: Callable[[], None] | None = None,
               parallel: "ParallelGroup | None" = None) -> dict[str, torch.Tensor]:
    """Network outputs for every pass of `plan`, as one batch or one call each (same numbers).

    With `parallel` (engine.parallel), this rank runs only its share of the passes and the
    outputs of all ranks are gathered: every rank gets every pass's output."""
    if parallel is not None:
        return parallel.run_passes(plan.passes, lambda share: _run_passes(model, share, cond, latents, t, batched, None),
                                   latents)
    return _run_passes(model, plan.passes, cond, latents, t, batched, check_cancel)


def _run_passes(model: ModelFn, passes, cond: Conditions, latents: torch.Tensor, t: torch.Tensor,
                batched: bool, check_cancel: Callable[[], None] | None) -> dict[str, torch.Tensor]:
    inputs = [cond.pass_inputs(p, latents) for p in passes]
    if batched:
        x, text, audio = (torch.stack([i[k] for i in inputs]) for k in range(3))
        y = torch.stack([i[3] for i in inputs]) if inputs[0][3] is not None else None
        out = model(x, t.expand(len(inputs)), text, audio, y)
        return {p.name: out[k] for k, p in enumerate(passes)}
    outputs = {}
    for p, (x, text, audio, y) in zip(passes, inputs):
        if check_cancel is not None:
            check_cancel()
        outputs[p.name] = model(x[None], t.reshape(1), text[None], audio[None], None if y is None else y[None])[0]
    return outputs


def denoise_steps(
    model: ModelFn,
    noise: torch.Tensor,
    cond: Conditions,
    *,
    reference: str,
    mode: str,
    scales: dict[str, float],
    steps: int,
    shift: float,
    switch_t: float | None = None,
    batched: bool = False,
    check_cancel: Callable[[], None] | None = None,
    windows: "WindowPlan | None" = None,
    parallel: "ParallelGroup | None" = None,
    window_progress: bool = False,
) -> Generator[tuple[int, int, torch.Tensor], None, torch.Tensor]:
    """The whole loop, one step at a time, in the caller's thread.

    With `windows`, every step runs the passes per context window and blends the predictions
    (engine.humo.windows); a video that fits one window gives exactly the plain run's numbers.
    With `window_progress` as well, it also yields a `windows.WindowStart` before each window's
    passes, so a consumer can say which window of the step is being denoised.

    Yields `(i, total, x0)` after each step, x0 being the current clean estimate x_t − σ·v with
    the R reference frames dropped (how previews are made without the VAE). Returns the final
    latents without the reference frames: [16, T, h, w]. Closing the generator stops the loop.

    With `parallel` (a torchrun run), the guidance passes of each step are spread over the ranks
    (see run_passes), and a cancel is agreed at the start of each step: `check_cancel` raising on
    any rank stops every rank at that step, so none waits for a missing partner.
    """
    scheduler = make_scheduler(steps, shift)
    latents = noise.clone()
    r = cond.ref_frames
    total = len(scheduler.timesteps)
    for i, t in enumerate(scheduler.timesteps):
        if parallel is not None:
            parallel.agree_cancel(check_cancel)
        elif check_cancel is not None:
            check_cancel()
        plan = plan_for(reference, mode, float(t), switch_t)
        t_in = t.to(torch.float32).reshape(1)

        def predict(c: Conditions, x: torch.Tensor) -> torch.Tensor:
            return combine(plan, run_passes(model, plan, c, x, t_in, batched, check_cancel, parallel), scales)

        if windows is None:
            with torch.no_grad():
                pred = predict(cond, latents)
        else:
            from engine.humo.windows import window_predictions
            pred = yield from _blended(window_predictions(predict, cond, latents, windows, i, total), window_progress)
        with torch.no_grad():
            x0 = (latents - scheduler.sigmas[i].item() * pred)[:, : latents.shape[1] - r]
            latents = scheduler.step(pred[None], t, latents[None], return_dict=False)[0][0]
        yield i + 1, total, x0
    return latents[:, : latents.shape[1] - r]


def _blended(windows: Generator, report: bool) -> Generator:
    """Run the windows of one step (without gradients), handing each WindowStart on when `report`;
    returns the blended prediction. The consumer runs outside `no_grad` while it holds one."""
    while True:
        with torch.no_grad():
            try:
                start = next(windows)
            except StopIteration as done:
                return done.value
        if report:
            yield start


def denoise(model: ModelFn, noise: torch.Tensor, cond: Conditions, *,
            on_step: Callable[[int, int, torch.Tensor], None] | None = None, **options) -> torch.Tensor:
    """`denoise_steps` run to the end; `on_step(i, total, x0)` sees each step."""
    steps = denoise_steps(model, noise, cond, **options)
    while True:
        try:
            i, total, x0 = next(steps)
        except StopIteration as done:
            return done.value
        if on_step is not None:
            on_step(i, total, x0)
