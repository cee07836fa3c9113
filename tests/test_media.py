"""engine.media: decoding voice clips and photos, the reference-image fit, MP4 writing and reading."""
from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from engine import media
from engine.errors import EngineError, InputError, OutOfResources
from media_fixtures import convert, png_with_size_header, rgb48_png, speak, tone_mix, write_wav

SR = 16000


def one_line(err: Exception) -> str:
    msg = str(err)
    assert msg and "\n" not in msg and "Traceback" not in msg
    return msg


# --------------------------------------------------------------------------- audio


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("clips")
    wav = speak(d / "speech.wav", "Good morning. This clip checks that every format decodes the same way.")
    out = {"wav": wav}
    out["mp3"] = convert(wav, d / "speech.mp3")
    out["m4a"] = convert(wav, d / "speech.m4a", "-c:a", "aac")
    out["ogg"] = convert(wav, d / "speech.ogg", "-c:a", "libvorbis")
    out["flac"] = convert(wav, d / "speech.flac")
    out["stereo48k"] = convert(wav, d / "speech_48k_stereo.wav", "-ac", "2", "-ar", "48000")
    out["aac_in_mp4"] = convert(wav, d / "speech_video_container.mp4", "-c:a", "aac")
    return out


@pytest.fixture(scope="module")
def reference_wave(clips) -> np.ndarray:
    return media.load_audio(clips["wav"])


@pytest.mark.parametrize("kind", ["wav", "mp3", "m4a", "ogg", "flac", "stereo48k", "aac_in_mp4"])
def test_load_audio_formats(clips, reference_wave, kind):
    wave = media.load_audio(clips[kind])
    assert wave.dtype == np.float32 and wave.ndim == 1
    # same clip, same length at 16 kHz (codecs may add or drop a few ms)
    assert abs(wave.size - reference_wave.size) < 0.06 * SR
    n = min(wave.size, reference_wave.size)
    corr = np.corrcoef(wave[:n], reference_wave[:n])[0, 1]
    assert corr > (0.999 if kind in ("wav", "flac", "stereo48k") else 0.9), corr
    assert 0.1 < np.max(np.abs(wave)) <= 1.5


def test_load_audio_resamples_to_requested_rate(clips, reference_wave):
    wave = media.load_audio(clips["stereo48k"], sr=24000)
    assert abs(wave.size - reference_wave.size * 1.5) < 0.01 * 24000


def test_stereo_is_averaged_to_mono(tmp_path):
    n = SR
    t = np.arange(n) / SR
    left = 0.5 * np.sin(2 * np.pi * 300 * t)
    right = -0.5 * np.sin(2 * np.pi * 300 * t) + 0.3 * np.sin(2 * np.pi * 700 * t)
    path = write_wav(tmp_path / "lr.wav", np.stack([left, right], axis=1), SR)
    wave = media.load_audio(path)
    expected = 0.15 * np.sin(2 * np.pi * 700 * t)  # the 300 Hz parts cancel
    assert np.abs(wave - expected).max() < 2e-3


def test_surround_and_video_sources(tmp_path, clips, reference_wave):
    surround = convert(clips["wav"], tmp_path / "speech51.flac", "-af", "pan=5.1(side)|FL=c0|FR=c0|FC=c0|LFE=c0|SL=c0|SR=c0")
    assert media.audio_info(surround)["channels"] == 6
    wave = media.load_audio(surround)
    n = min(wave.size, reference_wave.size)
    assert np.abs(wave[:n] - reference_wave[:n]).max() < 1e-3  # six equal channels average to the voice
    video = media.write_mp4(moving_frames(90, 32, 32), tmp_path / "talk.mp4", audio=reference_wave[: 3 * SR])
    heard = media.load_audio(video)
    assert abs(heard.size - 3 * SR) < 0.05 * SR
    assert np.corrcoef(heard[: 2 * SR], reference_wave[: 2 * SR])[0, 1] > 0.9


def test_audio_info(clips):
    info = media.audio_info(clips["stereo48k"])
    assert info["sample_rate"] == 48000 and info["channels"] == 2
    assert info["duration_s"] == pytest.approx(media.load_audio(clips["wav"]).size / SR, abs=0.05)


@pytest.mark.parametrize("value", [None, "", "  "])
def test_no_audio_path(value):
    with pytest.raises(InputError) as e:
        media.load_audio(value)
    assert "No audio file" in one_line(e.value)


