"""Media in and out: voice clips, reference photos, MP4 files and thumbnails.

Every decode and encode goes through the ffmpeg binary that imageio-ffmpeg ships, so
any format ffmpeg reads works the same on every machine, with no system ffmpeg needed.
Bad inputs become `InputError`s with one-line messages; a full disk becomes
`OutOfResources`; nothing is ever left half-written at the destination path.
"""
from __future__ import annotations

import errno
import json
import math
import os
import re
import subprocess
import tempfile
import threading
import uuid
import warnings
from pathlib import Path
from typing import Any, Iterable

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from engine.errors import EngineError, InputError, OutOfResources

# Audio limits.
MIN_AUDIO_SECONDS = 0.2
SILENCE_PEAK = 1e-4

# Image limits: the decompression-bomb guard (pixels) and the working size kept after loading.
MAX_IMAGE_PIXELS = 200_000_000
WORKING_MAX_SIDE = 2048
SMALL_IMAGE_SIDE = 256

_PIL_GUARD_LOCK = threading.Lock()
_METADATA_TAG = "comment"
_METADATA_ARG_LIMIT = 100_000


# --------------------------------------------------------------------------- ffmpeg


def ffmpeg_exe() -> str:
    """Path of the bundled ffmpeg binary (or $HUMO_FFMPEG when set)."""
    override = os.environ.get("HUMO_FFMPEG")
    if override:
        return override
    try:
        import imageio_ffmpeg
    except ImportError as err:  # pragma: no cover - a broken install
        raise EngineError("The imageio-ffmpeg package is missing.",
                          hint="Reinstall the requirements (./launch.sh installs them).") from err
    try:
        return imageio_ffmpeg.get_ffmpeg_exe()
    except RuntimeError as err:  # pragma: no cover - a broken install
        raise EngineError("No ffmpeg binary found.",
                          hint="Reinstall imageio-ffmpeg or set HUMO_FFMPEG to an ffmpeg binary.") from err


