"""Long videos on the tiny variant: peak memory, time and window seams by length and schedule.

    python -m engine.tools.long_bench [--frames 97 385 1537 6145] [--schedules shifted fixed]

Each run is a fresh process (so its peak RSS is its own): Text + Image, 64x64, 2 steps, the real
engine from request to MP4. Memory should stay flat as the video grows (windows are denoised one
at a time, the VAE decodes a latent frame at a time into the MP4 writer) and time should grow
with the number of windows. The seam metric compares the frame-to-frame change at window
boundaries with the change inside windows (ratio 1: no visible seam). Tiny weights are random,
so the seam figures only show the machinery works; real weights are needed for quality.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def one_run(weights: str, frames: int, schedule: str, out: str, seam: bool) -> dict:
    from engine import Engine, GenerationRequest
    from engine.humo.windows import WindowPlan, boundary_frames, seam_metric

    engine = Engine(weights)
    request = GenerationRequest(prompt="A person talks to the camera.", variant="tiny", mode="TI",
                                images=[str(ROOT / "assets" / "portrait.png")], frames=frames, width=64, height=64,
                                steps=2, seed=1, out_path=out, preview=False, window_schedule=schedule)
    start = time.perf_counter()
    result = None
    for event in engine.generate(request):
        if event.kind == "result":
            result = event
    took = time.perf_counter() - start
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    latent = (result.frames - 1) // 4 + 1
    plan = WindowPlan(schedule=schedule)
    row = {"frames": result.frames, "schedule": schedule, "windows": plan.count(latent), "seconds": round(took, 2),
           "peak_rss_mb": round(peak_mb, 1), "denoise_s": round(result.timings.get("denoise_s", 0.0), 2)}
    if seam:     # after the peak was read: decoding the whole MP4 here is for the metric only
        from engine.media import read_video_frames
        video = read_video_frames(out)
        edges = sorted(set(boundary_frames(plan, latent, 0)) | set(boundary_frames(plan, latent, 1)))
        row.update({f"seam_{k}": round(v, 3) for k, v in seam_metric(video, edges).items()})
    return row


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m engine.tools.long_bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--frames", type=int, nargs="+", default=[97, 385, 1537, 6145])
    p.add_argument("--schedules", nargs="+", default=["shifted", "fixed"])
    p.add_argument("--seam-frames", type=int, default=385, help="length of the runs that measure seams")
    p.add_argument("--weights", default=None, help="tiny weights folder (default: made in a temporary folder)")
    p.add_argument("--one", nargs=3, metavar=("FRAMES", "SCHEDULE", "SEAM"), help=argparse.SUPPRESS)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    tmp = tempfile.mkdtemp(prefix="humo-long-")
    if args.one:
        frames, schedule, seam = int(args.one[0]), args.one[1], args.one[2] == "1"
        print(json.dumps(one_run(args.weights, frames, schedule, str(Path(tmp) / "out.mp4"), seam)))
        return 0
    weights = args.weights
    if weights is None:
        from engine.tools.tiny import make_tiny
        weights = str(make_tiny(Path(tmp) / "weights"))
    runs = [(f, args.schedules[0], False) for f in args.frames]
    runs += [(args.seam_frames, s, True) for s in args.schedules]
    rows = []
    for frames, schedule, seam in runs:
        proc = subprocess.run([sys.executable, "-m", "engine.tools.long_bench", "--weights", weights,
                               "--one", str(frames), schedule, "1" if seam else "0"],
                              cwd=ROOT, capture_output=True, text=True)
        if proc.returncode != 0:
            print(f"{frames} frames ({schedule}) failed:\n{proc.stderr[-2000:]}", file=sys.stderr)
            return 1
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        if not args.json:
            r = rows[-1]
            extra = (f"  seam {r['seam_seam']:.3f} / inside {r['seam_inside']:.3f} = ratio {r['seam_ratio']:.3f}"
                     if seam else "")
            print(f"{r['frames']:>6} frames  {r['schedule']:<8} {r['windows']:>4} windows  {r['seconds']:>8.1f} s  "
                  f"peak RSS {r['peak_rss_mb']:>7.1f} MB{extra}", flush=True)
    if args.json:
        print(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
