"""The studio page: layout and event wiring. Computation lives in the engine.

`build_app(config)` returns a gr.Blocks. Every action is also an API endpoint
(`api_name=`), so gradio_client and MCP clients can do what the page does.
Nothing here imports torch: the engine is imported on the first generation.
"""
from __future__ import annotations

import logging
import os
import random
import threading
import time
import traceback
import uuid
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np

from engine.errors import Cancelled, EngineError, InputError
from engine.request import GenerationRequest
from engine.variants import VARIANTS, get_variant
from studio import audio_tools, weights_panel
from studio.config import StudioConfig
from studio.jobs import RunState, stream_run

log = logging.getLogger("humo.studio")

MODES = {"TA": "Text + Audio", "TIA": "Text + Image + Audio", "TI": "Text + Image"}
MODE_HELP = {
    "TA": "A person from the prompt alone, speaking your clip.",
    "TIA": "The person in your photo(s), speaking your clip. The usual choice.",
    "TI": "The person in your photo(s), no audio: movement follows the prompt.",
}
LIPS_ORIGINAL, LIPS_VOICE = "Original clip", "Isolated voice"
STANDARD_SIZES = ((832, 480), (480, 832), (1280, 720), (720, 1280))
CUSTOM = "custom"
MAX_SEED = 2**31 - 1
MIN_SIDE, MAX_SIDE = 64, 2048

STAGE_TEXT = {
    "queued": "Waiting to start",
    "loading": "Loading weights",
    "encoding_text": "Encoding the prompt",
    "encoding_audio": "Encoding the audio",
    "encoding_image": "Encoding the reference image",
    "denoising": "Denoising",
    "decoding": "Decoding frames",
    "writing": "Writing the MP4",
    "done": "Done",
}

CSS = """
#run-status .bar {height: 10px; background: var(--neutral-200); border-radius: 5px; overflow: hidden; margin: 6px 0;}
#run-status .bar > div {height: 100%; background: var(--color-accent); transition: width .2s;}
#run-status .err {color: var(--error-text-color, #b91c1c); font-weight: 600;}
#run-status .line {font-variant-numeric: tabular-nums;}
.tiny-note {font-size: 0.9em; opacity: 0.85;}
"""


# ----------------------------------------------------------------------------- runtime


class Runtime:
    """Process-wide state: one engine (created on first use) and the gallery."""

    def __init__(self, config: StudioConfig):
        self.config = config
        self._engine = None
        self._engine_lock = threading.Lock()
        self._gallery = None
        self.running = threading.Event()
        self.workdir = Path(config.outputs_dir) / ".work"

    def engine(self):
        with self._engine_lock:
            if self._engine is None:
                from engine import Engine   # torch + diffusers load here, not at start-up
                self._engine = Engine(weights_dir=self.config.weights_dir)
            return self._engine

    def cancel(self) -> bool:
        if self._engine is not None and self.running.is_set():
            self._engine.cancel()
            return True
        return False

    @property
    def gallery(self):
        if self._gallery is None:
            from studio.gallery import Gallery
            self._gallery = Gallery(self.config.outputs_dir)
        return self._gallery


# ----------------------------------------------------------------------------- small functions


def friendly(err: BaseException) -> str:
    """A readable one-liner for any error; unexpected ones also go to the console log."""
    if isinstance(err, EngineError):
        return str(err)
    if isinstance(err, gr.Error):
        return str(err.message)
    log.error("unexpected error:\n%s", "".join(traceback.format_exception(err)))
    return (f"Unexpected problem ({type(err).__name__}: {str(err)[:200]}). The studio is still running; "
            "the console log has the details.")


def size_label(w: int, h: int) -> str:
    shape = "landscape" if w > h else "portrait" if h > w else "square"
    return f"{w}×{h} ({shape})"


def size_choices(variant: str) -> list[tuple[str, str]]:
    sizes = list(get_variant(variant).sizes)
    for s in STANDARD_SIZES:
        if s not in sizes:
            sizes.append(s)
    return [(size_label(w, h), f"{w}x{h}") for w, h in sizes] + [("Custom (multiples of 16)", CUSTOM)]


def all_size_choices() -> list[tuple[str, str]]:
    """Every size any variant offers: the server accepts these; the page lists the variant's own."""
    seen: dict[str, str] = {}
    for name in VARIANTS:
        for label, key in size_choices(name):
            seen.setdefault(key, label)
    return [(label, key) for key, label in seen.items() if key != CUSTOM] + [("Custom (multiples of 16)", CUSTOM)]


