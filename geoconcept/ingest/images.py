"""Decode, check and normalise one image into the JPEG that goes into a shard.

Steps: open (only common photo formats) -> pixel count from the header against `max_pixels`
(before any pixel is decoded) -> full decode (a truncated file fails here) -> RGB (CMYK, 16-bit,
palette, grey; alpha composited on white) -> shorter side down to `image_size` (never up;
bilinear below 2x, bicubic with a box pre-reduction above) -> EXIF orientation -> JPEG. An upright
RGB JPEG that needs none of this, and has no EXIF or ICC metadata, is stored byte for byte.

Two decoders, one verdict. Common JPEGs (8-bit baseline or progressive, YCbCr or grey, not
multi-picture) are decoded by libjpeg-turbo through simplejpeg, in strict mode (any "Corrupt JPEG
data" warning is an error), scaled by a factor n/8 in the DCT to the smallest size that still
covers the output: most of the speed of ingest. It only ever *accepts*: every other image, and a
JPEG simplejpeg refuses, goes through Pillow, which alone rejects, so reasons and details are
Pillow's whatever the path (Pillow also accepts some JPEGs strict mode refuses, e.g. with damaged
entropy data that libjpeg can still decode). Pillow's JPEG decoding uses `draft()`, its own DCT
scaling (1/2, 1/4 or 1/8).
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import simplejpeg
from PIL import Image

from geoconcept.ingest.reasons import CORRUPT_IMAGE, TOO_LARGE, Rejected

# Formats a photo collection holds; Pillow's rarer decoders are never reached with untrusted bytes.
# (Multi-picture camera JPEGs open through "JPEG" and report format "MPO".) Only those this Pillow
# build can open: Image.open fails on a format it has no plugin for.
Image.init()
ACCEPTED_FORMATS = tuple(f for f in ("JPEG", "PNG", "WEBP", "AVIF", "GIF", "BMP", "TIFF") if f in Image.OPEN)
# Large reductions: a box-filter reduction first while the image is more than this many times the
# target, then bicubic: the quality of bicubic at a fraction of the cost (Pillow's `reducing_gap`).
REDUCING_GAP = 3.0
# Small reductions (typically what is left after JPEG DCT scaling, which already low-passed the
# image): bilinear, about 20% faster than bicubic here, and indistinguishable at under 2x.
SMALL_REDUCTION = 2.0
_EXIF_ORIENTATION = 0x0112
# EXIF orientation -> the transpose that shows the image upright (the EXIF specification's table).
# Applied here, after downscaling, rather than with ImageOps.exif_transpose before it: rotating the
# small image is cheaper, and the shorter side is the same either way.
_UPRIGHT = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
# The fast path (simplejpeg): colour spaces as libjpeg names them (what Pillow opens as RGB or L;
# 3-channel JPEGs marked as RGB-coded, CMYK and YCCK go through Pillow), frame types (SOF0-2:
# 8-bit Huffman baseline, extended, progressive), markers without a length (none belongs
# before a scan). Above Pillow's bomb warning threshold (it refuses twice that), Pillow decides.
_FAST_COLORSPACES = frozenset({"YCbCr", "Gray"})
_FAST_FRAMES = frozenset({0xC0, 0xC1, 0xC2})
_STANDALONE_MARKERS = frozenset({0x01, *range(0xD0, 0xD9)})
_ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})
WHITE = (255, 255, 255)


@dataclass(frozen=True)
class NormalisedImage:
    jpeg: bytes
    width: int
    height: int


def output_size(width: int, height: int, image_size: int) -> tuple[int, int]:
    """The size an image is written at: shorter side `image_size`, aspect kept, never enlarged."""
    short = min(width, height)
    if short <= image_size:
        return width, height
    if width <= height:
        return image_size, max(1, round(height * image_size / width))
    return max(1, round(width * image_size / height)), image_size


def _orientation(image: Image.Image) -> int:
    try:
        value = image.getexif().get(_EXIF_ORIENTATION, 1)
        return int(value) if value in _UPRIGHT else 1
    except Exception:  # a malformed EXIF block does not make the pixels bad: ignore it
        return 1


def _to_rgb(image: Image.Image) -> Image.Image:
    mode = image.mode
    if mode == "RGB" and "transparency" not in image.info:
        return image
    if mode in _ALPHA_MODES or "transparency" in image.info:
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, WHITE)
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    if mode.startswith("I;16") or mode in ("I", "F"):
        # convert() would clip 16-bit values at 255 (a white image): scale the 16-bit range to 8 bits.
        values = np.asarray(image, dtype=np.float64)
        grey = np.clip(np.rint(values / 257.0), 0, 255).astype(np.uint8)
        return Image.fromarray(grey, "L").convert("RGB")
    return image.convert("RGB")


def _can_pass_through(image: Image.Image, size: tuple[int, int], target: tuple[int, int], orientation: int) -> bool:
    """An upright RGB JPEG already at its output size, without EXIF or ICC metadata, is stored as it
    came: re-encoding would only cost time and quality, and the full decode has validated it.
    (EXIF can carry the photographer's GPS and camera serial: such files are re-encoded, dropping it.)"""
    return (
        image.format == "JPEG"
        and image.mode == "RGB"
        and size == target
        and image.size == size
        and orientation == 1
        and not {"exif", "icc_profile"} & image.info.keys()
    )


def _fit(rgb: Image.Image, target: tuple[int, int], orientation: int) -> Image.Image:
    """`rgb` resized to `target` (in stored orientation), then turned upright."""
    if rgb.size != target:
        if min(rgb.size) < SMALL_REDUCTION * min(target):
            rgb = rgb.resize(target, Image.Resampling.BILINEAR)
        else:
            rgb = rgb.resize(target, Image.Resampling.BICUBIC, reducing_gap=REDUCING_GAP)
    if orientation != 1:
        rgb = rgb.transpose(_UPRIGHT[orientation])
    return rgb


def _encoded(rgb: Image.Image, jpeg_quality: int) -> NormalisedImage:
    # Pillow's encoder for both decoders: simplejpeg's is faster, but its output measured a little
    # below Pillow's in PSNR at the same size, and encoding is a small part of a resized image's cost.
    out = io.BytesIO()
    rgb.save(out, "JPEG", quality=jpeg_quality)
    return NormalisedImage(out.getvalue(), rgb.width, rgb.height)


def _normalise_with_pillow(data: bytes, image_size: int, jpeg_quality: int, max_pixels: int) -> NormalisedImage:
    with Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS) as image:
        width, height = image.size
        if width * height > max_pixels:
            raise Rejected(TOO_LARGE, f"{width}x{height} pixels is more than max_pixels={max_pixels}")
        orientation = _orientation(image)
        target = output_size(width, height, image_size)
        if image.format in ("JPEG", "MPO"):
            image.draft("RGB", target)
        image.load()
        if _can_pass_through(image, (width, height), target, orientation):
            return NormalisedImage(data, width, height)
        return _encoded(_fit(_to_rgb(image), target, orientation), jpeg_quality)


