"""The one door to ffmpeg: finding the bundled binary, every command line the project runs
(decode audio, decode frames, encode H.264 + AAC, swap an audio track), and turning its
failures into errors a person can read. Nothing else in the project builds ffmpeg commands.
"""
from __future__ import annotations

import os
import subprocess
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Iterator

import numpy as np

from engine.errors import EngineError, InputError
from engine.media.files import disk_full_error, is_disk_full, remove_quietly, temp_path_beside

METADATA_TAG = "comment"            # where write_mp4 keeps the settings (JSON); probe_mp4 reads it back
_METADATA_ARG_LIMIT = 100_000       # one command-line argument may not exceed 128 KiB on Linux


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


def run_ffmpeg(args: list[str], *, input_bytes: bytes | None = None) -> subprocess.CompletedProcess:
    """ffmpeg with `args` (no log level set), its output captured."""
    return subprocess.run([ffmpeg_exe(), "-hide_banner", "-nostdin", *args],
                          input=input_bytes, capture_output=True, check=False)


def open_ffmpeg(args: list[str], **popen) -> subprocess.Popen:
    """ffmpeg with `args` as a running process, for reading or writing a stream through pipes."""
    return subprocess.Popen([ffmpeg_exe(), "-hide_banner", "-nostdin", *args], **popen)


