"""Media in and out: voice clips, reference photos, MP4 files and thumbnails.

Every decode and encode goes through the ffmpeg binary that imageio-ffmpeg ships, so
any format ffmpeg reads works the same on every machine, with no system ffmpeg needed.
Bad inputs become `InputError`s with one-line messages; a full disk becomes
`OutOfResources`; nothing is ever left half-written at the destination path.

The pieces:
  ffmpeg      the bundled binary, running it, its failures as errors
  files       input path checks; temporary files beside a destination
  audio       audio_info, load_audio
  images      load_image, to_rgb, fit_size, fit_reference_image
  mp4_write   write_mp4
  mp4_read    probe_mp4, read_video_frames, read_mp4_audio
  thumbnails  make_thumbnail
"""
from engine.errors import EngineError, InputError, OutOfResources
from engine.media.audio import MIN_AUDIO_SECONDS, SILENCE_PEAK, audio_info, load_audio
from engine.media.ffmpeg import ffmpeg_exe, ffmpeg_failure
from engine.media.images import (MAX_IMAGE_PIXELS, SMALL_IMAGE_SIDE, WORKING_MAX_SIDE, fit_reference_image,
                                 fit_size, load_image, to_rgb)
from engine.media.mp4_read import probe_mp4, read_mp4_audio, read_video_frames
from engine.media.mp4_write import write_mp4
from engine.media.thumbnails import make_thumbnail

__all__ = [
    "MAX_IMAGE_PIXELS", "MIN_AUDIO_SECONDS", "SILENCE_PEAK", "SMALL_IMAGE_SIDE", "WORKING_MAX_SIDE",
    "EngineError", "InputError", "OutOfResources",
    "audio_info", "ffmpeg_exe", "ffmpeg_failure", "fit_reference_image", "fit_size", "load_audio", "load_image",
    "make_thumbnail", "probe_mp4", "read_mp4_audio", "read_video_frames", "to_rgb", "write_mp4",
]