def test_missing_audio(tmp_path):
    with pytest.raises(InputError) as e:
        media.load_audio(tmp_path / "nope.wav")
    assert "not found" in one_line(e.value) and "nope.wav" in str(e.value)


def test_corrupt_audio(tmp_path):
    bad = tmp_path / "broken.mp3"
    bad.write_bytes(np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8).tobytes())
    with pytest.raises(InputError) as e:
        media.load_audio(bad)
    assert "not an audio file or it is damaged" in one_line(e.value)


def test_image_given_as_audio(tmp_path):
    img = tmp_path / "photo.wav"
    Image.new("RGB", (32, 32), (1, 2, 3)).save(img, format="PNG")
    with pytest.raises(InputError) as e:
        media.load_audio(img)
    assert "no audio track" in one_line(e.value)


def test_empty_audio_file(tmp_path):
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    with pytest.raises(InputError) as e:
        media.load_audio(empty)
    assert "empty" in one_line(e.value)


def test_audio_with_zero_samples(tmp_path):
    path = write_wav(tmp_path / "zero.wav", np.zeros(0), SR)
    with pytest.raises(InputError) as e:
        media.load_audio(path)
    assert "no sound samples" in one_line(e.value)


@pytest.mark.parametrize("level", [0.0, 2e-5])
def test_silent_audio(tmp_path, level):
    path = write_wav(tmp_path / "quiet.wav", np.full(SR, level), SR)
    with pytest.raises(InputError) as e:
        media.load_audio(path)
    assert "silent" in one_line(e.value)


def test_too_short_audio(tmp_path):
    path = write_wav(tmp_path / "blip.wav", tone_mix(int(0.1 * SR), SR, amp=0.5), SR)
    with pytest.raises(InputError) as e:
        media.load_audio(path)
    msg = one_line(e.value)
    assert "too short" in msg and "0.10 s" in msg and "0.2 s" in msg


def test_too_long_audio(tmp_path):
    path = write_wav(tmp_path / "long.wav", tone_mix(5 * SR, SR, amp=0.5), SR)
    with pytest.raises(InputError) as e:
        media.load_audio(path, max_seconds=3)
    msg = one_line(e.value)
    assert "too long" in msg and "5.0 s" in msg and "3.0 s" in msg and "Trim" in msg
    ok = media.load_audio(path, max_seconds=5.5)
    assert ok.size == 5 * SR


# --------------------------------------------------------------------------- images


def test_cmyk_jpeg(tmp_path):
    p = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (300, 300), (0, 255, 255, 0)).save(p, quality=95)
    img, notices = media.load_image(p)
    assert img.mode == "RGB" and img.size == (300, 300)
    r, g, b = img.getpixel((150, 150))
    assert r > 240 and g < 15 and b < 15
    assert notices == []


def test_grayscale(tmp_path):
    p = tmp_path / "gray.png"
    Image.new("L", (300, 260), 77).save(p)
    img, _ = media.load_image(p)
    assert img.mode == "RGB" and img.getpixel((5, 5)) == (77, 77, 77)


def test_16bit_grayscale_png_keeps_its_range(tmp_path):
    arr = np.zeros((260, 300), np.uint16)
    arr[:, 150:] = 65535
    arr[:, 100:150] = 32896  # ~ half
    p = tmp_path / "gray16.png"
    Image.fromarray(arr).save(p)
    assert Image.open(p).mode.startswith("I")
    img, _ = media.load_image(p)
    assert img.getpixel((10, 10)) == (0, 0, 0)
    assert img.getpixel((120, 10)) == (128, 128, 128)
    assert img.getpixel((200, 10)) == (255, 255, 255)


def test_dark_16bit_png_stays_dark(tmp_path):
    p = tmp_path / "dark16.png"
    Image.fromarray(np.full((260, 300), 200, np.uint16)).save(p)  # 200/65535: nearly black
    img, _ = media.load_image(p)
    assert img.getpixel((0, 0)) == (1, 1, 1)


def test_32bit_integer_image_object():
    arr = np.full((300, 300), 1000, np.int32)
    arr[:, :150] = 0
    img, _ = media.load_image(Image.fromarray(arr, mode="I"))
    assert img.mode == "RGB"
    assert img.getpixel((10, 10)) == (0, 0, 0) and img.getpixel((200, 10))[0] == 4  # 1000/65535*255


