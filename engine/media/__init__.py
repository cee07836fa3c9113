"""Media in and out: voice clips, reference photos, MP4 files and thumbnails.

Every decode and encode goes through the ffmpeg binary that imageio-ffmpeg ships (one
door: ffmpeg.py), so any format ffmpeg reads works the same on every machine, with no
system ffmpeg needed; facts about a file (sizes, rates, durations, tags) come from its
container headers through PyAV (container.py), never from parsing ffmpeg's messages.
Bad inputs become `InputError`s with one-line messages; a full disk becomes
`OutOfResources`; nothing is ever left half-written at the destination path.

The names below load their module on first use, so `import engine.media` (or one submodule,
such as files for atomic writes) does not pull in PIL, PyAV or librosa.

The pieces:
  ffmpeg      the bundled binary and every command line run with it; its failures as errors
  container   a file's streams and tags from its headers (PyAV)
  files       input path checks; atomic_write (temp file, fsync, rename), the disk-full error, file_sha256
  audio       audio_info, load_audio
  images      load_image, to_rgb, fit_size, fit_reference_image
  mp4_write   write_mp4
  mp4_read    probe_mp4, read_video_frames, read_mp4_audio
  thumbnails  make_thumbnail
  separation  separate_vocals (voice and background stems), mix
"""
from engine.errors import EngineError, InputError, OutOfResources

_WHERE = {
    "audio": ("MAX_AUDIO_SECONDS", "MIN_AUDIO_SECONDS", "SILENCE_PEAK", "audio_info", "load_audio"),
    "ffmpeg": ("ffmpeg_exe", "ffmpeg_failure", "replace_audio_track"),
    "files": ("atomic_write", "disk_full_error", "file_sha256", "fsync_dir", "is_disk_full"),
    "images": ("MAX_IMAGE_PIXELS", "SMALL_IMAGE_SIDE", "WORKING_MAX_SIDE", "fit_reference_image", "fit_size",
               "load_image", "to_rgb"),
    "mp4_read": ("probe_mp4", "read_mp4_audio", "read_video_frames"),
    "mp4_write": ("write_mp4",),
    "separation": ("METHOD_ONNX", "METHOD_SPECTRAL", "Separation", "find_kim_vocal_model", "mix", "separate_vocals"),
    "thumbnails": ("make_thumbnail",),
}
_MODULE_OF = {name: module for module, names in _WHERE.items() for name in names}

__all__ = ["EngineError", "InputError", "OutOfResources", *sorted(_MODULE_OF)]


def __getattr__(name: str):
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module 'engine.media' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f"engine.media.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
