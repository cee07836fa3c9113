"""What the page shows about a run: the status line, readable errors, the preview strip."""
from __future__ import annotations

import logging
import time
import traceback
from typing import Any

import gradio as gr
import numpy as np

from engine.errors import EngineError
from engine.redact import redact_text
from studio.jobs import RunState

log = logging.getLogger("humo.studio")

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


def friendly(err: BaseException) -> str:
    """A readable one-liner for any error, naming files but not where they are on the server;
    unexpected ones also go to the console log (with their paths)."""
    if isinstance(err, EngineError):
        return redact_text(str(err))
    if isinstance(err, gr.Error):
        return redact_text(str(err.message))
    log.error("unexpected error:\n%s", "".join(traceback.format_exception(err)))
    return (f"Unexpected problem ({type(err).__name__}: {redact_text(str(err))[:200]}). The studio is still "
            "running; the console log has the details.")


def esc(text: Any) -> str:
    return (str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;"))


def fmt_seconds(seconds: float | None) -> str:
    if seconds is None:
        return "…"
    seconds = max(0.0, float(seconds))
    return f"{seconds:.1f} s" if seconds < 90 else f"{int(seconds // 60)} min {int(seconds % 60):02d} s"


def status_html(state: RunState | None = None, message: str | None = None, error: bool = False) -> str:
    if message is not None:
        cls = "err" if error else "line"
        icon = "Problem: " if error else ""
        return f'<div class="{cls}">{icon}{esc(message)}</div>'
    if state is None:
        return '<div class="line">Ready.</div>'
    stage = STAGE_TEXT.get(state.stage, state.stage)
    pct = int(round(state.fraction * 100))
    parts = [f"<b>{esc(stage)}</b>"]
    if state.stage_message and state.stage != "denoising":
        parts.append(esc(state.stage_message))
    in_window = state.total and state.window and state.windows > 1
    if in_window:           # a long video: the step under way and the window of it being denoised
        parts.append(f"step {state.step + 1}/{state.total} · window {state.window} of {state.windows}")
    elif state.total:
        parts.append(f"step {state.step}/{state.total}")
    if state.total and state.step < state.total:
        parts.append(f"ETA {fmt_seconds(state.eta_s)}")
    parts.append(f"elapsed {fmt_seconds(time.monotonic() - state.started_at)}")
    window = f' data-window="{state.window}" data-windows="{state.windows}"' if in_window else ""
    return (f'<div class="line" data-stage="{esc(state.stage)}" data-step="{state.step}" '
            f'data-total="{state.total}"{window}>{" · ".join(parts)}</div>'
            f'<div class="bar"><div style="width:{pct}%"></div></div>')


def ended_status(error: BaseException) -> str:
    """The last status line of a run that ended with `error`: "Cancelled…", or the one-line
    problem (also shown as a warning toast)."""
    from engine.errors import Cancelled

    if isinstance(error, Cancelled):
        return status_html(message="Cancelled. Ready for the next run.")
    msg = friendly(error)
    gr.Warning(msg)
    return status_html(message=msg, error=True)


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
