"""The JPEG fast path (libjpeg-turbo through simplejpeg) against Pillow's path: same verdicts,
same reasons, near-identical pixels; unusual JPEGs are left to Pillow."""

from __future__ import annotations

import io

import numpy as np
import pytest
from hostile_corpus import cmyk_jpeg, encode, marker_jpeg, noise_jpeg
from PIL import Image

from geoconcept.ingest import images
from geoconcept.ingest.reasons import Rejected

SETTINGS = {"jpeg_quality": 90, "max_pixels": 10_000_000}


def _outcome(data: bytes, image_size: int) -> tuple[object, ...]:
    try:
        result = images.normalise_image(data, image_size=image_size, **SETTINGS)
    except Rejected as rejected:
        return ("rejected", rejected.status, rejected.detail)
    return ("ok", result.width, result.height, result.jpeg)


@pytest.fixture
def pillow_only(monkeypatch):
    """normalise_image as it is without the fast path: every image goes through Pillow."""

    def outcome(data: bytes, image_size: int) -> tuple[object, ...]:
        with monkeypatch.context() as patch:
            patch.setattr(images, "_normalise_jpeg_fast", lambda *args: None)
            return _outcome(data, image_size)

    return outcome


def _pixels(jpeg: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB"), np.int16)


@pytest.mark.parametrize(
    ("data", "image_size"),
    [
        (noise_jpeg(800, 600, seed=1), 100),  # DCT-scaled by 1/4 here, 1/2 by Pillow's draft
        (noise_jpeg(640, 480, seed=2), 256),  # 3/8 here, 1/2 by Pillow
        (noise_jpeg(300, 200, seed=3, mode="L"), 64),  # grey
        (encode(Image.open(io.BytesIO(noise_jpeg(400, 300, seed=4))), "JPEG", progressive=True), 96),
        (marker_jpeg(300, 150, orientation=6), 48),  # EXIF-rotated: orientation read by Pillow
    ],
    ids=["quarter", "three_eighths", "grey", "progressive", "exif_rotated"],
)
def test_downscaled_jpeg_pixels_match_the_pillow_path(data, image_size, pillow_only):
    assert images._normalise_jpeg_fast(data, image_size, **SETTINGS) is not None, "the fast path must take it"
    fast, pillow = _outcome(data, image_size), pillow_only(data, image_size)
    assert fast[:3] == pillow[:3]  # ok, same width and height
    diff = np.abs(_pixels(fast[3]) - _pixels(pillow[3]))
    assert diff.mean() < 2.0, diff.mean()
    assert np.percentile(diff, 99) <= 12


def _damaged(data: bytes) -> list[bytes]:
    """Truncations at many points and bytes overwritten in the entropy-coded data."""
    rng = np.random.default_rng(0)
    cuts = [data[:n] for n in np.linspace(200, len(data) - 1, 12).astype(int)]
    flipped = []
    for _ in range(12):
        broken = bytearray(data)
        for position in rng.integers(len(data) // 3, len(data) - 2, 3):
            broken[position] = int(rng.integers(256))
        flipped.append(bytes(broken))
    return [*cuts, *flipped, b"\xff\xd8\xff\xe0" + bytes(200), data[:2] + b"\xff" * 100]


@pytest.mark.parametrize("image_size", [256, 32], ids=["kept_as_is", "downscaled"])
def test_damaged_jpegs_get_the_pillow_path_verdict_and_reason(image_size, pillow_only):
    outcomes = []
    for data in _damaged(noise_jpeg(120, 90, seed=7)) + _damaged(noise_jpeg(96, 64, seed=8, mode="L")):
        fast, pillow = _outcome(data, image_size), pillow_only(data, image_size)
        assert fast[:3] == pillow[:3], (fast[:3], pillow[:3])
        outcomes.append(fast[0])
    # Both kinds occur: Pillow accepts some damage that libjpeg only warns about (strict mode then
    # hands the file back), and every truncated file is rejected.
    assert {"ok", "rejected"} <= set(outcomes)


def test_a_truncated_jpeg_at_its_output_size_is_not_kept_as_is():
    data = noise_jpeg(64, 48, seed=9)
    assert images.normalise_image(data, image_size=256, **SETTINGS).jpeg == data  # kept byte for byte
    with pytest.raises(Rejected) as info:
        images.normalise_image(data[: len(data) * 2 // 3], image_size=256, **SETTINGS)
    assert info.value.status == "corrupt_image"
    assert "truncated" in info.value.detail


def test_unusual_jpegs_are_left_to_pillow():
    for data in (cmyk_jpeg(40), b"\xff\xd8not a jpeg", encode(Image.new("RGB", (20, 20)), "PNG")):
        assert images._normalise_jpeg_fast(data, 16, **SETTINGS) is None
    # Above max_pixels Pillow gives the verdict (too_large, with its message).
    assert images._normalise_jpeg_fast(noise_jpeg(120, 100, seed=2), 16, jpeg_quality=90, max_pixels=10_000) is None


def test_exif_and_icc_are_never_kept_on_the_fast_path():
    plain = Image.open(io.BytesIO(noise_jpeg(40, 30, seed=5)))
    icc = encode(plain, "JPEG", quality=95, icc_profile=b"\0" * 128)
    exif = encode(plain, "JPEG", quality=95, exif=Image.Exif().tobytes() or b"Exif\0\0MM\0*\0\0\0\x08\0\0")
    for data in (icc, exif):
        stored = images._normalise_jpeg_fast(data, 48, **SETTINGS)
        assert stored is not None and stored.jpeg != data
        assert not {"icc_profile", "exif"} & Image.open(io.BytesIO(stored.jpeg)).info.keys()
