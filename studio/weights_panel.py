"""What the page says about weights: present or missing, size on disk, how to get them.

Uses engine.weights' local checks (files on disk, never the network) and its download.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from engine.options import VARIANTS, get_variant


def status_markdown(variant_name: str, weights_dir: str) -> str:
    """Present or missing, size on disk, and how to get what is missing (no network)."""
    from engine import weights

    variant = get_variant(variant_name)
    st = weights.find(variant.name, weights_dir)
    lines = []
    if variant.random_weights:
        lines.append("**Tiny = random weights.** It checks the whole pipeline in seconds on a CPU; "
                     "its videos are noise, not people.")
    if st.complete:
        lines.append(f"**{variant.label}**: weights present in `{weights_dir}` "
                     f"({weights.format_bytes(st.size_on_disk)}).")
    else:
        lines.append(f"**{variant.label}**: weights are not ready in `{weights_dir}`: {st.problem()}.")
        if variant.random_weights:
            lines.append(f"Press **Make tiny weights** or run `{st.command}`.")
        else:
            lines.append(f"About {weights.format_bytes(st.bytes_to_download)} to fetch: press **Download weights** "
                         f"or run `{st.command}`.")
            partial = st.partial_files
            if partial:
                lines.append(f"{weights.format_bytes(sum(partial.values()))} of {len(partial)} unfinished "
                             f"file{'s' if len(partial) > 1 else ''} already here: the download continues where it stopped.")
    # The page shows the folder as the studio was started with it (relative), never the server's full path.
    from engine.redact import redact_text
    return redact_text("\n\n".join(lines))


def is_complete(variant_name: str, weights_dir: str) -> bool:
    from engine import weights

    return weights.find(variant_name, weights_dir).complete


def variant_choices(weights_dir: str) -> list[tuple[str, str]]:
    out = []
    for name, variant in VARIANTS.items():
        mark = "ready" if is_complete(name, weights_dir) else "weights missing"
        out.append((f"{variant.label} [{mark}]", name))
    return out


def make_tiny(weights_dir: str, timeout_s: float = 600, model: str | None = None) -> str:
    """Run `python -m engine make-tiny` (for `model`, else the tiny HuMo variant) in a child process; returns its last output line (folders
    named as the studio was given them, not by their server path)."""
    from engine.redact import redact_text

    root = Path(__file__).resolve().parent.parent
    env = dict(os.environ, PYTHONPATH=str(root) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-m", "engine", "make-tiny", weights_dir,
                           *(["--model", model] if model else [])], cwd=str(root), env=env,
                          capture_output=True, text=True, timeout=timeout_s)
    text = (proc.stdout + proc.stderr).strip().splitlines()
    if proc.returncode != 0:
        raise RuntimeError(redact_text(text[-1]) if text else f"make-tiny failed with exit code {proc.returncode}")
    return redact_text(text[-1]) if text else "Tiny weights written."


class DownloadProgress:
    """One progress bar over a whole download, from the downloader's per-file callbacks.

    The downloader reports bytes per file, and huggingface_hub reports them per 10 MB chunk, so
    a bar per file sits at 0 % through every small file and starts over at each new one. This
    counts files instead (plus the share of the current one): "file 3 of 9 · vae: Wan2.1_VAE.pth".
    `report(fraction, desc)` draws it (e.g. `lambda f, d: progress(f, desc=d)` with gr.Progress).
    """

    CHECKING = " (checking sha256)"

    def __init__(self, variant_name: str, weights_dir: str, report, include_optional: bool = False) -> None:
        from engine import weights

        comps = weights.components_for(variant_name, include_optional=include_optional)
        st = weights.find(variant_name, weights_dir, components=comps)
        self.files = [f.path for c in st.components for f in c.files if f.state != "present"]
        self.report = report
        self.shown = 0.0

    def __call__(self, component: str, file: str, done: int, total: int | None) -> None:
        from engine.weights import format_bytes

        checking = file.endswith(self.CHECKING)
        rel = file[: -len(self.CHECKING)] if checking else file
        if rel not in self.files:            # e.g. the shards a 17B index lists, known only now
            self.files.append(rel)
        index, count = self.files.index(rel), len(self.files)
        share = 1.0 if checking else (min(max(done / total, 0.0), 1.0) if total else 0.0)
        what = "checking" if checking else (f"{format_bytes(done)} of {format_bytes(total)}" if total else
                                            format_bytes(done))
        # Never backwards: a file found late (a shard) grows the count, not the work already done.
        self.shown = max(self.shown, min((index + share) / count, 1.0))
        self.report(self.shown, f"file {index + 1} of {count} · {component}: {Path(rel).name} ({what})")
