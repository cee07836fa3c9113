"""`python -m engine generate ...`: videos from the command line, with a progress bar.

One video from flags; several seeds with `--runs N`; a list of jobs with `--jobs FILE`; or the
settings of an earlier video with `--from OLD.mp4` (every flag given on the command line wins).
The models stay loaded from one video to the next. Ctrl-C cancels the video in progress and
skips the rest.

Under torchrun (`torchrun --nproc-per-node N -m engine generate ...`) every rank runs this same
command; the guidance passes of each step are shared out, and with `--sequence-ways S` the tokens
of each pass too (engine.parallel); rank 0 prints the progress and writes the videos, the other
ranks stay quiet unless they fail.
"""
from __future__ import annotations

import json
import signal
import sys
from dataclasses import fields
from pathlib import Path

# Request settings a flag can set: flag dest -> GenerationRequest field.
REQUEST_FLAGS = {
    "variant": "variant", "prompt": "prompt", "mode": "mode", "audio": "audio", "negative": "negative_prompt",
    "steps": "steps", "shift": "shift", "scale_t": "scale_t", "scale_i": "scale_i", "scale_a": "scale_a",
    "seed": "seed", "fast_mode": "fast_mode", "window_length": "window_length",
    "window_overlap": "window_overlap", "window_schedule": "window_schedule",
}
DEFAULT_VARIANT = "humo-1.7b"


def register(sub) -> None:
    p = sub.add_parser("generate", help="make videos (one, several seeds, a jobs file, or again from an MP4)")
    p.add_argument("--variant", default=None, help=f"humo-1.7b | humo-17b | tiny (default: {DEFAULT_VARIANT})")
    p.add_argument("--prompt", default=None, help="what happens in the video (needed unless --from or --jobs)")
    p.add_argument("--image", action="append", default=None, help="reference image (repeat for several)")
    p.add_argument("--audio", default=None, help="voice clip (wav, mp3, m4a, ogg, flac, or a video's audio)")
    p.add_argument("--out", default=None,
                   help="output .mp4 (with --runs: a name the seed is added to; with --jobs: a folder)")
    p.add_argument("--mode", default=None,
                   help="default: TIA with an image and audio, TA with audio only, TI with an image only")
    p.add_argument("--frames", default=None, help="frame count, or 'auto' to follow the audio length (default)")
    p.add_argument("--size", default=None, help="WxH, e.g. 832x480 (default: the variant's)")
    # Numbers are read as text: the one request rule (engine.request) accepts, rounds or refuses them.
    p.add_argument("--steps", default=None)
    p.add_argument("--shift", default=None)
    p.add_argument("--scale-t", default=None)
    p.add_argument("--scale-i", default=None)
    p.add_argument("--scale-a", default=None)
    p.add_argument("--seed", default=None, help="default 0 (with --runs: the first seed; -1: a random seed per video)")
    p.add_argument("--runs", default=None, help="make N (1-16) videos with seeds seed, seed+1, ... (models load once)")
    p.add_argument("--from", dest="from_file", default=None, metavar="FILE",
                   help="start from the settings stored in an earlier video (.mp4) or a settings .json")
    p.add_argument("--jobs", default=None, metavar="FILE",
                   help="a JSON list or JSON-lines file of jobs; each job holds request settings "
                        "(prompt, audio, images, seed, out, ...) over the flags given here")
    p.add_argument("--negative", default=None, help="negative prompt (default: Wan's standard one)")
    p.add_argument("--weights", default="weights", help="weights folder")
    p.add_argument("--device", default=None, help="cuda | cpu (default: cuda when available)")
    p.add_argument("--attention", default=None, help="attention backend (e.g. native, flash, sage)")
    p.add_argument("--plan", default="auto", help="memory plan (python -m engine plan ...), default auto")
    p.add_argument("--compile", action="store_true", help="torch.compile the DiT blocks (exact; pays off on long runs)")
    p.add_argument("--sequence-ways", type=int, default=None, metavar="S",
                   help="under torchrun: S ranks share the tokens of each network pass (sequence parallelism; "
                        "must divide the ranks; the rest share out the guidance passes). Default: "
                        "HUMO_SEQUENCE_WAYS, else 1")
    p.add_argument("--fast-mode", default=None,
                   help="approximate speed-up preset (see engine/humo/fast.py: fast, faster, taylor, fewer-steps, fastest)")
    # Read as text too: the request rule answers a bad window setting as it does in the studio.
    p.add_argument("--window-length", default=None, metavar="N",
                   help="long videos: context window in latent frames, 2-200 (default 25 = 97 frames, the trained length)")
    p.add_argument("--window-overlap", default=None, metavar="N",
                   help="long videos: latent frames shared by neighbouring windows, 1 to length-1 (default 6)")
    p.add_argument("--window-schedule", default=None, metavar="shifted|fixed",
                   help="long videos: shifted (default; seams move every other step) or fixed windows")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--dry-run", action="store_true",
                   help="check the settings and list the videos that would be made, without loading a model")
    p.set_defaults(func=run)


