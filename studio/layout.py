"""The studio page's components. `build_layout` runs inside `gr.Blocks` and returns them by name;
studio.app_ui wires their events. Nothing here imports torch.
"""
from __future__ import annotations

import logging
from types import SimpleNamespace

import gradio as gr

from engine.options import VARIANTS, get_variant
from studio import weights_panel
from studio.config import StudioConfig
from studio.form import AUTO, EXACT, MAX_RUNS, MAX_SEED, MODE_HELP, MODES, LIPS_ORIGINAL, LIPS_VOICE, RANDOM_SEED, \
    SCHEDULE_CHOICES, all_size_choices, image_scale_applies
from studio.gallery.store import PAGE_SIZE
from studio.gallery.view import ALL
from studio.performance import (ATTENTION_AUTO_LABEL, COMPILE_LABEL, EXACT_INFO, EXACT_LABEL, PLAN_AUTO_LABEL,
                                 PLAN_PLACEHOLDER)
from studio.status import status_html
from studio.stems import stems_panel

log = logging.getLogger("humo.studio")

CSS = """
#run-status .bar {height: 10px; background: var(--neutral-200); border-radius: 5px; overflow: hidden; margin: 6px 0;}
#run-status .bar > div {height: 100%; background: var(--color-accent); transition: width .2s;}
#run-status .err {color: var(--error-text-color, #b91c1c); font-weight: 600;}
#run-status .line {font-variant-numeric: tabular-nums;}
.tiny-note {font-size: 0.9em; opacity: 0.85;}
"""

ABOUT_MD = """
### Models
* **HuMo-1.7B**: runs on a 24 GB GPU at 480p. Text, image and audio guidance.
* **HuMo-17B**: the best quality, 720p; needs a large GPU (or offloading). No separate image guidance.
* **Tiny**: random weights at tiny sizes. It proves every stage (encoders, denoiser, decoder, MP4) runs,
  in seconds on a CPU. Its videos are noise, not people.

### Tips
* Use a clear, front-facing photo; the person's face should be large enough.
* Trim the clip to the sentence you want; "Match the audio length" makes as many frames as the clip lasts,
  up to 15 minutes. Past 97 frames the video is denoised in overlapping context windows (their length and
  overlap are under **Long videos** in the settings); the line under the frames says how many windows
  and about how long the denoising takes, before you start.
* If music or noise is under the voice, open **Vocal isolation**, listen to both stems, and let the
  isolated voice drive the lips; you can mix the background back into the final video.
* **Performance** (under the settings): the memory plan (where each part of the model lives, with its
  estimated peak memory), approximate fast modes, the attention backend and torch.compile. Changing the
  plan, the backend or compile reloads the model at the next run.
* **Runs** beside the seed makes several videos in one click, one after another on the loaded model:
  seeds seed, seed+1, … (seed -1: a random seed for each). Each lands in the gallery as it finishes;
  Cancel stops the current run and the rest.
* **Gallery**: search the prompts (words, or "a phrase"), filter by model, mode or ★ starred,
  and load more runs 24 at a time. Star a run to find it again.
* Every action here is also an API: see "Use via API" at the bottom of the page.
"""


STAR_OFF, STAR_ON = "☆ Star", "★ Starred"


def gallery_variant_choices() -> list[tuple[str, str]]:
    return ([("All models", ALL)] + [(v.label, name) for name, v in VARIANTS.items()]
            + [("MuseTalk 1.5 (dub)", "musetalk-1.5"), ("LatentSync 1.6 (dub)", "latentsync-1.6")])


def all_preset_choices() -> list[tuple[str, str]]:
    try:
        from studio.presets import load_presets
        return [(p.name, p.name) for p in load_presets()]
    except Exception as err:      # a broken preset file must not stop the page
        log.warning("presets unavailable: %s", err)
        return []


def upload_limit(mb: int) -> str:
    return f"{mb / 1024:g} GB" if mb >= 1024 and mb % 1024 == 0 else f"{mb} MB"


