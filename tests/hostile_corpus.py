"""Builders of ingest inputs for the tests: the hostile corpus of issue 2 and plain small datasets.

Every builder writes only under the folder it is given and returns what it wrote, with the
status each record must end up with.
"""

from __future__ import annotations

import csv
import io
import os
import struct
import tarfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

RED = (255, 0, 0)
BLUE = (0, 0, 255)


# ---------------------------------------------------------------------------------------- images
def noise_jpeg(width: int, height: int, seed: int, mode: str = "RGB", quality: int = 90) -> bytes:
    """A distinct small JPEG per seed (noise over a gradient, so its bytes differ from any other)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x * 255 // max(width, 1), y * 255 // max(height, 1), np.full_like(x, seed % 256)], -1)
    pixels = np.clip(base + rng.normal(0, 12, (height, width, 3)), 0, 255).astype(np.uint8)
    image = Image.fromarray(pixels, "RGB")
    if mode != "RGB":
        image = image.convert(mode)
    out = io.BytesIO()
    image.save(out, "JPEG", quality=quality)
    return out.getvalue()


def marker_jpeg(width: int, height: int, orientation: int) -> bytes:
    """Blue JPEG with a red block in its stored top-left corner and an EXIF orientation tag."""
    pixels = np.zeros((height, width, 3), np.uint8)
    pixels[...] = BLUE
    pixels[: height // 3, : width // 3] = RED
    exif = Image.Exif()
    exif[0x0112] = orientation
    out = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(out, "JPEG", quality=95, exif=exif)
    return out.getvalue()


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def raw_png(width: int, height: int, bit_depth: int, color_type: int, rows: bytes) -> bytes:
    """A PNG written by hand: Pillow cannot write 16-bit RGB, and a bomb must lie about its size."""
    header = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", zlib.compress(rows))
        + _png_chunk(b"IEND", b"")
    )


def png16_grey(width: int, height: int, value: int) -> bytes:
    row = b"\x00" + np.full(width, value, ">u2").tobytes()
    return raw_png(width, height, 16, 0, row * height)


def png16_rgb(width: int, height: int, rgb: tuple[int, int, int]) -> bytes:
    row = b"\x00" + np.tile(np.array(rgb, ">u2"), width).tobytes()
    return raw_png(width, height, 16, 2, row * height)


def bomb_png(width: int = 60_000, height: int = 60_000) -> bytes:
    """A few hundred bytes whose header declares width x height pixels (a decompression bomb)."""
    return raw_png(width, height, 8, 2, b"\x00" * 16)


def encode(image: Image.Image, fmt: str, **params: object) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **params)
    return out.getvalue()


def alpha_png(size: int = 40) -> bytes:
    """RGBA: left half opaque red, right half fully transparent (must come out white)."""
    pixels = np.zeros((size, size, 4), np.uint8)
    pixels[:, : size // 2] = (255, 0, 0, 255)
    pixels[:, size // 2 :] = (0, 0, 0, 0)
    return encode(Image.fromarray(pixels, "RGBA"), "PNG")


def palette_png(size: int = 40) -> bytes:
    """Palette image whose index 0 is transparent (right half) and index 1 green (left half)."""
    image = Image.new("P", (size, size), 0)
    image.putpalette([0, 0, 0, 0, 200, 0] + [0] * 762)
    image.paste(1, (0, 0, size // 2, size))
    return encode(image, "PNG", transparency=0)


def cmyk_jpeg(size: int = 40) -> bytes:
    return encode(Image.new("CMYK", (size, size), (0, 255, 255, 0)), "JPEG", quality=95)  # red in CMYK


# ---------------------------------------------------------------------------------------- tables
@dataclass
class Record:
    img_id: str
    lat: str
    lon: str
    expect: str  # the status the record must get
    image: bytes | None = None  # the bytes behind img_id, if any


@dataclass
class Corpus:
    root: Path
    csv: Path
    images: Path  # what to pass as --images
    records: list[Record] = field(default_factory=list)

    def expected(self) -> dict[int, str]:
        return {row: r.expect for row, r in enumerate(self.records)}

    def good(self) -> list[Record]:
        return [r for r in self.records if r.expect == "ok"]


def write_table(path: Path, records: list[Record], extra: dict[str, list[str]] | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    extra = extra or {}
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["IMG_ID", "LAT", "LON", *extra])
        for i, r in enumerate(records):
            writer.writerow([r.img_id, r.lat, r.lon, *[values[i] for values in extra.values()]])
    return path


def simple_dataset(root: Path, n: int, *, size: tuple[int, int] = (48, 36), name: str = "train") -> Corpus:
    """`n` good records with distinct JPEGs in a folder tree, as `<root>/<name>.csv` + `<root>/images`."""
    images = root / "images"
    records = []
    for i in range(n):
        img_id = f"{i % 7:02x}/{i:05d}.jpg"
        data = noise_jpeg(*size, seed=1000 + i)
        (images / img_id).parent.mkdir(parents=True, exist_ok=True)
        (images / img_id).write_bytes(data)
        records.append(Record(img_id, f"{(i * 7.3) % 180 - 90:.4f}", f"{(i * 13.1) % 360 - 180:.4f}", "ok", data))
    return Corpus(root, write_table(root / f"{name}.csv", records), images, records)


# ---------------------------------------------------------------------------------- hostile corpora
def folder_corpus(root: Path) -> Corpus:
    """Images in a folder tree, with every kind of bad record the issue lists (and good ones)."""
    images = root / "images"
    images.mkdir(parents=True)
    outside = root / "outside.jpg"  # a real image outside the image root, which hostile IDs aim at
    outside.write_bytes(noise_jpeg(20, 20, seed=1))
    records: list[Record] = []
    seed = iter(range(100, 10_000))

    def add(img_id: str, expect: str, data: bytes | None = None, lat: str = "48.85", lon: str = "2.35") -> None:
        if data is not None:
            path = images / img_id
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        records.append(Record(img_id, lat, lon, expect, data))

    copy = noise_jpeg(30, 30, seed=7)
    add("good/plain.jpg", "ok", noise_jpeg(40, 30, next(seed)))
    add("copy/a.jpg", "ok", copy)
    add("copy/b.jpg", "duplicate_content", copy)  # same bytes, same shard: decided when written
    add("good/large.jpg", "ok", noise_jpeg(200, 120, next(seed)))  # resized to shorter side 48
    add("good/grey.jpg", "ok", noise_jpeg(40, 40, next(seed), mode="L"))
    add("good/cmyk.jpg", "ok", cmyk_jpeg())
    add("good/grey16.png", "ok", png16_grey(24, 16, 40_000))
    add("good/rgb16.png", "ok", png16_rgb(24, 16, (65_535, 0, 32_768)))
    add("good/palette.png", "ok", palette_png())
    add("good/alpha.png", "ok", alpha_png())
    add("good/rotated.jpg", "ok", marker_jpeg(60, 30, orientation=6))  # displayed rotated 90° clockwise
    add("with space/my photo.jpg", "ok", noise_jpeg(30, 30, next(seed)))
    add("unicode/café ø 東京.jpg", "ok", noise_jpeg(30, 30, next(seed)))
    add("dots/img.v2.final.jpg", "ok", noise_jpeg(30, 30, next(seed)))
    add("dots/..hidden.jpg", "ok", noise_jpeg(30, 30, next(seed)))  # two dots, but not a `..` component
    add("./good/dotslash.jpg", "ok", noise_jpeg(30, 30, next(seed)))
    add("bad/corrupt.jpg", "corrupt_image", b"\xff\xd8\xff\xe0" + bytes(range(256)) * 4)
    add("bad/truncated.jpg", "corrupt_image", noise_jpeg(64, 64, next(seed))[:700])
    add("bad/empty.jpg", "corrupt_image", b"")
    add("bad/text.jpg", "corrupt_image", b"this is not an image, whatever its name says\n")
    add("bad/bomb.png", "too_large", bomb_png())
    add("gps/lat91.jpg", "bad_gps", noise_jpeg(30, 30, next(seed)), lat="91")
    add("gps/lon181.jpg", "bad_gps", noise_jpeg(30, 30, next(seed)), lon="181")
    add("gps/nan.jpg", "bad_gps", noise_jpeg(30, 30, next(seed)), lat="NaN")
    add("gps/empty.jpg", "bad_gps", noise_jpeg(30, 30, next(seed)), lon="")
    add("gps/text.jpg", "bad_gps", noise_jpeg(30, 30, next(seed)), lat="north")
    add("gps/edge.jpg", "ok", noise_jpeg(30, 30, next(seed)), lat="-90", lon="180")
    add("good/plain.jpg", "duplicate_id")
    add("", "bad_id")
    add("../outside.jpg", "bad_id")
    add("good/../../outside.jpg", "bad_id")
    add(str(outside), "bad_id")  # absolute
    (images / "link").mkdir()
    os.symlink(outside, images / "link" / "outside.jpg")
    add("link/outside.jpg", "bad_id")  # resolves outside the image root
    os.symlink(images / "good" / "plain.jpg", images / "link" / "inside.jpg")
    # A link inside the root is followed: the same bytes as good/plain.jpg, so a duplicate.
    records.append(Record("link/inside.jpg", "48.85", "2.35", "duplicate_content", records[0].image))
    add("missing/nothing.jpg", "missing_image")
    add("good", "missing_image")  # a directory
    os.mkfifo(images / "bad" / "fifo.jpg")
    add("bad/fifo.jpg", "missing_image")  # never opened: reading a FIFO would hang
    add("copy/c.jpg", "duplicate_content", copy)  # same bytes in a later shard: the samples view marks it
    return Corpus(root, write_table(root / "train.csv", records), images, records)


def _add_member(tf: tarfile.TarFile, name: str, data: bytes = b"", kind: bytes = tarfile.REGTYPE) -> None:
    info = tarfile.TarInfo(name)
    info.type = kind
    if kind == tarfile.REGTYPE:
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
    else:
        info.linkname = "good/0.jpg" if kind in (tarfile.SYMTYPE, tarfile.LNKTYPE) else ""
        tf.addfile(info)


def write_image_tar(path: Path, members: dict[str, bytes]) -> Path:
    """A plain tar of regular files `name -> bytes` (how MP16-style image tars are laid out)."""
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tf:
        for name, data in members.items():
            _add_member(tf, name, data)
    return path


def tar_corpus(root: Path) -> Corpus:
    """Images in tars (a folder of tars), with hostile members (absolute, `..`, links, a device) and
    a truncated tar."""
    folder = root / "tars"
    folder.mkdir(parents=True)
    records: list[Record] = []
    goods = [noise_jpeg(36, 28, seed=500 + i) for i in range(6)]
    older, newer = noise_jpeg(30, 30, seed=601), noise_jpeg(30, 30, seed=602)
    with tarfile.open(folder / "part-0.tar", "w", format=tarfile.USTAR_FORMAT) as tf:
        for i, data in enumerate(goods[:3]):
            _add_member(tf, f"good/{i}.jpg", data)
        _add_member(tf, "/abs/evil.jpg", noise_jpeg(30, 30, seed=603))
        _add_member(tf, "../escape.jpg", noise_jpeg(30, 30, seed=604))
        _add_member(tf, "link.jpg", kind=tarfile.SYMTYPE)
        _add_member(tf, "dup/name.jpg", older)
    with tarfile.open(folder / "part-1.tar", "w", format=tarfile.USTAR_FORMAT) as tf:
        for i, data in enumerate(goods[3:], start=3):
            _add_member(tf, f"./good/{i}.jpg", data)
        _add_member(tf, "hard.jpg", kind=tarfile.LNKTYPE)
        _add_member(tf, "dev.jpg", kind=tarfile.CHRTYPE)
        _add_member(tf, "bad/corrupt.jpg", b"\xff\xd8\xff" + b"\x00" * 300)
        _add_member(tf, "dup/name.jpg", newer)  # the later member of a name wins
    cut = folder / "part-2.tar"  # a tar cut short inside its first member, like an interrupted copy
    with tarfile.open(cut, "w", format=tarfile.USTAR_FORMAT) as tf:
        _add_member(tf, "cut/big.jpg", noise_jpeg(200, 200, seed=605))
        _add_member(tf, "cut/after.jpg", noise_jpeg(30, 30, seed=606))
    cut.write_bytes(cut.read_bytes()[:4096])
    for i, data in enumerate(goods):
        records.append(Record(f"good/{i}.jpg", "10", "20", "ok", data))
    records += [
        Record("dup/name.jpg", "10", "20", "ok", newer),
        Record("/abs/evil.jpg", "10", "20", "bad_id"),
        Record("abs/evil.jpg", "10", "20", "missing_image"),  # an absolute member is never indexed
        Record("../escape.jpg", "10", "20", "bad_id"),
        Record("link.jpg", "10", "20", "missing_image"),
        Record("hard.jpg", "10", "20", "missing_image"),
        Record("dev.jpg", "10", "20", "missing_image"),
        Record("bad/corrupt.jpg", "10", "20", "corrupt_image"),
        Record("not/there.jpg", "10", "20", "missing_image"),
        Record("cut/big.jpg", "10", "20", "unreadable_image"),
        Record("cut/after.jpg", "10", "20", "missing_image"),
    ]
    return Corpus(root, write_table(root / "train.csv", records), folder, records)


def snapshot(folder: Path, skip: Path | None = None) -> dict[str, bytes | None]:
    """Every path under `folder` (except under `skip`) with its content (None for folders, FIFOs, links)."""
    state: dict[str, bytes | None] = {}
    for path in sorted(folder.rglob("*")):
        if skip is not None and (path == skip or skip in path.parents):
            continue
        regular = path.is_file() and not path.is_symlink()
        state[str(path.relative_to(folder))] = path.read_bytes() if regular else None
    return state
