"""The Dub tab's events and the /dub, /dub_check endpoints.

A run streams through studio.jobs.stream_run like a generation (one run at a time on the one
engine, Cancel only from the page that started it: `rt.runs`); the result lands in the same
gallery as generated videos, with the dubbing model's name and mode dub.
"""
from __future__ import annotations

import inspect
import logging
import time
import uuid
from pathlib import Path

import gradio as gr

from engine.errors import InputError
from studio import audio_tools
from studio.config import StudioConfig
from studio.form import LIPS_ORIGINAL, LIPS_VOICE
from studio.jobs import ENGINE_LOCK, RunState, stream_run
from studio.runtime import Runtime
from studio.status import ended_status, esc, fmt_seconds, friendly, preview_sheet, status_html
from studio.stems import isolate_handler

log = logging.getLogger("humo.studio")

DUB_MODEL = "musetalk-1.5"
INPUT_NAMES = ["video", "audio", "trim_start", "trim_end", "model", "extra_margin", "parsing_mode", "cheek_left",
               "cheek_right", "fps_rule", "when_audio_longer", "when_video_longer", "batch_size", "steps", "guidance",
               "deepcache", "whisper_pad", "whisper_floor", "face_smoothing", "rounding", "frame_count", "whisper_windows",
               "seed", "lips", "mix_background", "background_gain"]
# The tab's own settings (not the engine's): the voice that drives the lips, and what the video sounds like.
STUDIO_SETTINGS = {"lips": (LIPS_ORIGINAL, LIPS_VOICE), "mix_background": (False, True), "background_gain": None}
MODEL_LABELS = {"musetalk-1.5": "MuseTalk 1.5", "latentsync-1.6": "LatentSync 1.6"}
STAGE_WORDS = {"reading": "Reading the inputs", "tracking": "Finding the face", "loading": "Loading the model",
               "encoding_audio": "Encoding the voice", "dubbing": "Dubbing", "writing": "Writing the MP4",
               "done": "Done", "queued": "Waiting to start"}


def weights_markdown(weights_dir: str, model: str | None = None) -> str:
    """A dubbing model's weights: present, or the commands that get them (no network)."""
    from engine import weights
    from engine.redact import redact_text

    model = model if model in MODEL_LABELS else DUB_MODEL
    label = MODEL_LABELS[model]
    st = weights.find(model, weights_dir)
    if st.complete:
        text = f"**{label}**: weights present in `{weights_dir}` ({weights.format_bytes(st.size_on_disk)})."
    else:
        text = (f"**{label}**: weights are not ready in `{weights_dir}`: {st.problem()}. Run "
                f"`{st.command}`, or `python -m engine make-tiny {weights_dir} --model {model}` "
                "(or press **Make tiny weights**) for random weights that check the pipeline.")
    restricted = [c for c in weights.components_for(model) if c.licence]
    for comp in restricted:
        part = next(c for c in st.components if c.key == comp.key)
        if part.state == "present":
            text += f"  \nFace landmarks: {comp.label}, present. **Licence:** {comp.licence}."
        else:
            text += (f"  \nOptional, the official face landmarks ({comp.label}): `{st.command} --with-insightface`. "
                     f"**Licence:** {comp.licence}.")
    return redact_text(text)


def dub_values_from_settings(settings: dict) -> list:
    """A kept dub's settings as the Dub tab's setting values (INPUT_NAMES after the video, voice and trim);
    a value the request rule refuses falls back to its default."""
    from engine.dub.request import DubRequest, validate_dub_request

    default = DubRequest(video="v", audio="a")
    values = []
    for name in INPUT_NAMES[4:]:
        if name in STUDIO_SETTINGS:
            values.append(_studio_setting(name, settings.get(name)))
            continue
        value = settings.get(name, getattr(default, name))
        try:
            checked = validate_dub_request(DubRequest(video="v", audio="a", **{name: value}))
            values.append(getattr(checked, name))
        except (InputError, TypeError):
            values.append(getattr(default, name))
    return values


def _studio_setting(name: str, value):
    """A kept value of one of STUDIO_SETTINGS, or its default (the first) when it is not one."""
    from engine.request import MAX_BACKGROUND_GAIN, check_number

    allowed = STUDIO_SETTINGS[name]
    if name == "background_gain":
        try:
            return float(check_number("Background level", value, 0, MAX_BACKGROUND_GAIN))
        except InputError:
            return 1.0
    return value if value in allowed and type(value) is type(allowed[0]) else allowed[0]