def build_layout(config: StudioConfig, start_variant: str) -> SimpleNamespace:
    """Every component of the page (call inside `gr.Blocks`)."""
    d = get_variant(start_variant).defaults
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
                        download_stop_btn = gr.Button("Stop download", size="sm", elem_id="download-stop",
                                                      visible=False)
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
                    gr.Markdown(f"Photos and clips: up to {upload_limit(config.max_upload_mb)} per file.",
                                elem_id="upload-limit")
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
                            isolate_btn, vocals_out, background_out, method_md = stems_panel()
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
                        # How a video longer than one window is cut, and about how long it takes (empty otherwise).
                        window_md = gr.Markdown("", elem_id="window-estimate")
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
                        with gr.Row(equal_height=True):
                            seed = gr.Number(42, label="Seed (-1: random)", precision=0, minimum=RANDOM_SEED,
                                             maximum=MAX_SEED, elem_id="seed", scale=3)
                            dice = gr.Button("Random seed", size="sm", elem_id="random-seed", scale=1)
                            # No minimum/maximum here: the handler answers an out-of-range value readably.
                            runs = gr.Number(1, label=f"Runs (1–{MAX_RUNS})", precision=0, elem_id="runs", scale=2,
                                             info="One after another: seed, seed+1, … (random seeds for -1)")
                        with gr.Accordion("Long videos: context windows", open=False, elem_id="windows-acc"):
                            gr.Markdown("Past 97 frames (the length the models were trained on) every step denoises "
                                        "overlapping windows and blends them. Lengths are in latent frames "
                                        "(1 latent frame = 4 video frames).")
                            with gr.Row():
                                window_length = gr.Number(None, label="Window length (latent frames)", precision=0,
                                                          elem_id="window-length", placeholder="25",
                                                          info="2–200; empty: 25 (97 frames, the trained length)")
                                window_overlap = gr.Number(None, label="Window overlap (latent frames)", precision=0,
                                                           elem_id="window-overlap", placeholder="6",
                                                           info="1 to the length − 1; empty: 6")
                                window_schedule = gr.Dropdown(SCHEDULE_CHOICES, value="shifted", label="Window schedule",
                                                              elem_id="window-schedule")
                    with gr.Accordion("Performance", open=False, elem_id="perf-acc") as perf_acc:
                        # Choices come from the engine (which imports torch): filled when the panel opens.
                        plan_md = gr.Markdown(PLAN_PLACEHOLDER, elem_id="plan-line")
                        with gr.Row():
                            plan_label = PLAN_AUTO_LABEL if config.plan == AUTO else config.plan
                            plan = gr.Dropdown([(plan_label, config.plan)], value=config.plan, label="Memory plan",
                                               elem_id="plan", allow_custom_value=True, scale=3,
                                               info="Where each part of the model lives; auto picks for this GPU")
                            attention = gr.Dropdown([(ATTENTION_AUTO_LABEL, AUTO)], value=AUTO,
                                                    label="Attention backend", elem_id="attention",
                                                    allow_custom_value=True, scale=2)
                        with gr.Row():
                            fast_mode = gr.Dropdown([(EXACT_LABEL, EXACT)], value=EXACT, label="Fast mode",
                                                    elem_id="fast-mode", allow_custom_value=True, scale=3,
                                                    info="Fast modes are approximate: the video differs from exact")
                            compile_ = gr.Checkbox(False, label=COMPILE_LABEL, elem_id="compile", scale=2)
                        fast_md = gr.Markdown(EXACT_INFO, elem_id="fast-info")
                        engine_md = gr.Markdown("", elem_id="engine-note")
                        perf_loaded = gr.State(False)
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
        # ------------------------------------------------------------------ dub
        from studio.dub_layout import build_dub_tab
        dub = build_dub_tab()
        # ------------------------------------------------------------------ gallery
        with gr.Tab("Gallery", id="gallery", elem_id="tab-gallery") as gallery_tab:
            with gr.Row(equal_height=True):
                gallery_search = gr.Textbox(label="Search prompts", placeholder='Words, or "a phrase"', max_lines=1,
                                            elem_id="gallery-search", scale=4)
                gallery_variant = gr.Dropdown(gallery_variant_choices(), value=ALL, label="Model",
                                              elem_id="gallery-variant", scale=2)
                gallery_mode = gr.Dropdown([("All modes", ALL)] + [(label, key) for key, label in MODES.items()]
                                           + [("Dub", "dub")],
                                           value=ALL, label="Mode", elem_id="gallery-mode", scale=2)
                gallery_starred = gr.Checkbox(False, label="★ Starred only", elem_id="gallery-starred", scale=1)
            with gr.Row():
                refresh_btn = gr.Button("Refresh", size="sm", elem_id="gallery-refresh", scale=0)
                gallery_count = gr.Markdown("", elem_id="gallery-count")
            grid = gr.Gallery(label="Finished runs (newest first)", columns=6, height="auto", allow_preview=False,
                              fit_columns=False, object_fit="contain", elem_id="gallery-grid",
                              interactive=False)
            more_btn = gr.Button(f"Load {PAGE_SIZE} more", size="sm", elem_id="gallery-more", visible=False)
            with gr.Row():
                with gr.Column(scale=3):
                    entry_video = gr.Video(label="Selected run", interactive=False, elem_id="entry-video")
                with gr.Column(scale=2):
                    entry_id = gr.Textbox(label="Entry id", elem_id="entry-id",
                                          info="Select a run above, or paste an id")
                    entry_md = gr.Markdown("", elem_id="entry-info")
                    with gr.Row():
                        star_btn = gr.Button(STAR_OFF, elem_id="entry-star", interactive=False)
                        reuse_btn = gr.Button("Reuse settings", variant="primary", elem_id="reuse-btn")
                        delete_btn = gr.Button("Delete", variant="stop", elem_id="delete-btn")
                    dub_this_btn = gr.Button("Dub this video", size="sm", elem_id="dub-this-btn")
                    entry_download = gr.DownloadButton("Download MP4", elem_id="entry-download",
                                                       visible=False)
                    entry_settings = gr.JSON(label="Settings", elem_id="entry-settings")
        with gr.Tab("About", id="about"):
            gr.Markdown(ABOUT_MD)

    form = [variant, mode, prompt, negative, images, audio, trim_start, trim_end, lips, mix_background,
            background_gain, size, width, height, match_audio, frames, steps, shift, scale_t, scale_i,
            scale_a, seed, plan, fast_mode, attention, compile_, runs, window_length, window_overlap, window_schedule]
    gallery_filters = [gallery_search, gallery_variant, gallery_mode, gallery_starred]
    names = {k: v for k, v in locals().items() if isinstance(v, (gr.blocks.Block, list, dict))
             and k not in ("config",)}
    names["dub"] = dub
    return SimpleNamespace(**names)