def test_16bit_rgb_png(tmp_path):
    arr = np.zeros((260, 300, 3), np.uint16)
    arr[..., 0] = 65535
    arr[:, 150:, 2] = 65535
    p = rgb48_png(tmp_path / "rgb48.png", arr)
    img, _ = media.load_image(p)
    assert img.mode == "RGB"
    assert img.getpixel((10, 10)) == (255, 0, 0) and img.getpixel((200, 10)) == (255, 0, 255)


def test_rgba_composited_on_white(tmp_path):
    arr = np.zeros((260, 300, 4), np.uint8)
    arr[:, :100] = (0, 0, 0, 0)        # transparent -> white
    arr[:, 100:200] = (0, 0, 0, 255)   # opaque black
    arr[:, 200:] = (0, 0, 0, 128)      # half black over white
    p = tmp_path / "rgba.png"
    Image.fromarray(arr, "RGBA").save(p)
    img, _ = media.load_image(p)
    assert img.getpixel((50, 5)) == (255, 255, 255)
    assert img.getpixel((150, 5)) == (0, 0, 0)
    assert abs(img.getpixel((250, 5))[0] - 127) <= 1


def test_gray_with_alpha(tmp_path):
    p = tmp_path / "la.png"
    Image.new("LA", (300, 300), (0, 0)).save(p)
    img, _ = media.load_image(p)
    assert img.getpixel((0, 0)) == (255, 255, 255)


def test_palette_with_transparency(tmp_path):
    pal = Image.new("P", (300, 300), 1)
    pal.putpalette([0, 0, 0, 200, 10, 10] + [0] * 762)
    pal.paste(0, (0, 0, 100, 300))
    p = tmp_path / "pal.gif"
    pal.save(p, transparency=0)
    img, _ = media.load_image(p)
    assert img.getpixel((50, 50)) == (255, 255, 255)
    assert img.getpixel((200, 50)) == (200, 10, 10)


def test_exif_orientation_applied(tmp_path):
    arr = np.zeros((200, 400, 3), np.uint8)
    arr[:, :200] = (255, 0, 0)  # left half red
    arr[:, 200:] = (0, 0, 255)
    src = Image.fromarray(arr)
    exif = src.getexif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    p = tmp_path / "rotated.jpg"
    src.save(p, exif=exif.tobytes(), quality=95)
    img, _ = media.load_image(p)
    assert img.size == (200, 400)
    top, bottom = img.getpixel((100, 50)), img.getpixel((100, 350))
    assert top[0] > 200 and top[2] < 60 and bottom[2] > 200 and bottom[0] < 60


def test_huge_jpeg_is_reduced_quickly(tmp_path):
    p = tmp_path / "big.jpg"
    arr = np.zeros((8000, 8000, 3), np.uint8)
    arr[:, 4000:] = (0, 255, 0)
    Image.fromarray(arr).save(p, quality=70)
    del arr
    t = time.perf_counter()
    img, notices = media.load_image(p)
    elapsed = time.perf_counter() - t
    assert max(img.size) <= media.WORKING_MAX_SIDE and img.size[0] == img.size[1]
    assert img.getpixel((10, 10))[1] < 30 and img.getpixel((img.width - 10, 10))[1] > 220
    assert any("8000x8000" in n for n in notices)
    assert elapsed < 5.0


def test_huge_png_thumbnail(tmp_path):
    p = tmp_path / "wide.png"
    Image.new("RGB", (8000, 1000), (9, 99, 199)).save(p, compress_level=1)
    img, notices = media.load_image(p)
    assert img.size == (media.WORKING_MAX_SIDE, 256) and img.getpixel((5, 5)) == (9, 99, 199)
    assert notices


def test_decompression_bomb_refused(tmp_path):
    p = png_with_size_header(tmp_path / "bomb.png", 20000, 20000)
    with pytest.raises(InputError) as e:
        media.load_image(p)
    msg = one_line(e.value)
    assert "too large" in msg and "20000x20000" in msg
    assert Image.MAX_IMAGE_PIXELS is not None  # the process-wide guard is left as it was


def test_tiny_image_allowed_with_notice(tmp_path):
    p = tmp_path / "tiny.png"
    Image.new("RGB", (16, 16), (10, 20, 30)).save(p)
    img, notices = media.load_image(p)
    assert img.size == (16, 16)
    assert len(notices) == 1 and "upscaled" in notices[0] and "16x16" in notices[0]


