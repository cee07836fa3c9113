"""The Dub tab's components (built inside the page's main tabs); studio.dub_tab wires them."""
from __future__ import annotations

from types import SimpleNamespace

import gradio as gr

from engine.dub.request import DubRequest
from studio.form import LIPS_ORIGINAL, LIPS_VOICE
from studio.status import status_html
from studio.stems import stems_panel

DUB_MODEL_CHOICES = [("MuseTalk 1.5: fast, one pass per frame", "musetalk-1.5"),
                     ("LatentSync 1.6: diffusion, higher quality, slower", "latentsync-1.6")]
PAD_CHOICES = [("Silence (default): the voice's last 30 s window padded with silence", "silence"),
               ("Official: padded with a loud flat spectrum", "zeros")]
WINDOW_CHOICES = [("Overlapping: no jump at each 30 s of voice (default)", "overlap"),
                  ("Official: 30 s windows cut apart", "cut")]
FLOOR_CHOICES = [("Whole voice (official)", "file"), ("Each 30 s window", "window")]
SMOOTHING_CHOICES = [("Official", "official"), ("In crop pixels", "pixels"), ("Off", "off")]
ROUNDING_CHOICES = [("Round (default)", "round"), ("Truncate (official, -0.5 level)", "truncate")]
FRAME_COUNT_CHOICES = [("As long as the voice (default)", "audio"), ("Official: one or two frames more", "official")]
PARSING_CHOICES = [("Jaw (default): mouth and jaw, cheeks kept", "jaw"), ("Raw: the parsed face", "raw"),
                   ("Neck: face and neck", "neck")]
FPS_CHOICES = [("Exact frame times (default)", "exact"), ("Official: int(fps)", "official")]
AUDIO_LONGER_CHOICES = [("Ping-pong the frames (official: the turning frames show twice)", "pingpong"),
                        ("Bounce: each turning frame once", "bounce"), ("Freeze the last frame", "freeze")]
VIDEO_LONGER_CHOICES = [("Cut at the end of the voice", "cut"), ("Keep the rest with its own sound", "keep")]


