"""Dubbing benchmark: time and peak memory for N minutes of 1080x1920 video on tiny MuseTalk 1.5 or
LatentSync 1.6 weights.

The long video is the real 10 s clip looped with ffmpeg (stream copy) into a temporary file, the
voice is the real speech clip looped to the same length. Each length runs in its own process,
so its peak resident memory (`ru_maxrss`) is its own; a flat pipeline shows about the same peak
for 1, 3 and 10 minutes. Tiny weights cost what the real ones cost in everything but the
networks (decode, face track, crops, parsing, paste, encode), so the figures are the pipeline's
overhead, not MuseTalk's speed.
"""
from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_MEDIA = ROOT.parent / "shared" / "media"
CLIP = "talk_1080x1920_25fps.mp4"
VOICE = "speech_9s_16k.wav"


def _looped(src: Path, dst: Path, seconds: float, *codec: str) -> Path:
    from engine.media.ffmpeg import ffmpeg_exe

    proc = subprocess.run([ffmpeg_exe(), "-hide_banner", "-nostdin", "-v", "error", "-y", "-stream_loop", "-1",
                           "-i", str(src), "-t", f"{seconds:.3f}", *codec, str(dst)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr.strip()[-300:])
    return dst


def run_one(video: str, audio: str, weights: str, out: str, batch_size: int, model: str = "musetalk-1.5",
            steps: int = 20) -> dict:
    """One dub in this process; returns time and peak memory."""
    from engine.dub.pipeline import Dubber
    from engine.dub.request import DubRequest

    t0 = time.monotonic()
    dubber = Dubber(weights, cache_dir=Path(out).parent / "tracks")
    result = None
    request = DubRequest(video=video, audio=audio, out_path=out, batch_size=batch_size, preview=False, model=model,
                         steps=steps)
    for ev in dubber.run(request):
        if ev.kind == "result":
            result = ev
    wall = time.monotonic() - t0
    rss_self = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    rss_children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    return {"frames": result.frames, "wall_s": wall, "timings": result.timings,
            "frames_per_s": result.frames / result.timings["dub_s"], "peak_rss_bytes": rss_self,
            "peak_rss_ffmpeg_bytes": rss_children}


def run_avatar(video: str, audio: str, weights: str, batch_size: int) -> dict:
    """Prepare an avatar from `video` once, then time `speak` on `audio` (frames per second)."""
    from engine.dub.avatar import Avatar
    from engine.dub.pipeline import Dubber
    from engine.dub.request import DubRequest
    from engine.media.audio import load_audio

    dubber = Dubber(weights, cache_dir=Path(weights).parent / "tracks")
    for _ in dubber.load():
        pass
    t0 = time.monotonic()
    avatar = Avatar.prepare(dubber, DubRequest(video=video, audio=audio, batch_size=batch_size))
    prepare_s = time.monotonic() - t0
    voice = load_audio(audio, 16000)
    t0 = time.monotonic()
    n = sum(1 for _ in avatar.speak(voice))
    speak_s = time.monotonic() - t0
    return {"avatar_frames": len(avatar.frames), "prepare_s": prepare_s, "spoken_frames": n, "speak_s": speak_s,
            "speak_frames_per_s": n / speak_s, "realtime_factor": n / speak_s / float(avatar.info.fps)}


def run_dub_bench(minutes: list[float], media_dir: str | Path | None = None, batch_size: int = 8,
                  on_report=None, avatar_seconds: float = 4.0, model: str = "musetalk-1.5", steps: int = 1) -> list[dict]:
    """`steps`: LatentSync's DDIM steps (memory does not depend on them; time per frame does)."""
    from engine.tools.tiny_latentsync import make_tiny_latentsync
    from engine.tools.tiny_musetalk import make_tiny_musetalk

    media = Path(media_dir or os.environ.get("HUMO_MEDIA_DIR") or DEFAULT_MEDIA)
    reports = []
    with tempfile.TemporaryDirectory(prefix="humo-bench-dub-") as tmp:
        tmp = Path(tmp)
        if model == "latentsync-1.6":
            make_tiny_latentsync(tmp / "weights")
            avatar_seconds = 0                               # avatars are MuseTalk's
        else:
            make_tiny_musetalk(tmp / "weights")
        for m in minutes:
            seconds = float(m) * 60
            video = _looped(media / CLIP, tmp / f"video_{m}.mp4", seconds, "-c", "copy", "-an")
            audio = _looped(media / VOICE, tmp / f"voice_{m}.wav", seconds, "-c:a", "pcm_s16le")
            cmd = [sys.executable, "-m", "engine.tools.bench_dub", str(video), str(audio), str(tmp / "weights"),
                   str(tmp / f"out_{m}.mp4"), str(batch_size), model, str(steps)]
            proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
            if proc.returncode != 0:
                report = {"minutes": m, "error": (proc.stderr.strip().splitlines() or ["?"])[-1]}
            else:
                report = {"minutes": m, "model": model, **json.loads(proc.stdout.strip().splitlines()[-1])}
            (tmp / f"out_{m}.mp4").unlink(missing_ok=True)
            video.unlink()
            reports.append(report)
            if on_report is not None:
                on_report(report)
        if avatar_seconds > 0:
            clip = _looped(media / CLIP, tmp / "avatar.mp4", avatar_seconds, "-c", "copy", "-an")
            voice = _looped(media / VOICE, tmp / "avatar.wav", avatar_seconds, "-ss", "0.4", "-c:a", "pcm_s16le")
            cmd = [sys.executable, "-m", "engine.tools.bench_dub", "avatar", str(clip), str(voice),
                   str(tmp / "weights"), str(batch_size)]
            proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
            report = ({"avatar_seconds": avatar_seconds, **json.loads(proc.stdout.strip().splitlines()[-1])}
                      if proc.returncode == 0 else {"avatar_seconds": avatar_seconds,
                                                    "error": (proc.stderr.strip().splitlines() or ["?"])[-1]})
            reports.append(report)
            if on_report is not None:
                on_report(report)
    return reports


def format_report(r: dict) -> str:
    if "avatar_seconds" in r:
        if "error" in r:
            return f"avatar: failed: {r['error']}"
        return (f"prepared avatar ({r['avatar_frames']} frames of 1080x1920, prepared in {r['prepare_s']:.0f} s): "
                f"speaks {r['spoken_frames']} frames in {r['speak_s']:.1f} s = {r['speak_frames_per_s']:.2f} frames/s "
                f"({r['realtime_factor']:.2f}x real time)")
    if "error" in r:
        return f"{r['minutes']:g} min: failed: {r['error']}"
    t = r["timings"]
    return (f"{r.get('model', 'musetalk-1.5')}: {r['minutes']:g} min of 1080x1920 ({r['frames']} frames): "
            f"{r['wall_s']:.0f} s in all "
            f"(face track {t['track_s']:.0f} s, dubbing {t['dub_s']:.0f} s = {r['frames_per_s']:.2f} frames/s), "
            f"peak RSS {r['peak_rss_bytes'] / 2**20:.0f} MiB (ffmpeg children {r['peak_rss_ffmpeg_bytes'] / 2**20:.0f} MiB)")


if __name__ == "__main__":
    if sys.argv[1] == "avatar":
        video, audio, weights, batch = sys.argv[2:6]
        print(json.dumps(run_avatar(video, audio, weights, int(batch))))
    else:
        video, audio, weights, out, batch, model, steps = sys.argv[1:8]
        print(json.dumps(run_one(video, audio, weights, out, int(batch), model, int(steps))))