def _run_ffmpeg(args: list[str], *, input_bytes: bytes | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([ffmpeg_exe(), "-hide_banner", "-nostdin", *args],
                          input=input_bytes, capture_output=True, check=False)


def _is_disk_full(text: str) -> bool:
    return "No space left on device" in text or "ENOSPC" in text


def _disk_full_error(path: str | os.PathLike) -> OutOfResources:
    folder = os.path.dirname(os.path.abspath(path)) or "."
    return OutOfResources(f"Disk full while writing the video to {folder}: free some space and try again.")


def ffmpeg_failure(stderr: str, path: str | os.PathLike, what: str = "writing the video") -> EngineError:
    """Turn ffmpeg's error output into the error a person should see."""
    if _is_disk_full(stderr):
        return _disk_full_error(path)
    last = next((ln.strip() for ln in reversed(stderr.strip().splitlines()) if ln.strip()), "unknown error")
    return EngineError(f"ffmpeg failed while {what}: {last[:300]}")


# --------------------------------------------------------------------------- audio


def _check_file(path: str | os.PathLike | None, kind: str) -> Path:
    if path is None or str(path).strip() == "":
        raise InputError(f"No {kind.lower()} file was given.", hint=f"Choose or upload a {kind.lower()} file.")
    p = Path(path)
    if not p.exists():
        raise InputError(f"{kind} file not found: {p.name}.", hint="Check the path or upload the file again.")
    if p.is_dir():
        raise InputError(f"{p.name} is a folder, not {kind.lower()} file.", hint=f"Choose a {kind.lower()} file.")
    return p


def _parse_duration(stderr: str) -> float | None:
    m = re.search(r"Duration:\s*(\d+):(\d+):(\d+(?:\.\d+)?)", stderr)
    if not m:
        return None
    h, mnt, s = m.groups()
    return int(h) * 3600 + int(mnt) * 60 + float(s)


def audio_info(path: str | os.PathLike) -> dict[str, Any]:
    """Container-level facts: duration_s (None if unknown), sample_rate, channels, codec."""
    p = _check_file(path, "Audio")
    stderr = _run_ffmpeg(["-i", str(p)]).stderr.decode("utf-8", "replace")
    m = re.search(r"Stream #\S+.*?: Audio: ([^,\s]+).*?, (\d+) Hz, ([^,]+)", stderr)
    if not m:
        raise InputError(f"{p.name} has no audio track or is not a media file ffmpeg can read.",
                         hint="Use a wav, mp3, m4a, ogg or flac file.")
    layout = m.group(3).strip().split("(")[0]
    channels = {"mono": 1, "stereo": 2, "2.1": 3, "quad": 4, "4.0": 4, "5.0": 5, "5.1": 6, "6.1": 7, "7.1": 8}.get(layout)
    if channels is None:
        cm = re.match(r"(\d+) channels", layout)
        channels = int(cm.group(1)) if cm else None
    return {"duration_s": _parse_duration(stderr), "sample_rate": int(m.group(2)),
            "channels": channels, "codec": m.group(1)}


def _fmt_seconds(s: float) -> str:
    return f"{s:.1f} s" if s < 120 else f"{int(s // 60)} min {s % 60:.0f} s"


def load_audio(path: str | os.PathLike, sr: int = 16000, max_seconds: float | None = None) -> np.ndarray:
    """Decode any audio (or the first audio track of a video) to float32 mono at `sr`.

    Raises InputError for a missing, unreadable, empty, silent, too short or too long clip.
    """
    p = _check_file(path, "Audio")
    name = p.name
    if p.stat().st_size == 0:
        raise InputError(f"The audio file {name} is empty (0 bytes).", hint="Record or export the clip again.")
    # Decode every channel and average them here: ffmpeg's own downmix scales stereo by 1/sqrt(2)
    # per channel, which can push a loud centered voice past full scale.
    try:
        channels = audio_info(p)["channels"] or 1
    except InputError:
        channels = 1  # let the decode below say what is wrong
    channels = max(1, min(int(channels), 8))
    args = ["-v", "error", "-i", str(p), "-map", "0:a:0", "-vn", "-ac", str(channels), "-ar", str(int(sr))]
    if max_seconds is not None:
        # Decode a little past the limit only: enough to know it is too long, without reading an hour.
        args += ["-t", f"{float(max_seconds) + 1.0:.3f}"]
    args += ["-f", "f32le", "-"]
    proc = _run_ffmpeg(args)
    err = proc.stderr.decode("utf-8", "replace")
    if proc.returncode != 0:
        if "matches no streams" in err or "does not contain any stream" in err:
            raise InputError(f"{name} has no audio track.", hint="Upload a voice clip (wav, mp3, m4a, ogg, flac).")
        raise InputError(f"Could not read {name}: it is not an audio file or it is damaged.",
                         hint="Export it again as wav or mp3.")
    wave = np.frombuffer(proc.stdout, dtype="<f4").astype(np.float32)
    if channels > 1:
        wave = wave[: wave.size // channels * channels].reshape(-1, channels).mean(axis=1)
    if wave.size == 0:
        raise InputError(f"The audio file {name} contains no sound samples.", hint="Record or export the clip again.")
    if not np.all(np.isfinite(wave)):
        wave = np.nan_to_num(wave, nan=0.0, posinf=1.0, neginf=-1.0)
    seconds = wave.size / sr
    if max_seconds is not None and seconds > max_seconds + 0.5 / sr:
        info_len = None
        try:
            info_len = audio_info(p)["duration_s"]
        except InputError:
            pass
        length = _fmt_seconds(info_len) if info_len else f"more than {_fmt_seconds(max_seconds)}"
        raise InputError(f"The audio is too long: {length}, the limit is {_fmt_seconds(max_seconds)}.",
                         hint="Trim it to the part you want and upload it again.")
    if seconds < MIN_AUDIO_SECONDS:
        raise InputError(f"The audio is too short: {seconds:.2f} s, it needs at least {MIN_AUDIO_SECONDS} s.",
                         hint="Upload a longer voice clip.")
    if float(np.max(np.abs(wave))) < SILENCE_PEAK:
        raise InputError(f"The audio in {name} is silent.", hint="Check the recording level and upload a clip with a voice.")
    return np.ascontiguousarray(wave)


# --------------------------------------------------------------------------- images


def _to_8bit_gray(img: Image.Image) -> Image.Image:
    """High-bit-depth and float grayscale ("I;16", "I", "F") to "L" by range, not by clipping."""
    arr = np.asarray(img).astype(np.float64)
    top = float(arr.max()) if arr.size else 0.0
    if img.mode.startswith("I;16"):
        arr = arr / 257.0  # 16-bit samples: the full 0..65535 range maps to 0..255
    elif img.mode == "F" and top <= 1.0:
        arr = arr * 255.0
    elif top > 255.0:
        # 32-bit integers or floats: assume a 16-bit range unless the values go beyond it
        arr = arr / (65535.0 if top <= 65535.0 else top) * 255.0
    return Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), "L")