def load_settings(path: str) -> dict:
    """The request settings stored in an earlier video (its `humo_studio` metadata) or in a .json file."""
    from engine.errors import InputError

    p = Path(path)
    if not p.is_file():
        raise InputError(f"--from {path}: no such file.", hint="Give an MP4 made by HuMo Studio or a settings .json.")
    if p.suffix.lower() == ".json":
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise InputError(f"--from {p.name}: not valid JSON ({err}).") from None
        data = data.get("humo_studio", data) if isinstance(data, dict) else data
    else:
        from engine import media

        data = media.probe_mp4(p).get("metadata", {}).get("humo_studio")
    if not isinstance(data, dict) or not data.get("prompt"):
        raise InputError(f"--from {p.name}: it holds no HuMo Studio settings.",
                         hint="Only videos made by this engine or the studio carry their settings.")
    settings = dict(data)
    # The clip travels inside the video: use it when the original file is gone.
    audio = settings.get("audio")
    if p.suffix.lower() == ".mp4" and settings.get("mode") in ("TA", "TIA") and (not audio or not Path(audio).is_file()):
        settings["audio"] = str(p)
        settings.setdefault("_notes", []).append(
            f"the original voice clip is gone; using the audio track of {p.name}")
    return settings


def _flag_settings(args) -> dict:
    """The request settings given on the command line (flags left out are not included)."""
    out = {field: getattr(args, dest) for dest, field in REQUEST_FLAGS.items() if getattr(args, dest) is not None}
    if args.image is not None:
        out["images"] = list(args.image)
    if args.frames is not None:
        out["frames"] = args.frames
    if args.size is not None:
        from engine.request import parse_size

        out["width"], out["height"] = parse_size(args.size)
    return out


def _build_request(settings: dict, out_path: str | None):
    """The request of one video, checked by the one request rule; with its notices and the
    settings it did not know."""
    from engine.request import GenerationRequest, resolve_request

    data = dict(settings)
    data.setdefault("variant", DEFAULT_VARIANT)
    request, notices = resolve_request(data)
    request.out_path = out_path
    request.preview = False
    known = {f.name for f in fields(GenerationRequest)}
    unknown = sorted(k for k in data if k not in known and not k.startswith("_")
                     and k not in ("out", "runs", "size", "compiled", "parallel"))   # how a run ran, not settings
    return request, unknown, notices


def _seed_path(out: str, seed: int) -> str:
    p = Path(out)
    suffix = p.suffix or ".mp4"
    return str(p.with_name(f"{p.stem if p.suffix else p.name}-seed{seed}{suffix}"))


def plan_jobs(args) -> list[tuple[dict, str, list[str]]]:
    """Every video to make, as (settings, output path, notes), before anything loads."""
    from engine.errors import InputError

    base: dict = {}
    notes: list[str] = []
    if args.from_file:
        base = load_settings(args.from_file)
        notes += base.pop("_notes", [])
    from engine.request import batch_seeds, check_runs, check_seed

    flags = _flag_settings(args)
    runs = check_runs(args.runs)

    if args.jobs:
        if runs != 1:
            raise InputError("--runs and --jobs do not go together: give each job its own seed.")
        jobs = read_jobs(args.jobs)
        folder = Path(args.out or ".")
        if folder.suffix.lower() == ".mp4":
            raise InputError("With --jobs, --out is a folder (each job names its own file with \"out\").")
        planned = []
        for i, job in enumerate(jobs, 1):
            settings = {**base, **flags, **job}
            out = job.get("out") or job.get("out_path") or str(folder / f"job-{i:03d}.mp4")
            if not Path(out).is_absolute() and (job.get("out") or job.get("out_path")):
                out = str(folder / out)
            planned.append((settings, out, list(notes)))
        return planned

    if not args.out:
        raise InputError("--out is needed: the .mp4 to write.")
    settings = {**base, **flags}
    seed = check_seed(settings.get("seed"))
    if runs == 1 and seed >= 0:
        return [(settings, args.out, notes)]
    seeds = batch_seeds(seed, runs)
    if runs == 1:
        return [({**settings, "seed": seeds[0]}, args.out, notes)]
    return [({**settings, "seed": s}, _seed_path(args.out, s), list(notes)) for s in seeds]