def _run(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([ffmpeg_exe(), "-hide_banner", "-nostdin", "-v", "error", *args],
                          capture_output=True, check=False)


def _stderr(proc) -> str:
    return proc.stderr.decode("utf-8", "replace") if isinstance(proc.stderr, bytes) else (proc.stderr or "")


def ffmpeg_failure(stderr: str, path: str | os.PathLike, what: str = "writing the video") -> EngineError:
    """Turn ffmpeg's error output into the error a person should see."""
    if is_disk_full(stderr):
        return disk_full_error(path, "the video")
    last = next((ln.strip() for ln in reversed(stderr.strip().splitlines()) if ln.strip()), "unknown error")
    return EngineError(f"ffmpeg failed while {what}: {last[:300]}")


# ---------------------------------------------------------------------------- decoding

def decode_audio(path: str | os.PathLike, sr: int, channels: int, max_seconds: float | None = None) -> np.ndarray:
    """The first audio track as float32 [n, channels] at `sr` (at most `max_seconds`, when given).

    Raises InputError when there is no audio track or the file cannot be read.
    """
    name = Path(path).name
    args = ["-i", str(path), "-map", "0:a:0", "-vn", "-ac", str(int(channels)), "-ar", str(int(sr))]
    if max_seconds is not None:
        args += ["-t", f"{float(max_seconds):.3f}"]
    proc = _run(args + ["-f", "f32le", "-"])
    if proc.returncode != 0:
        err = _stderr(proc)
        if "matches no streams" in err or "does not contain any stream" in err:
            raise InputError(f"{name} has no audio track.", hint="Upload a voice clip (wav, mp3, m4a, ogg, flac).")
        raise InputError(f"Could not read {name}: it is not an audio file or it is damaged.",
                         hint="Export it again as wav or mp3.")
    wave = np.frombuffer(proc.stdout, dtype="<f4").astype(np.float32)
    return wave[: wave.size // channels * channels].reshape(-1, channels)


def decode_audio_mono(path: str | os.PathLike, sr: int, channels: int, *, start_s: float = 0.0,
                      end_s: float | None = None, limit_samples: int | None = None) -> tuple[np.ndarray, bool]:
    """The first audio track from `start_s` to `end_s` as float32 mono at `sr`: the `channels`
    channels are decoded and averaged a chunk at a time, so memory holds the mono result only.
    Stops once more than `limit_samples` came. Returns (wave, too_long); raises InputError when
    there is no audio track or the file cannot be read."""
    args = ["-v", "error"]
    if start_s:
        args += ["-ss", f"{start_s:.3f}"]
    args += ["-i", str(path), "-map", "0:a:0", "-vn", "-ac", str(int(channels)), "-ar", str(int(sr))]
    if end_s is not None:
        args += ["-t", f"{max(end_s - start_s, 0.0):.3f}"]
    frame = 4 * channels
    chunk = frame * 16000 * 8                   # about 8 s at 16 kHz per read
    parts, total, too_long, rest = [], 0, False, b""
    with tempfile.TemporaryFile() as errfile:
        proc = open_ffmpeg(args + ["-f", "f32le", "-"], stdout=subprocess.PIPE, stderr=errfile,
                           stdin=subprocess.DEVNULL)
        try:
            while True:
                data = proc.stdout.read(chunk)
                if not data:
                    break
                data = rest + data
                cut = len(data) // frame * frame
                rest = data[cut:]
                block = np.frombuffer(data[:cut], dtype="<f4")
                parts.append(block.reshape(-1, channels).mean(axis=1, dtype=np.float32) if channels > 1 else block.copy())
                total += parts[-1].size
                if limit_samples is not None and total > limit_samples:
                    too_long = True
                    break
        finally:
            if too_long:
                proc.kill()
            proc.stdout.close()
            returncode = proc.wait()
        errfile.seek(0)
        err = errfile.read().decode("utf-8", "replace")
    if returncode != 0 and not too_long:
        name = Path(path).name
        if "matches no streams" in err or "does not contain any stream" in err:
            raise InputError(f"{name} has no audio track.", hint="Upload a voice clip (wav, mp3, m4a, ogg, flac).")
        raise InputError(f"Could not read {name}: it is not an audio file or it is damaged.",
                         hint="Export it again as wav or mp3.")
    wave = np.concatenate(parts) if parts else np.zeros(0, np.float32)
    return np.ascontiguousarray(wave, dtype=np.float32), too_long


def decode_frames(path: str | os.PathLike, width: int, height: int, max_frames: int | None = None) -> np.ndarray:
    """The first video track as uint8 RGB frames [N, height, width, 3]."""
    args = ["-i", str(path), "-map", "0:v:0"]
    if max_frames is not None:
        args += ["-frames:v", str(int(max_frames))]
    proc = _run(args + ["-f", "rawvideo", "-pix_fmt", "rgb24", "-"])
    if proc.returncode != 0:
        raise ffmpeg_failure(_stderr(proc), path, "reading the video")
    frame = height * width * 3
    data = np.frombuffer(proc.stdout, dtype=np.uint8)
    return data[: data.size // frame * frame].reshape(-1, height, width, 3)


# ---------------------------------------------------------------------------- encoding

@contextmanager
def h264_encoder(out: Path, width: int, height: int, fps: float, *, audio: np.ndarray | None = None,
                 audio_sr: int = 16000, metadata: dict | None = None, crf: int = 18, preset: str = "veryfast",
                 dest: Path | None = None) -> Iterator[IO[bytes]]:
    """A pipe that takes rgb24 frames of `width` x `height` and encodes them as H.264 MP4 into `out`.

    `audio` (float32 [n, channels]) is muxed as AAC; `metadata` is stored as JSON in the comment tag.
    When the block ends ffmpeg is waited for, and its failure raised as an error about `dest`
    (default: `out`). Scratch files go beside `dest` and are removed afterwards.
    """
    dest = Path(dest or out)
    scratch: list[Path] = []
    err_file = tempfile.TemporaryFile()
    proc = None
    try:
        cmd = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-y", "-v", "error",
               "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}", "-r", f"{fps}", "-i", "-"]
        inputs = 1
        if audio is not None:
            audio_file = temp_path_beside(dest, ".f32")
            scratch.append(audio_file)
            with open(audio_file, "wb") as f:       # a second at a time: a long voice is not copied whole
                step = max(1, int(audio_sr))
                for i in range(0, len(audio), step):
                    f.write(np.clip(audio[i:i + step], -1.0, 1.0).astype("<f4").tobytes())
            cmd += ["-f", "f32le", "-ar", str(int(audio_sr)), "-ac", str(audio.shape[1]), "-i", str(audio_file)]
            inputs += 1
        maps = ["-map", "0:v:0"]
        if audio is not None:
            maps += ["-map", "1:a:0", "-c:a", "aac", "-b:a", "160k",
                     "-ar", "44100" if audio_sr < 32000 else str(int(audio_sr))]
        if metadata is not None:
            # Strict JSON; whether paths are kept is the caller's choice (engine.redact).
            from engine.redact import settings_json
            text = settings_json(metadata, names_only=False)
            if len(text.encode("utf-8")) < _METADATA_ARG_LIMIT:
                maps += ["-metadata", f"{METADATA_TAG}={text}"]
            else:
                # Big settings (a very long prompt) go through an ffmetadata file instead.
                meta_file = temp_path_beside(dest, ".ffmeta")
                scratch.append(meta_file)
                meta_file.write_text(f";FFMETADATA1\n{_ffmeta_escape(METADATA_TAG)}={_ffmeta_escape(text)}\n",
                                     encoding="utf-8")
                cmd += ["-f", "ffmetadata", "-i", str(meta_file)]
                maps += ["-map_metadata", str(inputs)]
        cmd += maps
        if width % 2 or height % 2:
            # yuv420p needs even sizes: add one row/column on the right/bottom rather than fail.
            cmd += ["-vf", "pad=ceil(iw/2)*2:ceil(ih/2)*2:0:0"]
        cmd += ["-c:v", "libx264", "-preset", preset, "-crf", str(int(crf)), "-pix_fmt", "yuv420p",
                "-movflags", "+faststart+use_metadata_tags", "-f", "mp4", str(out)]

        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=err_file)
        try:
            yield proc.stdin
            proc.stdin.close()
        except (BrokenPipeError, ConnectionResetError):
            pass  # ffmpeg stopped early; its exit status and message tell why
        if proc.wait() != 0:
            err_file.seek(0)
            raise ffmpeg_failure(err_file.read().decode("utf-8", "replace"), dest)
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        err_file.close()
        for p in scratch:
            remove_quietly(p)


def _ffmeta_escape(text: str) -> str:
    out = []
    for ch in text:
        if ch in "=;#\\\n":
            out.append("\\")
        out.append(ch)
    return "".join(out)


def replace_audio_track(video: str | os.PathLike, audio: str | os.PathLike, out: str | os.PathLike) -> None:
    """Write `out`: the video stream and tags of `video` with `audio` as its AAC track (cut to the shorter)."""
    proc = _run(["-y", "-i", str(video), "-i", str(audio), "-map", "0:v:0", "-map", "1:a:0",
                 "-map_metadata", "0", "-c:v", "copy", "-c:a", "aac", "-b:a", "192k", "-shortest",
                 "-movflags", "+faststart", "-f", "mp4", str(out)])
    if proc.returncode != 0:
        err = _stderr(proc)
        if is_disk_full(err):
            raise disk_full_error(out, "the video")
        raise InputError("Could not mix the background back into the video.",
                         hint=(err.strip().splitlines() or ["ffmpeg failed"])[-1])