def _composite_on_white(img: Image.Image) -> Image.Image:
    rgba = img.convert("RGBA")
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(white, rgba).convert("RGB")


def to_rgb(img: Image.Image) -> Image.Image:
    """Any PIL mode to RGB; transparency becomes white."""
    mode = img.mode
    if mode == "RGB":
        return img
    if mode == "P":
        has_alpha = "transparency" in img.info or (img.palette is not None and img.palette.mode == "RGBA")
        return _composite_on_white(img) if has_alpha else img.convert("RGB")
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        return _composite_on_white(img)
    if mode == "L" and "transparency" in img.info:
        return _composite_on_white(img)
    if mode in ("L", "1"):
        return img.convert("L").convert("RGB")
    if mode.startswith("I") or mode == "F":
        return _to_8bit_gray(img).convert("RGB")
    return img.convert("RGB")  # CMYK, YCbCr, LAB, HSV, RGBX


def _open_guarded(path: Path) -> Image.Image:
    # Pillow's own bomb guard refuses around 179 MP; ours allows up to MAX_IMAGE_PIXELS and
    # refuses above it with a message. The global is swapped under a lock just for the open.
    with _PIL_GUARD_LOCK:
        saved = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                img = Image.open(path)
        finally:
            Image.MAX_IMAGE_PIXELS = saved
    w, h = img.size
    if w <= 0 or h <= 0:
        img.close()
        raise InputError(f"The image {path.name} has no pixels.", hint="Use a JPEG or PNG photo.")
    if w * h > MAX_IMAGE_PIXELS:
        img.close()
        raise InputError(f"The image {path.name} is too large: {w}x{h} ({w * h / 1e6:.0f} megapixels, "
                         f"the limit is {MAX_IMAGE_PIXELS / 1e6:.0f}).", hint="Resize it to a few thousand pixels a side.")
    return img


def load_image(path: str | os.PathLike | Image.Image) -> tuple[Image.Image, list[str]]:
    """Open a reference photo as an upright RGB image, plus notices for the user.

    Large photos are reduced early (JPEG draft mode, then a thumbnail) to at most
    WORKING_MAX_SIDE a side so memory stays low; tiny ones are kept with a notice.
    """
    notices: list[str] = []
    if isinstance(path, Image.Image):
        img, name = path, "The image"
        close_after = False
    else:
        p = _check_file(path, "Image")
        name = p.name
        if p.stat().st_size == 0:
            raise InputError(f"The image file {name} is empty (0 bytes).", hint="Upload a JPEG or PNG photo.")
        try:
            img = _open_guarded(p)
        except UnidentifiedImageError as err:
            raise InputError(f"{name} is not an image file, or its format is not supported.", hint="Upload a JPEG, PNG or WebP photo.") from err
        except (OSError, SyntaxError, ValueError) as err:
            raise InputError(f"Could not read the image {name}: it is damaged or not an image.",
                             hint="Export it again as JPEG or PNG.") from err
        close_after = True
    try:
        orig_w, orig_h = img.size
        try:
            if img.format == "JPEG" and max(orig_w, orig_h) > WORKING_MAX_SIDE:
                # Decode at 1/2, 1/4 or 1/8 scale directly: an 8000x8000 JPEG never fills memory.
                img.draft("RGB", (WORKING_MAX_SIDE, WORKING_MAX_SIDE))
            img.load()
            exif_before = img.getexif() if hasattr(img, "getexif") else None
            if max(img.size) > WORKING_MAX_SIDE:
                img.thumbnail((WORKING_MAX_SIDE, WORKING_MAX_SIDE), Image.Resampling.LANCZOS)
                if exif_before is not None and not img.getexif():
                    img.info["exif"] = exif_before.tobytes()
            out = ImageOps.exif_transpose(img)
            out = to_rgb(out)
            if out is img:
                out = img.copy()
        except (OSError, SyntaxError, ValueError) as err:
            raise InputError(f"Could not read the image {name}: it is damaged or truncated.",
                             hint="Export it again as JPEG or PNG.") from err
    finally:
        if close_after:
            img.close()
    if max(orig_w, orig_h) > WORKING_MAX_SIDE:
        notices.append(f"The image is {orig_w}x{orig_h}; it was reduced to {out.width}x{out.height} on loading.")
    if max(orig_w, orig_h) < SMALL_IMAGE_SIDE:
        notices.append(f"The image is only {orig_w}x{orig_h} pixels: it will be upscaled and the result will look soft.")
    return out, notices