@pytest.mark.parametrize("content", [b"just some text, not pixels\n", b""])
def test_not_an_image(tmp_path, content):
    p = tmp_path / "notes.png"
    p.write_bytes(content)
    with pytest.raises(InputError) as e:
        media.load_image(p)
    one_line(e.value)


def test_truncated_image(tmp_path):
    good = tmp_path / "good.jpg"
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (300, 300, 3), dtype=np.uint8)).save(good)
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(good.read_bytes()[:2000])
    with pytest.raises(InputError) as e:
        media.load_image(cut)
    assert "damaged" in one_line(e.value)


def test_missing_image(tmp_path):
    with pytest.raises(InputError) as e:
        media.load_image(tmp_path / "face.jpg")
    assert "not found" in one_line(e.value)


# --------------------------------------------------------------------------- reference fit (SPEC §3)


def _white_cols(arr: np.ndarray) -> list[int]:
    return [x for x in range(arr.shape[2]) if np.all(arr[:, :, x] == 1.0)]


def _white_rows(arr: np.ndarray) -> list[int]:
    return [y for y in range(arr.shape[1]) if np.all(arr[:, y, :] == 1.0)]


def test_fit_wide_image_pads_top_and_bottom():
    img = Image.new("RGB", (30, 10), (255, 0, 0))  # ratio 3 > 16/16
    arr = media.fit_reference_image(img, 16, 16)
    assert arr.shape == (3, 16, 16) and arr.dtype == np.float32
    # scaled to 16 x floor(16/3)=5; dh = 11 -> top pad 5, bottom pad 6
    assert _white_rows(arr) == [0, 1, 2, 3, 4, 10, 11, 12, 13, 14, 15]
    content = arr[:, 5:10, :]
    assert np.allclose(content[0], 1.0) and np.allclose(content[1:], -1.0)


def test_fit_tall_image_pads_left_and_right():
    img = Image.new("RGB", (10, 30), (0, 0, 255))
    arr = media.fit_reference_image(img, 16, 16)
    # scaled to floor(16/3)=5 x 16; dw = 11 -> left pad 5
    assert _white_cols(arr) == [0, 1, 2, 3, 4, 10, 11, 12, 13, 14, 15]
    assert np.allclose(arr[2, :, 5:10], 1.0) and np.allclose(arr[:2, :, 5:10], -1.0)


def test_fit_asymmetric_target_and_odd_pad():
    # 7x5 (ratio 1.4) into 12x8 (ratio 1.5): height 8, width floor(8*1.4)=11, dw=1 -> left pad 0
    img = Image.new("RGB", (7, 5), (0, 0, 0))
    assert media.fit_size(7, 5, 12, 8) == (11, 8, 0, 0)
    arr = media.fit_reference_image(img, 12, 8)
    assert arr.shape == (3, 8, 12)
    assert _white_cols(arr) == [11]
    assert np.allclose(arr[:, :, :11], -1.0)
    # 5x7 into 9x12 (ratio 0.714 < 0.75): height 12, width floor(12*5/7)=8, left pad 0; right column white
    assert media.fit_size(5, 7, 9, 12) == (8, 12, 0, 0)
    # 9x2 into 8x8: width 8, height floor(8/4.5)=1, dh=7 -> top pad 3
    assert media.fit_size(9, 2, 8, 8) == (8, 1, 0, 3)
    arr = media.fit_reference_image(Image.new("RGB", (9, 2), (0, 0, 0)), 8, 8)
    assert _white_rows(arr) == [0, 1, 2, 4, 5, 6, 7]


def test_fit_matches_lanczos_of_the_picture():
    rng = np.random.default_rng(3)
    src = Image.fromarray(rng.integers(0, 255, (40, 64, 3), dtype=np.uint8))
    arr = media.fit_reference_image(src, 32, 32)
    # 64x40 (ratio 1.6) -> 32x20, top pad 6
    expect = np.asarray(src.resize((32, 20), Image.Resampling.LANCZOS), np.float32) / 127.5 - 1
    assert np.array_equal(arr[:, 6:26, :], expect.transpose(2, 0, 1))
    assert arr.min() >= -1.0 and arr.max() <= 1.0


def test_fit_converts_rgba_on_white():
    img = Image.new("RGBA", (16, 16), (0, 0, 0, 0))
    assert np.all(media.fit_reference_image(img, 16, 16) == 1.0)


