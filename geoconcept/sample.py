"""The embedded sample: an MP16-style dataset that needs no download.

GPS points are drawn (seeded) from the real MP16 coordinates that ship with GeoCLIP. Each image
is a *rendered map patch*, not a photo: about 2° of the Earth around the point, coloured from
MODIS land cover, outlined by the 1 km land mask, tinted and textured by the Köppen-Geiger
climate. The images therefore carry real location signal (a model can learn that a green,
mottled, humid-looking patch is more likely the Amazon than the Sahara), which is what the
pipeline and the models need to be exercised end to end on a laptop.

Output (MP16 conventions): `train.csv` / `test.csv` with `IMG_ID,LAT,LON`, images under
`images/` at their IMG_ID (a relative path such as `3c/41/2386536419.jpg`), and optionally the
same images packed as tars (`tars/images-000.tar`, members named by IMG_ID) as MP16 is
distributed.
"""

from __future__ import annotations

import hashlib
import io
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from geoconcept import atomic, bundled
from geoconcept.layers import builtin

# MODIS IGBP palette (the conventional MCD12 colours, toned towards what the ground looks like).
IGBP_RGB = np.array(
    [
        (28, 79, 140),  # 0 water
        (24, 74, 32),  # 1 evergreen needleleaf
        (20, 104, 36),  # 2 evergreen broadleaf
        (84, 140, 40),  # 3 deciduous needleleaf
        (110, 170, 50),  # 4 deciduous broadleaf
        (52, 125, 52),  # 5 mixed forest
        (160, 150, 80),  # 6 closed shrubland
        (200, 185, 110),  # 7 open shrubland
        (150, 160, 70),  # 8 woody savanna
        (205, 195, 90),  # 9 savanna
        (160, 200, 90),  # 10 grassland
        (70, 150, 130),  # 11 wetland
        (190, 150, 90),  # 12 cropland
        (150, 150, 155),  # 13 urban
        (170, 160, 95),  # 14 cropland mosaic
        (240, 244, 250),  # 15 snow and ice
        (225, 205, 160),  # 16 barren
    ],
    dtype=np.float32,
)
OCEAN_RGB = np.array((18, 52, 110), dtype=np.float32)
NODATA_RGB = np.array((128, 128, 128), dtype=np.float32)

# Texture amplitude per IGBP class: forests mottled, water and snow smooth, cities busy.
IGBP_TEXTURE = np.array([4, 22, 26, 20, 18, 22, 14, 10, 16, 12, 8, 10, 12, 30, 14, 3, 9], dtype=np.float32)

# Climate tint per Köppen main group (multiplicative RGB): humid tropics saturated, deserts
# warm, temperate neutral, cold bluish, polar pale.
GROUP_TINT = {
    "A": np.array((0.92, 1.08, 0.90), dtype=np.float32),
    "B": np.array((1.10, 1.00, 0.82), dtype=np.float32),
    "C": np.array((1.00, 1.00, 1.00), dtype=np.float32),
    "D": np.array((0.92, 0.97, 1.08), dtype=np.float32),
    "E": np.array((1.05, 1.07, 1.12), dtype=np.float32),
}


@dataclass(frozen=True)
class SampleConfig:
    n_train: int = 2000
    n_test: int = 500
    seed: int = 0
    image_size: int = 112
    span_deg: float = 2.0  # north-south extent of a patch
    jpeg_quality: int = 92
    tar: bool = False  # also pack the images as tars, MP16-style
    images_per_tar: int = 1000


@dataclass(frozen=True)
class SampleResult:
    out: Path
    train_csv: Path
    test_csv: Path
    images: Path
    tars: list[Path]
    n_train: int
    n_test: int


def draw_points(n: int, seed: int) -> pd.DataFrame:
    """`n` distinct MP16 coordinates from GeoCLIP's gallery, drawn with `seed`."""
    coords = pd.read_csv(bundled.GEOCLIP_GALLERY.path())
    if n > len(coords):
        raise ValueError(f"asked for {n} points but the MP16 gallery has {len(coords)}")
    rng = np.random.default_rng(seed)
    picked = coords.iloc[np.sort(rng.choice(len(coords), size=n, replace=False))]
    return picked.reset_index(drop=True)[["LAT", "LON"]]


def image_id(index: int, lat: float, lon: float, seed: int) -> str:
    """An MP16-style IMG_ID: `aa/bb/<number>.jpg`, stable for (seed, index, point)."""
    digest = hashlib.sha1(f"{seed}:{index}:{lat:.6f}:{lon:.6f}".encode()).hexdigest()
    number = int(digest[:12], 16) % 10**10
    return f"{digest[12:14]}/{digest[14:16]}/{number}.jpg"