def fit_size(img_w: int, img_h: int, width: int, height: int) -> tuple[int, int, int, int]:
    """SPEC §3: the scaled size inside (width, height) and the top-left offset on the canvas."""
    ratio = img_w / img_h
    if ratio > width / height:
        new_w, new_h = width, math.floor(width / ratio)
    else:
        new_w, new_h = math.floor(height * ratio), height
    new_w, new_h = max(1, min(width, new_w)), max(1, min(height, new_h))
    return new_w, new_h, (width - new_w) // 2, (height - new_h) // 2


def fit_reference_image(img: Image.Image, width: int, height: int) -> np.ndarray:
    """SPEC §3 reference image: LANCZOS fit inside (W, H), centered on white, as float32 [3, H, W] in [-1, 1]."""
    img = to_rgb(img)
    new_w, new_h, left, top = fit_size(img.width, img.height, width, height)
    scaled = img.resize((new_w, new_h), Image.Resampling.LANCZOS)
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    canvas.paste(scaled, (left, top))
    arr = np.asarray(canvas, dtype=np.float32) / 127.5 - 1.0
    return np.ascontiguousarray(arr.transpose(2, 0, 1))


# --------------------------------------------------------------------------- video out


def _temp_path_beside(path: Path, suffix: str) -> Path:
    return path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.part{suffix}")


def _remove_quietly(p: Path | None) -> None:
    if p is None:
        return
    try:
        p.unlink()
    except FileNotFoundError:
        pass
    except OSError:
        pass


def _frame_iter(frames) -> tuple[Iterable[np.ndarray], int | None]:
    if isinstance(frames, np.ndarray):
        if frames.ndim != 4 or frames.shape[-1] != 3:
            raise InputError(f"Video frames must be [N, H, W, 3] uint8, got shape {tuple(frames.shape)}.")
        if frames.shape[0] == 0:
            raise InputError("No frames to write.")
        return frames, frames.shape[0]
    return frames, None


def _as_uint8(frame) -> np.ndarray:
    frame = np.asarray(frame)
    if frame.dtype != np.uint8:
        frame = np.clip(np.rint(frame), 0, 255).astype(np.uint8)
    return frame


