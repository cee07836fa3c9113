"""The studio page: event wiring. Computation lives in the engine.

`build_app(config)` returns a gr.Blocks. Every action is also an API endpoint
(`api_name=`), so gradio_client and MCP clients can do what the page does.
The page is split by job:
  studio.layout       the components
  studio.form         the form as data: API input order, checks, request, reuse
  studio.generation   the Generate handler (streamed run, then the gallery)
  studio.dub_tab      the Dub tab (MuseTalk 1.5): first-frame check, streamed run, gallery
  studio.gallery_ui   the Gallery tab: search, filters, paging, stars, reuse
  studio.performance  memory plan, fast mode, attention backend, compile
  studio.status       status line, readable errors, preview strip
  studio.runtime      the one engine and the gallery
Nothing here imports torch: the engine is imported on the first generation (or when the
Performance panel is opened).
"""
from __future__ import annotations

import logging
import random
import threading
from pathlib import Path

import gradio as gr

from engine.errors import EngineError
from engine.redact import redact_text
from engine.options import VARIANTS, get_variant
from studio import audio_tools, performance, weights_panel
from studio.config import StudioConfig
from studio.form import (CUSTOM, FORM_KEYS, MAX_SEED, files_of, image_scale_applies, size_choices, size_key,
                         uses_audio, uses_image)
from studio.gallery.view import SessionViews
from studio.dub_tab import wire_dub
from studio.gallery_ui import wire_gallery
from studio.generation import make_generate
from studio.layout import ABOUT_MD, CSS, build_layout
from studio.runtime import EngineOptions, Runtime
from studio.stems import isolate_handler
from studio.status import friendly, status_html

__all__ = ["ABOUT_MD", "CSS", "FORM_KEYS", "build_app"]

log = logging.getLogger("humo.studio")


def preset_names(v: str) -> list[tuple[str, str]]:
    try:
        from studio.presets import presets_for
        return [(f"{p.name} — {p.description}" if len(p.description) < 70 else p.name, p.name)
                for p in presets_for(v)]
    except Exception as err:   # a broken preset file must not stop the page
        log.warning("presets unavailable: %s", err)
        return []


def _as_sent(payload):
    return payload


def build_app(config: StudioConfig) -> gr.Blocks:
    rt = Runtime(config)
    start_variant = config.variant if config.variant in VARIANTS else "humo-1.7b"
    theme = gr.themes.Soft(font=["ui-sans-serif", "system-ui", "sans-serif"],
                           font_mono=["ui-monospace", "monospace"])   # no web fonts: works offline

    from studio.housekeeping import CACHE_MAX_AGE_S, CACHE_SWEEP_S

    with gr.Blocks(title="HuMo Studio", analytics_enabled=False, delete_cache=(CACHE_SWEEP_S, CACHE_MAX_AGE_S)) as demo:
        demo.humo_theme, demo.humo_css = theme, CSS
        ui = build_layout(config, start_variant)
        form = ui.form
        assert len(form) == len(FORM_KEYS)
        for comp in form:
            if isinstance(comp, (gr.Number, gr.Slider)):
                # Numbers reach the handler as sent: the one request rule (engine.request) answers a
                # NaN, "abc" or out-of-range value with a sentence, where Gradio's own rounding and
                # bounds checks would fail with an empty error.
                comp.preprocess = _as_sent
        wire_form(demo, ui, config, start_variant)
        wire_inputs(ui, rt, config)
        wire_weights(demo, ui, config)
        render_gallery = wire_gallery(demo, ui, rt, config, start_variant, SessionViews())
        engine_note = wire_performance(ui, rt)
        wire_generate(ui, rt, config, render_gallery, engine_note)
        wire_dub(demo, ui, rt, config, render_gallery)
    return demo


# ----------------------------------------------------------------------------- variant, mode, size, presets

