"""The Generate button: checks, audio preparation, the streamed runs, then the gallery.

`make_generate` returns the event handler. It yields (status, preview, video, summary, grid)
tuples: the page only renders what the run worker reports (see studio.jobs). One click makes
one run or a batch (`runs` in the form): the runs go one after another on the loaded engine,
each saved to the gallery as it finishes; Cancel stops the current run and the rest.
"""
from __future__ import annotations

import logging
import time
import uuid
from pathlib import Path
from typing import Callable

import gradio as gr

from engine.options import get_variant
from engine.request import DEFAULT_WINDOW
from studio import audio_tools
from studio.config import StudioConfig
from studio.form import (FORM_KEYS, LIPS_VOICE, STUDIO_EXTRAS, build_request, fast_mode_value, files_of,
                         form_values, uses_audio, uses_image, validate_form)
from studio.jobs import Run, RunState, stream_run
from studio.runtime import EngineOptions, Runtime
from studio.housekeeping import preview_file
from studio.status import ended_status, STAGE_TEXT, esc, friendly, preview_sheet, status_html

log = logging.getLogger("humo.studio")


def record_engine_choices(extras: dict, engine) -> None:
    """Note the plan and attention backend the engine resolved (auto -> a concrete one)."""
    plan = getattr(engine, "plan", None)
    if plan is not None:
        extras["plan_used"] = getattr(plan, "name", str(plan))
    if getattr(engine, "attention_backend", None):
        extras["attention_used"] = engine.attention_backend
    if getattr(engine, "compile_backend", None):
        extras["compile_used"] = engine.compile_backend


def batch_head(run: int, runs: int, seed: int, random_seed: bool) -> str:
    """The line above the progress of one run of a batch: which run, which seed."""
    if runs <= 1 and not random_seed:
        return ""
    what = f"random seed {seed}" if random_seed else f"seed {seed}"
    text = f"Run {run} of {runs} · {what}" if runs > 1 else what[0].upper() + what[1:]
    return f'<div class="batch" data-run="{run}" data-runs="{runs}">{esc(text)}</div>'


def seeds_text(seeds: list[int], random_seed: bool) -> str:
    if random_seed:
        return "random seeds " + ", ".join(map(str, seeds)) if len(seeds) > 1 else f"random seed {seeds[0]}"
    return f"seeds {seeds[0]}–{seeds[-1]}" if len(seeds) > 1 else f"seed {seeds[0]}"