def write_mp4(frames, path: str | os.PathLike, fps: float = 25, audio: np.ndarray | None = None,
              audio_sr: int = 16000, metadata: dict | None = None, *, crf: int = 18,
              preset: str = "veryfast") -> str:
    """Encode uint8 RGB frames [N, H, W, 3] (an array or an iterable of frames) as H.264 MP4.

    Audio (float mono or [n, channels]) is muxed as AAC; the clip is cut to the shorter of
    video and audio. `metadata` is stored as JSON in the MP4 comment tag (see `probe_mp4`).
    The file appears at `path` only once it is complete.
    """
    path = Path(path)
    if fps <= 0:
        raise InputError(f"Frame rate must be positive, got {fps}.")
    path.parent.mkdir(parents=True, exist_ok=True)
    frame_source, n_frames = _frame_iter(frames)

    audio_arr = None
    if audio is not None:
        audio_arr = np.asarray(audio, dtype=np.float32)
        if audio_arr.ndim == 2 and audio_arr.shape[0] in (1, 2) and audio_arr.shape[1] > 2:
            audio_arr = audio_arr.T  # [channels, n] -> [n, channels]
        if audio_arr.ndim == 1:
            audio_arr = audio_arr[:, None]
        if audio_arr.size == 0:
            audio_arr = None
    if audio_arr is not None and n_frames is not None:
        # The shorter of the two wins: drop frames past the audio, and audio past the frames.
        audio_s = audio_arr.shape[0] / audio_sr
        n_frames = max(1, min(n_frames, math.ceil(audio_s * fps - 1e-6)))
        frame_source = frame_source[:n_frames]
        audio_arr = audio_arr[: int(round(n_frames / fps * audio_sr))]

    tmp_video = _temp_path_beside(path, ".mp4")
    tmp_audio = tmp_meta = None
    err_file = tempfile.TemporaryFile()
    proc = None
    try:
        if audio_arr is not None:
            tmp_audio = _temp_path_beside(path, ".f32")
            try:
                with open(tmp_audio, "wb") as fh:
                    fh.write(np.clip(audio_arr, -1.0, 1.0).astype("<f4").tobytes())
            except OSError as err:
                if err.errno == errno.ENOSPC:
                    raise _disk_full_error(path) from err
                raise

        it = iter(frame_source)
        try:
            first = _as_uint8(next(it))
        except StopIteration:
            raise InputError("No frames to write.") from None
        if first.ndim != 3 or first.shape[2] != 3:
            raise InputError(f"Video frames must be [H, W, 3] uint8, got shape {tuple(first.shape)}.")
        h, w = first.shape[:2]

        cmd = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-y", "-v", "error",
               "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{w}x{h}", "-r", f"{fps}", "-i", "-"]
        if tmp_audio is not None:
            cmd += ["-f", "f32le", "-ar", str(int(audio_sr)), "-ac", str(audio_arr.shape[1]), "-i", str(tmp_audio)]
        cmd += ["-map", "0:v:0"]
        if tmp_audio is not None:
            cmd += ["-map", "1:a:0", "-c:a", "aac", "-b:a", "160k", "-ar", "44100" if audio_sr < 32000 else str(int(audio_sr))]
        if w % 2 or h % 2:
            # yuv420p needs even sizes: add one row/column on the right/bottom rather than fail.
            cmd += ["-vf", "pad=ceil(iw/2)*2:ceil(ih/2)*2:0:0"]
        cmd += ["-c:v", "libx264", "-preset", preset, "-crf", str(int(crf)), "-pix_fmt", "yuv420p",
                "-movflags", "+faststart+use_metadata_tags"]
        if metadata is not None:
            text = json.dumps(metadata, ensure_ascii=False, default=str)
            if len(text.encode("utf-8")) < _METADATA_ARG_LIMIT:
                cmd += ["-metadata", f"{_METADATA_TAG}={text}"]
            else:
                # One command-line argument may not exceed 128 KiB on Linux: pass big settings
                # (a very long prompt) through an ffmetadata file instead.
                tmp_meta = _temp_path_beside(path, ".ffmeta")
                with open(tmp_meta, "w", encoding="utf-8") as fh:
                    fh.write(";FFMETADATA1\n" + _ffmeta_escape(_METADATA_TAG) + "=" + _ffmeta_escape(text) + "\n")
                meta_index = 2 if tmp_audio is not None else 1
                cmd[cmd.index("-map"):cmd.index("-map")] = ["-f", "ffmetadata", "-i", str(tmp_meta)]
                cmd += ["-map_metadata", str(meta_index)]
        cmd += ["-f", "mp4", str(tmp_video)]

        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=err_file)
        written = 0
        try:
            frame = first
            while True:
                if frame.shape != (h, w, 3):
                    raise InputError(f"All frames must have the same size: frame {written} is "
                                     f"{frame.shape[1]}x{frame.shape[0]}, the first is {w}x{h}.")
                proc.stdin.write(np.ascontiguousarray(frame).tobytes())
                written += 1
                if n_frames is not None and written >= n_frames:
                    break
                try:
                    frame = _as_uint8(next(it))
                except StopIteration:
                    break
            proc.stdin.close()
        except (BrokenPipeError, ConnectionResetError):
            pass  # ffmpeg stopped early; its exit status and message tell why
        rc = proc.wait()
        err_file.seek(0)
        stderr = err_file.read().decode("utf-8", "replace")
        if rc != 0:
            raise ffmpeg_failure(stderr, path)
        try:
            os.replace(tmp_video, path)
        except OSError as err:
            if err.errno == errno.ENOSPC:
                raise _disk_full_error(path) from err
            raise EngineError(f"Could not save the video as {path}: {err.strerror or err}.",
                              hint="Choose another file name or folder.") from err
        tmp_video = None
        return str(path)
    except OSError as err:
        if err.errno == errno.ENOSPC:
            raise _disk_full_error(path) from err
        raise
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        err_file.close()
        _remove_quietly(tmp_video)
        _remove_quietly(tmp_audio)
        _remove_quietly(tmp_meta)


