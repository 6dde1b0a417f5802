"""A georeferenced raster held as a numpy array (in memory or memory-mapped), sampled in bulk.

Why not `rasterio.sample`: it walks points one window at a time (~27 s per million points here);
turning whole coordinate arrays into row/column indices with the affine transform and indexing
the array is the same lookup done vectorised (~0.05 s). rasterio still does the reading, the
georeferencing and the CRS; pyproj does any reprojection.

Memory: the 1 km rasters are ~0.9 GB each. A plain memory map keeps every page it has touched
mapped, and points spread over the globe touch all of them, so a process sampling four rasters
held ~2 GB resident. A `MappedArray` reads cells band of rows by band of rows and hands each band's
pages back to the page cache (`madvise(MADV_DONTNEED)`) when done: at most `RESIDENT_BANDS` bands
are resident, whatever the number of points, and the page cache still shares the file between
processes.
"""

from __future__ import annotations

import mmap
import os
from collections import OrderedDict
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
from affine import Affine
from pyproj import CRS, Transformer

WGS84 = CRS.from_epsg(4326)
BAND_BYTES = 4 << 20
# Bands of a mapped raster kept mapped between reads (least recently used let go first): a caller
# sampling nearby points call after call (neighbourhood discs in latitude order) finds them mapped.
RESIDENT_BANDS = 4


def read_npy_header(fh) -> tuple[tuple[int, ...], bool, np.dtype]:
    """(shape, fortran_order, dtype) of the `.npy` stream `fh`, left at the start of the data."""
    version = np.lib.format.read_magic(fh)
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0(fh)
    return np.lib.format.read_array_header_2_0(fh)


