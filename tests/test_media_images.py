"""engine.media: loading photos (modes, orientation, huge and broken files) and the reference-image fit."""
from __future__ import annotations

import time

import numpy as np
import pytest
from PIL import Image

from engine import media
from engine.errors import InputError
from media_common import one_line
from media_fixtures import png_with_size_header, rgb48_png


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