def read_jobs(path: str) -> list[dict]:
    """A jobs file: a JSON list of objects, or one JSON object per line (blank lines and # lines skipped)."""
    from engine.errors import InputError

    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise InputError(f"Could not read the jobs file {path}: {err}.") from None
    stripped = text.lstrip()
    try:
        if stripped.startswith("["):
            jobs = json.loads(text)
        else:
            jobs = []
            for n, line in enumerate(text.splitlines(), 1):
                if line.strip() and not line.lstrip().startswith("#"):
                    try:
                        jobs.append(json.loads(line))
                    except json.JSONDecodeError as err:
                        raise InputError(f"{p.name} line {n} is not valid JSON ({err.msg}).") from None
    except json.JSONDecodeError as err:
        raise InputError(f"{p.name} is not valid JSON ({err.msg} at line {err.lineno}).") from None
    if not isinstance(jobs, list) or not all(isinstance(j, dict) for j in jobs):
        raise InputError(f"{p.name} must hold JSON objects, one per job.")
    if not jobs:
        raise InputError(f"{p.name} holds no jobs.")
    return jobs


def precheck(request) -> None:
    """What can be checked without loading a model, past the settings: that the input files exist."""
    from engine.errors import InputError

    for label, path in [("voice clip", request.audio)] + [("image", p) for p in request.images]:
        if path and not Path(path).is_file():
            raise InputError(f"The {label} {path} does not exist.", hint="Check the path.")


def run(args) -> int:
    from engine.errors import EngineError
    from engine.parallel import ParallelGroup, launch_env

    planned = plan_jobs(args)
    launch = launch_env()
    if launch is None or args.dry_run:
        return 0 if launch is not None and launch.rank != 0 else _run_planned(args, planned, None)
    group = ParallelGroup.start(launch, args.device, sequence_ways=args.sequence_ways)
    try:
        planned = group.same(planned)       # rank 0's seeds (a random seed is drawn on each rank)
        return _run_planned(args, planned, group)
    except EngineError as err:
        if group.rank == 0:
            raise
        print(f"error: [rank {group.rank}] {err}", file=sys.stderr)
        return 2
    finally:
        group.close()


