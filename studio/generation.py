"""The Generate button: checks, audio preparation, the streamed run, then the gallery.

`make_generate` returns the event handler. It yields (status, preview, video, summary, grid)
tuples: the page only renders what the run worker reports (see studio.jobs).
"""
from __future__ import annotations

import logging
import time
import uuid
from pathlib import Path
from typing import Callable

import gradio as gr

from engine.errors import Cancelled
from engine.variants import get_variant
from studio import audio_tools
from studio.config import StudioConfig
from studio.form import (LIPS_VOICE, STUDIO_EXTRAS, build_request, fast_mode_value, files_of, form_values,
                         uses_audio, uses_image, validate_form)
from studio.jobs import RunState, stream_run
from studio.runtime import EngineOptions, Runtime
from studio.status import STAGE_TEXT, friendly, preview_sheet, status_html

log = logging.getLogger("humo.studio")


def record_engine_choices(extras: dict, engine) -> None:
    """Note the plan and attention backend the engine resolved (auto -> a concrete one)."""
    plan = getattr(engine, "plan", None)
    if plan is not None:
        extras["plan_used"] = getattr(plan, "name", str(plan))
    if getattr(engine, "attention_backend", None):
        extras["attention_used"] = engine.attention_backend


def make_generate(rt: Runtime, config: StudioConfig, gallery_items: Callable[[], list]):
    def generate(*values, progress=gr.Progress()):
        """Make a video. Streams (status, preview, video, summary, gallery) while it runs."""
        f = form_values(values)
        keep = gr.skip()
        try:
            validate_form(f)
            options = EngineOptions.from_form(f["plan"], f["attention"], f["compile"])
            from studio.performance import check_options
            check_options(options.plan, f["fast_mode"], options.attention)
            if uses_image(f["mode"]):
                from engine.media import load_image
                for p in files_of(f["images"]):
                    load_image(p)          # unreadable or oversized photos fail here, readably
            rt.workdir.mkdir(parents=True, exist_ok=True)
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
            extras.update(plan=options.plan, attention=options.attention, compile=options.compile)
            extras["audio_source"] = f["audio"]
            if stems is not None:
                extras["separation"] = stems.method
            out_path = str(rt.workdir / f"run-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}.mp4")
            req = build_request(f, drive_audio, out_path, extras)
        except Exception as err:
            msg = friendly(err)
            gr.Warning(msg)
            yield status_html(message=msg, error=True), keep, None, "", keep
            return

        def events():
            # Runs on the worker, under the one-run lock: the engine is rebuilt here when the
            # options changed, never while another run is active.
            eng = rt.engine(options)
            rt.begin_run()
            try:
                for ev in eng.generate(req):
                    # The engine has resolved its plan by the first stage after loading; the MP4's
                    # settings are written later, so they carry the plan that really ran.
                    if getattr(ev, "kind", None) == "stage" and "plan_used" not in extras:
                        record_engine_choices(extras, eng)
                    yield ev
            finally:
                rt.end_run()

        reloading = not rt.loaded or rt.options != options
        yield status_html(RunState(stage="loading" if reloading else "queued")), None, None, "", keep
        result, shown_step = None, -1
        for state in stream_run(events, rt.cancel):
            for note in state.new_notices:
                gr.Info(note)
            if state.error is not None:
                if isinstance(state.error, Cancelled):
                    yield status_html(message="Cancelled. Ready for the next run."), keep, None, "", keep
                else:
                    msg = friendly(state.error)
                    gr.Warning(msg)
                    yield status_html(message=msg, error=True), keep, None, "", keep
                return
            if state.total:
                progress((state.step, state.total), desc=STAGE_TEXT.get(state.stage, state.stage))
            new_preview = state.preview is not None and state.preview_step != shown_step
            if new_preview:
                shown_step = state.preview_step
            pv = preview_sheet(state.preview) if new_preview else keep
            yield status_html(state), pv, keep, keep, keep
            if state.result is not None:
                result = state.result
                break
        if result is None:
            return
        try:
            video_path = result.video_path
            if stems is not None and f["mix_background"]:
                yield status_html(message="Mixing the background back in…"), keep, keep, keep, keep
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
            entry = rt.gallery.add_result(result, thumbnail_path=thumb, move=True)
            final_video = str(entry.video)
        except Exception as err:
            msg = friendly(err)
            gr.Warning(msg)
            yield status_html(message=msg, error=True), keep, keep, keep, keep
            return
        yield (status_html(message=f"Done: {entry.id}"), keep, final_video, summary_markdown(f, result, entry),
               gallery_items())

    return generate


def summary_markdown(f: dict, result, entry) -> str:
    settings = getattr(result, "settings", None) or {}
    studio = (settings.get("metadata") or {}).get("studio") or {}
    speed = []
    if studio.get("plan_used"):
        speed.append(f"plan {studio['plan_used']}")
    fast = settings.get("fast_mode") or fast_mode_value(f.get("fast_mode"))
    speed.append(f"fast mode {fast} (approximate)" if fast else "exact")
    tiny = get_variant(f["variant"]).random_weights
    return (f"**Done** in {result.timings.get('total_s', 0.0):.1f} s · {result.frames} frames at {result.fps} fps · "
            f"{result.width}×{result.height} · seed {result.seed} · {' · '.join(speed)} · saved to the gallery as "
            f"`{entry.id}`" + ("  \nTiny variant: random weights, so the video is noise." if tiny else ""))