def _texture(rng: np.random.Generator, size: int) -> np.ndarray:
    """Smooth-ish noise: white noise blurred by upsampling a coarser grid, plus fine grain."""
    coarse = rng.standard_normal((size // 8 + 1, size // 8 + 1)).astype(np.float32)
    smooth = np.kron(coarse, np.ones((8, 8), dtype=np.float32))[:size, :size]
    fine = rng.standard_normal((size, size)).astype(np.float32)
    return 0.7 * smooth + 0.5 * fine


def render_patch(lat: float, lon: float, config: SampleConfig, rng: np.random.Generator) -> np.ndarray:
    """An RGB uint8 patch of the map around (lat, lon)."""
    size = config.image_size
    half_lat = config.span_deg / 2
    # Keep the patch roughly square on the ground; cap the stretch near the poles.
    half_lon = half_lat / max(np.cos(np.radians(lat)), 0.2)
    south, north = max(lat - half_lat, -90.0), min(lat + half_lat, 90.0)
    west, east = (lon - half_lon + 180.0) % 360.0 - 180.0, (lon + half_lon + 180.0) % 360.0 - 180.0

    igbp = builtin.modis_igbp().window(south, north, west, east, size, size)
    land = builtin.land_mask().window(south, north, west, east, size, size).filled(0).astype(bool)
    koppen = builtin.koppen_geiger().window(south, north, west, east, size, size)

    codes = igbp.filled(255).astype(np.int64)
    known = codes <= 16
    rgb = np.where(known[..., None], IGBP_RGB[np.minimum(codes, 16)], NODATA_RGB)
    amplitude = np.where(known, IGBP_TEXTURE[np.minimum(codes, 16)], 6.0)
    # The 1 km land mask draws the coastline far more finely than the 0.05° land cover; MODIS
    # water inside the land mask is a lake and keeps the water colour.
    rgb = np.where(land[..., None], rgb, OCEAN_RGB)

    symbols = builtin.koppen_zone_table().symbols
    zone = koppen.filled(0).astype(np.int64)
    tint = np.ones_like(rgb)
    for code in np.unique(zone[land]):
        group = symbols.get(int(code), "")[:1]
        if group in GROUP_TINT:
            tint[(zone == code) & land] = GROUP_TINT[group]
    rgb = rgb * tint

    rgb = rgb + amplitude[..., None] * _texture(rng, size)[..., None]
    # Ocean swell: a gentle wave pattern whose direction depends on the hemisphere.
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    waves = 5.0 * np.sin((xx + np.sign(lat or 1.0) * yy) / 3.0)
    rgb = np.where(land[..., None], rgb, rgb + waves[..., None])
    return np.clip(rgb, 0, 255).astype(np.uint8)


def encode_jpeg(rgb: np.ndarray, quality: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb, "RGB").save(buf, format="JPEG", quality=quality, optimize=False)
    return buf.getvalue()


def _write_tars(out: Path, frame: pd.DataFrame, images: Path, per_tar: int) -> list[Path]:
    """Pack the images in IMG_ID order, fixed metadata so the bytes are reproducible."""
    tars = []
    ids = sorted(frame["IMG_ID"])
    for t, start in enumerate(range(0, len(ids), per_tar)):
        path = out / "tars" / f"images-{t:03d}.tar"
        with (
            atomic.atomic_open(path, "wb") as fh,
            tarfile.open(fileobj=fh, mode="w", format=tarfile.USTAR_FORMAT) as tf,
        ):
            for img_id in ids[start : start + per_tar]:
                data = (images / img_id).read_bytes()
                info = tarfile.TarInfo(img_id)
                info.size, info.mtime, info.mode = len(data), 0, 0o644
                tf.addfile(info, io.BytesIO(data))
        tars.append(path)
    return tars


def build_sample(
    out: str | Path,
    config: SampleConfig = SampleConfig(),
    progress: Callable[[int], None] | None = None,
) -> SampleResult:
    """Render the sample into `out`. Deterministic for a config; existing images are kept."""
    out = Path(out)
    images = out / "images"
    points = draw_points(config.n_train + config.n_test, config.seed)
    points.insert(0, "IMG_ID", [image_id(i, la, lo, config.seed) for i, (la, lo) in enumerate(points.to_numpy())])

    for i, (img_id, lat, lon) in enumerate(points.itertuples(index=False)):
        path = images / img_id
        if not path.exists():
            rng = np.random.default_rng([config.seed, i])
            atomic.write_bytes(path, encode_jpeg(render_patch(lat, lon, config, rng), config.jpeg_quality))
        if progress:
            progress(1)

    # The test set is a random subset rather than a geographic block, as in MP16 vs Im2GPS3k.
    order = np.random.default_rng(config.seed + 1).permutation(len(points))
    test = points.iloc[np.sort(order[: config.n_test])]
    train = points.iloc[np.sort(order[config.n_test :])]
    paths = {}
    for name, frame in (("train", train), ("test", test)):
        paths[name] = out / f"{name}.csv"
        atomic.write_text(paths[name], frame.to_csv(index=False, float_format="%.6f"))

    tars = _write_tars(out, points, images, config.images_per_tar) if config.tar else []
    return SampleResult(out, paths["train"], paths["test"], images, tars, len(train), len(test))
