"""Video in, streaming: `probe_video` (size, exact frame rate, frame count, rotation, audio) and
`read_frames` (uint8 frames in batches from an ffmpeg pipe; never the whole video in memory).

Frame timing comes from the packet list (`-c copy -f framecrc`, no decoding): the time base and
each packet's timestamp give the exact rate as a fraction (30000/1001, not 29.97) and tell a
variable frame rate apart from a constant one. Rotation metadata is honoured the way ffmpeg
does it when decoding: the frames come out upright, and the reported size is the upright size.
"""
from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Iterator

import numpy as np

from engine.errors import InputError
from engine.media.ffmpeg import ffmpeg_exe, run_ffmpeg
from engine.media.files import _check_file

UHD_PIXELS = 3840 * 2160
_IMAGE_FORMATS = ("image2", "png_pipe", "jpeg_pipe", "webp_pipe", "bmp_pipe", "tiff_pipe", "gif_pipe",
                  "pam_pipe", "ppm_pipe", "pgm_pipe", "qoi_pipe", "j2k_pipe", "jpegxl_pipe")
_IMAGE_CODECS = ("png", "mjpeg", "bmp", "webp", "tiff", "jpeg2000", "ppm", "pgm", "qoi", "jpegxl")


@dataclass
class VideoInfo:
    """What a video is. `width`/`height` are the upright (rotation applied) size."""
    path: str
    width: int
    height: int
    fps: Fraction                 # exact for a constant rate; the average rate for a variable one
    frames: int                   # video packets in the file (the decoder may differ by one for VFR)
    duration_s: float
    rotation: int                 # degrees, as the display matrix says (0, 90, 180, 270)
    has_audio: bool
    codec: str
    variable_rate: bool = False
    notices: list[str] = field(default_factory=list)

    @property
    def frame_bytes(self) -> int:
        return self.width * self.height * 3


def _stream_lines(stderr: str, kind: str) -> list[str]:
    return re.findall(rf"Stream #\S+.*?: {kind}: (.*)", stderr)


def _rotation(stderr: str) -> int:
    m = re.search(r"rotation of (-?[\d.]+) degrees", stderr)
    if not m:
        return 0
    # ffmpeg prints the display matrix angle counter-clockwise; the frame turns the other way.
    return int(round(-float(m.group(1)))) % 360


def _packet_times(path: Path) -> tuple[Fraction, list[int], list[int]]:
    """(time base, sorted presentation timestamps, durations) of the first video stream's packets."""
    proc = run_ffmpeg(["-v", "error", "-i", str(path), "-map", "0:v:0", "-c", "copy", "-f", "framecrc", "-"])
    if proc.returncode != 0:
        raise InputError(f"Could not read the video {path.name}: the file is damaged (its frames cannot be read).",
                         hint="Export or download it again.")
    tb = Fraction(1, 1)
    pts: list[int] = []
    durs: list[int] = []
    for line in proc.stdout.decode("utf-8", "replace").splitlines():
        if line.startswith("#tb 0:"):
            num, den = line.split(":", 1)[1].strip().split("/")
            tb = Fraction(int(num), int(den))
        elif line and not line.startswith("#"):
            cols = [c.strip() for c in line.split(",")]
            if len(cols) >= 4 and cols[0] == "0":
                pts.append(int(cols[2]))
                durs.append(int(cols[3]))
    return tb, sorted(pts), durs


