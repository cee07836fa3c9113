"""`python -m engine dub --video V --audio A --out O.mp4`: re-sync a video's lips to a new voice."""
from __future__ import annotations

import signal
import sys


def register(sub) -> None:
    p = sub.add_parser("dub", help="dub a video with a new voice track (MuseTalk 1.5 or LatentSync 1.6)",
                       description="Replace the mouth region of the person in a video so it follows a new voice; "
                                   "everything else stays as it was. Errors are one line; exit code 2 for bad "
                                   "input or missing weights, 130 when cancelled.")
    p.add_argument("--video", required=True, help="the video of the person")
    p.add_argument("--audio", required=True, help="the new voice (wav, mp3, m4a, flac, ...)")
    p.add_argument("--out", required=True, help="output MP4 (written only once complete)")
    p.add_argument("--sound", default=None, metavar="FILE",
                   help="the sound of the dubbed video (default: --audio itself), e.g. the full mix when --audio "
                        "is the voice isolated from it")
    p.add_argument("--model", default="musetalk-1.5",
                   help="musetalk-1.5 (fast, one pass per frame) or latentsync-1.6 (diffusion, higher quality)")
    p.add_argument("--weights", default=None, metavar="DIR", help="weights folder (default: $HUMO_WEIGHTS_DIR or 'weights')")
    p.add_argument("--fps-rule", default="exact", help="exact: audio windows by exact frame time (default); "
                                                         "official: int(fps) as MuseTalk's code does")
    p.add_argument("--bbox-shift", type=int, default=0, help="move the box's top edge (pixels; needs DWPose landmarks)")
    p.add_argument("--extra-margin", type=int, default=10, help="extra rows below the chin (default 10)")
    p.add_argument("--parsing-mode", default="jaw", help="jaw (default), raw or neck: which face parts are replaced")
    p.add_argument("--cheeks", type=int, nargs=2, default=(90, 90), metavar=("L", "R"),
                   help="cheek widths kept from the source in jaw mode (default 90 90)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--when-audio-longer", default="pingpong",
                   help="pingpong (cycle the frames forward and backward, the turning frames shown twice as "
                        "officially), bounce (each turning frame once) or freeze (hold the last)")
    p.add_argument("--when-video-longer", default="cut", help="cut (end with the voice) or keep (the rest with its own sound)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--face-track", default=None, metavar="FILE", help="use this face track file instead of detecting")
    ls = p.add_argument_group("LatentSync 1.6")
    ls.add_argument("--steps", type=int, default=20, help="DDIM steps (default 20)")
    ls.add_argument("--guidance", type=float, default=1.5, help="audio guidance (default 1.5; 1.0 skips a pass)")
    ls.add_argument("--no-deepcache", dest="deepcache", action="store_false",
                    help="run the full UNet every step (exact; DeepCache, on by default, is about 2x faster "
                         "and approximate)")
    ls.add_argument("--whisper-pad", default="silence", help="silence (default) or zeros (official: the last 30 s "
                                                           "window padded with a loud flat spectrum)")
    ls.add_argument("--whisper-floor", default="file", help="file (official) or window: where the log-mel floor "
                                                          "comes from")
    ls.add_argument("--whisper-windows", default="overlap", help="overlap (default: no jump at each 30 s of voice) "
                                                                 "or cut (official 30 s windows)")
    ls.add_argument("--face-smoothing", default="official", help="official, pixels or off")
    ls.add_argument("--rounding", default="round", help="round (default) or truncate (official)")
    ls.add_argument("--frame-count", default="audio", help="audio (as long as the voice, default) or official "
                                                           "(one or two frames more)")
    p.add_argument("--device", default=None, help="cuda | cpu (default: cuda when available)")
    p.add_argument("--quiet", action="store_true", help="only the result line and errors")
    p.set_defaults(func=run)


def build_request(args):
    from engine.dub.request import DubRequest, validate_dub_request

    return validate_dub_request(DubRequest(
        video=args.video, audio=args.audio, out_path=args.out, model=args.model, fps_rule=args.fps_rule,
        bbox_shift=args.bbox_shift, extra_margin=args.extra_margin, parsing_mode=args.parsing_mode,
        cheek_left=args.cheeks[0], cheek_right=args.cheeks[1], batch_size=args.batch_size,
        when_audio_longer=args.when_audio_longer, when_video_longer=args.when_video_longer, seed=args.seed,
        face_track=args.face_track, sound=args.sound, preview=False, steps=args.steps, guidance=args.guidance,
        deepcache=args.deepcache, whisper_pad=args.whisper_pad, whisper_floor=args.whisper_floor,
        whisper_windows=args.whisper_windows,
        face_smoothing=args.face_smoothing, rounding=args.rounding, frame_count=args.frame_count))


def run(args) -> int:
    from engine.dub.pipeline import Dubber
    from engine.errors import Cancelled
    from engine.weights import default_weights_dir

    request = build_request(args)
    dubber = Dubber(args.weights or default_weights_dir(), device=args.device)
    import threading

    cancel = threading.Event()
    interrupted = {"n": 0}

    def on_sigint(signum, frame):
        interrupted["n"] += 1
        if interrupted["n"] > 1:
            raise KeyboardInterrupt
        print("\ncancelling (Ctrl-C again to quit at once)...", file=sys.stderr)
        cancel.set()

    previous = signal.signal(signal.SIGINT, on_sigint)
    progress = _Progress(args.quiet)
    try:
        for ev in dubber.run(request, cancel=cancel):
            progress.show(ev)
    except Cancelled:
        progress.end()
        print("cancelled: nothing was written", file=sys.stderr)
        return 130
    finally:
        progress.end()
        signal.signal(signal.SIGINT, previous)
    return 0


class _Progress:
    """Stage lines, notices, one updating progress line (frames, fps, ETA), then the result line."""

    def __init__(self, quiet: bool):
        self.quiet = quiet
        self.tty = sys.stderr.isatty()
        self.open = False
        self.last_tenth = -1
        self.stage = None

    def show(self, ev) -> None:
        if ev.kind == "stage" and not self.quiet:
            if ev.stage == self.stage:        # progress within a stage: updated in place on a terminal
                if self.tty:
                    print(f"\r[{ev.stage}] {ev.message}", end="", file=sys.stderr, flush=True)
                    self.open = True
                return
            self.end()
            self.stage = ev.stage
            print(f"[{ev.stage}] {ev.message}", file=sys.stderr, flush=True)
        elif ev.kind == "notice":
            self.end()
            print(f"note: {ev.message}", file=sys.stderr, flush=True)
        elif ev.kind == "step" and not self.quiet:
            rate = ev.step / ev.elapsed_s if ev.elapsed_s > 0 else 0.0
            line = f"dubbing: frame {ev.step}/{ev.total} ({100 * ev.fraction:.0f}%), {rate:.1f} frames/s, ETA {ev.eta_s:.0f} s"
            if self.tty:
                print("\r" + line, end="", file=sys.stderr, flush=True)
                self.open = True
            elif int(10 * ev.fraction) != self.last_tenth:
                self.last_tenth = int(10 * ev.fraction)
                print(line, file=sys.stderr, flush=True)
        elif ev.kind == "result":
            self.end()
            print(f"wrote {ev.video_path}: {ev.frames} frames, {ev.width}x{ev.height}, {ev.fps:g} fps, "
                  f"{ev.duration_s:.2f} s, seed {ev.seed}, {ev.timings['total_s']:.1f} s", flush=True)

    def end(self) -> None:
        if self.open:
            print(file=sys.stderr, flush=True)
            self.open = False
