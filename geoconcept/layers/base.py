"""What every geographic layer offers: a name, where it comes from, and vectorised sampling.

A layer is either categorical (integer class codes with a `ClassTable`) or continuous (float
values with units). `sample(lat, lon)` takes WGS84 degree arrays and returns a masked array in
input order, masked where the layer has no value (nodata, outside its extent, open ocean for
the country layer) — missing, never 0.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from functools import cached_property
from pathlib import Path

import numpy as np
from pyproj import CRS
from rasterio.transform import array_bounds
from rasterio.warp import transform_bounds

from geoconcept.hashing import file_sha256
from geoconcept.layers.builtin import ClassTable
from geoconcept.layers.grid import WGS84, Grid
from geoconcept.layers.sphere import EARTH_RADIUS_KM

KM_PER_DEGREE = np.pi * EARTH_RADIUS_KM / 180.0
GLOBAL_BOUNDS = (-180.0, -90.0, 180.0, 90.0)


def content_version(paths: Iterable[Path], tag: str = "") -> str:
    """sha256 over the sha256 of each file (and an algorithm tag for derived layers)."""
    h = hashlib.sha256(tag.encode())
    for path in paths:
        h.update(file_sha256(Path(path)).encode())
    return h.hexdigest()


def describe_resolution(transform, crs: CRS) -> str:
    """Cell size in words, e.g. "0.05° (~5.56 km at the equator)" or "100 metre"."""
    width = abs(transform.a)
    height = abs(transform.e)
    if crs.is_geographic:
        size = f"{width:.6g}°" if np.isclose(width, height) else f"{width:.6g}° × {height:.6g}°"
        return f"{size} (~{width * KM_PER_DEGREE:.3g} km at the equator)"
    unit = crs.axis_info[0].unit_name if crs.axis_info else "units"
    return f"{width:g} {unit}" if np.isclose(width, height) else f"{width:g} × {height:g} {unit}"


class Layer(ABC):
    """A named layer sampled at arrays of WGS84 points."""

    #: "raster", "vector" or "derived"
    kind: str

    def __init__(self, name: str, *, classes: ClassTable | None = None, description: str = "", units: str = "") -> None:
        self.name = name
        self.classes = classes
        self.description = description
        self.units = units
        #: Class symbols of the built-in layer this one replaces that its own data lacks: rules may
        #: still name them (they never match), so a bank written for the built-in keeps working.
        self.inherited_symbols: frozenset[str] = frozenset()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} ({self.kind})>"

    @property
    def categorical(self) -> bool:
        return self.classes is not None

    @abstractmethod
    def sample(self, lat: np.ndarray, lon: np.ndarray) -> np.ma.MaskedArray:
        """Class code or value at each point; masked where the layer has no value."""

    @property
    @abstractmethod
    def source(self) -> str:
        """Where the data comes from (package file, user file, or the layer it is derived from)."""

    @property
    @abstractmethod
    def crs(self) -> CRS: ...

    @property
    @abstractmethod
    def resolution(self) -> str: ...

    @property
    @abstractmethod
    def version(self) -> str:
        """A content hash: it changes when the data (or the derivation) changes."""

    def bounds(self) -> tuple[float, float, float, float]:
        """(west, south, east, north) in WGS84 degrees; `west > east` crosses the dateline."""
        return GLOBAL_BOUNDS

    @property
    def known_symbols(self) -> set[str]:
        """Class symbols rules may name: its own and any inherited ones."""
        return set() if self.classes is None else set(self.classes.symbols.values()) | self.inherited_symbols

    def codes_of(self, symbols: Iterable[str]) -> list[int]:
        """Class codes of the given symbols (inherited ones have none); KeyError naming unknown ones."""
        if self.classes is None:
            raise KeyError(f"layer {self.name!r} is continuous: it has no classes")
        symbols = list(symbols)
        unknown = [s for s in symbols if s not in self.known_symbols]
        if unknown:
            raise KeyError(f"unknown class(es) {unknown} of layer {self.name!r}")
        by_symbol = {sym: code for code, sym in self.classes.symbols.items()}
        return [by_symbol[s] for s in symbols if s in by_symbol]

    def symbols_of(self, codes: np.ma.MaskedArray) -> np.ndarray:
        """Object array of class symbols; None where masked or the code has no symbol."""
        if self.classes is None:
            raise KeyError(f"layer {self.name!r} is continuous: it has no classes")
        return lookup(codes, self.classes.symbols)


def lookup(codes: np.ma.MaskedArray, table: dict[int, str]) -> np.ndarray:
    """Map integer codes through `table` into an object array (None where masked or unknown)."""
    out = np.full(codes.shape, None, dtype=object)
    valid = ~np.ma.getmaskarray(codes)
    present, inverse = np.unique(np.ma.getdata(codes)[valid], return_inverse=True)
    names = np.array([table.get(int(code)) for code in present], dtype=object)
    out[valid] = names[inverse]
    return out


class RasterLayer(Layer):
    """A layer backed by a `Grid` (bundled raster or user GeoTIFF), opened on first use."""

    kind = "raster"

    def __init__(
        self,
        name: str,
        open_grid: Callable[[], Grid],
        files: Sequence[Path],
        *,
        source: str | None = None,
        classes: ClassTable | None = None,
        description: str = "",
        units: str = "",
    ) -> None:
        super().__init__(name, classes=classes, description=description, units=units)
        self._open_grid = open_grid
        self.files = [Path(f) for f in files]
        self._source = source

    @cached_property
    def grid(self) -> Grid:
        return self._open_grid()

    def sample(self, lat: np.ndarray, lon: np.ndarray) -> np.ma.MaskedArray:
        return self.grid.sample(lat, lon)

    @property
    def source(self) -> str:
        return self._source or ", ".join(str(f) for f in self.files)

    @property
    def crs(self) -> CRS:
        return CRS.from_user_input(self.grid.crs)

    @property
    def resolution(self) -> str:
        return describe_resolution(self.grid.transform, self.crs)

    @cached_property
    def version(self) -> str:
        return content_version(self.files)

    def bounds(self) -> tuple[float, float, float, float]:
        h, w = self.grid.shape
        west, south, east, north = array_bounds(h, w, self.grid.transform)
        if self.grid.is_geographic:
            return (max(west, -180.0), max(south, -90.0), min(east, 180.0), min(north, 90.0))
        return transform_bounds(self.grid.crs, WGS84, west, south, east, north, densify_pts=21)