def _run_planned(args, planned, group) -> int:
    from engine.errors import Cancelled, EngineError, InputError, OutOfResources, WeightsError
    from engine.parallel import RankStopped

    speak = group is None or group.rank == 0     # only rank 0 of a torchrun run prints progress
    # Check every job before loading anything: a typo in job 7 should not surface hours later.
    requests, problems = [], []
    for i, (settings, out, notes) in enumerate(planned, 1):
        try:
            request, unknown, rounded = _build_request(settings, out)
            if not args.dry_run:
                precheck(request)
        except EngineError as err:
            problems.append((i, str(err)))
            continue
        for key in unknown:
            notes.append(f"ignored unknown setting {key!r}")
        requests.append((request, notes + rounded))
    if problems and len({text for _, text in problems}) == 1 and (len(problems) == len(planned) or len(planned) == 1):
        raise InputError(problems[0][1])        # one setting, wrong for every video: say it once
    problems = [f"job {i}: {text}" for i, text in problems]
    if problems:
        for line in problems[:-1] if speak else ():
            print(f"error: {line}", file=sys.stderr)
        suffix = f" ({len(problems)} of {len(planned)} jobs have problems; nothing was made)" if len(planned) > 1 else ""
        raise InputError(problems[-1] + suffix)

    if args.dry_run:
        return _dry_run(requests)
    from tqdm import tqdm

    from engine import Engine

    variants = {r.variant for r, _ in requests}
    engine = Engine(args.weights, device=group.device if group is not None else args.device, attention=args.attention,
                    compile=args.compile, plan=args.plan, parallel=group)
    if len(variants) > 1 and not args.quiet and speak:
        tqdm.write(f"note: the jobs use {len(variants)} models; each switch reloads weights", file=sys.stderr)

    interrupted = {"n": 0}

    def on_sigint(signum, frame):
        interrupted["n"] += 1
        if interrupted["n"] > 1:
            raise KeyboardInterrupt
        if speak:
            tqdm.write("cancelling (Ctrl-C again to quit at once)...", file=sys.stderr)
        engine.cancel()

    previous = signal.signal(signal.SIGINT, on_sigint)
    written, failed = [], []
    try:
        for i, (request, notes) in enumerate(requests, 1):
            label = f"[{i}/{len(requests)}] " if len(requests) > 1 else ""
            for note in notes if speak else ():
                tqdm.write(f"note: {label}{note}", file=sys.stderr)
            for line in _long_video(request) if speak else ():
                tqdm.write(f"estimate: {label}{line}", file=sys.stderr)
            try:
                if speak:
                    Path(request.out_path).parent.mkdir(parents=True, exist_ok=True)
                result = _one(engine, request, label, args.quiet, tqdm, speak)
            except Cancelled:
                if speak:
                    tqdm.write(f"{label}cancelled", file=sys.stderr)
                break
            except (WeightsError, OutOfResources, RankStopped):
                raise                # missing weights, a full disk, a lost rank: every job after this one would fail too
            except EngineError as err:
                if len(requests) == 1:
                    raise
                if speak:
                    tqdm.write(f"error: {label}{err}", file=sys.stderr)
                failed.append((i, str(err)))
                continue
            written.append(result)
    finally:
        signal.signal(signal.SIGINT, previous)

    if interrupted["n"]:
        if speak:
            print(f"cancelled: {len(written)} of {len(requests)} videos written", file=sys.stderr)
        return 130
    if len(requests) > 1 and speak:
        print(f"{len(written)} of {len(requests)} videos written" +
              (f"; failed: {', '.join(f'job {i}' for i, _ in failed)}" if failed else ""), file=sys.stderr)
    return 1 if failed else 0


def _long_video(request) -> list[str]:
    """The estimate line of a video longer than one context window (none for a shorter one)."""
    from engine.errors import EngineError
    from engine.options import long_video_line

    try:
        line = long_video_line(request)
    except EngineError:
        return []           # the run itself says what is wrong with the clip
    return [line] if line else []


def _dry_run(requests) -> int:
    """The videos the command would make, one line each (notes on stderr); nothing loads."""
    for i, (r, notes) in enumerate(requests, 1):
        label = f"[{i}/{len(requests)}] " if len(requests) > 1 else ""
        for note in notes:
            print(f"note: {label}{note}", file=sys.stderr)
        for line in _long_video(r):
            print(f"estimate: {label}{line}", file=sys.stderr)
        frames = "audio length" if r.frames is None else r.frames
        print(f"would write {r.out_path}: {r.variant} {r.mode}, {r.width}x{r.height}, frames {frames}, "
              f"steps {r.steps}, shift {r.shift:g}, seed {r.seed}", flush=True)
    return 0


def _one(engine, request, label: str, quiet: bool, tqdm, speak: bool = True):
    bar = None
    result = None
    quiet = quiet or not speak
    try:
        for ev in engine.generate(request):
            if ev.kind == "stage" and not quiet:
                tqdm.write(f"{label}[{ev.stage}] {ev.message}", file=sys.stderr)
            elif ev.kind == "notice" and speak:
                tqdm.write(f"note: {label}{ev.message}", file=sys.stderr)
            elif ev.kind == "step" and not quiet:
                if bar is None:
                    bar = tqdm(total=ev.total, desc=f"{label}denoising", unit="step", file=sys.stderr)
                bar.update(ev.step - bar.n)
            elif ev.kind == "result":
                result = ev
                if not speak:
                    continue
                print(f"wrote {ev.video_path}: {ev.frames} frames, {ev.width}x{ev.height}, {ev.fps} fps, "
                      f"{ev.duration_s:.2f} s, seed {ev.seed}, {ev.timings['total_s']:.1f} s", flush=True)
    finally:
        if bar is not None:
            bar.close()
    return result