def make_generate(rt: Runtime, config: StudioConfig, gallery_items: Callable[[str | None, str | None], list]):
    """The Generate handler. `gallery_items(session, user)` renders the gallery grid as that browser
    session shows it (its search, filters and page) to that account."""

    def prepare(f: dict):
        """Checks and the audio, once for the whole batch. Raises readable errors."""
        resolved = validate_form(f)       # the one request rule (engine.request); its notices show once
        f.update(resolved.extras)
        for note in resolved.notices:
            gr.Info(note)
        options = EngineOptions.from_form(f["plan"], f["attention"], f["compile"])
        from studio.performance import check_options
        check_options(options.plan, f["fast_mode"], options.attention)
        if uses_image(f["mode"]):
            from engine.media import load_image
            for p in files_of(f["images"]):
                load_image(p)          # unreadable or oversized photos fail here, readably
        rt.prepare_workdir()
        return options, resolved

    def generate(*values, request: gr.Request = None, progress=gr.Progress()):
        """Make a video, or a batch of them (`runs`, seeds seed, seed+1, ...; seed -1: random seeds).
        Streams (status, preview, video, summary, gallery) while it runs; each finished run is
        in the gallery at once."""
        session = getattr(request, "session_hash", None)
        user = getattr(request, "username", None)      # the signed-in account: it owns the runs
        f = form_values(values)
        keep = gr.skip()
        # The batch begins before the audio is prepared, so a Cancel during that step counts too.
        # Every status this run shows, its last "Cancelled" or "Done" included, comes from this one
        # stream: a Cancel writing its own line could be overtaken by a progress update in flight.
        run = rt.runs.begin(owner=session)
        try:
            yield from run_batch(run, f, session, keep, progress, user)
        finally:
            rt.runs.end(run)

    def run_batch(run: Run, f: dict, session, keep, progress, user=None):
        """Prepare once, then the runs one after another (see `generate`)."""
        try:
            options, resolved = prepare(f)
            drive_audio, stems = None, None
            if uses_audio(f["mode"]):
                yield status_html(message="Preparing the audio…"), keep, None, "", keep
                if f["lips"] == LIPS_VOICE:
                    stems = audio_tools.isolate(f["audio"], f["trim_start"], f["trim_end"], rt.workdir,
                                                models_dir=config.weights_dir)
                    drive_audio = stems.vocals
                else:
                    drive_audio, _, _ = audio_tools.trimmed_clip(f["audio"], f["trim_start"], f["trim_end"],
                                                                 rt.workdir)
            extras = {k: f[k] for k in STUDIO_EXTRAS if k not in ("plan", "attention", "compile")}
            extras["steps"] = resolved.request.steps
            extras.update(plan=options.plan, attention=options.attention, compile=options.compile)
            extras["audio_source"] = f["audio"]
            if stems is not None:
                extras["separation"] = stems.method
            runs, random_seed, seeds = resolved.runs, resolved.random_seed, resolved.seeds
            requests = []
            for i, seed in enumerate(seeds, 1):
                run_extras = dict(extras)
                if runs > 1:
                    run_extras["batch"] = {"run": i, "runs": runs, "seeds": "random" if random_seed else "sequential"}
                out_path = str(rt.workdir / f"run-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}.mp4")
                requests.append((build_request(resolved, seed, drive_audio, out_path, run_extras), run_extras))
        except Exception as err:
            msg = friendly(err)
            gr.Warning(msg)
            yield status_html(message=msg, error=True), keep, None, "", keep
            return

        done: list[tuple] = []           # (result, entry) of the runs that finished
        for i, (req, run_extras) in enumerate(requests, 1):
            if run.stopped:
                yield stopped_status(len(done), runs), keep, keep, keep, keep
                return
            head = batch_head(i, runs, req.seed, random_seed)
            outcome = yield from one_run(req, run_extras, options, head, i, runs, progress)
            if outcome is None:          # cancelled or failed: the runs after it do not start
                if done and runs > 1:
                    yield stopped_status(len(done), runs), keep, keep, keep, keep
                return
            try:
                entry = keep_result(outcome, f, drive_audio, stems, user)
            except Exception as err:
                msg = friendly(err)
                gr.Warning(msg)
                yield status_html(message=msg, error=True), keep, keep, keep, keep
                return
            done.append((outcome, entry))
            last = i == runs
            if last and runs == 1:
                status = status_html(message=f"Done: {entry.id}")
            elif last:
                status = status_html(message=f"Done: {runs} runs ({seeds_text(seeds, random_seed)}): "
                                             + ", ".join(e.id for _, e in done))
            else:
                status = head + status_html(message=f"Run {i} of {runs} saved as {entry.id}; "
                                                    f"run {i + 1} starts…")
            yield (status, keep, str(entry.video), summary_markdown(f, done, runs, random_seed),
                   gallery_items(session, user))

    def one_run(req, extras: dict, options: EngineOptions, head: str, run: int, runs: int, progress):
        """Stream one run of the batch; returns its ResultEvent, or None when it was cancelled or failed."""
        keep = gr.skip()

        def events():
            # Runs on the worker, under the one-run lock: the engine is rebuilt here when the
            # options changed, never while another run is active. Between the runs of a batch
            # the options are the same, so the loaded models stay.
            eng = rt.engine(options)
            rt.begin_run()
            try:
                for ev in rt.generate(eng, req):
                    # The engine resolves its plan, attention and compile while loading; noting them at
                    # every stage means the MP4's settings (written last) carry what really ran.
                    if getattr(ev, "kind", None) == "stage":
                        record_engine_choices(extras, eng)
                    yield ev
            finally:
                rt.end_run()

        reloading = not rt.loaded or rt.options != options
        first = run == 1      # later runs of a batch keep the previous video and summary until theirs is done
        yield head + status_html(RunState(stage="loading" if reloading else "queued")), None, \
            (None if first else keep), ("" if first else keep), keep
        shown_step = -1
        for state in stream_run(events, rt.cancel):
            for note in state.new_notices:
                gr.Info(note)
            if state.error is not None:
                yield ended_status(state.error), keep, keep, keep, keep
                return None
            if state.total:
                stage = STAGE_TEXT.get(state.stage, state.stage)
                progress((state.step, state.total), desc=f"Run {run}/{runs} · {stage}" if runs > 1 else stage)
            new_preview = state.preview is not None and state.preview_step != shown_step
            if new_preview:
                shown_step = state.preview_step
            pv = preview_file(preview_sheet(state.preview), rt.workdir) if new_preview else keep
            yield head + status_html(state), pv, keep, keep, keep
            if state.result is not None:
                return state.result
        return None

    def keep_result(result, f: dict, drive_audio, stems, user=None):
        """The finished MP4 with the clip's full-quality audio, a thumbnail, into the gallery."""
        video_path = result.video_path
        if stems is not None and f["mix_background"]:
            audio_tools.replace_audio(video_path, audio_tools.mix_wav(stems, f["background_gain"], rt.workdir))
        elif drive_audio:
            # The engine muxes the 16 kHz audio the model heard; the video keeps the clip's full quality.
            audio_tools.replace_audio(video_path, drive_audio)
        thumb = str(Path(video_path).with_suffix(".thumb.png"))
        try:
            from engine.media import make_thumbnail
            make_thumbnail(video_path, thumb)
        except Exception as err:
            log.warning("thumbnail failed: %s", err)
            thumb = None
        return rt.gallery.add_result(result, thumbnail_path=thumb, move=True, owner=user)

    return with_event_args(generate, len(FORM_KEYS))