class MappedArray:
    """A read-only 2-D array memory-mapped from a `.npy` file, read band by band of rows."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        with open(path, "rb") as fh:
            shape, fortran_order, dtype = read_npy_header(fh)
            if len(shape) != 2 or fortran_order:
                raise ValueError(f"{path}: expected a C-ordered 2-D array, got shape {shape}")
            self._mmap = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
            self._offset = fh.tell()
        self.array = np.ndarray(shape, dtype, buffer=self._mmap, offset=self._offset)
        self.path = path
        self.rows_per_band = max(1, BAND_BYTES // self.array.strides[0])
        self._resident: OrderedDict[int, None] = OrderedDict()

    @property
    def shape(self) -> tuple[int, int]:
        return self.array.shape  # type: ignore[return-value]

    @property
    def dtype(self) -> np.dtype:
        return self.array.dtype

    def release(self, first_row: int = 0, rows: int | None = None) -> None:
        """Unmap the pages of rows [first_row, first_row + rows) from this process (they stay in the
        page cache; the next read maps them again)."""
        rows = self.shape[0] - first_row if rows is None else rows
        start = self._offset + first_row * self.array.strides[0]
        aligned = start - start % mmap.PAGESIZE
        stop = min(start + rows * self.array.strides[0], len(self._mmap))
        if stop > aligned:
            self._mmap.madvise(mmap.MADV_DONTNEED, aligned, stop - aligned)

    def rows(self, start: int, stop: int) -> np.ndarray:
        """A copy of rows [start, stop)."""
        out = np.array(self.array[start:stop])
        self.release(start, stop - start)
        return out

    def cells(self, row: np.ndarray, col: np.ndarray) -> np.ndarray:
        """`array[row, col]`, read one band of rows at a time (points sorted by band, input order kept)."""
        if not row.size:
            return np.empty(row.shape, self.dtype)
        first, last = int(row.min()) // self.rows_per_band, int(row.max()) // self.rows_per_band
        if last - first < RESIDENT_BANDS:  # few enough bands to stay mapped together: no sorting
            out = self.array[row, col]
            for band in range(first, last + 1):
                self._keep(band)
            return out
        out = np.empty(row.shape, self.dtype)
        # numpy radix-sorts 16-bit keys: 65,536 bands cover rasters up to 2^16 * BAND_BYTES.
        few_bands = self.shape[0] // self.rows_per_band < 1 << 16
        band = (row // self.rows_per_band).astype(np.uint16 if few_bands else np.intp)
        order = np.argsort(band, kind="stable")
        sorted_band = band[order]
        starts = np.flatnonzero(np.r_[True, sorted_band[1:] != sorted_band[:-1]])
        for start, stop in zip(starts, [*starts[1:], order.size], strict=True):
            take = order[start:stop]
            out[take] = self.array[row[take], col[take]]
            self._keep(int(sorted_band[start]))
        return out

    def _keep(self, band: int) -> None:
        self._resident[band] = None
        self._resident.move_to_end(band)
        while len(self._resident) > RESIDENT_BANDS:
            oldest, _ = self._resident.popitem(last=False)
            self.release(oldest * self.rows_per_band, self.rows_per_band)


@dataclass
class Grid:
    """A single-band raster: `array[row, col]`, `transform` maps (col, row) to CRS coordinates."""

    array: np.ndarray | MappedArray
    transform: Affine
    crs: CRS
    nodata: float | int | None = None
    name: str = ""
    _transformer: Transformer | None = field(default=None, init=False, repr=False)

    @property
    def shape(self) -> tuple[int, int]:
        return self.array.shape  # type: ignore[return-value]

    @cached_property
    def is_geographic(self) -> bool:
        return self.crs.is_geographic

    @cached_property
    def wraps_longitude(self) -> bool:
        """True for a geographic grid spanning 360° of longitude: columns wrap at the dateline."""
        width_deg = abs(self.transform.a) * self.shape[1]
        return self.is_geographic and abs(width_deg - 360.0) < abs(self.transform.a)

    def _to_crs(self, lat: np.ndarray, lon: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """WGS84 lat/lon → this grid's (x, y)."""
        if self.is_geographic:
            # A lat/lon grid on another datum (MODIS's Clarke 1866) differs from WGS84 by far
            # less than one of its cells, and without datum-shift parameters pyproj maps
            # geographic to geographic as the identity anyway.
            return lon, lat
        if self._transformer is None:
            self._transformer = Transformer.from_crs(WGS84, self.crs, always_xy=True)
        return self._transformer.transform(lon, lat)

    def rowcol(self, lat: np.ndarray, lon: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Integer (row, col) of each point and a mask of points that fall inside the grid."""
        lat = np.asarray(lat, dtype=np.float64)
        lon = np.asarray(lon, dtype=np.float64)
        x, y = self._to_crs(lat, lon)
        inv = ~self.transform
        h, w = self.shape
        # Stays in floats until the end: NaN/inf fail every comparison below, so invalid points
        # come out "not inside" without separate passes over the arrays.
        col = np.floor(inv.a * x + inv.b * y + inv.c if inv.b else inv.a * x + inv.c)
        row = np.floor(inv.d * x + inv.e * y + inv.f if inv.d else inv.e * y + inv.f)
        if self.wraps_longitude:
            off = (col < 0) | (col >= w)
            if off.any():
                with np.errstate(invalid="ignore"):  # inf % w is NaN, and NaN is "not inside" below
                    col[off] %= w
        # A point exactly on the last edge (lat = -90, or lon = 180 on a non-wrapping grid)
        # belongs to the last cell rather than falling off the grid.
        row[row == h] = h - 1
        col[col == w] = w - 1
        inside = (row >= 0) & (row < h) & (col >= 0) & (col < w)
        return np.where(inside, row, 0).astype(np.intp), np.where(inside, col, 0).astype(np.intp), inside

    def sample(self, lat: np.ndarray, lon: np.ndarray) -> np.ma.MaskedArray:
        """Value at each point; masked where the point is outside the grid, invalid, or nodata."""
        row, col, inside = self.rowcol(lat, lon)
        values = self.array.cells(row, col) if isinstance(self.array, MappedArray) else self.array[row, col]
        invalid = ~inside
        if np.issubdtype(values.dtype, np.floating):
            invalid |= np.isnan(values)  # float rasters often mark nodata as NaN, declared or not
        if self.nodata is not None and not np.isnan(self.nodata):
            invalid |= values == self.nodata
        return np.ma.MaskedArray(values, mask=invalid)

    def window(
        self, south: float, north: float, west: float, east: float, height: int, width: int
    ) -> np.ma.MaskedArray:
        """Nearest-neighbour resample of a lat/lon box onto a height×width grid of cell centres.

        `west > east` crosses the dateline. Rows go north to south (image order).
        """
        if east < west:
            east += 360.0
        lats = north - (np.arange(height) + 0.5) * (north - south) / height
        lons = west + (np.arange(width) + 0.5) * (east - west) / width
        lons = (lons + 180.0) % 360.0 - 180.0
        lat2d, lon2d = np.meshgrid(lats, lons, indexing="ij")
        return self.sample(lat2d.ravel(), lon2d.ravel()).reshape(height, width)
