"""A georeferenced raster held as a numpy array (in memory or memory-mapped), sampled in bulk.

Why not `rasterio.sample`: it walks points one window at a time (~27 s per million points here);
turning whole coordinate arrays into row/column indices with the affine transform and indexing
the array is the same lookup done vectorised (~0.05 s). rasterio still does the reading, the
georeferencing and the CRS; pyproj does any reprojection.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
from affine import Affine
from pyproj import CRS, Transformer

WGS84 = CRS.from_epsg(4326)


@dataclass
class Grid:
    """A single-band raster: `array[row, col]`, `transform` maps (col, row) to CRS coordinates."""

    array: np.ndarray
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
        values = self.array[row, col]
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