def with_event_args(fn, n_inputs: int):
    """`fn(*values, request=..., progress=...)` as gradio calls it: gradio hands the request and
    the progress tracker only to parameters it can see by position, and a `*values` signature hides
    them (the run would get no session and its progress bar would stay empty). The wrapper shows
    the inputs by their form names (so API callers can name them: `client.predict(variant="tiny",
    mode="TA", prompt="...", audio=..., api_name="/generate")`), then `request` and `progress`.
    Any input may be left out: gradio_client then sends the page's initial value, or None, which
    `form_values` turns into API_DEFAULTS or the model's default (an empty prompt is refused with
    a message, like in the page)."""
    import inspect

    def handler(*args):
        *values, request, progress = args
        yield from fn(*values, request=request, progress=progress)

    P = inspect.Parameter
    params = [P(name, P.POSITIONAL_OR_KEYWORD, default=None) for name in FORM_KEYS[:n_inputs]]
    params += [P("request", P.POSITIONAL_OR_KEYWORD, default=None, annotation=gr.Request),
               P("progress", P.POSITIONAL_OR_KEYWORD, default=gr.Progress())]
    handler.__signature__ = inspect.Signature(params)
    handler.__annotations__ = {"request": gr.Request}
    handler.__doc__ = fn.__doc__
    handler.__name__ = handler.__qualname__ = getattr(fn, "__name__", "generate")
    return handler


def stopped_status(done: int, runs: int) -> str:
    if not done:
        return status_html(message="Cancelled. Ready for the next run.")
    return status_html(message=f"Cancelled after {done} of {runs} runs (those {done} are in the gallery). "
                               "Ready for the next run.")


def summary_markdown(f: dict, done: list[tuple], runs: int = 1, random_seed: bool = False) -> str:
    """What the finished runs made: for one run its numbers; for a batch a line per run."""
    result, entry = done[-1]
    settings = getattr(result, "settings", None) or {}
    studio = (settings.get("metadata") or {}).get("studio") or {}
    speed = []
    if studio.get("plan_used"):
        speed.append(f"plan {studio['plan_used']}")
    fast = settings.get("fast_mode") or fast_mode_value(f.get("fast_mode"))
    speed.append(f"fast mode {fast} (approximate)" if fast else "exact")
    if settings.get("compiled"):
        speed.append(f"compiled ({settings['compiled']})")
    tiny = "  \nTiny variant: random weights, so the video is noise." if get_variant(f["variant"]).random_weights else ""
    window = 4 * int(settings.get("window_length") or DEFAULT_WINDOW) - 3
    if result.frames > window:
        speed.insert(0, f"context windows of {window} frames ({settings.get('window_schedule') or 'shifted'})")
    if runs == 1:
        return (f"**Done** in {result.timings.get('total_s', 0.0):.1f} s · {result.frames} frames at {result.fps} fps · "
                f"{result.width}×{result.height} · seed {result.seed} · {' · '.join(speed)} · saved to the gallery as "
                f"`{entry.id}`" + tiny)
    kind = "random seeds" if random_seed else "seeds counting up from the seed box"
    lines = [f"**{len(done)} of {runs} runs done** ({kind}) · {result.frames} frames at {result.fps} fps · "
             f"{result.width}×{result.height} · {' · '.join(speed)}"]
    for i, (res, ent) in enumerate(done, 1):
        lines.append(f"{i}. seed {res.seed} · {res.timings.get('total_s', 0.0):.1f} s · saved to the gallery as "
                     f"`{ent.id}`")
    return "  \n".join(lines) + tiny