def build_dub_tab() -> SimpleNamespace:
    """The Dub tab's components (call inside `gr.Tabs`)."""
    d = DubRequest(video="", audio="")
    with gr.Tab("Dub", id="dub", elem_id="tab-dub") as tab:
        gr.Markdown("Re-sync a video's lips to a new voice. Everything but the mouth region stays as it was.")
        with gr.Row():
            with gr.Column(scale=1):
                video = gr.Video(label="Video of the person", sources=["upload"], elem_id="dub-video")
                audio = gr.Audio(label="New voice (upload or record)", sources=["upload", "microphone"],
                                 type="filepath", elem_id="dub-audio")
                audio_md = gr.Markdown("", elem_id="dub-audio-info")
                with gr.Row():
                    trim_start = gr.Number(0, label="Voice start (s)", minimum=0, elem_id="dub-trim-start")
                    trim_end = gr.Number(0, label="Voice end (s, 0 = to the end)", minimum=0, elem_id="dub-trim-end")
                with gr.Accordion("Vocal isolation", open=False, elem_id="dub-vocal-acc"):
                    gr.Markdown("When music or noise is under the new voice, separate it, listen to both, "
                                "and let the voice alone drive the lips.")
                    isolate_btn, vocals_out, background_out, method_md = stems_panel("dub-")
                    lips = gr.Radio([LIPS_ORIGINAL, LIPS_VOICE], value=LIPS_ORIGINAL, label="Lips follow",
                                    elem_id="dub-lips")
                    with gr.Row():
                        mix_background = gr.Checkbox(False, label="Keep the background (music, room) in the "
                                                     "dubbed video", elem_id="dub-mix-bg")
                        background_gain = gr.Slider(0, 1.5, value=1.0, step=0.05, label="Background level",
                                                    elem_id="dub-bg-gain")
                model = gr.Dropdown(DUB_MODEL_CHOICES, value="musetalk-1.5", label="Model", elem_id="dub-model")
                weights_md = gr.Markdown("", elem_id="dub-weights")
                make_tiny_btn = gr.Button("Make tiny weights", size="sm", elem_id="dub-make-tiny")
                with gr.Accordion("LatentSync settings", open=False, visible=False,
                                  elem_id="dub-latentsync-settings") as latentsync_settings:
                    steps = gr.Slider(1, 50, value=d.steps, step=1, label="Steps", elem_id="dub-steps")
                    guidance = gr.Slider(1.0, 3.0, value=d.guidance, step=0.1,
                                         label="Audio guidance (1.0 skips the unconditional pass)",
                                         elem_id="dub-guidance")
                    deepcache = gr.Checkbox(value=d.deepcache, label="DeepCache: faster, approximate "
                                            "(the official app keeps it on)", elem_id="dub-deepcache")
                    whisper_pad = gr.Radio(PAD_CHOICES, value=d.whisper_pad, label="Voice padding",
                                           elem_id="dub-whisper-pad")
                    whisper_floor = gr.Radio(FLOOR_CHOICES, value=d.whisper_floor, label="Loudness floor from",
                                             elem_id="dub-whisper-floor")
                    whisper_windows = gr.Radio(WINDOW_CHOICES, value=d.whisper_windows, label="Voice windows",
                                               elem_id="dub-whisper-windows")
                    face_smoothing = gr.Radio(SMOOTHING_CHOICES, value=d.face_smoothing, label="Face smoothing",
                                              elem_id="dub-face-smoothing")
                    rounding = gr.Radio(ROUNDING_CHOICES, value=d.rounding, label="Pixel rounding",
                                        elem_id="dub-rounding")
                    frame_count = gr.Radio(FRAME_COUNT_CHOICES, value=d.frame_count, label="Frames",
                                           elem_id="dub-frame-count")
                with gr.Accordion("Settings", open=False, elem_id="dub-settings"):
                    when_audio_longer = gr.Radio(AUDIO_LONGER_CHOICES, value=d.when_audio_longer,
                                                 label="When the voice is longer", elem_id="dub-audio-longer")
                    when_video_longer = gr.Radio(VIDEO_LONGER_CHOICES, value=d.when_video_longer,
                                                 label="When the video is longer", elem_id="dub-video-longer")
                    seed = gr.Number(d.seed, label="Seed (the run's random draws: the same seed gives the same video)",
                                     precision=0, minimum=0, elem_id="dub-seed")
                    with gr.Group(elem_id="dub-musetalk-settings") as musetalk_settings:
                        extra_margin = gr.Slider(0, 40, value=d.extra_margin, step=1,
                                                 label="Extra margin below the chin", elem_id="dub-extra-margin")
                        parsing_mode = gr.Dropdown(PARSING_CHOICES, value=d.parsing_mode, label="Parsing mode",
                                                   elem_id="dub-parsing-mode")
                        with gr.Row():
                            cheek_left = gr.Slider(0, 256, value=d.cheek_left, step=1, label="Left cheek width",
                                                   elem_id="dub-cheek-left")
                            cheek_right = gr.Slider(0, 256, value=d.cheek_right, step=1, label="Right cheek width",
                                                    elem_id="dub-cheek-right")
                        fps_rule = gr.Radio(FPS_CHOICES, value=d.fps_rule, label="Frame rate rule",
                                            elem_id="dub-fps-rule")
                        batch_size = gr.Slider(1, 64, value=d.batch_size, step=1, label="Batch size (frames at once)",
                                               elem_id="dub-batch-size")
                with gr.Row():
                    check_btn = gr.Button("First-frame check", elem_id="dub-check-btn")
                    run_btn = gr.Button("Dub", variant="primary", elem_id="dub-run-btn")
                    cancel_btn = gr.Button("Cancel", variant="stop", elem_id="dub-cancel-btn")
            with gr.Column(scale=1):
                status = gr.HTML(status_html(), elem_id="dub-status")
                check_img = gr.Image(label="First frame: crop box (green) and blend mask (pink)", interactive=False,
                                     format="png", elem_id="dub-check-img", height=300)
                check_md = gr.Markdown("", elem_id="dub-check-info")
                preview = gr.Image(label="Finished frames", interactive=False, format="png", elem_id="dub-preview",
                                   height=220)
                result = gr.Video(label="Dubbed video", interactive=False, elem_id="dub-result", autoplay=False)
                result_md = gr.Markdown("", elem_id="dub-result-info")
    settings = [model, extra_margin, parsing_mode, cheek_left, cheek_right, fps_rule, when_audio_longer,
                when_video_longer, batch_size, steps, guidance, deepcache, whisper_pad, whisper_floor, face_smoothing,
                rounding, frame_count, whisper_windows, seed, lips, mix_background, background_gain]
    inputs = [video, audio, trim_start, trim_end, *settings]
    names = {k: v for k, v in locals().items() if isinstance(v, (gr.blocks.Block, list))}
    return SimpleNamespace(**names)