def all_preset_choices() -> list[tuple[str, str]]:
    try:
        from studio.presets import load_presets
        return [(p.name, p.name) for p in load_presets()]
    except Exception as err:      # a broken preset file must not stop the page
        log.warning("presets unavailable: %s", err)
        return []


def size_key(w, h, variant: str) -> str:
    key = f"{int(w)}x{int(h)}" if w and h else CUSTOM
    return key if key in {v for _, v in size_choices(variant)} else CUSTOM


def uses_image(mode: str) -> bool:
    return mode in ("TIA", "TI")


def uses_audio(mode: str) -> bool:
    return mode in ("TA", "TIA")


def image_scale_applies(variant: str, mode: str) -> bool:
    return uses_image(mode) and get_variant(variant).defaults.scale_i is not None


def preview_sheet(frames: np.ndarray, count: int = 4, min_height: int = 192) -> np.ndarray:
    """A strip of evenly spaced frames from a preview clip, scaled up for the page."""
    frames = np.asarray(frames)
    if frames.ndim == 3:
        frames = frames[None]
    idx = np.unique(np.linspace(0, frames.shape[0] - 1, num=min(count, frames.shape[0])).round().astype(int))
    strip = np.concatenate([frames[i] for i in idx], axis=1)
    scale = max(1, int(np.ceil(min_height / max(strip.shape[0], 1))))
    if scale > 1:
        strip = strip.repeat(scale, axis=0).repeat(scale, axis=1)
    return strip.astype(np.uint8)


def _fmt_s(seconds: float | None) -> str:
    if seconds is None:
        return "…"
    seconds = max(0.0, float(seconds))
    return f"{seconds:.1f} s" if seconds < 90 else f"{int(seconds // 60)} min {int(seconds % 60):02d} s"


def status_html(state: RunState | None = None, message: str | None = None, error: bool = False) -> str:
    if message is not None:
        cls = "err" if error else "line"
        icon = "Problem: " if error else ""
        return f'<div class="{cls}">{icon}{_esc(message)}</div>'
    if state is None:
        return '<div class="line">Ready.</div>'
    stage = STAGE_TEXT.get(state.stage, state.stage)
    pct = int(round(state.fraction * 100))
    parts = [f"<b>{_esc(stage)}</b>"]
    if state.stage_message and state.stage != "denoising":
        parts.append(_esc(state.stage_message))
    if state.total:
        parts.append(f"step {state.step}/{state.total}")
        if state.step < state.total:
            parts.append(f"ETA {_fmt_s(state.eta_s)}")
    parts.append(f"elapsed {_fmt_s(time.monotonic() - state.started_at)}")
    return (f'<div class="line" data-stage="{_esc(state.stage)}" data-step="{state.step}" '
            f'data-total="{state.total}">{" · ".join(parts)}</div>'
            f'<div class="bar"><div style="width:{pct}%"></div></div>')