@dataclass(frozen=True)
class _JpegSegments:
    """What the segments before a JPEG's first scan say that decides how it is normalised."""

    app1: bool  # an APP1 segment (EXIF or XMP): either can hold an orientation
    private: bool  # EXIF or an ICC profile: the file is never stored as it came


def _jpeg_segments(data: bytes) -> _JpegSegments | None:
    """Walk the marker segments up to the first scan; None for anything the fast path leaves to
    Pillow: junk between segments, a frame that is not 8-bit baseline/extended/progressive
    Huffman (lossless, arithmetic, 12-bit), a multi-picture file, or no scan at all.
    Hand-written: neither simplejpeg nor libjpeg-turbo's API reports APP segments."""
    pos, end = 2, len(data)
    app1 = private = False
    while pos + 4 <= end:
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte before a marker
            pos += 1
            continue
        if marker == 0xDA:  # start of scan
            return _JpegSegments(app1, private)
        if marker in _STANDALONE_MARKERS:
            return None
        length = (data[pos + 2] << 8) | data[pos + 3]
        body = pos + 4
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # a frame header (SOFn)
            if marker not in _FAST_FRAMES or body >= end or data[body] != 8:
                return None
        elif marker == 0xE1:
            app1 = True
            private = private or data.startswith(b"Exif\0\0", body)
        elif marker == 0xE2:
            if data.startswith(b"MPF\0", body):
                return None
            private = private or data.startswith(b"ICC_PROFILE\0", body)
        pos += 2 + length
    return None


