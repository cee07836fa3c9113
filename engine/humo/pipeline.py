"""One generation: a request in, typed events out, an MP4 at the end (SPEC §3–§5).

The `Engine` keeps loaded components between runs (lazy: nothing loads until a run needs it)
and serves the CLI, the studio and the API alike. `generate` is a generator of events; it
raises an `EngineError` subclass with a user-facing message when something is wrong.

This module tells the story; the request is checked in resolve.py, the parts are loaded from
the table in parts.py, and each stage's work is a function in stages.py.
"""
from __future__ import annotations

import logging
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import torch

from engine.errors import Cancelled, EngineError
from engine.events import NoticeEvent, PreviewEvent, ResultEvent, StageEvent, StepEvent
from engine.humo import stages
from engine.humo.resolve import FPS, Resolved, resolve
from engine.humo.variants import Variant, get_variant
from engine.redact import redact_settings
from engine.request import GenerationRequest, resolve_request

log = logging.getLogger(__name__)


class Engine:
    """Loads a variant's components on demand and runs generations one at a time."""

    def __init__(self, weights_dir: str | Path = "weights", *, device: str | None = None, dtype: torch.dtype | None = None,
                 batch_passes: bool | None = None, attention: str | None = None, compile: bool = False,
                 fast_mode: str | None = None, plan: str | None = "auto", idle_unload_s: float | None = None,
                 file_names_only: bool = False, parallel=None):
        self.weights_dir = Path(weights_dir)
        # The settings in each MP4 name the input files without their folders: a server's videos are
        # downloaded by others (engine.redact). The result event keeps the full paths.
        self.file_names_only = file_names_only
        self._dubber = None             # engine.dub.pipeline.Dubber: its own loaded models, kept between runs
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.dtype = dtype or (torch.bfloat16 if self.device.startswith("cuda") else torch.float32)
        self.batch_passes = batch_passes
        self.attention = attention      # None / "auto": the fastest backend installed (engine.attention)
        self.attention_backend: str | None = None
        self.compile = compile          # torch.compile the DiT blocks (once per shape)
        self.compile_backend = None     # the torch.compile backend the loaded DiT uses (None: eager)
        self.fast_mode = fast_mode      # default approximate preset (engine.humo.fast); a request's own wins
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
        # A torchrun run (engine.parallel.ParallelGroup): the guidance passes are shared with the
        # other ranks, which run the same requests; rank 0 writes the videos.
        self.parallel = parallel
        self._cancel_deferred = False   # while ranks work together, a cancel waits for the next agreed step

    # -- lifecycle ------------------------------------------------------------------------

    def cancel(self) -> None:
        """Ask the running generation to stop; it raises Cancelled within one network pass."""
        self._cancel.set()

    def unload(self) -> None:
        if self._dubber is not None:
            self._dubber.unload()
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
        from engine import memory, weights
        from engine.humo.parts import PARTS

        v = variant if isinstance(variant, Variant) else get_variant(variant)
        if self.variant is not None and self.variant.name != v.name:
            self.unload()
        self.variant = v
        if self.plan is None:
            self._use_plan(v, None)
        missing = [part for part in PARTS if part.name not in self.parts]
        if not missing:
            return
        if self._dubber is not None and str(self.device).startswith("cuda"):
            self._dubber.unload()           # the memory plan counts on the GPU memory they hold
        paths = weights.locate(v, self.weights_dir)
        for part in missing:
            yield StageEvent("loading", f"Loading {part.name} weights of {v.label}")
            # The plan says where each part is loaded (CPU first when it is offloaded, cast or quantized).
            device = memory.load_device(self.plan, part.name, self.device)
            self.parts[part.name] = part.load(self, paths, memory.load_dtype(self.plan, part.name, self.dtype), device)

    def _use_plan(self, v: Variant, res: Resolved | None, images: int = 1) -> None:
        """Resolve the memory plan for this run (auto: the fastest that fits); a different plan
        than the loaded one reloads the parts."""
        from engine import memory

        if self.variant is not None and self.variant.name != v.name:
            self.unload()
        d = v.defaults
        job = memory.Job(d.width, d.height, d.frames, 1, d.mode, d.steps) if res is None else _job(res, images)
        plan = memory.resolve_plan(self.plan_spec, v, job, self.device)
        if self.plan is not None and plan != self.plan:
            self.unload()
        self.variant = v
        self.plan, self._placement = plan, memory.Placement(plan, self.device)

    def _check_cancel(self) -> None:
        if self._cancel.is_set() and not self._cancel_deferred:
            raise Cancelled()

    def _cancel_asked(self) -> None:
        if self._cancel.is_set():
            raise Cancelled()

    @contextmanager
    def _stage(self, timings: dict, key: str, part: str | None = None):
        """Time a stage into `timings[key]`, with `part` staged on the device first (as the memory plan
        says); a cancel asked for meanwhile stops the run when the stage ends."""
        t = time.perf_counter()
        if part is not None:
            self._placement.stage(part, self.parts[part])
        yield
        timings[key] = time.perf_counter() - t
        self._check_cancel()

    # -- one generation -------------------------------------------------------------------
    def generate(self, request: GenerationRequest) -> Iterator:
        if not self._run_lock.acquire(blocking=False):
            raise EngineError("Another generation is running on this engine; wait for it or cancel it.")
        self._cancel.clear()
        if self._idle_timer is not None:
            self._idle_timer.cancel()
        try:
            if self.parallel is None:
                yield from self._generate(request)
            else:
                yield from self._generate_together(request)
        finally:
            if self._placement is not None:
                self._placement.release()
            self._cancel.clear()
            self._run_lock.release()
            if self.idle_unload_s:
                self._idle_timer = threading.Timer(self.idle_unload_s, self._unload_if_idle)
                self._idle_timer.daemon = True
                self._idle_timer.start()

    def _generate_together(self, request: GenerationRequest) -> Iterator:
        """A run shared with the other ranks: a rank that fails tells them why before it stops."""
        from engine.parallel import RankStopped

        self.parallel.begin_run()
        self._cancel_deferred = True
        try:
            yield from self._generate(request)
        except BaseException as err:
            if not isinstance(err, (RankStopped, Cancelled)):
                self.parallel.report_stop(err)
            raise
        finally:
            self._cancel_deferred = False

    @property
    def dubber(self):
        """The engine's `engine.dub.pipeline.Dubber` (made on first use; its models load on its first run)."""
        from engine.dub.pipeline import Dubber

        if self._dubber is None:
            self._dubber = Dubber(self.weights_dir, device=self.device)
        return self._dubber

    def dub(self, request) -> Iterator:
        """Dub a video with a new voice (engine.dub.request.DubRequest): events, then a ResultEvent."""
        dubber = self.dubber
        if not self._run_lock.acquire(blocking=False):
            raise EngineError("Another run is going on this engine; wait for it or cancel it.")
        self._cancel.clear()
        try:
            yield from dubber.run(request, cancel=self._cancel)
        finally:
            self._cancel.clear()
            self._run_lock.release()

    def _unload_if_idle(self) -> None:
        if self._run_lock.acquire(blocking=False):
            try:
                self.unload()
            finally:
                self._run_lock.release()

    def _generate(self, request: GenerationRequest) -> Iterator:
        from engine.humo.fast import fast_mode_cache, get_fast_mode
        from engine.humo.sampler import Conditions, pad_text, seeded_noise
        from engine.memory import text_needed

        t_start = time.perf_counter()
        timings: dict[str, float] = {}
        # Cheap checks first: the settings (the one rule), then the inputs; nothing loads before.
        resolve_request(request.to_dict())
        wave, images = yield from stages.read_inputs(request)
        res = resolve(request, None if wave is None else len(wave))
        parallel = self.parallel
        if parallel is not None:
            from engine.humo.guidance import plan_for

            res.seed = parallel.same(res.seed)      # every rank draws the same noise
            n_passes = len(plan_for(res.variant.reference, res.mode, 1000.0, res.variant.defaults.switch_t).passes)
            heads = res.variant.dit.num_heads
            job = _job(res, len(images))
            parallel.check_tokens(job.tokens(res.variant.dit), job.pass_latent_frames + job.images)
            yield NoticeEvent(parallel.describe(n_passes, heads))
        fast = get_fast_mode(request.fast_mode if request.fast_mode is not None else self.fast_mode)
        if fast is not None:
            res.steps = fast.steps_for(res.steps)
            res.notices.append(f"{fast.label}: {fast.description} The video differs from exact mode.")
        for note in res.notices:
            yield NoticeEvent(note)
        self._check_cancel()

        with self._stage(timings, "load_s"):
            self._use_plan(res.variant, res, len(images))
            yield from self._load_steps(res.variant)
        shape, R = res.variant.dit, max(len(images), 1)
        T, h, w = res.latent_frames, res.height // 8, res.width // 8

        yield StageEvent("encoding_text", "Encoding the prompt")
        # Cached prompts need no encoder: it stays where it is.
        cached = not text_needed(self.parts["text"], (res.prompt, res.negative))
        with self._stage(timings, "text_s", None if cached else "text"):
            prompt_emb, null_emb = yield from stages.encode_text(self.parts["text"], res)

        yield StageEvent("encoding_audio", "Extracting voice features" if wave is not None else "No audio: zero audio condition")
        with self._stage(timings, "audio_s", "audio" if wave is not None else None):
            windows = stages.audio_windows(self.parts["audio"], wave, res, R)

        yield StageEvent("encoding_image", "Encoding the reference image" + ("s" if len(images) > 1 else "") if images else "No reference image")
        with self._stage(timings, "image_s", "vae"):
            cond = Conditions(text=pad_text(prompt_emb, shape.text_len), null=pad_text(null_emb, shape.text_len),
                              audio=windows, ref_frames=R,
                              ref_latents=stages.reference_latents(self.parts["vae"], images, res, R))
            if res.variant.reference == "channel":
                from engine.humo.conditions import channel_conditions

                zeros = self._zero_latents(self.parts["vae"], T + R, res.height, res.width)
                cond.y_c, cond.y_null = channel_conditions(zeros, cond.ref_latents, T, R)

        yield StageEvent("denoising", f"Denoising: {res.steps} steps")
        dit = self.parts["dit"]
        self._placement.stage("dit", dit)
        noise = stages.conditions_on_device(seeded_noise(res.seed, T + R, h, w), cond, self.device, self.dtype)
        events: list = []
        t_denoise = time.perf_counter()

        def on_step(i: int, total: int, x0: torch.Tensor) -> None:
            elapsed = time.perf_counter() - t_denoise
            events.append(StepEvent(i, total, elapsed, elapsed / i * (total - i)))
            if request.preview and (parallel is None or parallel.rank == 0):
                from engine.humo.preview import latents_to_rgb

                events.append(PreviewEvent(i, total, latents_to_rgb(x0, request.preview_max_side)))

        def on_window(start) -> None:
            """Window `start.window` of `start.windows` of step `start.step` begins."""
            elapsed = time.perf_counter() - t_denoise
            done = start.step - 1 + (start.window - 1) / start.windows       # steps done, in fractions
            eta = elapsed / done * (start.total - done) if done else 0.0
            events.append(StepEvent(start.step - 1, start.total, elapsed, eta, start.window, start.windows))

        batched = (self.batch_passes if self.batch_passes is not None else self.device != "cpu") and not self.plan.sequential
        # Caches compare consecutive steps: all passes of a step must go through one forward.
        cache_mode = fast
        if res.windows is not None and fast is not None and fast.cache is not None:
            # A step cache compares a block's input with the previous call's: with context windows the
            # previous call is another window, so the cache would compare unrelated frames.
            cache_mode = None
            yield NoticeEvent(f"{fast.label}: its step cache is off for videos longer than one window "
                              "(fewer steps, where the mode has them, still apply).")
        elif parallel is not None and fast is not None and fast.cache is not None:
            # A step cache compares all passes of consecutive steps; each rank sees only its share.
            cache_mode = None
            yield NoticeEvent(f"{fast.label}: its step cache is off when the guidance passes are split over "
                              "ranks (fewer steps, where the mode has them, still apply).")
        # Caches compare consecutive steps: all passes of a step must go through one forward.
        batched = batched or (cache_mode is not None and cache_mode.cache is not None)
        with fast_mode_cache(dit, cache_mode, stages.dit_call(dit, self.device, self.dtype)) as (model_fn, cache_stats):
            # The loop runs in this generator's frame, so events are handed out step by step.
            # Window progress between the passes of a step: a torchrun run keeps its ranks in step instead.
            final = yield from stages.denoise_with_events(model_fn, noise, cond, res, on_step, events, batched,
                                                          self._check_cancel if parallel is None else self._cancel_asked,
                                                          parallel, on_window if parallel is None else None)
        self._cancel_deferred = False       # past the shared part: each rank goes on alone
        final = final.cpu()
        timings["denoise_s"] = time.perf_counter() - t_denoise
        if cache_stats.calls:
            yield NoticeEvent(f"{fast.label}: {cache_stats.summary()}.")

        settings = res.settings(request)
        settings["fast_mode"] = fast.name if fast is not None else None
        settings["compiled"] = self.compile_backend
        if parallel is not None:
            settings["parallel"] = parallel.settings(n_passes, heads)
            if parallel.rank != 0:          # rank 0 writes the video; the others are done
                timings["total_s"] = time.perf_counter() - t_start
                yield StageEvent("done", f"Done (rank {parallel.rank}: rank 0 writes the video)")
                yield ResultEvent(video_path=None, frames=res.frames, width=res.width, height=res.height, fps=FPS,
                                  seed=res.seed, duration_s=0.0, timings=timings, settings=settings)
                return
        yield StageEvent("decoding", "Decoding the video and writing the MP4")
        kept = redact_settings(settings) if self.file_names_only else settings
        with self._stage(timings, "decode_write_s", "vae"):
            # Decoded a latent frame at a time and written as it comes: a long video is never held whole.
            frames = stages.decoded_frames(self.parts["vae"], final, res.frames, self._check_cancel)
            try:
                out_path = stages.write_video(request, frames, FPS, wave is not None, kept, frame_count=res.frames)
            finally:
                self._placement.release()
        timings["total_s"] = time.perf_counter() - t_start
        yield StageEvent("done", "Done")
        duration = res.frames / FPS if wave is None else min(res.frames / FPS, len(wave) / stages.FEATURE_SR)
        yield ResultEvent(video_path=out_path, frames=res.frames, width=res.width, height=res.height, fps=FPS,
                          seed=res.seed, duration_s=duration, timings=timings, settings=settings)

    def _zero_latents(self, vae, frames: int, height: int, width: int) -> torch.Tensor:
        """Latents of an all-zero video, computed once per size (the VAE is causal in time, so a
        longer cached result serves shorter requests too)."""
        for (f, hh, ww), lat in self._zero_cache.items():
            if hh == height and ww == width and f >= frames:
                return lat[:, :frames]
        lat = vae.zero_latents(frames, height, width)
        self._zero_cache[(frames, height, width)] = lat
        return lat


def _job(res: Resolved, images: int):
    """The run's size for the memory plan and the sequence split: one network pass covers one
    context window (or the whole video) plus the reference frames."""
    from engine import memory

    window = res.windows.length if res.windows is not None else memory.Job.window_length
    return memory.Job(res.width, res.height, res.frames, max(images, 1), res.mode, res.steps, window)