def _frame_rate(tb: Fraction, pts: list[int], durs: list[int]) -> tuple[Fraction, bool, float]:
    """(rate, variable?, duration in seconds) from packet timestamps."""
    n = len(pts)
    last_dur = durs[-1] if durs and durs[-1] > 0 else 0
    steps = np.diff(np.asarray(pts, dtype=np.int64)) if n > 1 else np.zeros(0, np.int64)
    step = int(np.median(steps)) if steps.size else (last_dur or 1)
    span = (pts[-1] - pts[0] + (last_dur or step)) if n else 0
    duration_s = float(span * tb)
    if step <= 0:
        raise InputError("The video's frame timestamps are broken (several frames share one time).",
                         hint="Re-encode it with a constant frame rate and try again.")
    variable = bool(steps.size) and bool(np.mean(np.abs(steps - step) > max(1, step // 10)) > 0.02)
    if not variable:
        return Fraction(1, 1) / (step * tb), False, duration_s
    return (Fraction(n) / (span * tb)).limit_denominator(1001), True, duration_s


def probe_video(path: str | os.PathLike) -> VideoInfo:
    """Check that `path` is a video ffmpeg can decode, and say what it is.

    One-line `InputError`s for: a missing or empty file, a corrupt file, an audio-only file,
    an image, a video stream without frames. A variable frame rate and 4K are accepted with
    a notice (decoded at the average rate; slow).
    """
    p = _check_file(path, "Video")
    if p.stat().st_size == 0:
        raise InputError(f"The video file {p.name} is empty (0 bytes).", hint="Export or download it again.")
    proc = run_ffmpeg(["-i", str(p)])
    stderr = proc.stderr.decode("utf-8", "replace")
    if "Input #0" not in stderr:
        raise InputError(f"Could not read the video {p.name}: it is damaged or not a video file.",
                         hint="Use an mp4, mov, mkv or webm video.")
    videos = [ln for ln in _stream_lines(stderr, "Video") if "(attached pic)" not in ln]
    audio = bool(_stream_lines(stderr, "Audio"))
    if not videos:
        if audio:
            raise InputError(f"{p.name} is an audio file: it has no picture to dub.",
                             hint="Give it as the voice (--audio) and choose a video of the person as the video.")
        raise InputError(f"{p.name} has no video stream.", hint="Use an mp4, mov, mkv or webm video.")
    fmt = re.search(r"Input #0, ([^,]+)", stderr)
    codec = videos[0].split()[0].strip(",")
    if (fmt and fmt.group(1) in _IMAGE_FORMATS) or codec in _IMAGE_CODECS and not audio and _single_frame(p):
        raise InputError(f"{p.name} is a still image, not a video.",
                         hint="Dubbing needs a video of the person talking (mp4, mov, mkv or webm).")
    size = re.search(r"\b(\d{1,5})x(\d{1,5})\b", videos[0])
    if not size:
        raise InputError(f"Could not read the picture size of {p.name}: the video stream is damaged.")
    width, height = int(size.group(1)), int(size.group(2))
    rotation = _rotation(stderr)
    if rotation in (90, 270):
        width, height = height, width
    tb, pts, durs = _packet_times(p)
    if not pts:
        raise InputError(f"The video {p.name} has no frames.", hint="Export or download it again.")
    fps, variable, duration_s = _frame_rate(tb, pts, durs)
    info = VideoInfo(path=str(p), width=width, height=height, fps=fps, frames=len(pts),
                     duration_s=duration_s, rotation=rotation, has_audio=audio, codec=codec,
                     variable_rate=variable)
    if variable:
        info.notices.append(f"{p.name} has a variable frame rate: it is read at its average rate of "
                            f"{float(fps):.3f} fps.")
        info.frames = max(1, round(duration_s * fps))
    if width * height >= UHD_PIXELS * 0.9:
        info.notices.append(f"{p.name} is {width}x{height} (4K): it is accepted, but dubbing it will be slow.")
    return info


def _single_frame(p: Path) -> bool:
    _, pts, _ = _packet_times(p)
    return len(pts) <= 1


def _decode_args(info: VideoInfo, pix_fmt: str, size: tuple[int, int] | None) -> list[str]:
    args = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-v", "error", "-i", info.path, "-map", "0:v:0"]
    filters = []
    if size is not None:
        filters.append(f"scale={size[0]}:{size[1]}:flags=area")
    if filters:
        args += ["-vf", ",".join(filters)]
    if info.variable_rate:
        args += ["-fps_mode", "cfr", "-r", f"{info.fps.numerator}/{info.fps.denominator}"]
    else:
        args += ["-fps_mode", "passthrough"]
    return args + ["-f", "rawvideo", "-pix_fmt", pix_fmt, "-"]


def read_frames(info: VideoInfo, batch: int = 8, *, pix_fmt: str = "bgr24",
                size: tuple[int, int] | None = None, max_frames: int | None = None) -> Iterator[np.ndarray]:
    """Decode frames as uint8 [n, H, W, 3] batches (n <= batch), upright, in display order.

    `pix_fmt` is "bgr24" (OpenCV order, the default) or "rgb24"; `size` (w, h) scales on the way
    out of ffmpeg (for a detector). Only one batch is in memory at a time; stopping the
    iteration early stops ffmpeg.
    """
    if pix_fmt not in ("bgr24", "rgb24"):
        raise ValueError(f"pix_fmt must be bgr24 or rgb24, not {pix_fmt}")
    w, h = size if size is not None else (info.width, info.height)
    frame_bytes = w * h * 3
    proc = subprocess.Popen(_decode_args(info, pix_fmt, size), stdin=subprocess.DEVNULL,  # stderr unread: a
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,              # full pipe would block
                            bufsize=frame_bytes * batch)
    done = 0
    try:
        while max_frames is None or done < max_frames:
            want = batch if max_frames is None else min(batch, max_frames - done)
            data = _read_exact(proc.stdout, frame_bytes * want)
            n = len(data) // frame_bytes
            if n == 0:
                break
            done += n
            yield np.frombuffer(data[: n * frame_bytes], dtype=np.uint8).reshape(n, h, w, 3)
            if n < want:
                break
        if max_frames is None or done < max_frames:
            proc.wait()
            if done == 0:       # the packets were there when probed: damaged data, or the file changed since
                raise InputError(f"The video {Path(info.path).name} has no frames that can be decoded: it is damaged "
                                 "or was changed after it was opened.", hint="Export or download it again.")
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        proc.stdout.close()


def _read_exact(stream, n: int) -> bytes:
    chunks = []
    left = n
    while left > 0:
        chunk = stream.read(left)
        if not chunk:
            break
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)
