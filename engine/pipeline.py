"""One generation: a request in, typed events out, an MP4 at the end (SPEC §3–§5).

The `Engine` keeps loaded components between runs (lazy: nothing loads until a run needs it)
and serves the CLI, the studio and the API alike. `generate` is a generator of events; it
raises an `EngineError` subclass with a user-facing message when something is wrong.
"""
from __future__ import annotations

import logging
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from engine.errors import Cancelled, EngineError, InputError
from engine.events import NoticeEvent, PreviewEvent, ResultEvent, StageEvent, StepEvent
from engine.request import MODES, GenerationRequest
from engine.variants import Variant, get_variant

log = logging.getLogger(__name__)

FPS = 25
MAX_SIDE = 2048
MIN_SIDE = 32
MAX_AUDIO_SECONDS = 15 * 60  # decoded at all; longer uploads are refused before decoding
OUTPUT_AUDIO_SR = 44100


@dataclass
class Resolved:
    """The request with every default filled in and every value checked."""
    variant: Variant
    mode: str
    prompt: str
    negative: str
    width: int
    height: int
    frames: int
    steps: int
    shift: float
    scales: dict[str, float]
    seed: int
    notices: list[str] = field(default_factory=list)

    @property
    def latent_frames(self) -> int:
        return (self.frames - 1) // 4 + 1

    def settings(self, request: GenerationRequest) -> dict:
        data = request.to_dict()
        data.update(variant=self.variant.name, mode=self.mode, width=self.width, height=self.height,
                    frames=self.frames, steps=self.steps, shift=self.shift, seed=self.seed,
                    negative_prompt=self.negative, **self.scales)
        data.pop("out_path", None)
        return data