# --------------------------------------------------------------------------- MP4 out and back


def moving_frames(n: int, h: int, w: int) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    frames = np.empty((n, h, w, 3), np.uint8)
    for i in range(n):
        frames[i, ..., 0] = (x * 255 // max(1, w - 1) + 3 * i) % 256
        frames[i, ..., 1] = y * 255 // max(1, h - 1)
        frames[i, ..., 2] = 128
    return frames


def sine(seconds: float, sr: int = SR) -> np.ndarray:
    t = np.arange(int(round(seconds * sr))) / sr
    return (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)


METADATA = {"prompt": "A woman sings; 'quotes', = signs, #hash, back\\slash\nand a new line. 你好",
            "seed": 1234, "steps": 50, "scales": [5.0, 5.5], "variant": "humo-1.7b", "nested": {"a": None}}


def test_mp4_round_trip_audio_shorter(tmp_path):
    out = media.write_mp4(moving_frames(50, 96, 128), tmp_path / "a.mp4", fps=25, audio=sine(1.3),
                          audio_sr=SR, metadata=METADATA)
    assert out == str(tmp_path / "a.mp4")
    info = media.probe_mp4(out)
    assert (info["width"], info["height"], info["fps"]) == (128, 96, 25.0)
    assert info["has_audio"]
    assert info["frames"] == 33  # ceil(1.3 s * 25)
    assert info["video_duration_s"] == pytest.approx(1.3, abs=1 / 25)
    assert info["audio_duration_s"] == pytest.approx(1.3, abs=1 / 25)
    assert info["duration_s"] == pytest.approx(1.3, abs=1 / 25 + 0.01)
    assert info["metadata"] == METADATA
    assert sorted(os.listdir(tmp_path)) == ["a.mp4"]


def test_mp4_very_long_metadata(tmp_path):
    # beyond what one command-line argument may carry
    meta = {"prompt": ("a long prompt; with = and # and \\ and\nlines " * 5000), "seed": 7}
    assert len(json.dumps(meta)) > 200_000
    out = media.write_mp4(moving_frames(6, 32, 32), tmp_path / "long.mp4", audio=sine(1.0), metadata=meta)
    info = media.probe_mp4(out)
    assert info["metadata"] == meta and info["frames"] == 6 and info["has_audio"]
    assert sorted(os.listdir(tmp_path)) == ["long.mp4"]


def test_mp4_round_trip_video_shorter(tmp_path):
    frames = moving_frames(20, 64, 64)
    out = media.write_mp4(frames, tmp_path / "b.mp4", audio=sine(2.0), audio_sr=SR)
    info = media.probe_mp4(out)
    assert info["frames"] == 20 and info["has_audio"]
    assert info["audio_duration_s"] == pytest.approx(0.8, abs=1 / 25)
    assert info["duration_s"] == pytest.approx(0.8, abs=1 / 25 + 0.01)
    assert info["metadata"] == {}
    decoded = media.read_video_frames(out)
    assert decoded.shape == frames.shape
    assert np.abs(decoded.astype(int) - frames.astype(int)).mean() < 6
    heard = media.read_mp4_audio(out, sr=SR)
    n = min(heard.size, int(0.8 * SR))
    assert abs(heard.size - 0.8 * SR) < 0.05 * SR
    ref = sine(0.8)[:n]
    assert np.corrcoef(heard[:n], ref)[0, 1] > 0.95


def test_mp4_without_audio_and_from_a_generator(tmp_path):
    frames = moving_frames(12, 48, 80)
    out = media.write_mp4((f for f in frames), tmp_path / "c.mp4", fps=25)
    info = media.probe_mp4(out)
    assert info["frames"] == 12 and not info["has_audio"] and info["audio_duration_s"] is None
    assert info["duration_s"] == pytest.approx(12 / 25, abs=0.01)


def test_mp4_odd_size_is_padded(tmp_path):
    out = media.write_mp4(moving_frames(5, 47, 63), tmp_path / "odd.mp4")
    info = media.probe_mp4(out)
    assert (info["width"], info["height"], info["frames"]) == (64, 48, 5)


def test_mp4_creates_the_folder(tmp_path):
    out = media.write_mp4(moving_frames(3, 32, 32), tmp_path / "new" / "deeper" / "d.mp4")
    assert Path(out).is_file()


def _leftovers(folder: Path) -> list[str]:
    return sorted(os.listdir(folder))


def test_failing_ffmpeg_leaves_nothing(tmp_path):
    with pytest.raises(EngineError) as e:
        media.write_mp4(moving_frames(10, 32, 32), tmp_path / "x.mp4", audio=sine(0.4), preset="no-such-preset")
    assert "ffmpeg failed" in one_line(e.value)
    assert _leftovers(tmp_path) == []


def test_failing_frame_source_leaves_nothing(tmp_path):
    def frames():
        yield from moving_frames(4, 32, 32)
        raise RuntimeError("decoder crashed")

    with pytest.raises(RuntimeError):
        media.write_mp4(frames(), tmp_path / "y.mp4", audio=sine(1.0))
    assert _leftovers(tmp_path) == []


def test_failed_rewrite_keeps_the_old_file(tmp_path):
    path = tmp_path / "keep.mp4"
    media.write_mp4(moving_frames(8, 32, 32), path, metadata={"take": 1})
    before = path.read_bytes()
    bad = moving_frames(8, 32, 32)
    bad_list = list(bad[:4]) + [np.zeros((16, 16, 3), np.uint8)]  # a frame of the wrong size
    with pytest.raises(InputError) as e:
        media.write_mp4(bad_list, path, metadata={"take": 2})
    assert "same size" in one_line(e.value)
    assert path.read_bytes() == before and _leftovers(tmp_path) == ["keep.mp4"]
    assert media.probe_mp4(path)["metadata"] == {"take": 1}


def test_destination_that_is_a_folder(tmp_path):
    (tmp_path / "taken.mp4").mkdir()
    with pytest.raises(EngineError) as e:
        media.write_mp4(moving_frames(3, 32, 32), tmp_path / "taken.mp4")
    one_line(e.value)
    assert _leftovers(tmp_path) == ["taken.mp4"] and (tmp_path / "taken.mp4").is_dir()


def test_disk_full_from_ffmpeg_is_out_of_resources(tmp_path):
    # /dev/full answers every write with ENOSPC: the real message ffmpeg prints on a full disk.
    proc = subprocess.run([media.ffmpeg_exe(), "-v", "error", "-nostdin", "-y", "-f", "lavfi", "-i",
                           "testsrc=size=64x64:rate=25", "-t", "1", "-f", "rawvideo", "/dev/full"],
                          capture_output=True, text=True)
    assert proc.returncode != 0
    err = media.ffmpeg_failure(proc.stderr, tmp_path / "out.mp4")
    assert isinstance(err, OutOfResources)
    assert "Disk full while writing the video" in one_line(err) and "free some space" in str(err)
    other = media.ffmpeg_failure("Unknown encoder 'x'", tmp_path / "out.mp4")
    assert not isinstance(other, OutOfResources)


def test_bad_frame_array(tmp_path):
    with pytest.raises(InputError):
        media.write_mp4(np.zeros((0, 32, 32, 3), np.uint8), tmp_path / "e.mp4")
    with pytest.raises(InputError):
        media.write_mp4(np.zeros((3, 32, 32), np.uint8), tmp_path / "e.mp4")
    assert _leftovers(tmp_path) == []


def test_probe_not_a_video(tmp_path):
    p = tmp_path / "fake.mp4"
    p.write_bytes(b"\x00" * 100)
    with pytest.raises(InputError):
        media.probe_mp4(p)


# --------------------------------------------------------------------------- thumbnails


def test_thumbnail_from_frames_and_from_video(tmp_path):
    frames = np.zeros((9, 240, 320, 3), np.uint8)
    frames[4] = (200, 30, 30)  # the middle frame
    thumb = media.make_thumbnail(frames, tmp_path / "t.jpg")
    with Image.open(thumb) as im:
        assert im.format == "JPEG" and im.size == (256, 192)
        r, g, b = im.convert("RGB").getpixel((128, 96))
        assert r > 170 and g < 60
    video = media.write_mp4(frames, tmp_path / "v.mp4")
    thumb2 = media.make_thumbnail(video, tmp_path / "t.png", max_side=100)
    with Image.open(thumb2) as im:
        assert im.format == "PNG" and im.size == (100, 75)
        assert im.convert("RGB").getpixel((50, 37))[0] > 170
    assert sorted(os.listdir(tmp_path)) == ["t.jpg", "t.png", "v.mp4"]
