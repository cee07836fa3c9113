"""The stages of one generation, each a function of what the stage before produced: inputs,
conditions (text, audio, reference images), the denoising loop with its events, the video.

`engine.humo.pipeline.Engine` strings them together; nothing here keeps state between runs.
"""
from __future__ import annotations

import tempfile

from typing import Callable, Iterable, Iterator

import numpy as np
import torch

from engine.errors import InputError
from engine.events import NoticeEvent
from engine.request import GenerationRequest

MAX_AUDIO_SECONDS = 15 * 60  # decoded at all; longer uploads are refused before decoding
FEATURE_SR = 16000           # what the audio encoder hears
OUTPUT_AUDIO_SR = 44100      # what people hear in the video


def read_inputs(request: GenerationRequest) -> Iterator:
    """Decode the voice clip and the reference images the mode needs; returns (wave, images)."""
    from engine import media

    mode = (request.mode or "TIA").upper()
    wave = None
    if mode in ("TA", "TIA"):
        if not request.audio:
            raise InputError(f"Mode {mode} needs a voice clip: upload or record one (or use Text + Image).")
        wave = media.load_audio(request.audio, sr=FEATURE_SR, max_seconds=MAX_AUDIO_SECONDS)
    images = []
    if mode in ("TIA", "TI"):
        if not request.images:
            raise InputError(f"Mode {mode} needs at least one reference image.")
        for path in request.images:
            img, img_notes = media.load_image(path)
            images.append(img)
            for note in img_notes:
                yield NoticeEvent(note)
    return wave, images


def encode_text(text, res) -> Iterator:
    """Prompt and negative prompt embeddings; returns (prompt, negative)."""
    prompt_emb, notes = text.encode(res.prompt)
    for note in notes:
        yield NoticeEvent(note)
    null_emb, _ = text.encode(res.negative)
    return prompt_emb, null_emb


def audio_windows(audio_enc, wave, res, ref_frames: int) -> torch.Tensor:
    """Per-latent-frame audio windows, zero for no audio and for the reference frames."""
    from engine.humo.audio import latent_windows

    if wave is not None:
        windows = latent_windows(audio_enc.features(wave), res.frames)
    else:
        windows = torch.zeros(res.latent_frames, 8, 5, res.variant.dit.audio_channels)
    return torch.cat([windows, windows.new_zeros(ref_frames, *windows.shape[1:])])


def reference_latents(vae, images, res, ref_frames: int) -> torch.Tensor:
    from engine import media

    if not images:
        return torch.zeros(16, ref_frames, res.height // 8, res.width // 8)
    refs = [vae.encode(torch.from_numpy(media.fit_reference_image(img, res.width, res.height))[:, None])
            for img in images]
    return torch.cat(refs, dim=1)


def denoise_with_events(model_fn, noise, cond, res, on_step, events: list, batched: bool,
                        check_cancel: Callable[[], None], parallel=None, on_window=None):
    """Run the loop step by step in this thread, yielding the events each step produced; returns
    the latents. cancel() from another thread stops it within one network pass (`check_cancel`;
    in a torchrun run, at the next step on every rank); a consumer that stops early (the
    generator is closed) stops it at the next step. With context windows and `on_window`, each
    window's start (a windows.WindowStart) goes to `on_window` and its events out at once."""
    from engine.humo.sampler import denoise_steps

    steps = denoise_steps(model_fn, noise, cond, reference=res.variant.reference, mode=res.mode,
                          scales=res.scales, steps=res.steps, shift=res.shift,
                          switch_t=res.variant.defaults.switch_t, batched=batched,
                          check_cancel=check_cancel, windows=res.windows, parallel=parallel,
                          window_progress=on_window is not None)
    while True:
        try:
            item = next(steps)
        except StopIteration as done:
            return done.value
        if isinstance(item, tuple):
            on_step(*item)
        else:
            on_window(item)
        while events:
            yield events.pop(0)


def dit_call(dit, device, dtype):
    """The network as the sampler calls it: (x, t, text, audio, y) -> float32 velocity."""

    def call(x, t, text, audio, y):
        # Inputs already live on the device (see conditions_on_device): these casts are no-ops there.
        # The timestep comes from the scheduler on the CPU: a blocking copy would make the host wait
        # for the GPU before every pass, so it is copied without blocking (safe from pageable memory).
        with torch.no_grad():
            (out,) = dit(x.to(device, dtype), t.to(device, non_blocking=True), text.to(device, dtype),
                         audio.to(device, dtype), None if y is None else y.to(device, dtype), return_dict=False)
        return out.float()

    return call


def conditions_on_device(noise: torch.Tensor, cond, device, dtype) -> torch.Tensor:
    """Move the loop's tensors to the DiT's device once (conditions in the DiT dtype), so no pass
    copies them again; the latents stay float32 for the solver."""
    for name in ("text", "null", "audio", "ref_latents", "y_c", "y_null"):
        value = getattr(cond, name)
        if value is not None:
            setattr(cond, name, value.to(device, torch.float32 if name == "ref_latents" else dtype))
    return noise.to(device)


def decoded_frames(vae, latents: torch.Tensor, frames: int, check_cancel: Callable[[], None]) -> Iterator[np.ndarray]:
    """uint8 RGB frames [H, W, 3], decoded a latent frame at a time (cancel is checked between them)."""
    sent = 0
    for chunk in vae.decode_stream(latents):
        check_cancel()
        for frame in ((chunk.permute(1, 2, 3, 0).numpy() + 1.0) * 127.5).round().clip(0, 255).astype(np.uint8):
            if sent < frames:
                yield frame
            sent += 1


def write_video(request: GenerationRequest, frames_u8: Iterable[np.ndarray], fps: int, with_audio: bool,
                settings: dict, frame_count: int | None = None) -> str:
    """The MP4 at the request's path (or a fresh temporary one), with the clip at listening quality.
    Frames may come from an iterator: they are encoded as they arrive."""
    from engine import media

    out_path = request.out_path or tempfile.NamedTemporaryFile(prefix="humo-", suffix=".mp4", delete=False).name
    # The features used 16 kHz; the video gets the clip at 44.1 kHz, as people will listen to it.
    out_audio = media.load_audio(request.audio, sr=OUTPUT_AUDIO_SR, max_seconds=MAX_AUDIO_SECONDS) \
        if with_audio else None
    media.write_mp4(frames_u8, out_path, fps=fps, audio=out_audio, audio_sr=OUTPUT_AUDIO_SR,
                    metadata={"humo_studio": settings}, frame_count=frame_count)
    return str(out_path)