def wire_form(demo, ui, config: StudioConfig, start_variant: str) -> None:
    def on_variant_change(v, m):
        var = get_variant(v)
        return (weights_panel.status_markdown(v, config.weights_dir),
                gr.update(visible=var.random_weights), gr.update(visible=not var.random_weights),
                gr.update(visible=image_scale_applies(v, m)),
                gr.update(choices=size_choices(v)),
                gr.update(choices=preset_names(v), value=None))

    ui.variant.change(on_variant_change, [ui.variant, ui.mode],
                      [ui.weights_md, ui.make_tiny_btn, ui.download_btn, ui.scale_i, ui.size, ui.preset],
                      api_visibility="private", queue=False)

    def variant_defaults(v):
        """The variant's defaults, when a person picks a model."""
        dd = get_variant(v).defaults
        return (dd.steps, dd.shift, dd.scale_t, dd.scale_i or 0, dd.scale_a, f"{dd.width}x{dd.height}",
                dd.width, dd.height, gr.update(value=dd.frames, maximum=getattr(dd, "max_frames", 257)))

    ui.variant.input(variant_defaults, ui.variant,
                     [ui.steps, ui.shift, ui.scale_t, ui.scale_i, ui.scale_a, ui.size, ui.width, ui.height, ui.frames],
                     api_name="variant_defaults", queue=False)

    def on_mode_change(m, v):
        return (gr.update(visible=uses_image(m)), gr.update(visible=uses_audio(m)),
                gr.update(visible=image_scale_applies(v, m)), gr.update(visible=uses_audio(m)),
                gr.update(visible=uses_audio(m)))

    ui.mode.change(on_mode_change, [ui.mode, ui.variant],
                   [ui.image_group, ui.audio_group, ui.scale_i, ui.scale_a, ui.match_audio],
                   api_visibility="private", queue=False)
    for key, tab in ui.mode_tab_objs.items():
        tab.select(lambda k=key: k, None, ui.mode, api_visibility="private", queue=False)

    def on_size(choice, w, h):
        if choice and choice != CUSTOM:
            a, b = choice.split("x")
            return int(a), int(b)
        return w, h

    ui.size.input(on_size, [ui.size, ui.width, ui.height], [ui.width, ui.height], api_visibility="private",
                  queue=False)
    ui.dice.click(lambda: random.randint(0, MAX_SEED), None, ui.seed, api_name="random_seed", queue=False)
    ui.match_audio.change(lambda on: gr.update(interactive=not on), ui.match_audio, ui.frames,
                          api_visibility="private", queue=False)

    def apply_preset(name, v, w, h, fr, st, sh, t, i, a, wl=None, wo=None, ws=None):
        """Fill the settings from a named preset (see presets/)."""
        current = dict(variant=v, width=w, height=h, frames=fr, steps=st, shift=sh, scale_t=t, scale_i=i,
                       scale_a=a, window_length=wl, window_overlap=wo, window_schedule=ws)
        if not name:
            return [gr.update()] * 12
        try:
            from studio.presets import apply, get_preset
            out = apply(get_preset(name), current)
        except Exception as err:
            gr.Warning(friendly(err) if not isinstance(err, KeyError) else str(err.args[0]))
            return [gr.update()] * 12
        return (size_key(out["width"], out["height"], v), out["width"], out["height"], out["frames"],
                out["steps"], out["shift"], out["scale_t"], out["scale_i"], out["scale_a"],
                out["window_length"], out["window_overlap"], out["window_schedule"])

    # The window settings came later: they are the last inputs and outputs (older callers leave them out).
    settings = [ui.size, ui.width, ui.height, ui.frames, ui.steps, ui.shift, ui.scale_t, ui.scale_i, ui.scale_a,
                ui.window_length, ui.window_overlap, ui.window_schedule]
    ui.preset.input(apply_preset, [ui.preset, ui.variant, ui.width, ui.height, ui.frames, ui.steps, ui.shift,
                                   ui.scale_t, ui.scale_i, ui.scale_a, ui.window_length, ui.window_overlap,
                                   ui.window_schedule], settings, api_name="apply_preset")

    # Before a run: how a long video is cut into windows and about how long it takes.
    estimate_inputs = [ui.variant, ui.mode, ui.audio, ui.trim_start, ui.trim_end, ui.match_audio, ui.frames,
                       ui.width, ui.height, ui.steps, ui.window_length, ui.window_overlap, ui.window_schedule]
    for comp in estimate_inputs:
        comp.change(performance.window_line, estimate_inputs, ui.window_md, api_visibility="private",
                    trigger_mode="always_last", queue=False)

    demo.load(lambda: gr.update(choices=preset_names(start_variant), value=None), None, ui.preset,
              api_visibility="private", queue=False)


# ----------------------------------------------------------------------------- photos and the voice clip