def _esc(text: Any) -> str:
    return (str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;"))


def _files(value) -> list[str]:
    if not value:
        return []
    items = value if isinstance(value, (list, tuple)) else [value]
    out = []
    for item in items:
        if isinstance(item, dict):
            item = item.get("path") or item.get("name")
        elif isinstance(item, (list, tuple)):
            item = item[0]
        elif hasattr(item, "name") and not isinstance(item, str):
            item = item.name
        if item:
            out.append(str(item))
    return out


# ----------------------------------------------------------------------------- the form

# The generate inputs, in API order. `form_values` turns them into a dict by these names.
FORM_KEYS = ("variant", "mode", "prompt", "negative_prompt", "images", "audio", "trim_start", "trim_end",
             "lips", "mix_background", "background_gain", "size", "width", "height", "match_audio", "frames",
             "steps", "shift", "scale_t", "scale_i", "scale_a", "seed")


def validate_form(f: dict[str, Any]) -> None:
    """Checks a person can fix at once, before any model work. Raises InputError."""
    variant, mode = f["variant"], f["mode"]
    if variant not in VARIANTS:
        raise InputError(f"Unknown model {variant!r}.", hint=f"Pick one of: {', '.join(VARIANTS)}.")
    if mode not in MODES:
        raise InputError(f"Unknown mode {mode!r}.", hint="Use TA, TIA or TI.")
    if not str(f["prompt"] or "").strip():
        raise InputError("The prompt is empty.", hint="Describe the person, the scene and what they do.")
    if uses_image(mode) and not _files(f["images"]):
        raise InputError(f"{MODES[mode]} needs a reference photo.",
                         hint="Add at least one photo, or use the Text + Audio tab.")
    if uses_audio(mode) and not f["audio"]:
        raise InputError(f"{MODES[mode]} needs a voice clip.",
                         hint="Upload or record a clip, or use the Text + Image tab.")
    try:
        w, h = int(f["width"]), int(f["height"])
    except (TypeError, ValueError):
        raise InputError("Width and height must be whole numbers.", hint="Pick a size preset.") from None
    if w % 16 or h % 16:
        fix = f"{max(16, round(w / 16) * 16)}×{max(16, round(h / 16) * 16)}"
        raise InputError(f"The size {w}×{h} is not a multiple of 16.", hint=f"Try {fix}.")
    if not (MIN_SIDE <= w <= MAX_SIDE and MIN_SIDE <= h <= MAX_SIDE):
        raise InputError(f"The size {w}×{h} is out of range.", hint=f"Use {MIN_SIDE} to {MAX_SIDE} pixels per side.")
    if not f["match_audio"] or not uses_audio(mode):
        frames = int(f["frames"] or 0)
        if frames < 1 or (frames - 1) % 4:
            raise InputError(f"Frames must be 4n+1 (e.g. 17, 97), not {frames}.", hint="Use the frames slider.")


def build_request(f: dict[str, Any], audio_path: str | None, out_path: str, extras: dict[str, Any]) -> GenerationRequest:
    variant, mode = f["variant"], f["mode"]
    frames = None if (uses_audio(mode) and f["match_audio"]) else int(f["frames"])
    seed = int(f["seed"]) if f["seed"] not in (None, "") else 0
    return GenerationRequest(
        prompt=str(f["prompt"]).strip(),
        variant=variant,
        mode=mode,
        images=_files(f["images"]) if uses_image(mode) else [],
        audio=audio_path if uses_audio(mode) else None,
        negative_prompt=(str(f["negative_prompt"]).strip() or None) if f["negative_prompt"] else None,
        frames=frames,
        width=int(f["width"]),
        height=int(f["height"]),
        steps=int(f["steps"]),
        shift=float(f["shift"]),
        scale_t=float(f["scale_t"]),
        scale_i=float(f["scale_i"]) if image_scale_applies(variant, mode) else None,
        scale_a=float(f["scale_a"]) if uses_audio(mode) else None,
        seed=max(0, min(seed, MAX_SEED)),
        out_path=out_path,
        metadata={"studio": extras},
    )


# ----------------------------------------------------------------------------- the app


def build_app(config: StudioConfig) -> gr.Blocks:
    rt = Runtime(config)
    start_variant = config.variant if config.variant in VARIANTS else "humo-1.7b"
    d = get_variant(start_variant).defaults

    theme = gr.themes.Soft(font=["ui-sans-serif", "system-ui", "sans-serif"],
                           font_mono=["ui-monospace", "monospace"])   # no web fonts: works offline

    with gr.Blocks(title="HuMo Studio", analytics_enabled=False) as demo:
        demo.humo_theme, demo.humo_css = theme, CSS
        gr.Markdown("# HuMo Studio\nA prompt, a photo and a voice → a lip-synced video.")
        with gr.Tabs(elem_id="main-tabs", selected="create") as main_tabs:
            # ------------------------------------------------------------------ create
            with gr.Tab("Create", id="create", elem_id="tab-create"):
                with gr.Row(equal_height=False):
                    with gr.Column(scale=5):
                        with gr.Row():
                            variant = gr.Dropdown(weights_panel.variant_choices(config.weights_dir),
                                                  value=start_variant, label="Model", elem_id="variant",
                                                  scale=3)
                            preset = gr.Dropdown(all_preset_choices(), value=None, label="Preset",
                                                 elem_id="preset", scale=2,
                                                 info="Fills the settings below")
                        weights_md = gr.Markdown(weights_panel.status_markdown(start_variant, config.weights_dir),
                                                 elem_id="weights-status")
                        with gr.Row():
                            make_tiny_btn = gr.Button("Make tiny weights", size="sm", elem_id="make-tiny",
                                                      visible=get_variant(start_variant).random_weights)
                            download_btn = gr.Button("Download weights", size="sm", elem_id="download-weights",
                                                     visible=not get_variant(start_variant).random_weights)
                        with gr.Tabs(elem_id="mode-tabs", selected="TIA") as mode_tabs:
                            mode_tab_objs = {}
                            for key in ("TA", "TIA", "TI"):
                                with gr.Tab(MODES[key], id=key, elem_id=f"mode-{key}") as tab:
                                    gr.Markdown(MODE_HELP[key])
                                mode_tab_objs[key] = tab
                        mode = gr.Radio(list(MODES), value="TIA", label="Mode", visible=False, elem_id="mode")
                        prompt = gr.Textbox(label="Prompt", lines=3, elem_id="prompt",
                                            placeholder="A woman with short dark hair talks to the camera in a "
                                                        "sunlit kitchen, warm light, medium shot.")
                        with gr.Accordion("Negative prompt", open=False):
                            negative = gr.Textbox(label="Negative prompt", lines=2, elem_id="negative-prompt",
                                                  placeholder="Empty: the standard Wan negative prompt.")
                        with gr.Group(visible=True) as image_group:
                            images = gr.File(label="Reference photo(s)", file_count="multiple",
                                             file_types=["image"], elem_id="ref-images")
                            images_view = gr.Gallery(label="Reference", columns=6, height=150, fit_columns=False,
                                                     object_fit="contain", allow_preview=False,
                                                     interactive=False, elem_id="ref-view", visible=False)
                            images_md = gr.Markdown("", elem_id="image-info")
                        with gr.Group(visible=True) as audio_group:
                            audio = gr.Audio(label="Voice clip (upload or record)", sources=["upload", "microphone"],
                                             type="filepath", elem_id="audio-in")
                            audio_md = gr.Markdown("", elem_id="audio-info")
                            with gr.Row():
                                trim_start = gr.Number(0, label="Trim start (s)", minimum=0, elem_id="trim-start")
                                trim_end = gr.Number(0, label="Trim end (s, 0 = to the end)", minimum=0,
                                                     elem_id="trim-end")
                            with gr.Accordion("Vocal isolation", open=False, elem_id="vocal-acc"):
                                gr.Markdown("Separate the voice from music and noise, listen to both, then "
                                            "choose what drives the lips.")
                                isolate_btn = gr.Button("Separate voice", size="sm", elem_id="isolate-btn")
                                with gr.Row():
                                    vocals_out = gr.Audio(label="Voice", type="filepath", interactive=False,
                                                          elem_id="stem-vocals")
                                    background_out = gr.Audio(label="Background", type="filepath",
                                                              interactive=False, elem_id="stem-background")
                                method_md = gr.Markdown("", elem_id="sep-method")
                                lips = gr.Radio([LIPS_ORIGINAL, LIPS_VOICE], value=LIPS_ORIGINAL,
                                                label="Lips follow", elem_id="lips")
                                with gr.Row():
                                    mix_background = gr.Checkbox(False, label="Mix the background back into "
                                                                 "the final video", elem_id="mix-bg")
                                    background_gain = gr.Slider(0, 1.5, value=1.0, step=0.05,
                                                                label="Background level", elem_id="bg-gain")
                        with gr.Accordion("Settings", open=True):
                            with gr.Row():
                                size = gr.Dropdown(all_size_choices(), value=f"{d.width}x{d.height}",
                                                   label="Size", elem_id="size")
                                width = gr.Number(d.width, label="Width", precision=0, step=16, elem_id="width")
                                height = gr.Number(d.height, label="Height", precision=0, step=16,
                                                   elem_id="height")
                            with gr.Row():
                                match_audio = gr.Checkbox(True, label="Match the audio length",
                                                          elem_id="match-audio")
                                frames = gr.Slider(5, getattr(d, "max_frames", 257), value=d.frames, step=4, label="Frames (25 fps)",
                                                   elem_id="frames")
                            with gr.Row():
                                steps = gr.Slider(1, 100, value=d.steps, step=1, label="Steps", elem_id="steps")
                                shift = gr.Slider(1, 15, value=d.shift, step=0.5, label="Shift", elem_id="shift")
                            with gr.Row():
                                scale_t = gr.Slider(0, 15, value=d.scale_t, step=0.5, label="Text guidance",
                                                    elem_id="scale-t")
                                scale_i = gr.Slider(0, 15, value=d.scale_i or 0, step=0.5,
                                                    label="Image guidance", elem_id="scale-i",
                                                    visible=image_scale_applies(start_variant, "TIA"))
                                scale_a = gr.Slider(0, 15, value=d.scale_a, step=0.5, label="Audio guidance",
                                                    elem_id="scale-a")
                            with gr.Row():
                                seed = gr.Number(42, label="Seed", precision=0, minimum=0, maximum=MAX_SEED,
                                                 elem_id="seed", scale=4)
                                dice = gr.Button("Random seed", size="sm", elem_id="random-seed", scale=1)
                    with gr.Column(scale=4):
                        with gr.Row():
                            gen_btn = gr.Button("Generate", variant="primary", elem_id="generate-btn", scale=3)
                            cancel_btn = gr.Button("Cancel", variant="stop", elem_id="cancel-btn", scale=1)
                        status = gr.HTML(status_html(), elem_id="run-status", js_on_load=None)
                        preview = gr.Image(label="Live preview", interactive=False, elem_id="preview",
                                           format="png", height=220)
                        video = gr.Video(label="Result", interactive=False, elem_id="result-video",
                                         autoplay=False)
                        result_md = gr.Markdown("", elem_id="result-info")
            # ------------------------------------------------------------------ gallery
            with gr.Tab("Gallery", id="gallery", elem_id="tab-gallery") as gallery_tab:
                with gr.Row():
                    refresh_btn = gr.Button("Refresh", size="sm", elem_id="gallery-refresh")
                    gallery_count = gr.Markdown("", elem_id="gallery-count")
                grid = gr.Gallery(label="Finished runs", columns=6, height="auto", allow_preview=False,
                                  fit_columns=False, object_fit="contain", elem_id="gallery-grid",
                                  interactive=False)
                with gr.Row():
                    with gr.Column(scale=3):
                        entry_video = gr.Video(label="Selected run", interactive=False, elem_id="entry-video")
                    with gr.Column(scale=2):
                        entry_id = gr.Textbox(label="Entry id", elem_id="entry-id",
                                              info="Select a run above, or paste an id")
                        entry_md = gr.Markdown("", elem_id="entry-info")
                        with gr.Row():
                            reuse_btn = gr.Button("Reuse settings", variant="primary", elem_id="reuse-btn")
                            delete_btn = gr.Button("Delete", variant="stop", elem_id="delete-btn")
                        entry_download = gr.DownloadButton("Download MP4", elem_id="entry-download",
                                                           visible=False)
                        entry_settings = gr.JSON(label="Settings", elem_id="entry-settings")
            with gr.Tab("About", id="about"):
                gr.Markdown(ABOUT_MD)

        entry_ids = gr.State([])

        form = [variant, mode, prompt, negative, images, audio, trim_start, trim_end, lips, mix_background,
                background_gain, size, width, height, match_audio, frames, steps, shift, scale_t, scale_i,
                scale_a, seed]
        assert len(form) == len(FORM_KEYS)

        # ---------------------------------------------------------------- variant / mode
        def on_variant_change(v, m):
            var = get_variant(v)
            return (weights_panel.status_markdown(v, config.weights_dir),
                    gr.update(visible=var.random_weights), gr.update(visible=not var.random_weights),
                    gr.update(visible=image_scale_applies(v, m)),
                    gr.update(choices=size_choices(v)),
                    gr.update(choices=preset_names(v), value=None))

        variant.change(on_variant_change, [variant, mode],
                       [weights_md, make_tiny_btn, download_btn, scale_i, size, preset],
                       api_visibility="private", queue=False)

        def variant_defaults(v):
            """The variant's defaults, when a person picks a model."""
            dd = get_variant(v).defaults
            return (dd.steps, dd.shift, dd.scale_t, dd.scale_i or 0, dd.scale_a, f"{dd.width}x{dd.height}",
                    dd.width, dd.height, gr.update(value=dd.frames, maximum=getattr(dd, "max_frames", 257)))

        variant.input(variant_defaults, variant,
                      [steps, shift, scale_t, scale_i, scale_a, size, width, height, frames],
                      api_name="variant_defaults", queue=False)

        def on_mode_change(m, v):
            return (gr.update(visible=uses_image(m)), gr.update(visible=uses_audio(m)),
                    gr.update(visible=image_scale_applies(v, m)), gr.update(visible=uses_audio(m)),
                    gr.update(visible=uses_audio(m)))

        mode.change(on_mode_change, [mode, variant], [image_group, audio_group, scale_i, scale_a, match_audio],
                    api_visibility="private", queue=False)
        for key, tab in mode_tab_objs.items():
            tab.select(lambda k=key: k, None, mode, api_visibility="private", queue=False)

        def on_size(choice, w, h):
            if choice and choice != CUSTOM:
                a, b = choice.split("x")
                return int(a), int(b)
            return w, h

        size.input(on_size, [size, width, height], [width, height], api_visibility="private", queue=False)
        dice.click(lambda: random.randint(0, MAX_SEED), None, seed, api_name="random_seed", queue=False)
        match_audio.change(lambda on: gr.update(interactive=not on), match_audio, frames,
                           api_visibility="private", queue=False)

        # ---------------------------------------------------------------- inputs
        def on_images(files):
            paths = _files(files)
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

        images.change(on_images, images, [images_view, images_md], api_visibility="private")

        def on_audio(path):
            text = audio_tools.describe(path)
            if text.startswith("Problem:"):
                gr.Warning(text[len("Problem:"):].strip())
            return text, None, None, ""

        audio.change(on_audio, audio, [audio_md, vocals_out, background_out, method_md],
                     api_name="describe_audio")

        def isolate_voice(path, t0, t1):
            """Separate the voice from music/noise; returns (voice, background, method note)."""
            if not path:
                gr.Warning("Add a voice clip first (upload or record).")
                return None, None, "**Problem:** add a voice clip first."
            try:
                stems = audio_tools.isolate(path, t0, t1, rt.workdir, models_dir=config.weights_dir)
            except Exception as err:
                msg = friendly(err)
                gr.Warning(msg)
                return None, None, f"**Problem:** {msg}"
            return (stems.vocals, stems.background,
                    f"**Method: {stems.method}.** {stems.note}")

        isolate_btn.click(isolate_voice, [audio, trim_start, trim_end], [vocals_out, background_out, method_md],
                          api_name="isolate_voice", concurrency_limit=2)

        # ---------------------------------------------------------------- weights
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

        make_tiny_btn.click(make_tiny, variant, [weights_md, variant], api_name="make_tiny_weights")

        def download_weights(v, progress=gr.Progress()):
            """Fetch the selected variant's weights (huggingface_hub), with progress."""
            from engine import weights as W

            def on_progress(component, file, done, total):
                progress((done, total) if total else None, desc=f"{component}: {Path(file).name}", unit="bytes")

            try:
                W.download(v, config.weights_dir, progress=on_progress, on_message=lambda m: gr.Info(m))
            except Exception as err:
                msg = friendly(err)
                gr.Warning(msg)
                return weights_panel.status_markdown(v, config.weights_dir) + f"\n\n**Problem:** {msg}", gr.update()
            return (weights_panel.status_markdown(v, config.weights_dir),
                    gr.update(choices=weights_panel.variant_choices(config.weights_dir), value=v))

        download_btn.click(download_weights, variant, [weights_md, variant], api_name="download_weights")

        def weights_status(v):
            """Markdown about the selected variant's weights: present or missing, size, how to get them."""
            return weights_panel.status_markdown(v, config.weights_dir)

        gr.on([demo.load], weights_status, variant, weights_md, api_name="weights_status", queue=False)

        # ---------------------------------------------------------------- presets
        def preset_names(v):
            try:
                from studio.presets import presets_for
                return [(f"{p.name} — {p.description}" if len(p.description) < 70 else p.name, p.name)
                        for p in presets_for(v)]
            except Exception as err:   # a broken preset file must not stop the page
                log.warning("presets unavailable: %s", err)
                return []

        def apply_preset(name, v, w, h, fr, st, sh, t, i, a):
            """Fill the settings from a named preset (see presets/)."""
            current = dict(variant=v, width=w, height=h, frames=fr, steps=st, shift=sh, scale_t=t, scale_i=i,
                           scale_a=a)
            if not name:
                return [gr.update()] * 9
            try:
                from studio.presets import apply, get_preset
                out = apply(get_preset(name), current)
            except Exception as err:
                gr.Warning(friendly(err) if not isinstance(err, KeyError) else str(err.args[0]))
                return [gr.update()] * 9
            return (size_key(out["width"], out["height"], v), out["width"], out["height"], out["frames"],
                    out["steps"], out["shift"], out["scale_t"], out["scale_i"], out["scale_a"])

        preset.input(apply_preset, [preset, variant, width, height, frames, steps, shift, scale_t, scale_i, scale_a],
                     [size, width, height, frames, steps, shift, scale_t, scale_i, scale_a], api_name="apply_preset")

        # ---------------------------------------------------------------- gallery
        def gallery_list():
            """All finished runs, newest first, as (thumbnail, title) pairs."""
            try:
                entries = rt.gallery.list(limit=200)
            except Exception as err:
                gr.Warning(friendly(err))
                return [], [], "**Problem:** the gallery could not be read."
            items = [(str(e.thumbnail if e.thumbnail is not None and e.thumbnail.is_file() else e.video),
                      f"{e.title} · {e.variant or ''} · seed {e.seed}") for e in entries]
            return items, [e.id for e in entries], f"{len(entries)} run(s) in `{config.outputs_dir}`"

        refresh_evt = dict(fn=gallery_list, inputs=None, outputs=[grid, entry_ids, gallery_count])
        refresh_btn.click(**refresh_evt, api_name="gallery_list", queue=False)
        gallery_tab.select(**refresh_evt, api_visibility="private", queue=False)
        demo.load(**refresh_evt, api_visibility="private", queue=False)

        def gallery_get(eid):
            """One run by id: its video, a download, a summary and its settings."""
            eid = (eid or "").strip()
            entry = rt.gallery.get(eid) if eid else None
            if entry is None:
                if eid:
                    gr.Warning(f"No gallery entry {eid!r}.")
                return None, gr.update(visible=False, value=None), "", None
            t = entry.timings or {}
            total = t.get("total_s") or t.get("total")
            info = (f"**{_esc(entry.title)}**  \n{entry.created_at[:19].replace('T', ' ')} UTC · "
                    f"{entry.variant} · seed {entry.seed}" + (f" · {entry.duration:.1f} s" if entry.duration else "")
                    + (f" · made in {float(total):.1f} s" if isinstance(total, (int, float)) else ""))
            vid = str(entry.video) if entry.available else None
            return vid, gr.update(value=vid, visible=bool(vid)), info, entry.settings

        def on_select(ids, evt: gr.SelectData):
            eid = ids[evt.index] if evt is not None and evt.index is not None and evt.index < len(ids) else ""
            return (eid, *gallery_get(eid))

        grid.select(on_select, entry_ids, [entry_id, entry_video, entry_download, entry_md, entry_settings],
                    api_visibility="private", queue=False)
        entry_id.submit(gallery_get, entry_id, [entry_video, entry_download, entry_md, entry_settings],
                        api_name="gallery_get", queue=False)

        def gallery_delete(eid):
            """Delete a run (its video, thumbnail and settings) from the gallery."""
            eid = (eid or "").strip()
            ok = bool(eid) and rt.gallery.delete(eid)
            (gr.Info if ok else gr.Warning)(f"Deleted {eid}." if ok else f"No gallery entry {eid!r} to delete.")
            items, ids, count = gallery_list()
            return items, ids, count, "", None, gr.update(visible=False, value=None), "", None

        delete_btn.click(gallery_delete, entry_id,
                         [grid, entry_ids, gallery_count, entry_id, entry_video, entry_download, entry_md,
                          entry_settings], api_name="gallery_delete", queue=False)

        def reuse_settings(eid):
            """Fill the Create form with a finished run's settings (and switch to it)."""
            eid = (eid or "").strip()
            try:
                s = rt.gallery.reuse_settings(eid)
            except KeyError:
                gr.Warning(f"No gallery entry {eid!r}: select a run first.")
                return [gr.update()] * (len(form) + 2)
            return form_updates_from_settings(s) + [gr.Tabs(selected=s.get("mode") or "TIA"),
                                                    gr.Tabs(selected="create")]

        reuse_btn.click(reuse_settings, entry_id, form + [mode_tabs, main_tabs], api_name="reuse_settings",
                        queue=False)

        # ---------------------------------------------------------------- generate
        def generate(*values, progress=gr.Progress()):
            """Make a video. Streams (status, preview, video, summary, gallery) while it runs."""
            f = dict(zip(FORM_KEYS, values))
            keep = gr.skip()
            try:
                validate_form(f)
                if uses_image(f["mode"]):
                    from engine.media import load_image
                    for p in _files(f["images"]):
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
                extras = {k: f[k] for k in ("trim_start", "trim_end", "lips", "mix_background",
                                            "background_gain", "match_audio")}
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
                eng = rt.engine()
                rt.running.set()
                try:
                    yield from eng.generate(req)
                finally:
                    rt.running.clear()

            yield status_html(RunState(stage="loading" if rt._engine is None else "queued")), None, None, "", keep
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
                    audio_tools.replace_audio(video_path, audio_tools.mix_wav(stems, f["background_gain"],
                                                                              rt.workdir))
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
            tiny = get_variant(f["variant"]).random_weights
            summary = (f"**Done** in {result.timings.get('total_s', 0.0):.1f} s · {result.frames} frames at {result.fps} fps · "
                       f"{result.width}×{result.height} · seed {result.seed} · saved to the gallery as "
                       f"`{entry.id}`" + ("  \nTiny variant: random weights, so the video is noise." if tiny
                                          else ""))
            items, _ids, _count = gallery_list()
            yield (status_html(message=f"Done: {entry.id}"), keep, final_video, summary, items)

        gen_fn = generate
        try:   # On a Hugging Face ZeroGPU Space, hold the GPU only while generating.
            import spaces  # type: ignore
            gen_fn = spaces.GPU(duration=300)(generate)
        except Exception:
            pass

        gen_event = gen_btn.click(gen_fn, form, [status, preview, video, result_md, grid], api_name="generate",
                                  concurrency_limit=1, concurrency_id="gpu", show_progress="minimal",
                                  show_progress_on=[video])
        # The gallery ids must follow the grid after a run.
        gen_event.then(lambda: gallery_list()[1], None, entry_ids, api_visibility="private", queue=False)

        def cancel():
            """Stop the running generation; the studio stays ready for the next one."""
            stopped = rt.cancel()
            return status_html(message="Cancelled. Ready for the next run." if stopped else "Nothing to cancel.")

        cancel_btn.click(cancel, None, status, api_name="cancel", cancels=[gen_event], queue=False)

        # ---------------------------------------------------------------- reuse: settings -> form values
        def form_updates_from_settings(s: dict[str, Any]) -> list:
            v = s.get("variant") if s.get("variant") in VARIANTS else start_variant
            dd = get_variant(v).defaults
            m = s.get("mode") if s.get("mode") in MODES else "TIA"
            extras = (s.get("metadata") or {}).get("studio") or {}
            w, h = s.get("width") or dd.width, s.get("height") or dd.height
            imgs = [p for p in (s.get("images") or []) if p and os.path.isfile(p)]
            src_audio = extras.get("audio_source") or s.get("audio")
            src_audio = src_audio if src_audio and os.path.isfile(src_audio) else None
            val = {
                "variant": v, "mode": m, "prompt": s.get("prompt") or "",
                "negative_prompt": s.get("negative_prompt") or "",
                "images": imgs or gr.update(), "audio": src_audio or gr.update(),
                "trim_start": extras.get("trim_start", 0), "trim_end": extras.get("trim_end", 0),
                "lips": extras.get("lips", LIPS_ORIGINAL), "mix_background": bool(extras.get("mix_background")),
                "background_gain": extras.get("background_gain", 1.0),
                "size": size_key(w, h, v), "width": w, "height": h,
                "match_audio": bool(extras.get("match_audio", s.get("frames") is None)),
                "frames": s.get("frames") or dd.frames,
                "steps": s.get("steps") or dd.steps, "shift": s.get("shift") or dd.shift,
                "scale_t": s.get("scale_t") if s.get("scale_t") is not None else dd.scale_t,
                "scale_i": s.get("scale_i") if s.get("scale_i") is not None else (dd.scale_i or 0),
                "scale_a": s.get("scale_a") if s.get("scale_a") is not None else dd.scale_a,
                "seed": s.get("seed", 0),
            }
            return [val[k] for k in FORM_KEYS]

        def initial_presets():
            return gr.update(choices=preset_names(start_variant), value=None)

        demo.load(initial_presets, None, preset, api_visibility="private", queue=False)

    return demo


ABOUT_MD = """
### Models
* **HuMo-1.7B**: runs on a 24 GB GPU at 480p. Text, image and audio guidance.
* **HuMo-17B**: the best quality, 720p; needs a large GPU (or offloading). No separate image guidance.
* **Tiny**: random weights at tiny sizes. It proves every stage (encoders, denoiser, decoder, MP4) runs,
  in seconds on a CPU. Its videos are noise, not people.

### Tips
* Use a clear, front-facing photo; the person's face should be large enough.
* Trim the clip to the sentence you want; "Match the audio length" makes as many frames as the clip lasts.
* If music or noise is under the voice, open **Vocal isolation**, listen to both stems, and let the
  isolated voice drive the lips; you can mix the background back into the final video.
* Every action here is also an API: see "Use via API" at the bottom of the page.
"""