def dub_status(state: RunState) -> str:
    """The status line of a dubbing run: stage, frame N/M, ETA, elapsed, and a bar."""
    if state.total:
        stage = "Dubbing" if state.stage in ("denoising", "dubbing") else STAGE_WORDS.get(state.stage, state.stage)
    else:
        stage = STAGE_WORDS.get(state.stage, state.stage)
    parts = [f"<b>{esc(stage)}</b>"]
    if state.stage_message and not state.total:
        parts.append(esc(state.stage_message))
    if state.total:
        parts.append(f"frame {state.step}/{state.total}")
        if state.step < state.total:
            parts.append(f"ETA {fmt_seconds(state.eta_s)}")
    parts.append(f"elapsed {fmt_seconds(time.monotonic() - state.started_at)}")
    pct = int(round(state.fraction * 100))
    return (f'<div class="line" data-stage="{esc(state.stage)}" data-step="{state.step}" data-total="{state.total}">'
            f'{" · ".join(parts)}</div><div class="bar"><div style="width:{pct}%"></div></div>')


def video_path(value) -> str | None:
    """The file of a Video input as the page or gradio_client sends it."""
    if isinstance(value, dict):
        value = value.get("video") or value.get("path")
        if isinstance(value, dict):
            value = value.get("path")
    return str(value) if value else None


def with_named_inputs(fn, names: list[str]):
    """`fn(*values, request=, progress=)` with its inputs visible by name (API callers can name them)."""
    def handler(*args):
        *values, request, progress = args
        return fn(*values, request=request, progress=progress)

    P = inspect.Parameter
    params = [P(n, P.POSITIONAL_OR_KEYWORD, default=None) for n in names]
    params += [P("request", P.POSITIONAL_OR_KEYWORD, default=None, annotation=gr.Request),
               P("progress", P.POSITIONAL_OR_KEYWORD, default=gr.Progress())]
    handler.__signature__ = inspect.Signature(params)
    handler.__annotations__ = {"request": gr.Request}
    handler.__doc__, handler.__name__ = fn.__doc__, fn.__name__
    if inspect.isgeneratorfunction(fn):
        def gen_handler(*args):
            yield from handler(*args)
        gen_handler.__signature__, gen_handler.__annotations__ = handler.__signature__, handler.__annotations__
        gen_handler.__doc__, gen_handler.__name__ = fn.__doc__, fn.__name__
        return gen_handler
    return handler


