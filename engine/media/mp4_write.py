"""MP4 out: `write_mp4` encodes frames (and audio, and settings as metadata) with H.264 + AAC,
writing beside the destination and renaming into place once complete."""
from __future__ import annotations

import errno
import json
import math
import os
import subprocess
import tempfile
from pathlib import Path
from typing import Iterable

import numpy as np

from engine.errors import EngineError, InputError
from engine.media.ffmpeg import _disk_full_error, ffmpeg_exe, ffmpeg_failure
from engine.media.files import _remove_quietly, _temp_path_beside

_METADATA_TAG = "comment"
_METADATA_ARG_LIMIT = 100_000


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


def _ffmeta_escape(text: str) -> str:
    out = []
    for ch in text:
        if ch in "=;#\\\n":
            out.append("\\")
        out.append(ch)
    return "".join(out)
