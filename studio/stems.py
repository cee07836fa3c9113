"""The "Separate voice" button of both tabs: the trimmed clip split into voice and background
stems to listen to before a run (the run reuses them from the same per-clip cache)."""
from __future__ import annotations

import gradio as gr

from studio import audio_tools
from studio.config import StudioConfig
from studio.runtime import Runtime
from studio.status import friendly


def stems_panel(id_prefix: str = ""):
    """The button, the two stem players and the method line (call inside a layout block)."""
    button = gr.Button("Separate voice", size="sm", elem_id=f"{id_prefix}isolate-btn")
    with gr.Row():
        vocals = gr.Audio(label="Voice", type="filepath", interactive=False, elem_id=f"{id_prefix}stem-vocals")
        background = gr.Audio(label="Background", type="filepath", interactive=False,
                              elem_id=f"{id_prefix}stem-background")
    method = gr.Markdown("", elem_id=f"{id_prefix}sep-method")
    return button, vocals, background, method


def isolate_handler(rt: Runtime, config: StudioConfig):
    """The click handler: (clip, trim start, trim end) -> (voice stem, background stem, method note)."""
    def isolate_voice(path, t0, t1):
        """Separate the voice from music/noise; returns (voice, background, method note)."""
        if not path:
            gr.Warning("Add a voice clip first (upload or record).")
            return None, None, "**Problem:** add a voice clip first."
        try:
            stems = audio_tools.isolate(path, t0, t1, rt.prepare_workdir("Cannot separate the voice"),
                                        models_dir=config.weights_dir)
        except Exception as err:
            msg = friendly(err)
            gr.Warning(msg)
            return None, None, f"**Problem:** {msg}"
        return stems.vocals, stems.background, f"**Method: {stems.method}.** {stems.note}"
    return isolate_voice
