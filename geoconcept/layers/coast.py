"""Distance to the ocean coastline, derived from the bundled 1 km GLOBE land mask.

The coastline is every edge between a land cell and an ocean cell of the mask (1/120°), taken at
the edge's midpoint: ~2.1 million points, extracted once and cached in `builtin.cache_dir()`.
Distances are great-circle km to the nearest of them, found with a k-d tree over unit vectors.

Accuracy: within about half a cell edge (≤ 0.46 km) of the distance to the mask's own land/ocean
boundary, plus < 0.5 % for using a sphere; the boundary itself is only as good as the 1 km mask.
The mask counts lakes and inland seas (even the Caspian) as land, so this is the distance to the
*ocean* coast. The distance is ≥ 0 on both sides: use the `land` layer for the side.
"""

from __future__ import annotations

from functools import cache, cached_property

import numpy as np
from pyproj import CRS
from scipy.spatial import cKDTree

from geoconcept import atomic, bundled
from geoconcept.layers import builtin
from geoconcept.layers.base import Layer, content_version
from geoconcept.layers.grid import WGS84, MappedArray
from geoconcept.layers.sphere import chord_to_km, point_tree, unit_vectors

ALGORITHM = "coastline-edge-midpoints-v1"
ROWS_PER_BLOCK = 1200  # bounds the temporary boolean arrays to ~50 MB each


def _edge_midpoints(land: MappedArray) -> np.ndarray:
    """(m, 2) lat/lon of the midpoints of land/ocean cell edges of a global 1/N° grid."""
    h = land.shape[0]
    cell = 180.0 / h
    parts = []
    for r0 in range(0, h, ROWS_PER_BLOCK):
        r1 = min(r0 + ROWS_PER_BLOCK, h)
        block = land.rows(r0, min(r1 + 1, h)).astype(bool)
        rows = block[: r1 - r0]
        # East edges of every cell; the last column's east neighbour is the first (dateline).
        row, col = np.nonzero(rows != np.roll(rows, -1, axis=1))
        parts.append(np.stack([90.0 - (r0 + row + 0.5) * cell, -180.0 + (col + 1) * cell], axis=1))
        # South edges, with the first row of the next block.
        below = block[1:]
        row, col = np.nonzero(rows[: below.shape[0]] != below)
        parts.append(np.stack([90.0 - (r0 + row + 1) * cell, -180.0 + (col + 0.5) * cell], axis=1))
    points = np.concatenate(parts)
    points[:, 1] = (points[:, 1] + 180.0) % 360.0 - 180.0
    return points


def coastline_points() -> np.ndarray:
    """(m, 2) float64 lat/lon of the coastline points (cached as a `.npy` beside the rasters; not
    kept in memory: the k-d tree holds them as unit vectors)."""
    source = bundled.LAND_MASK_NPZ.path()
    target = builtin.cache_dir() / f"coastline-{content_version([source], ALGORITHM)[:16]}.npy"
    if not target.exists():
        points = _edge_midpoints(builtin.land_mask().array)
        with atomic.atomic_open(target, "wb") as fh:
            np.save(fh, points)
    return np.load(target)


@cache
def _coast_tree() -> cKDTree:
    points = coastline_points()
    return point_tree(points[:, 0], points[:, 1])


def coast_distance_km(lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    """Great-circle km from each point to the nearest ocean coastline point (float64, ≥ 0)."""
    chord, _ = _coast_tree().query(unit_vectors(lat, lon), k=1, workers=-1)
    return chord_to_km(chord)


class CoastDistanceLayer(Layer):
    """`coast_km`: continuous distance to the ocean coastline in km."""

    kind = "derived"

    def __init__(self, name: str = "coast_km") -> None:
        super().__init__(
            name,
            description="Great-circle distance to the ocean coastline of the GLOBE 1 km land mask",
            units="km",
        )

    def sample(self, lat: np.ndarray, lon: np.ndarray) -> np.ma.MaskedArray:
        lat = np.asarray(lat, dtype=np.float64)
        lon = np.asarray(lon, dtype=np.float64)
        valid = np.isfinite(lat) & np.isfinite(lon)
        km = np.full(lat.shape, np.nan)
        km[valid] = coast_distance_km(lat[valid], lon[valid])
        return np.ma.MaskedArray(km, mask=~valid)

    @property
    def source(self) -> str:
        return f"derived from the land mask ({bundled.LAND_MASK_NPZ.package}: {bundled.LAND_MASK_NPZ.relpath})"

    @property
    def crs(self) -> CRS:
        return WGS84

    @property
    def resolution(self) -> str:
        return "coastline from the 1/120° land mask (~0.93 km cells)"

    @cached_property
    def version(self) -> str:
        return content_version([bundled.LAND_MASK_NPZ.path()], ALGORITHM)