def _pillow_orientation(data: bytes) -> int | None:
    """The EXIF/XMP orientation as Pillow reads it (headers only, no decoding); None if Pillow
    cannot open the file, which Pillow's own path then reports."""
    try:
        with Image.open(io.BytesIO(data), formats=("JPEG",)) as image:
            return _orientation(image)
    except Exception:  # any failure is reported by the Pillow path, with Pillow's words
        return None


def _normalise_jpeg_fast(data: bytes, image_size: int, jpeg_quality: int, max_pixels: int) -> NormalisedImage | None:
    """The common JPEG, decoded by libjpeg-turbo (simplejpeg, strict); None: let Pillow decide."""
    try:
        height, width, colorspace, _ = simplejpeg.decode_jpeg_header(data)
    except ValueError:
        return None
    if colorspace not in _FAST_COLORSPACES or width * height > min(max_pixels, Image.MAX_IMAGE_PIXELS or max_pixels):
        return None
    segments = _jpeg_segments(data)
    if segments is None:
        return None
    orientation = _pillow_orientation(data) if segments.app1 else 1
    if orientation is None:
        return None
    target = output_size(width, height, image_size)
    try:
        if colorspace == "YCbCr" and target == (width, height) and orientation == 1 and not segments.private:
            # Stored as it came (see _can_pass_through). Validated by a decode at 1/8 scale: libjpeg
            # still entropy-decodes every coefficient of every block (there is no other way through
            # the bitstream), so truncation and corrupt data fail exactly as in a full-size decode,
            # at half its cost; only the inverse DCT and colour conversion are done on fewer pixels.
            simplejpeg.decode_jpeg(data, colorspace="RGB", strict=True, min_width=1, min_height=1)
            return NormalisedImage(data, width, height)
        pixels = simplejpeg.decode_jpeg(data, colorspace="RGB", strict=True, min_width=target[0], min_height=target[1])
    except ValueError:  # how simplejpeg reports any libjpeg error, and (strict) any warning
        return None
    return _encoded(_fit(Image.fromarray(pixels, "RGB"), target, orientation), jpeg_quality)


def _normalise(data: bytes, image_size: int, jpeg_quality: int, max_pixels: int) -> NormalisedImage:
    fast = _normalise_jpeg_fast(data, image_size, jpeg_quality, max_pixels)
    return fast if fast is not None else _normalise_with_pillow(data, image_size, jpeg_quality, max_pixels)


def _describe(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= 300 else text[:297] + "..."


def normalise_image(data: bytes, *, image_size: int, jpeg_quality: int, max_pixels: int) -> NormalisedImage:
    """The RGB JPEG to store for `data`, or Rejected(corrupt_image | too_large) with the reason."""
    if not data:
        raise Rejected(CORRUPT_IMAGE, "empty file (0 bytes)")
    try:
        return _normalise(data, image_size, jpeg_quality, max_pixels)
    except Rejected:
        raise
    except Image.UnidentifiedImageError:
        raise Rejected(CORRUPT_IMAGE, f"not an image in a supported format ({', '.join(ACCEPTED_FORMATS)})") from None
    except Image.DecompressionBombError as exc:
        raise Rejected(TOO_LARGE, _describe(exc)) from None
    except MemoryError:
        raise Rejected(TOO_LARGE, "not enough memory to decode it") from None
    except Exception as exc:  # Pillow's decoders signal bad data with many types (OSError, SyntaxError, ...)
        raise Rejected(CORRUPT_IMAGE, _describe(exc)) from None