def wire_inputs(ui, rt: Runtime, config: StudioConfig) -> None:
    def on_images(files):
        paths = files_of(files)
        lines = []
        for p in paths:
            name = Path(p).name
            try:
                from engine.media import load_image
                img, notes = load_image(p)
                lines.append(f"{name}: {img.width}×{img.height}" + "".join(f" — {n}" for n in notes))
            except Exception as err:
                msg = friendly(err)
                gr.Warning(msg)
                lines.append(f"Problem: {msg}")
        return gr.update(value=paths or None, visible=bool(paths)), "  \n".join(lines)

    ui.images.change(on_images, ui.images, [ui.images_view, ui.images_md], api_visibility="private")

    def on_audio(path):
        text = audio_tools.describe(path)
        if text.startswith("Problem:"):
            gr.Warning(text[len("Problem:"):].strip())
        return text, None, None, ""

    ui.audio.change(on_audio, ui.audio, [ui.audio_md, ui.vocals_out, ui.background_out, ui.method_md],
                    api_name="describe_audio")

    ui.isolate_btn.click(isolate_handler(rt, config), [ui.audio, ui.trim_start, ui.trim_end],
                         [ui.vocals_out, ui.background_out, ui.method_md], api_name="isolate_voice",
                         concurrency_limit=2)


# ----------------------------------------------------------------------------- weights

def wire_weights(demo, ui, config: StudioConfig) -> None:
    def make_tiny(v):
        """Write the tiny (random) weights into the weights folder."""
        try:
            gr.Info("Making tiny weights…")
            line = weights_panel.make_tiny(config.weights_dir)
        except Exception as err:
            msg = friendly(err) if not isinstance(err, RuntimeError) else str(err)
            gr.Warning(msg)
            return weights_panel.status_markdown(v, config.weights_dir) + f"\n\n**Problem:** {msg}", gr.update()
        return (weights_panel.status_markdown(v, config.weights_dir) + f"\n\n{line}",
                gr.update(choices=weights_panel.variant_choices(config.weights_dir), value=v))

    ui.make_tiny_btn.click(make_tiny, ui.variant, [ui.weights_md, ui.variant], api_name="make_tiny_weights")

    download_stop = threading.Event()

    def download_weights(v, progress=gr.Progress()):
        """Fetch the selected variant's weights (huggingface_hub), with progress; resumable."""
        from engine import weights as W
        from engine.errors import Cancelled

        download_stop.clear()
        report = weights_panel.DownloadProgress(v, config.weights_dir, lambda f, d: progress(f, desc=d))
        try:
            W.download(v, config.weights_dir, progress=report, on_message=lambda m: gr.Info(redact_text(m)),
                       cancel=download_stop)
        except Cancelled:
            gr.Info("Download stopped; what was fetched is kept and the next download continues from there.")
            return weights_panel.status_markdown(v, config.weights_dir), gr.update()
        except Exception as err:
            msg = friendly(err)
            gr.Warning(msg)
            return weights_panel.status_markdown(v, config.weights_dir) + f"\n\n**Problem:** {msg}", gr.update()
        return (weights_panel.status_markdown(v, config.weights_dir),
                gr.update(choices=weights_panel.variant_choices(config.weights_dir), value=v))

    def stop_download():
        """Stop a running weights download (the fetched part is kept for the next one)."""
        download_stop.set()

    (ui.download_btn.click(lambda: gr.update(visible=True), None, ui.download_stop_btn, queue=False,
                           api_visibility="private")
        .then(download_weights, ui.variant, [ui.weights_md, ui.variant], api_name="download_weights",
              show_progress_on=[ui.weights_md])
        .then(lambda: gr.update(visible=False), None, ui.download_stop_btn, queue=False, api_visibility="private"))
    ui.download_stop_btn.click(stop_download, None, None, api_name="stop_download", queue=False)

    def weights_status(v):
        """Markdown about the selected variant's weights: present or missing, size, how to get them."""
        return weights_panel.status_markdown(v, config.weights_dir)

    gr.on([demo.load], weights_status, ui.variant, ui.weights_md, api_name="weights_status", queue=False)


# ----------------------------------------------------------------------------- performance

