"""Process-wide state of the studio: one engine, built for the chosen engine options, and the gallery."""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path

from studio.config import StudioConfig

log = logging.getLogger("humo.studio")


@dataclass(frozen=True)
class EngineOptions:
    """What the engine is built with. A different set takes a new engine (the weights reload)."""
    plan: str = "auto"            # memory plan (engine.memory), "auto" picks the fastest that fits
    attention: str = "auto"       # attention backend (engine.attention)
    compile: bool = False         # torch.compile the DiT blocks

    @classmethod
    def from_form(cls, plan, attention, compile_) -> "EngineOptions":
        return cls(plan=str(plan or "auto").strip() or "auto", attention=str(attention or "auto").strip() or "auto",
                   compile=bool(compile_))


class Runtime:
    """One engine (created on first use, rebuilt when its options change) and the gallery.

    With --gpus N the engine is rank 0 of N (engine.parallel.serve.RankPool): the other ranks are
    started with the first run, get each request from `generate`, and are started again after a
    run that left them out of step."""

    def __init__(self, config: StudioConfig):
        self.config = config
        self._engine = None
        self._options: EngineOptions | None = None
        self._engine_lock = threading.Lock()
        self._gallery = None
        self.running = threading.Event()
        self._idle = threading.Event()
        self._idle.set()
        self.workdir = Path(config.outputs_dir) / ".work"
        from studio.jobs import RunSlot
        self.runs = RunSlot()             # the Generate click going now, and who made it
        self.pool = None
        if config.gpus > 1:
            from engine import RankPool
            self.pool = RankPool(config.gpus, config.weights_dir, sequence_ways=config.sequence_ways)

    @property
    def loaded(self) -> bool:
        return self._engine is not None

    @property
    def options(self) -> EngineOptions | None:
        """The options of the engine that exists now (None before the first run)."""
        return self._options

    def engine(self, options: EngineOptions | None = None):
        """The engine for `options` (default: the launch plan). Called between runs only: the
        generation worker holds the one-run lock (studio.jobs.ENGINE_LOCK) when it asks."""
        options = options or EngineOptions(plan=self.config.plan)
        with self._engine_lock:
            if self.pool is not None and not self.pool.ready:
                if self._engine is not None:        # its model is split over the ranks that are gone
                    self._engine.unload()
                    self._engine = None
                self.pool.start()
            if self._engine is not None and self._options != options:
                if self.running.is_set():
                    raise RuntimeError("the engine cannot be rebuilt while a run is active")
                log.info("engine options changed (%s -> %s): the next run reloads the weights", self._options, options)
                old, self._engine = self._engine, None
                old.unload()
            if self._engine is None:
                from engine import Engine   # torch + diffusers load here, not at start-up
                # file_names_only: the videos are downloaded by visitors, so no server path goes in them.
                group = None if self.pool is None else self.pool.group
                self._engine = Engine(weights_dir=self.config.weights_dir, plan=options.plan,
                                      attention=None if options.attention == "auto" else options.attention,
                                      compile=options.compile, file_names_only=True, parallel=group,
                                      device=None if group is None else group.device)
                self._options = options
            return self._engine

    def generate(self, eng, request):
        """`eng.generate(request)`, with the other ranks running it too under --gpus N."""
        pool = self.pool
        if pool is None:
            yield from eng.generate(request)
            return
        from engine.events import NoticeEvent
        from engine import EngineSettings

        note = pool.take_note()
        if note:
            yield NoticeEvent(note)
        pool.hand_out(request, EngineSettings(plan=eng.plan_spec, attention=eng.attention, compile=eng.compile))
        error = None
        try:
            yield from eng.generate(request)
        except BaseException as err:
            error = err
            raise
        finally:
            pool.after_run(error)

    def begin_run(self) -> None:
        self._idle.clear()
        self.running.set()

    def end_run(self) -> None:
        from studio.housekeeping import prune_workdir, release_memory, sweep_upload_leftovers

        self.running.clear()
        self._idle.set()
        try:
            prune_workdir(self.workdir)
            sweep_upload_leftovers()
        except OSError as err:
            log.warning("could not prune %s: %s", self.workdir, err)
        release_memory()

    def cancel(self, wait_s: float = 0.0) -> bool:
        """Ask the running generation to stop; with `wait_s`, also wait (up to that long) until it
        has stopped, so the page says "ready" only when it is."""
        if self._engine is not None and self.running.is_set():
            self._engine.cancel()
            if wait_s > 0:
                self._idle.wait(wait_s)
            return True
        return False

    def prepare_workdir(self, what: str = "Cannot make the video") -> Path:
        """The folder runs are written to, made if needed; EngineError ("<what>: the outputs folder ...
        is not writable") when it cannot be written, before the work starts rather than at its end."""
        from studio.gallery.folders import is_writable, not_writable
        try:
            self.workdir.mkdir(parents=True, exist_ok=True)
        except OSError:
            raise not_writable(Path(self.config.outputs_dir), what) from None
        if not is_writable(self.workdir):
            raise not_writable(Path(self.config.outputs_dir), what)
        return self.workdir

    @property
    def gallery(self):
        if self._gallery is None:
            from studio.gallery import Gallery
            self._gallery = Gallery(self.config.outputs_dir)
        return self._gallery