def snap_frames(n: int) -> int:
    """The 4k+1 grid: N' = 4·⌊(N−1)/4⌋ + 1."""
    return 4 * ((max(int(n), 1) - 1) // 4) + 1


def resolve(request: GenerationRequest, audio_samples: int | None) -> Resolved:
    from engine.guidance import scales_needed
    from engine.text import DEFAULT_NEGATIVE, check_prompt

    try:
        variant = get_variant(request.variant)
    except KeyError as err:
        raise InputError(str(err.args[0])) from None
    d = variant.defaults
    mode = (request.mode or d.mode).upper()
    if mode not in MODES:
        raise InputError(f"Unknown mode {request.mode!r}; choose TA, TIA or TI.")
    notices: list[str] = []
    prompt = check_prompt(request.prompt)
    negative = request.negative_prompt if request.negative_prompt and request.negative_prompt.strip() else DEFAULT_NEGATIVE

    width, height = int(request.width or d.width), int(request.height or d.height)
    for name, value in (("Width", width), ("Height", height)):
        if not MIN_SIDE <= value <= MAX_SIDE:
            raise InputError(f"{name} {value} is out of range: use {MIN_SIDE} to {MAX_SIDE} pixels.")
    snapped = (max(16, round(width / 16) * 16), max(16, round(height / 16) * 16))
    if snapped != (width, height):
        notices.append(f"Size {width}×{height} is not a multiple of 16; using {snapped[0]}×{snapped[1]}.")
        width, height = snapped

    if request.frames:
        wanted = int(request.frames)
        if wanted < 1:
            raise InputError(f"Frames must be at least 1, got {wanted}.")
    elif audio_samples is not None:
        from engine.audio import frames_for_samples

        wanted = max(frames_for_samples(audio_samples), 1)
    else:
        wanted = d.frames
    frames = snap_frames(wanted)
    if frames != wanted:
        notices.append(f"{wanted} frames is not on the 4k+1 grid; using {frames} frames.")
    if frames > d.max_frames:
        secs = frames / FPS
        raise InputError(
            f"{frames} frames ({secs:.1f} s) is longer than this model makes in one run "
            f"(up to {d.max_frames} frames, {d.max_frames / FPS:.1f} s; it was trained on 97).",
            hint="Trim the audio or set a frame count.")

    steps = int(request.steps or d.steps)
    if not 1 <= steps <= 200:
        raise InputError(f"Steps must be between 1 and 200, got {steps}.")
    shift = float(request.shift if request.shift is not None else d.shift)
    if shift <= 0:
        raise InputError(f"Shift must be positive, got {shift}.")
    defaults = {"scale_t": d.scale_t, "scale_a": d.scale_a, "scale_i": d.scale_i}
    scales = {}
    for key in sorted(scales_needed(variant.reference, mode)):
        value = getattr(request, key)
        scales[key] = float(value if value is not None else defaults[key])
    seed = int(request.seed) % (2**63)
    return Resolved(variant, mode, prompt, negative, width, height, frames, steps, shift, scales, seed, notices)


class Engine:
    """Loads a variant's components on demand and runs generations one at a time."""

    def __init__(self, weights_dir: str | Path = "weights", *, device: str | None = None, dtype: torch.dtype | None = None,
                 batch_passes: bool | None = None, attention: str | None = None, compile: bool = False,
                 fast_mode: str | None = None, plan: str | None = "auto", idle_unload_s: float | None = None):
        self.weights_dir = Path(weights_dir)
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.dtype = dtype or (torch.bfloat16 if self.device.startswith("cuda") else torch.float32)
        self.batch_passes = batch_passes
        self.attention = attention      # None / "auto": the fastest backend installed (engine.attention)
        self.attention_backend: str | None = None
        self.compile = compile          # torch.compile the DiT blocks (once per shape)
        self.compile_backend = None     # the torch.compile backend the loaded DiT uses (None: eager)
        self.fast_mode = fast_mode      # default approximate preset (engine.fast); a request's own wins
        self.variant: Variant | None = None
        self.parts: dict[str, object] = {}
        self._cancel = threading.Event()
        self._run_lock = threading.Lock()
        self._zero_cache: dict[tuple, torch.Tensor] = {}
        self.plan_spec = plan           # memory plan (engine.memory): "auto" picks the fastest that fits
        self.plan = None                # the plan the loaded parts follow
        self._placement = None
        self.idle_unload_s = idle_unload_s  # free every part after this long without a run
        self._idle_timer: threading.Timer | None = None

    # -- lifecycle ------------------------------------------------------------------------
    def cancel(self) -> None:
        """Ask the running generation to stop; it raises Cancelled within one network pass."""
        self._cancel.set()

    def unload(self) -> None:
        if self._placement is not None:
            self._placement.release()
        self.plan, self._placement = None, None
        self.parts.clear()
        self.variant = None
        self._zero_cache.clear()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def load(self, variant: str | Variant, plan: str | None = None) -> None:
        """Load every component of `variant` not yet loaded (switching variant frees the other)."""
        if plan is not None and plan != self.plan_spec:
            self.plan_spec = plan
            self.unload()
        for _ in self._load_steps(variant):
            pass

    def _load_steps(self, variant: str | Variant) -> Iterator[StageEvent]:
        from engine import weights

        v = variant if isinstance(variant, Variant) else get_variant(variant)
        if self.variant is not None and self.variant.name != v.name:
            self.unload()
        self.variant = v
        if self.plan is None:
            self._use_plan(v, None)
        missing = [name for name in ("dit", "vae", "text", "audio") if name not in self.parts]
        if not missing:
            return
        paths = weights.locate(v, self.weights_dir)
        for name in missing:
            yield StageEvent("loading", f"Loading {name} weights of {v.label}")
            self.parts[name] = self._load_part(v, name, paths)

    def _load_part(self, v: Variant, name: str, paths: dict):
        from engine.audio import WhisperAudioEncoder
        from engine.models.dit_loader import load_dit
        from engine.text import TextEncoder
        from engine.vae import WanVAE

        from engine import memory

        # The plan says where each part is loaded (CPU first when it is offloaded, cast or quantized).
        dev, dt = memory.load_device(self.plan, name, self.device), memory.load_dtype(self.plan, name, self.dtype)
        if name == "dit":
            dit_files = paths["dit_files"]
            model = load_dit(v.dit, dit_files[0], dtype=dt, device=dev)
            from engine.attention import apply_backend, choose_backend

            self.attention_backend = apply_backend(model, choose_backend(self.attention, self.device, dt))
            model = memory.prepare(self.plan, name, model, self.device, dt)
            self.compile_backend = None
            if self.compile:
                from engine.compile import compile_dit, default_backend

                self.compile_backend = default_backend(self.device)
                compile_dit(model, backend=self.compile_backend)
            return model
        if name == "vae":
            part = WanVAE(paths["vae_file"], dtype=dt, device=dev)
        elif name == "text":
            part = TextEncoder(paths["t5_file"], paths["tokenizer_dir"], dtype=dt, device=dev)
        elif name == "audio":
            part = WhisperAudioEncoder(paths["whisper_dir"], dtype=dt, device=dev)
        else:
            raise KeyError(name)
        return memory.prepare(self.plan, name, part, self.device, self.dtype)

    def _use_plan(self, v: Variant, res: Resolved | None, images: int = 1) -> None:
        """Resolve the memory plan for this run (auto: the fastest that fits); a different plan
        than the loaded one reloads the parts."""
        from engine import memory

        if self.variant is not None and self.variant.name != v.name:
            self.unload()
        d = v.defaults
        job = memory.Job(d.width, d.height, d.frames, 1, d.mode, d.steps) if res is None else \
            memory.Job(res.width, res.height, res.frames, max(images, 1), res.mode, res.steps)
        plan = memory.resolve_plan(self.plan_spec, v, job, self.device)
        if self.plan is not None and plan != self.plan:
            self.unload()
        self.variant = v
        self.plan, self._placement = plan, memory.Placement(plan, self.device)

    def _check_cancel(self) -> None:
        if self._cancel.is_set():
            raise Cancelled()

    # -- one generation -------------------------------------------------------------------
    def generate(self, request: GenerationRequest) -> Iterator:
        if not self._run_lock.acquire(blocking=False):
            raise EngineError("Another generation is running on this engine; wait for it or cancel it.")
        self._cancel.clear()
        if self._idle_timer is not None:
            self._idle_timer.cancel()
        try:
            yield from self._generate(request)
        finally:
            if self._placement is not None:
                self._placement.release()
            self._cancel.clear()
            self._run_lock.release()
            if self.idle_unload_s:
                self._idle_timer = threading.Timer(self.idle_unload_s, self._unload_if_idle)
                self._idle_timer.daemon = True
                self._idle_timer.start()

    def _unload_if_idle(self) -> None:
        if self._run_lock.acquire(blocking=False):
            try:
                self.unload()
            finally:
                self._run_lock.release()

    def _generate(self, request: GenerationRequest) -> Iterator:
        from engine import media

        t_start = time.perf_counter()
        timings: dict[str, float] = {}
        mode = (request.mode or "TIA").upper()
        # Cheap checks first: nothing loads until the inputs are known to be usable.
        wave = None
        if mode in ("TA", "TIA"):
            if not request.audio:
                raise InputError(f"Mode {mode} needs a voice clip: upload or record one (or use Text + Image).")
            wave = media.load_audio(request.audio, sr=16000, max_seconds=MAX_AUDIO_SECONDS)
        images = []
        if mode in ("TIA", "TI"):
            if not request.images:
                raise InputError(f"Mode {mode} needs at least one reference image.")
            for path in request.images:
                img, img_notes = media.load_image(path)
                images.append(img)
                for note in img_notes:
                    yield NoticeEvent(note)
        res = resolve(request, None if wave is None else len(wave))
        from engine.fast import get_fast_mode

        fast = get_fast_mode(request.fast_mode if request.fast_mode is not None else self.fast_mode)
        if fast is not None:
            res.steps = fast.steps_for(res.steps)
            res.notices.append(f"{fast.label}: {fast.description} The video differs from exact mode.")
        for note in res.notices:
            yield NoticeEvent(note)
        self._check_cancel()

        t = time.perf_counter()
        self._use_plan(res.variant, res, len(images))
        yield from self._load_steps(res.variant)
        timings["load_s"] = time.perf_counter() - t
        self._check_cancel()

        text, vae, dit, audio_enc = self.parts["text"], self.parts["vae"], self.parts["dit"], self.parts["audio"]
        shape = res.variant.dit

        t = time.perf_counter()
        yield StageEvent("encoding_text", "Encoding the prompt")
        from engine.memory import text_needed
        from engine.sampler import Conditions, pad_text, seeded_noise

        if text_needed(text, (res.prompt, res.negative)):  # cached prompts: the encoder stays put
            self._placement.stage("text", text)
        prompt_emb, notes = text.encode(res.prompt)
        for note in notes:
            yield NoticeEvent(note)
        null_emb, _ = text.encode(res.negative)
        timings["text_s"] = time.perf_counter() - t
        self._check_cancel()

        T = res.latent_frames
        R = max(len(images), 1)
        h, w = res.height // 8, res.width // 8

        t = time.perf_counter()
        yield StageEvent("encoding_audio", "Extracting voice features" if wave is not None else "No audio: zero audio condition")
        from engine.audio import latent_windows

        if wave is not None:
            self._placement.stage("audio", audio_enc)
            feats = audio_enc.features(wave)
            windows = latent_windows(feats, res.frames)
        else:
            windows = torch.zeros(T, 8, 5, shape.audio_channels)
        windows = torch.cat([windows, windows.new_zeros(R, *windows.shape[1:])])
        timings["audio_s"] = time.perf_counter() - t
        self._check_cancel()

        t = time.perf_counter()
        yield StageEvent("encoding_image", "Encoding the reference image" + ("s" if len(images) > 1 else "") if images else "No reference image")
        self._placement.stage("vae", vae)
        if images:
            refs = [vae.encode(torch.from_numpy(media.fit_reference_image(img, res.width, res.height))[:, None]) for img in images]
            ref_latents = torch.cat(refs, dim=1)
        else:
            ref_latents = torch.zeros(16, R, h, w)
        cond = Conditions(text=pad_text(prompt_emb, shape.text_len), null=pad_text(null_emb, shape.text_len),
                          audio=windows, ref_frames=R, ref_latents=ref_latents)
        if res.variant.reference == "channel":
            from engine.pipeline_conditions import channel_conditions

            zeros = self._zero_latents(vae, T + R, res.height, res.width)
            cond.y_c, cond.y_null = channel_conditions(zeros, ref_latents, T, R)
        timings["image_s"] = time.perf_counter() - t
        self._check_cancel()

        yield StageEvent("denoising", f"Denoising: {res.steps} steps")
        self._placement.stage("dit", dit)
        noise = self._on_device(seeded_noise(res.seed, T + R, h, w), cond)
        events: list = []
        t_denoise = time.perf_counter()

        def on_step(i: int, total: int, x0: torch.Tensor) -> None:
            elapsed = time.perf_counter() - t_denoise
            events.append(StepEvent(i, total, elapsed, elapsed / i * (total - i)))
            if request.preview:
                from engine.preview import latents_to_rgb

                events.append(PreviewEvent(i, total, latents_to_rgb(x0, request.preview_max_side)))

        from engine.fast import fast_mode_cache

        batched = (self.batch_passes if self.batch_passes is not None else self.device != "cpu") and not self.plan.sequential
        # Caches compare consecutive steps: all passes of a step must go through one forward.
        batched = batched or (fast is not None and fast.cache is not None)
        with fast_mode_cache(dit, fast, self._model_fn(dit)) as (model_fn, cache_stats):
            # The loop runs in this generator's frame, so events are handed out step by step.
            final = yield from self._denoise_with_events(model_fn, noise, cond, res, on_step, events, batched)
        final = final.cpu()
        timings["denoise_s"] = time.perf_counter() - t_denoise
        if cache_stats.calls:
            yield NoticeEvent(f"{fast.label}: {cache_stats.summary()}.")

        t = time.perf_counter()
        yield StageEvent("decoding", "Decoding the video")
        self._placement.stage("vae", vae)
        video = vae.decode(final)
        self._placement.release()
        frames_u8 = ((video.permute(1, 2, 3, 0).numpy() + 1.0) * 127.5).round().clip(0, 255).astype(np.uint8)
        frames_u8 = frames_u8[: res.frames]
        timings["decode_s"] = time.perf_counter() - t
        self._check_cancel()

        t = time.perf_counter()
        yield StageEvent("writing", "Writing the MP4")
        out_path = request.out_path or tempfile.NamedTemporaryFile(prefix="humo-", suffix=".mp4", delete=False).name
        settings = res.settings(request)
        settings["fast_mode"] = fast.name if fast is not None else None
        settings["compiled"] = self.compile_backend
        # The features used 16 kHz; the video gets the clip at 44.1 kHz, as people will listen to it.
        out_audio = None if wave is None else media.load_audio(request.audio, sr=OUTPUT_AUDIO_SR,
                                                              max_seconds=MAX_AUDIO_SECONDS)
        media.write_mp4(frames_u8, out_path, fps=FPS, audio=out_audio, audio_sr=OUTPUT_AUDIO_SR,
                        metadata={"humo_studio": settings})
        timings["write_s"] = time.perf_counter() - t
        timings["total_s"] = time.perf_counter() - t_start
        yield StageEvent("done", "Done")
        duration = res.frames / FPS if wave is None else min(res.frames / FPS, len(wave) / 16000)
        yield ResultEvent(video_path=str(out_path), frames=res.frames, width=res.width, height=res.height, fps=FPS,
                          seed=res.seed, duration_s=duration, timings=timings, settings=settings)

    def _denoise_with_events(self, model_fn, noise, cond, res: Resolved, on_step, events: list, batched: bool):
        """Run the loop step by step, yielding the events each step produced."""
        import queue

        from engine.sampler import denoise

        # Run the loop in a worker thread so events can be yielded while it goes on; the worker
        # stops within one network pass once cancel() is called.
        q: queue.Queue = queue.Queue()
        result: dict = {}

        def hook(i, total, x0):
            on_step(i, total, x0)
            while events:
                q.put(events.pop(0))

        def work():
            try:
                with torch.no_grad():
                    result["latents"] = denoise(model_fn, noise, cond, reference=res.variant.reference, mode=res.mode,
                                                scales=res.scales, steps=res.steps, shift=res.shift,
                                                switch_t=res.variant.defaults.switch_t, batched=batched,
                                                on_step=hook, check_cancel=self._check_cancel)
            except BaseException as err:  # handed to the consumer below
                result["error"] = err
            finally:
                q.put(None)

        worker = threading.Thread(target=work, name="humo-denoise", daemon=True)
        worker.start()
        try:
            while True:
                item = q.get()
                if item is None:
                    break
                yield item
        finally:
            # The consumer stopped early (generator closed): stop the worker too.
            if worker.is_alive():
                self._cancel.set()
                worker.join()
        if "error" in result:
            raise result["error"]
        return result["latents"]

    def _model_fn(self, dit):
        dev, dt = self.device, self.dtype

        def call(x, t, text, audio, y):
            # Inputs already live on the device (see _on_device): these casts are no-ops there. The
            # timestep comes from the scheduler on the CPU: a blocking copy would make the host wait
            # for the GPU before every pass, so it is copied without blocking (safe from pageable memory).
            with torch.no_grad():
                out = dit(x.to(dev, dt), t.to(dev, non_blocking=True), text.to(dev, dt), audio.to(dev, dt),
                          None if y is None else y.to(dev, dt))
            return out.float()

        return call

    def _on_device(self, noise: torch.Tensor, cond) -> torch.Tensor:
        """Move the loop's tensors to the DiT's device once (conditions in the DiT dtype), so no
        pass copies them again; the latents stay float32 for the solver."""
        dev, dt = self.device, self.dtype
        for name in ("text", "null", "audio", "ref_latents", "y_c", "y_null"):
            value = getattr(cond, name)
            if value is not None:
                setattr(cond, name, value.to(dev, torch.float32 if name == "ref_latents" else dt))
        return noise.to(dev)

    def _zero_latents(self, vae, frames: int, height: int, width: int) -> torch.Tensor:
        """Latents of an all-zero video, computed once per size (the VAE is causal in time, so a
        longer cached result serves shorter requests too)."""
        for (f, hh, ww), lat in self._zero_cache.items():
            if hh == height and ww == width and f >= frames:
                return lat[:, :frames]
        lat = vae.zero_latents(frames, height, width)
        self._zero_cache[(frames, height, width)] = lat
        return lat