def wire_performance(ui, rt: Runtime):
    """The Performance panel's events and the /memory_plan endpoint; returns the reload-note function."""
    job_inputs = [ui.variant, ui.width, ui.height, ui.frames, ui.mode]

    def load_performance(v, w, h, fr, m, plan, fast, attention):
        """First opening of the panel: the engine's choices (imports torch) and the plan line."""
        try:
            plans, fasts, attns = performance.plan_choices(v), performance.fast_choices(), \
                performance.attention_choices()
        except Exception as err:
            msg = friendly(err)
            return (gr.skip(), gr.skip(), gr.skip(), f"**Problem:** {msg}", gr.skip(), False)
        return (gr.update(choices=plans, value=plan), gr.update(choices=fasts, value=fast),
                gr.update(choices=attns, value=attention), performance.plan_line(v, w, h, fr, m, plan),
                performance.fast_info(fast), True)

    ui.perf_acc.expand(load_performance, [*job_inputs, ui.plan, ui.fast_mode, ui.attention],
                       [ui.plan, ui.fast_mode, ui.attention, ui.plan_md, ui.fast_md, ui.perf_loaded],
                       api_visibility="private", queue=False)

    def refresh_plan_line(loaded, v, w, h, fr, m, plan):
        if not loaded:          # the panel was never opened: keep torch out of the page's start
            return gr.skip()
        return performance.plan_line(v, w, h, fr, m, plan)

    for comp in (*job_inputs, ui.plan):
        comp.change(refresh_plan_line, [ui.perf_loaded, *job_inputs, ui.plan], ui.plan_md,
                    api_visibility="private", trigger_mode="always_last", queue=False)

    def on_variant(loaded, v, plan):
        return gr.update(choices=performance.plan_choices(v), value=plan) if loaded else gr.skip()

    # Panel events stay off the queue: they must not wait behind (or hold up) a generation.
    ui.variant.change(on_variant, [ui.perf_loaded, ui.variant, ui.plan], ui.plan, api_visibility="private",
                      queue=False)
    ui.fast_mode.change(performance.fast_info, ui.fast_mode, ui.fast_md, api_visibility="private", queue=False)

    def engine_note(plan, attention, compile_):
        wanted = EngineOptions.from_form(plan, attention, compile_)
        if rt.options is None or rt.options == wanted:
            return ""
        return ("The next run reloads the model with these settings "
                f"(plan {wanted.plan}, attention {wanted.attention}, compile {'on' if wanted.compile else 'off'}).")

    for comp in (ui.plan, ui.attention, ui.compile_):
        comp.change(engine_note, [ui.plan, ui.attention, ui.compile_], ui.engine_md, api_visibility="private",
                    queue=False)

    def memory_plan(variant: str, width: int, height: int, frames: int, mode: str = "TIA",
                    vram_gb: float | None = None) -> dict:
        """The memory plan 'auto' picks for a job, and its estimated peak memory per component.

        vram_gb: choose for a GPU of this many GiB; empty: for this machine (the CPU without a GPU).
        """
        try:
            return performance.memory_plan(variant, width, height, frames, mode, vram_gb)
        except EngineError as err:
            raise gr.Error(str(err)) from None

    gr.api(memory_plan, api_name="memory_plan")
    return engine_note


# ----------------------------------------------------------------------------- generate, cancel

def wire_generate(ui, rt: Runtime, config: StudioConfig, render_gallery, engine_note) -> None:
    generate = make_generate(rt, config, render_gallery)
    gen_fn = generate
    try:   # On a Hugging Face ZeroGPU Space, hold the GPU only while generating.
        import spaces  # type: ignore
        gen_fn = spaces.GPU(duration=300)(generate)
    except Exception:
        pass

    gen_event = ui.gen_btn.click(gen_fn, ui.form, [ui.status, ui.preview, ui.video, ui.result_md, ui.grid],
                                 api_name="generate", concurrency_limit=1, concurrency_id="gpu",
                                 show_progress="minimal", show_progress_on=[ui.video])

    def cancel(request: gr.Request = None):
        """Stop the running generation (and the rest of its batch) started from this page; the studio
        stays ready for the next one. A run started from another page (a shared link) is left alone."""
        outcome, run = rt.runs.stop_for(getattr(request, "session_hash", None))   # first: no next run of the batch
        if outcome == "other":
            return status_html(message="The run going now was started from another page; only that page can "
                                       "cancel it. Yours, if you started one, waits in the queue.")
        if outcome == "none":
            return status_html(message="Nothing to cancel.")
        rt.cancel()
        # The run's own stream ends with its "Cancelled" line; this answer waits for that, and then
        # leaves the status alone (a line written here could land before a progress update still in
        # flight on the stream, which would then overwrite it). No `cancels=`: aborting the stream is
        # what could drop its last line.
        if run.wait_ended(30.0):
            return gr.skip()
        return status_html(message="Stopping: the run ends after its current step.")

    ui.cancel_btn.click(cancel, None, ui.status, api_name="cancel", queue=False)
    # After a run the engine follows the panel's settings again: the reload note goes.
    gen_event.then(engine_note, [ui.plan, ui.attention, ui.compile_], ui.engine_md, api_visibility="private",
                   queue=False)