# --------------------------------------------------------------------------- video in


def _ffmeta_escape(text: str) -> str:
    out = []
    for ch in text:
        if ch in "=;#\\\n":
            out.append("\\")
        out.append(ch)
    return "".join(out)


def _parse_ffmetadata(text: str) -> dict[str, str]:
    """Parse ffmpeg's ffmetadata format (global section only), undoing its backslash escapes."""
    tags: dict[str, str] = {}
    lines = text.split("\n")
    i = 0
    while i < len(lines):
        line = lines[i]
        i += 1
        if not line or line.startswith(";") or line.startswith("#"):
            continue
        if line.startswith("["):
            break  # a stream or chapter section: the global tags are done
        while line.endswith("\\") and not line.endswith("\\\\") and i < len(lines):
            line = line[:-1] + "\n" + lines[i]
            i += 1
        key, out, esc = [], [], False
        target = key
        for ch in line:
            if esc:
                target.append(ch)
                esc = False
            elif ch == "\\":
                esc = True
            elif ch == "=" and target is key:
                target = out
            else:
                target.append(ch)
        if target is out:
            tags["".join(key)] = "".join(out)
    return tags


def _progress_value(text: str, key: str) -> str | None:
    vals = re.findall(rf"^{key}=(\S+)$", text, flags=re.M)
    return vals[-1] if vals else None


def _stream_duration(path: Path, selector: str) -> tuple[int | None, float | None]:
    """(packets/frames, seconds) of one stream, by remuxing it to nothing."""
    proc = _run_ffmpeg(["-v", "error", "-i", str(path), "-map", selector, "-c", "copy",
                        "-f", "null", "-", "-progress", "pipe:1", "-nostats"])
    if proc.returncode != 0:
        return None, None
    out = proc.stdout.decode("utf-8", "replace")
    frames = _progress_value(out, "frame")
    us = _progress_value(out, "out_time_us")
    n = int(frames) if frames and frames.isdigit() else None
    secs = int(us) / 1e6 if us and us.lstrip("-").isdigit() and int(us) >= 0 else None
    return n, secs


