"""Audio chores of the studio: read, trim, isolate the voice, mix the background back in.

The engine gets one finished clip (the one that drives the lips); everything a person
does to that clip before generating happens here.
"""
from __future__ import annotations

import functools
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.errors import InputError
from engine.media import atomic_write, file_sha256

MAX_ISOLATION_S = 180.0      # the preview is interactive: longer clips should be trimmed first
SILENCE_PEAK = 1e-3


STUDIO_SR = 44100          # stems and trimmed clips keep music quality; the engine resamples for whisper


def read_audio(path: str, sr: int = STUDIO_SR, start_s: float = 0.0, end_s: float | None = None
               ) -> tuple[np.ndarray, int]:
    """Mono float32 wave at `sr` (only [start_s, end_s] when given). Unreadable, empty, silent or
    too long clips -> InputError; a long file is refused from its header, before it is decoded."""
    from engine.media import MAX_AUDIO_SECONDS, load_audio

    if not path:
        raise InputError("No audio clip was given.", hint="Upload or record a voice clip.")
    return load_audio(path, sr=sr, max_seconds=MAX_AUDIO_SECONDS, start_s=start_s, end_s=end_s), sr


def describe(path: str | None) -> str:
    """One line about a clip for the page, or a readable problem."""
    if not path:
        return ""
    from engine.media import audio_info

    try:
        info = audio_info(path)
    except InputError as err:
        from engine.redact import redact_text
        return f"Problem: {redact_text(str(err))}"
    seconds = info.get("duration_s")
    length = f"{seconds:.1f} s" if seconds is not None else "unknown length"
    return f"Clip: {length}, {info.get('sample_rate')} Hz, {info.get('codec')}"


def write_wav(path: str | Path, wave: np.ndarray, sr: int) -> str:
    import soundfile as sf
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    peak = float(np.max(np.abs(wave))) if wave.size else 0.0
    if peak > 1.0:
        wave = wave / peak
    with atomic_write(path, what="the audio clip") as tmp:     # never a half-written clip under the final name
        sf.write(str(tmp), wave.astype(np.float32), sr, subtype="PCM_16", format="WAV")
    return str(path)


@dataclass
class Stems:
    vocals: str
    background: str
    method: str
    note: str
    source: str            # the trimmed clip both stems come from
    sr: int


def _key(path: str, start_s, end_s, *more) -> str:
    """The clip's content and trim (and `more`): the same clip uploaded again (a new path) finds its files."""
    st = os.stat(path)
    raw = "|".join(map(str, (_content(os.path.abspath(path), st.st_size, st.st_mtime_ns), float(start_s or 0),
                             float(end_s or 0), *more)))
    return hashlib.sha1(raw.encode()).hexdigest()[:16]


@functools.lru_cache(maxsize=32)
def _content(path: str, size: int, mtime_ns: int) -> str:
    return file_sha256(path)          # once per file version: a trim, a separation and a run share it


def trimmed_clip(path: str, start_s, end_s, workdir: str | Path) -> tuple[str, np.ndarray, int]:
    """The clip cut to [start, end] as a WAV in workdir (the original when nothing is cut). Only
    the kept part is decoded."""
    from engine.media import audio_info

    start = max(0.0, float(start_s or 0.0))
    end = float(end_s) if end_s not in (None, 0, 0.0) else None
    if not start and end is None:
        wave, sr = read_audio(path)
        return path, wave, sr
    if not path:
        raise InputError("No audio clip was given.", hint="Upload or record a voice clip.")
    total = audio_info(path).get("duration_s")
    if total is not None:
        keep_end = min(end, total) if end is not None else total
        if keep_end - start < 0.2:
            raise InputError(f"The trim keeps {max(keep_end - start, 0):.2f} s of a {total:.1f} s clip.",
                             hint="Set the end after the start (at least 0.2 s apart), or 0 to keep the rest.")
    try:
        cut, sr = read_audio(path, start_s=start, end_s=end)
    except InputError as err:
        if "silent" in str(err) or "too short" in str(err) or "no sound samples" in str(err):
            raise InputError("The trimmed part of the clip is silent or too short, so there is no voice to follow.",
                             hint="Move the trim start/end to the speech.") from None
        raise
    out = Path(workdir) / f"trim-{_key(path, start_s, end_s)}.wav"
    if not out.exists():
        write_wav(out, cut, sr)
    return str(out), cut, sr


def isolate(path: str, start_s, end_s, workdir: str | Path, models_dir: str | None = None) -> Stems:
    """Split the (trimmed) clip into voice and background stems, cached per clip + trim."""
    from engine.media import separate_vocals

    src, wave, sr = trimmed_clip(path, start_s, end_s, workdir)
    if wave.size / sr > MAX_ISOLATION_S:
        raise InputError(f"The clip is {wave.size / sr:.0f} s long; vocal isolation takes up to "
                         f"{MAX_ISOLATION_S:.0f} s.", hint="Trim the clip first (start/end).")
    from engine.media import find_kim_vocal_model

    # the method in the key: stems made before the Kim_Vocal_2 model was installed are made again
    key = _key(path, start_s, end_s, "kim" if find_kim_vocal_model(models_dir) else "spectral")
    work = Path(workdir)
    vocals_path, background_path = work / f"vocals-{key}.wav", work / f"background-{key}.wav"
    meta_path = work / f"stems-{key}.txt"
    if vocals_path.exists() and background_path.exists() and meta_path.exists():
        method, _, note = meta_path.read_text().partition("\n")
        return Stems(str(vocals_path), str(background_path), method, note, src, sr)
    sep = separate_vocals(wave, sr, method="auto", models_dir=models_dir)
    write_wav(vocals_path, np.asarray(sep.vocals, dtype=np.float32), sr)
    write_wav(background_path, np.asarray(sep.background, dtype=np.float32), sr)
    with atomic_write(meta_path, what="the stems note") as tmp:
        tmp.write_text(f"{sep.method}\n{sep.note or ''}")
    return Stems(str(vocals_path), str(background_path), sep.method, sep.note or "", src, sr)


def mix_wav(stems: Stems, gain: float, workdir: str | Path) -> str:
    """Voice + background at `gain`, written next to the stems."""
    from engine.media import mix

    import soundfile as sf

    vocals, sr = sf.read(stems.vocals, dtype="float32")
    background, _ = sf.read(stems.background, dtype="float32")
    n = min(vocals.size, background.size)
    mixed = mix(vocals[:n], background[:n], float(gain))
    out = Path(workdir) / f"mix-{Path(stems.vocals).stem}-{gain:.2f}.wav"
    return write_wav(out, np.asarray(mixed, dtype=np.float32), sr)


def replace_audio(video_path: str, audio_path: str) -> None:
    """Swap the MP4's audio track in place, keeping its video stream and metadata."""
    from engine.media import atomic_write, replace_audio_track

    with atomic_write(video_path, what="the video") as tmp:
        replace_audio_track(video_path, audio_path, tmp)
