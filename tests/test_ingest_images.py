"""Per-record checks of ingest: image normalisation, GPS parsing, IMG_ID paths and sample keys."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
from hostile_corpus import (
    alpha_png,
    bomb_png,
    cmyk_jpeg,
    encode,
    marker_jpeg,
    noise_jpeg,
    palette_png,
    png16_grey,
    png16_rgb,
)
from PIL import Image

from geoconcept.ingest.images import normalise_image, output_size
from geoconcept.ingest.reasons import Rejected
from geoconcept.ingest.records import parse_gps, relative_image_path, sample_key


def _run(data: bytes, image_size: int = 48, max_pixels: int = 10_000_000) -> Image.Image:
    result = normalise_image(data, image_size=image_size, jpeg_quality=90, max_pixels=max_pixels)
    image = Image.open(io.BytesIO(result.jpeg))
    assert image.format == "JPEG"
    assert image.mode == "RGB"
    assert image.size == (result.width, result.height)
    return image


def _reason(data: bytes, **kwargs: int) -> Rejected:
    with pytest.raises(Rejected) as info:
        normalise_image(
            data,
            image_size=kwargs.get("image_size", 48),
            jpeg_quality=90,
            max_pixels=kwargs.get("max_pixels", 10_000_000),
        )
    return info.value


@pytest.mark.parametrize(
    ("size", "image_size", "expected"),
    [((200, 120), 48, (80, 48)), ((120, 200), 48, (48, 80)), ((40, 30), 48, (40, 30)), ((48, 100), 48, (48, 100))],
)
def test_output_size_shorter_side_never_upscaled(size, image_size, expected):
    assert output_size(*size, image_size) == expected


def test_large_jpeg_is_downscaled_close_to_a_full_decode():
    data = noise_jpeg(800, 600, seed=3)
    ours = _run(data, image_size=100)
    assert ours.size == (133, 100)
    # Reference: full decode then one bicubic resize. Draft decoding must not cost visible quality.
    reference = Image.open(io.BytesIO(data)).convert("RGB").resize((133, 100), Image.Resampling.BICUBIC)
    diff = np.abs(np.asarray(ours, np.int16) - np.asarray(reference, np.int16))
    assert diff.mean() < 4


def test_small_image_is_not_upscaled():
    assert _run(noise_jpeg(40, 30, seed=4), image_size=48).size == (40, 30)


def test_an_upright_rgb_jpeg_at_its_size_is_kept_byte_for_byte_and_exif_is_never_kept():
    plain = noise_jpeg(40, 30, seed=5)
    assert normalise_image(plain, image_size=48, jpeg_quality=90, max_pixels=10_000_000).jpeg == plain
    with_exif = io.BytesIO()
    exif = Image.Exif()
    exif[0x010F] = "CameraMaker"  # any EXIF tag: it might as well be the GPS of the photographer's home
    Image.open(io.BytesIO(plain)).save(with_exif, "JPEG", quality=95, exif=exif)
    stored = normalise_image(with_exif.getvalue(), image_size=48, jpeg_quality=90, max_pixels=10_000_000).jpeg
    assert stored != with_exif.getvalue()
    assert "exif" not in Image.open(io.BytesIO(stored)).info


@pytest.mark.parametrize(
    ("orientation", "size", "red_corner"),
    [
        (1, (60, 30), "top_left"),
        (3, (60, 30), "bottom_right"),
        (6, (30, 60), "top_right"),
        (8, (30, 60), "bottom_left"),
    ],
)
def test_exif_orientation_is_applied(orientation, size, red_corner):
    image = _run(marker_jpeg(60, 30, orientation))
    assert image.size == size
    w, h = image.size
    corners = {"top_left": (2, 2), "top_right": (w - 3, 2), "bottom_left": (2, h - 3), "bottom_right": (w - 3, h - 3)}
    for name, xy in corners.items():
        r, g, b = image.getpixel(xy)
        assert (r > 150 and b < 100) == (name == red_corner), (name, (r, g, b))


def test_sixteen_bit_grey_png_keeps_its_brightness():
    image = _run(png16_grey(24, 16, 40_000))  # 40000/65535 of full scale
    assert all(abs(c - 156) <= 3 for c in image.getpixel((12, 8)))


def test_sixteen_bit_rgb_png():
    r, g, b = _run(png16_rgb(24, 16, (65_535, 0, 32_768))).getpixel((12, 8))
    assert r > 240 and g < 15 and abs(b - 128) < 10


def test_alpha_is_composited_on_white():
    image = _run(alpha_png(40))
    r, g, b = image.getpixel((5, 20))
    assert r > 230 and g < 30 and b < 30
    assert min(image.getpixel((35, 20))) > 240


def test_palette_with_transparency():
    image = _run(palette_png(40))
    r, g, b = image.getpixel((5, 20))
    assert g > 170 and r < 40 and b < 40
    assert min(image.getpixel((35, 20))) > 240


def test_cmyk_jpeg_becomes_rgb():
    r, g, b = _run(cmyk_jpeg(40)).getpixel((20, 20))
    assert r > 200 and g < 60 and b < 60


def test_other_formats_and_modes():
    assert _run(encode(Image.new("1", (30, 30), 1), "PNG")).getpixel((1, 1)) == (255, 255, 255)
    assert _run(encode(Image.new("RGB", (30, 30), (10, 200, 10)), "WEBP", lossless=True)).size == (30, 30)
    assert _run(encode(Image.new("RGB", (60, 30), (10, 200, 10)), "GIF")).size == (60, 30)


@pytest.mark.parametrize(
    ("data", "status", "words"),
    [
        (b"", "corrupt_image", "empty"),
        (b"not an image at all", "corrupt_image", "not an image"),
        (b"\xff\xd8\xff\xe0" + bytes(range(256)) * 4, "corrupt_image", ""),
        (noise_jpeg(64, 64, seed=9)[:700], "corrupt_image", "truncated"),
        (encode(Image.new("RGB", (8, 8)), "PPM"), "corrupt_image", "supported format"),
        (bomb_png(), "too_large", ""),
    ],
    ids=["empty", "text", "garbage_jpeg", "truncated_jpeg", "unsupported_format", "bomb"],
)
def test_bad_images_are_rejected_with_a_reason(data, status, words):
    rejected = _reason(data)
    assert rejected.status == status
    assert words.lower() in rejected.detail.lower()


def test_pixel_limit_is_checked_from_the_header():
    rejected = _reason(noise_jpeg(120, 100, seed=2), max_pixels=10_000)
    assert rejected.status == "too_large"
    assert "120x100" in rejected.detail


@pytest.mark.parametrize(
    ("lat", "lon", "ok"),
    [
        ("48.85", "2.35", True),
        ("-90", "180", True),
        (" 1e1 ", "-180.0", True),
        ("91", "0", False),
        ("0", "181", False),
        ("-90.0001", "0", False),
        ("NaN", "0", False),
        ("0", "inf", False),
        ("", "0", False),
        ("0", None, False),
        ("north", "0", False),
        ("1_0", "0", False),
        ("45,5", "0", False),
    ],
)
def test_parse_gps(lat, lon, ok):
    la, lo, problem = parse_gps(lat, lon)
    assert (problem is None) == ok
    if ok:
        assert math.isfinite(la) and math.isfinite(lo)


def test_parse_gps_keeps_out_of_range_values_and_names_the_problem():
    lat, lon, problem = parse_gps("91", "nope")
    assert lat == 91.0 and lon is None
    assert "LAT 91 is outside [-90, 90]" in problem and "LON is not a number" in problem


@pytest.mark.parametrize(
    ("img_id", "path"),
    [
        ("3c/41/2386536419.jpg", "3c/41/2386536419.jpg"),
        ("./a//b.jpg", "a/b.jpg"),
        ("with space/é 東京.jpg", "with space/é 東京.jpg"),
        ("..hidden/x..y.jpg", "..hidden/x..y.jpg"),
    ],
)
def test_relative_image_path_accepts(img_id, path):
    assert relative_image_path(img_id) == path


@pytest.mark.parametrize("img_id", ["", "/etc/passwd", "../x.jpg", "a/../../x.jpg", "a/..", ".", "./", "a\x00b"])
def test_relative_image_path_rejects(img_id):
    with pytest.raises(Rejected) as info:
        relative_image_path(img_id)
    assert info.value.status == "bad_id"


def test_sample_key_is_a_stable_hex_hash():
    key = sample_key("3c/41/2386536419.jpg")
    assert key == sample_key("3c/41/2386536419.jpg")
    assert len(key) == 20 and all(c in "0123456789abcdef" for c in key)
    assert key != sample_key("3c/41/2386536418.jpg")
    assert sample_key("") is None