def probe_mp4(path: str | os.PathLike) -> dict[str, Any]:
    """Read back what `write_mp4` wrote: frames, fps, width, height, duration_s, has_audio,
    audio_duration_s and the metadata dict (empty when the file has none)."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"Video file not found: {p.name}.")
    proc = _run_ffmpeg(["-i", str(p), "-f", "ffmetadata", "-"])
    stderr = proc.stderr.decode("utf-8", "replace")
    vm = re.search(r"Stream #\S+.*?: Video: (.*)", stderr)
    if proc.returncode != 0 or not vm:
        raise InputError(f"Could not read the video {p.name}: it is damaged or not a video.")
    vline = vm.group(1)
    size = re.search(r"\b(\d{2,5})x(\d{2,5})\b", vline)
    fps_m = re.search(r"([\d.]+)(k?) fps", vline)
    fps = float(fps_m.group(1)) * (1000 if fps_m and fps_m.group(2) else 1) if fps_m else None
    tags = _parse_ffmetadata(proc.stdout.decode("utf-8", "replace"))
    metadata: dict = {}
    raw = tags.get(_METADATA_TAG)
    if raw:
        try:
            loaded = json.loads(raw)
            metadata = loaded if isinstance(loaded, dict) else {"value": loaded}
        except json.JSONDecodeError:
            metadata = {"comment": raw}
    has_audio = re.search(r"Stream #\S+.*?: Audio: ", stderr) is not None
    n_frames, _ = _stream_duration(p, "0:v:0")
    audio_s = _stream_duration(p, "0:a:0")[1] if has_audio else None
    video_s = n_frames / fps if (n_frames and fps) else None
    return {
        "frames": n_frames,
        "fps": fps,
        "width": int(size.group(1)) if size else None,
        "height": int(size.group(2)) if size else None,
        "duration_s": _parse_duration(stderr),
        "video_duration_s": video_s,
        "has_audio": has_audio,
        "audio_duration_s": audio_s,
        "metadata": metadata,
    }


def read_video_frames(path: str | os.PathLike, max_frames: int | None = None) -> np.ndarray:
    """Decode a video to uint8 RGB frames [N, H, W, 3]."""
    info = probe_mp4(path)
    w, h = info["width"], info["height"]
    args = ["-v", "error", "-i", str(path), "-map", "0:v:0"]
    if max_frames is not None:
        args += ["-frames:v", str(int(max_frames))]
    args += ["-f", "rawvideo", "-pix_fmt", "rgb24", "-"]
    proc = _run_ffmpeg(args)
    if proc.returncode != 0:
        raise ffmpeg_failure(proc.stderr.decode("utf-8", "replace"), path, "reading the video")
    data = np.frombuffer(proc.stdout, dtype=np.uint8)
    return data[: data.size // (h * w * 3) * (h * w * 3)].reshape(-1, h, w, 3)


def read_mp4_audio(path: str | os.PathLike, sr: int = 16000) -> np.ndarray:
    """The audio track of a video as float32 mono at `sr` (empty if it has none)."""
    proc = _run_ffmpeg(["-v", "error", "-i", str(path), "-map", "0:a:0", "-ac", "1", "-ar", str(int(sr)),
                        "-f", "f32le", "-"])
    if proc.returncode != 0:
        return np.zeros(0, np.float32)
    return np.frombuffer(proc.stdout, dtype="<f4").astype(np.float32)


# --------------------------------------------------------------------------- thumbnails


def make_thumbnail(frames_or_video, path: str | os.PathLike, max_side: int = 256) -> str:
    """Write a small still (JPEG/PNG/WebP by extension) of the middle frame of a clip.

    Accepts a video path, frames [N, H, W, 3], one frame [H, W, 3] or a PIL image.
    """
    src = frames_or_video
    if isinstance(src, Image.Image):
        img = to_rgb(src).copy()
    elif isinstance(src, (str, os.PathLike)):
        info = probe_mp4(src)
        n = info["frames"] or 1
        frames = read_video_frames(src, max_frames=n // 2 + 1)
        if frames.shape[0] == 0:
            raise InputError(f"The video {Path(src).name} has no frames to make a thumbnail from.")
        img = Image.fromarray(frames[-1])
    else:
        arr = _as_uint8(src)
        if arr.ndim == 4:
            arr = arr[arr.shape[0] // 2]
        if arr.ndim != 3 or arr.shape[2] != 3:
            raise InputError(f"A thumbnail needs RGB frames, got shape {tuple(arr.shape)}.")
        img = Image.fromarray(arr)
    img.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".webp": "WEBP"}.get(path.suffix.lower(), "JPEG")
    tmp = _temp_path_beside(path, path.suffix)
    try:
        img.save(tmp, format=fmt, **({"quality": 88} if fmt in ("JPEG", "WEBP") else {}))
        os.replace(tmp, path)
        tmp = None
    except OSError as err:
        if err.errno == errno.ENOSPC:
            raise OutOfResources(f"Disk full while writing the thumbnail to {path.parent}: free some space and try again.") from err
        raise
    finally:
        _remove_quietly(tmp)
    return str(path)