def wire_dub(demo, ui, rt: Runtime, config: StudioConfig, render_gallery) -> None:
    """The Dub tab's events (`ui.dub` from studio.dub_layout), the gallery's "Dub this video" button."""
    d = ui.dub
    demo.load(lambda: weights_markdown(config.weights_dir), None, d.weights_md, api_visibility="private", queue=False)

    def on_model(model):
        latentsync = model == "latentsync-1.6"
        return (weights_markdown(config.weights_dir, model), gr.update(visible=latentsync),
                gr.update(visible=not latentsync))

    d.model.change(on_model, d.model, [d.weights_md, d.latentsync_settings, d.musetalk_settings],
                   api_visibility="private", queue=False)

    def make_tiny(model=None):
        from studio import weights_panel
        model = model if model in MODEL_LABELS else DUB_MODEL
        try:
            gr.Info(f"Making tiny {MODEL_LABELS[model]} weights…")
            line = weights_panel.make_tiny(config.weights_dir, model=model)
        except Exception as err:
            msg = friendly(err) if not isinstance(err, RuntimeError) else str(err)
            gr.Warning(msg)
            return weights_markdown(config.weights_dir, model) + f"\n\n**Problem:** {esc(msg)}"
        return weights_markdown(config.weights_dir, model) + f"\n\n{line}"

    d.make_tiny_btn.click(make_tiny, d.model, d.weights_md, api_name="make_tiny_dub_weights")

    def on_audio(path):
        text = audio_tools.describe(path)
        if text.startswith("Problem:"):
            gr.Warning(text[len("Problem:"):].strip())
        return text, None, None, ""

    stems_out = [d.vocals_out, d.background_out, d.method_md]
    d.audio.change(on_audio, d.audio, [d.audio_md, *stems_out], api_visibility="private")
    d.isolate_btn.click(isolate_handler(rt, config), [d.audio, d.trim_start, d.trim_end], stems_out,
                        api_name="dub_isolate_voice", concurrency_limit=2)

    def request_of(video, audio, trim_start, trim_end, model, extra_margin, parsing_mode, cheek_left, cheek_right,
                   fps_rule, when_audio_longer, when_video_longer, batch_size, steps=None, guidance=None,
                   deepcache=None, whisper_pad=None, whisper_floor=None, face_smoothing=None, rounding=None,
                   frame_count=None, whisper_windows=None, seed=None, lips=None, mix_background=None,
                   background_gain=None, out_path=None, separate=True):
        """The engine's DubRequest for the tab's values; the voice trimmed (and checked) first, and
        separated from its background when the lips follow the isolated voice (unless not `separate`:
        the first-frame check does not need it)."""
        from engine.dub.request import DubRequest, validate_dub_request
        from engine.request import MAX_BACKGROUND_GAIN, check_number

        path = video_path(video)
        if not path:
            raise InputError("No video was given.", hint="Upload a video, or pick a run in the Gallery.")
        if not audio:
            raise InputError("No voice was given.", hint="Upload or record the new voice.")
        workdir = rt.prepare_workdir("Cannot dub the video")
        voice, wave, _ = audio_tools.trimmed_clip(audio, trim_start or 0, trim_end or 0, workdir)
        if wave.size == 0 or float(abs(wave).max()) < audio_tools.SILENCE_PEAK:
            raise InputError("The voice is silent, so there is nothing for the lips to follow.",
                             hint="Use a clip with speech in it.")
        lips = lips or LIPS_ORIGINAL
        if lips not in STUDIO_SETTINGS["lips"]:
            raise InputError(f"lips must be {LIPS_ORIGINAL!r} or {LIPS_VOICE!r}, got {lips!r}.")
        gain = check_number("Background level", 1.0 if background_gain is None else background_gain, 0,
                            MAX_BACKGROUND_GAIN)
        extras = {"lips": lips}
        sound = None
        if lips == LIPS_VOICE and separate:
            stems = audio_tools.isolate(audio, trim_start or 0, trim_end or 0, workdir, models_dir=config.weights_dir)
            voice = stems.vocals
            extras.update(separation=stems.method, mix_background=bool(mix_background))
            if mix_background:
                sound = audio_tools.mix_wav(stems, gain, workdir)
                extras["background_gain"] = float(gain)
        d = DubRequest(video="", audio="")
        given = {"steps": steps, "guidance": guidance, "deepcache": deepcache, "whisper_pad": whisper_pad,
                 "whisper_floor": whisper_floor, "face_smoothing": face_smoothing, "rounding": rounding,
                 "frame_count": frame_count, "whisper_windows": whisper_windows, "seed": seed}
        sync = {k: (getattr(d, k) if v is None or v == "" else v) for k, v in given.items()}
        req = DubRequest(video=path, audio=voice, sound=sound, out_path=out_path, model=model or DUB_MODEL, **sync,
                         extra_margin=extra_margin if extra_margin is not None else 10,
                         parsing_mode=parsing_mode or "jaw",
                         cheek_left=cheek_left if cheek_left is not None else 90,
                         cheek_right=cheek_right if cheek_right is not None else 90,
                         fps_rule=fps_rule or "exact", when_audio_longer=when_audio_longer or "pingpong",
                         when_video_longer=when_video_longer or "cut", batch_size=batch_size or 8,
                         metadata={"variant": model or DUB_MODEL, "audio_source": Path(str(audio)).name,
                                   "trim_start": trim_start or 0, "trim_end": trim_end or 0, **extras})
        return validate_dub_request(req)

    def dub_check(*values, request: gr.Request = None, progress=None):
        """First-frame check: the face found on the video's first frame, with the crop box and the blend
        mask the run would use drawn on it, and notes (detector in use, several faces). Returns (image, text)."""
        from studio.dub_check import check_first_frame
        try:
            req = request_of(*values, separate=False)
            with ENGINE_LOCK:
                eng = rt.engine(rt.options)
                found = check_first_frame(eng.dubber, req)
        except Exception as err:
            msg = friendly(err)
            gr.Warning(msg)
            return None, f"**Problem:** {esc(msg)}"
        x1, y1, x2, y2 = found.box
        lines = [f"Crop box {x2 - x1}×{y2 - y1} at ({x1}, {y1}); the mask changes {found.mask_pixels} pixels."]
        lines += found.notices
        return found.image, "  \n".join(esc(n) for n in lines)

    d.check_btn.click(with_named_inputs(dub_check, INPUT_NAMES), d.inputs, [d.check_img, d.check_md],
                      api_name="dub_check", concurrency_limit=1, concurrency_id="gpu")

    def dub(*values, request: gr.Request = None, progress=None):
        """Dub a video with a new voice (MuseTalk 1.5 or LatentSync 1.6). Streams (status, preview, video,
        summary, gallery); the finished video is saved in the gallery (its model's name, mode dub)."""
        session = getattr(request, "session_hash", None)
        user = getattr(request, "username", None)
        keep = gr.skip()
        run = rt.runs.begin(owner=session)
        try:
            try:
                out = str(rt.prepare_workdir("Cannot dub the video")
                          / f"dub-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}.mp4")
                req = request_of(*values, out_path=out)
            except Exception as err:
                msg = friendly(err)
                gr.Warning(msg)
                yield status_html(message=msg, error=True), keep, None, "", keep
                return
            if run.stopped:           # Cancel came while the voice was being prepared
                yield status_html(message="Cancelled. Ready for the next run."), keep, None, "", keep
                return
            yield from stream_dub(run, req, session, user)
        finally:
            rt.runs.end(run)

    def stream_dub(run, req, session, user):
        keep = gr.skip()

        def events():
            eng = rt.engine(rt.options)
            rt.begin_run()
            try:
                yield from eng.dub(req)
            finally:
                rt.end_run()

        yield status_html(RunState(stage="queued")), None, None, "", keep
        shown = -1
        for state in stream_run(events, rt.cancel):
            for note in state.new_notices:
                gr.Info(note)
            if state.error is not None:
                yield ended_status(state.error), keep, keep, keep, keep
                return
            fresh = state.preview is not None and state.preview_step != shown
            if fresh:
                shown = state.preview_step
            yield dub_status(state), (preview_sheet(state.preview, count=1) if fresh else keep), keep, keep, keep
            if state.result is not None:
                break
        else:
            return
        try:
            entry = keep_result(state.result, req, user)
        except Exception as err:
            msg = friendly(err)
            gr.Warning(msg)
            yield status_html(message=msg, error=True), keep, keep, keep, keep
            return
        res = state.result
        summary = (f"**Done** in {res.timings.get('total_s', 0.0):.1f} s · {res.frames} frames at {res.fps:g} fps · "
                   f"{res.width}×{res.height} · saved to the gallery as `{entry.id}`")
        if (res.settings or {}).get("weights", "").startswith("tiny"):
            summary += "  \nTiny weights: random, so the mouth region is noise."
        yield status_html(message=f"Done: {entry.id}"), keep, str(entry.video), summary, render_gallery(session, user)

    def keep_result(result, req, user):
        thumb = str(Path(result.video_path).with_suffix(".thumb.png"))
        try:
            from engine.media import make_thumbnail
            make_thumbnail(result.video_path, thumb)
        except Exception as err:
            log.warning("thumbnail failed: %s", err)
            thumb = None
        voice = (req.metadata or {}).get("audio_source") or Path(req.audio).name
        title = f"Dub: {Path(req.video).name} + {voice}"
        return rt.gallery.add_result(result, thumbnail_path=thumb, title=title, move=True, owner=user)

    d.run_btn.click(with_named_inputs(dub, INPUT_NAMES), d.inputs,
                    [d.status, d.preview, d.result, d.result_md, ui.grid], api_name="dub", concurrency_limit=1,
                    concurrency_id="gpu", show_progress="minimal", show_progress_on=[d.result])

    def dub_cancel(request: gr.Request = None):
        """Stop the dubbing run started from this page (a run started elsewhere is left alone)."""
        outcome, run = rt.runs.stop_for(getattr(request, "session_hash", None))
        if outcome == "other":
            return status_html(message="The run going now was started from another page; only that page can cancel it.")
        if outcome == "none":
            return status_html(message="Nothing to cancel.")
        rt.cancel()
        if run.wait_ended(30.0):
            return gr.skip()
        return status_html(message="Stopping: the run ends after its current frames.")

    d.cancel_btn.click(dub_cancel, None, d.status, api_name="dub_cancel", queue=False)

    def dub_this(eid, request: gr.Request = None):
        """Fill the Dub tab with a gallery run's video and switch to it."""
        from studio.accounts import Accounts
        eid = (eid or "").strip()
        try:
            entry = rt.gallery.get(eid, Accounts(config.auth).gallery_owner(getattr(request, "username", None))) \
                if eid else None
        except Exception as err:
            gr.Warning(friendly(err))
            return gr.skip(), gr.skip()
        if entry is None or not entry.available:
            gr.Warning(f"No gallery entry {eid!r}: select a run first.")
            return gr.skip(), gr.skip()
        return str(entry.video), gr.Tabs(selected="dub")

    ui.dub_this_btn.click(dub_this, ui.entry_id, [d.video, ui.main_tabs], api_name="dub_this_video", queue=False)
