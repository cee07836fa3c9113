"""`python -m engine download` and `python -m engine status`: get and inspect checkpoint files."""
from __future__ import annotations

import contextlib
import json
import signal
import sys
import threading
import time

from engine import weights as W
from engine.humo.variants import VARIANTS


def register(subparsers) -> None:
    real = [name for name, v in VARIANTS.items() if not v.random_weights]
    p = subparsers.add_parser("download", help="download a variant's weights from the Hugging Face Hub",
                              description="Download what a variant needs (only the missing files), check "
                                          "sizes and sha256, and record them. Honours HF_ENDPOINT and HF_TOKEN.")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--variant", choices=real + ["all"], help="which HuMo model to fetch")
    which.add_argument("--model", choices=list(W.DUB_MODELS), help="which dubbing model to fetch")
    p.add_argument("--weights", default=None, metavar="DIR",
                   help=f"weights folder (default: ${W.WEIGHTS_DIR_ENV} or '{W.DEFAULT_WEIGHTS_DIR}')")
    p.add_argument("--with-separator", action="store_true",
                   help="also fetch the Kim_Vocal_2 vocal separator (optional)")
    p.add_argument("--with-insightface", action="store_true",
                   help="with --model latentsync-1.6: also fetch the official face finder, insightface's "
                        "SCRFD + 106-point landmark ONNX files (buffalo_l: non-commercial research use only)")
    p.set_defaults(func=cmd_download)

    s = subparsers.add_parser("status", help="show which variants' weights are present",
                              description="List each variant: complete, or what is missing; sizes on disk. "
                                          "Never uses the network.")
    s.add_argument("--weights", default=None, metavar="DIR",
                   help=f"weights folder (default: ${W.WEIGHTS_DIR_ENV} or '{W.DEFAULT_WEIGHTS_DIR}')")
    s.add_argument("--variant", "--model", dest="variant", default=None, choices=list(VARIANTS) + list(W.DUB_MODELS),
                   help="only this variant or dubbing model")
    s.add_argument("--json", action="store_true", help="machine-readable output")
    s.set_defaults(func=cmd_status)


class TerminalProgress:
    """One updating line per file on a terminal; a few plain lines otherwise."""

    def __init__(self, stream=None):
        self.stream = stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.file = None
        self.t0 = time.monotonic()
        self.start_bytes = 0
        self.last_step = -1

    def __call__(self, component: str, file: str, done: int, total: int | None) -> None:
        if file != self.file:
            self.finish()
            self.file, self.t0, self.start_bytes, self.last_step = file, time.monotonic(), done, -1
        frac = (done / total) if total else 0.0
        elapsed = max(time.monotonic() - self.t0, 1e-6)
        rate = (done - self.start_bytes) / elapsed
        size = f"{W.format_bytes(done)} / {W.format_bytes(total)}" if total else W.format_bytes(done)
        if self.tty:
            width = 24
            filled = int(width * min(frac, 1.0))
            bar = "#" * filled + "-" * (width - filled)
            line = f"\r{file[-48:]:<48} [{bar}] {frac * 100:5.1f}% {size} {W.format_bytes(int(rate))}/s"
            self.stream.write(line)
            self.stream.flush()
        else:
            step = int(frac * 4) if total else 0
            if step != self.last_step:
                self.last_step = step
                self.stream.write(f"{file}: {frac * 100:.0f}% ({size})\n")
                self.stream.flush()

    def finish(self) -> None:
        if self.file is not None and self.tty:
            self.stream.write("\n")
            self.stream.flush()
        self.file = None


def cmd_download(args) -> int:
    weights_dir = args.weights or W.default_weights_dir()
    if args.model:
        names = [args.model]
    else:
        names = [n for n, v in VARIANTS.items() if not v.random_weights] if args.variant == "all" else [args.variant]
    progress = TerminalProgress()
    for name in names:
        try:
            optional = args.with_separator or name in W.DUB_MODELS   # a dub model's optional part is its landmarks
            with _stop_signals_interrupt():
                status = W.download(name, weights_dir, progress=progress, include_optional=optional,
                                    include_restricted=args.with_insightface,
                                    on_message=lambda m: (progress.finish(), print(m, file=sys.stderr)))
        except KeyboardInterrupt:
            progress.finish()
            print(f"interrupted: {_kept_note(name, weights_dir)}", file=sys.stderr)
            return 130
        finally:
            progress.finish()
        print(f"{status.label}: complete in {status.weights_dir} ({W.format_bytes(status.size_on_disk)}).")
    return 0


@contextlib.contextmanager
def _stop_signals_interrupt():
    """SIGTERM and SIGHUP (a closed terminal) stop a download like Ctrl-C: the partial file is flushed and kept."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    names = [n for n in ("SIGTERM", "SIGHUP") if hasattr(signal, n)]
    old = {n: signal.signal(getattr(signal, n), interrupt) for n in names}
    try:
        yield
    finally:
        for n, handler in old.items():
            signal.signal(getattr(signal, n), handler)


def _kept_note(name: str, weights_dir: str) -> str:
    """After Ctrl-C: what was kept, and how to go on."""
    st = W.find(name, weights_dir)
    partial = sum(st.partial_files.values())
    kept = f"the {W.format_bytes(partial)} fetched so far are kept" if partial else "finished files are kept"
    return f"{kept}; run the same command again to resume ({W.fetch_command(name, weights_dir)})."


def cmd_status(args) -> int:
    weights_dir = args.weights or W.default_weights_dir()
    names = [args.variant] if args.variant else [*VARIANTS, *W.DUB_MODELS]
    statuses = [W.find(name, weights_dir) for name in names]
    if args.json:
        print(json.dumps({"weights_dir": weights_dir, "variants": [s.to_dict() for s in statuses]}, indent=1))
        return 0
    print(f"weights folder: {weights_dir}")
    for st in statuses:
        head = "complete" if st.complete else "incomplete" if st.incomplete_files else "missing"
        print(f"\n{st.label}: {head}, {W.format_bytes(st.size_on_disk)} on disk")
        for c in st.components:
            opt = " (optional)" if c.optional else ""
            print(f"  {c.label}{opt}: {c.state}, {W.format_bytes(c.size_on_disk)}")
            if (c.state == "missing" and all(f.state == "missing" and not f.partial_size for f in c.files)
                    and len(c.files) > 1):
                print(f"    missing: {', '.join(f.path for f in c.files)}")
                continue
            for f in c.files:
                if f.state != "present":
                    why = f" ({f.detail})" if f.detail else ""
                    print(f"    {f.state}: {f.path}{why}")
                    if f.partial_size:
                        print(f"      partial: {W.format_bytes(f.partial_size)} of "
                              f"{W.format_bytes(f.expected_size)}, will resume")
                elif f.source == "cache":
                    print(f"    in the Hugging Face cache: {f.path}")
        if not st.complete:
            size = f" (about {W.format_bytes(st.bytes_to_download)})" if st.bytes_to_download else ""
            print(f"  to get it{size}: {st.command}")
    return 0
