"""Polygon layers from any file geopandas reads (GeoPackage, GeoJSON, Shapefile, GeoParquet).

Sampling is a vectorised point-in-polygon join: the points (moved into the file's CRS with
pyproj, so polygons are never reprojected and never cut at the dateline) are queried against the
GeoDataFrame's spatial index in one call. A point in several overlapping polygons takes the first
in file order; a point on a shared border belongs to the first of its polygons.

What a point gets:
- no `attribute`: 1 ("inside") in any polygon, 0 ("outside") elsewhere — a presence layer;
- `attribute` holding text, or `classes` given: the class of its polygon (`classes` maps attribute
  values to class names; without it the text values are the class names); missing outside;
- `attribute` holding numbers and no `classes`: the number (a continuous layer); missing outside.
"""

from __future__ import annotations

import glob
from functools import cached_property
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from pyproj import CRS, Transformer

from geoconcept.errors import ConfigError
from geoconcept.layers.base import Layer, content_version
from geoconcept.layers.builtin import ClassTable
from geoconcept.layers.grid import WGS84

PARQUET_SUFFIXES = (".parquet", ".geoparquet")
POLYGONAL = {"Polygon", "MultiPolygon"}


def read_polygons(path: Path, file_layer: str | None = None) -> gpd.GeoDataFrame:
    """Read a polygon file with a CRS; ConfigError naming the file for anything unusable."""
    if not path.is_file():
        raise ConfigError(f"vector file {path} not found")
    try:
        if path.suffix.lower() in PARQUET_SUFFIXES:
            frame = gpd.read_parquet(path)
        else:
            frame = gpd.read_file(path, layer=file_layer)
    except Exception as exc:  # pyogrio/pyarrow raise many types for unreadable files
        raise ConfigError(f"cannot read {path} as a vector file: {exc}") from exc
    if frame.crs is None:
        raise ConfigError(f"vector file {path} has no CRS (set one, e.g. with ogr2ogr -a_srs EPSG:4326)")
    frame = frame[~(frame.geometry.isna() | frame.geometry.is_empty)].reset_index(drop=True)
    if frame.empty:
        raise ConfigError(f"vector file {path} has no features with a geometry")
    kinds = set(frame.geometry.geom_type)
    if not kinds <= POLYGONAL:
        raise ConfigError(f"vector file {path} must hold polygons for point-in-polygon, found {sorted(kinds)}")
    return frame


class VectorLayer(Layer):
    """A polygon layer sampled by point-in-polygon (see the module docstring)."""

    kind = "vector"

    def __init__(
        self,
        name: str,
        path: str | Path,
        *,
        attribute: str | None = None,
        classes: dict | None = None,
        file_layer: str | None = None,
        description: str = "",
        units: str = "",
    ) -> None:
        self.path = Path(path)
        self.frame = read_polygons(self.path, file_layer)
        values, table, outside = self._feature_values(attribute, classes)
        super().__init__(name, classes=table, description=description, units=units)
        self.attribute = attribute
        self._classes_config = classes
        self._values = values
        self._outside = outside
        self._transformer = (
            None if self.frame.crs.is_geographic else Transformer.from_crs(WGS84, self.frame.crs, always_xy=True)
        )

    def _feature_values(
        self, attribute: str | None, classes: dict | None
    ) -> tuple[np.ndarray, ClassTable | None, int | None]:
        """Per-feature code or value (missing = -1 / NaN), the class table, and the code outside polygons."""
        n = len(self.frame)
        if attribute is None:
            if classes:
                raise ConfigError(f"vector file {self.path}: `classes` needs an `attribute` column to read them from")
            table = ClassTable(symbols={0: "outside", 1: "inside"}, names={0: "outside", 1: "inside"})
            return np.ones(n, dtype=np.int64), table, 0
        if attribute not in self.frame.columns or attribute == self.frame.geometry.name:
            columns = [c for c in self.frame.columns if c != self.frame.geometry.name]
            raise ConfigError(f"vector file {self.path} has no attribute column {attribute!r} (columns: {columns})")
        column = self.frame[attribute]
        if classes:
            keys = list(classes)
            code_of = {str(key): i for i, key in enumerate(keys)}
            codes = column.map(lambda v: code_of.get(str(v), -1) if pd.notna(v) else -1).to_numpy(dtype=np.int64)
            symbols = {i: str(classes[key]) for i, key in enumerate(keys)}
            return codes, ClassTable(symbols=symbols, names=symbols), None
        if pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column):
            return column.to_numpy(dtype=np.float64, na_value=np.nan), None, None
        text = column.map(lambda v: str(v) if pd.notna(v) else None)
        symbols = sorted({v for v in text if v is not None})
        code_of = {s: i for i, s in enumerate(symbols)}
        codes = text.map(lambda v: code_of.get(v, -1) if v is not None else -1).to_numpy(dtype=np.int64)
        table = dict(enumerate(symbols))
        return codes, ClassTable(symbols=table, names=table), None

    def sample(self, lat: np.ndarray, lon: np.ndarray) -> np.ma.MaskedArray:
        lat = np.asarray(lat, dtype=np.float64)
        lon = np.asarray(lon, dtype=np.float64)
        if self._transformer is None:
            x, y = lon, lat
        else:
            x, y = self._transformer.transform(lon, lat)
        finite = np.isfinite(x) & np.isfinite(y)
        points = shapely.points(np.where(finite, x, 0.0), np.where(finite, y, 0.0))
        point_index, feature_index = self.frame.sindex.query(points, predicate="intersects")
        # First feature (in file order) per point: sort the pairs, keep each point's first.
        order = np.lexsort((feature_index, point_index))
        point_index, feature_index = point_index[order], feature_index[order]
        first = np.unique(point_index, return_index=True)[1]
        hit_point, hit_feature = point_index[first], feature_index[first]

        if self.classes is None:
            values = np.full(lat.shape, np.nan)
            values[hit_point] = self._values[hit_feature]
            return np.ma.MaskedArray(values, mask=~finite | np.isnan(values))
        codes = np.full(lat.shape, -1 if self._outside is None else self._outside, dtype=np.int64)
        codes[hit_point] = self._values[hit_feature]
        return np.ma.MaskedArray(codes, mask=~finite | (codes < 0))

    @property
    def source(self) -> str:
        return str(self.path)

    @property
    def crs(self) -> CRS:
        return CRS.from_user_input(self.frame.crs)

    @property
    def resolution(self) -> str:
        return f"{len(self.frame)} polygons (vector)"

    @cached_property
    def version(self) -> str:
        files = [self.path]
        if self.path.suffix.lower() == ".shp":  # a shapefile's attributes and CRS live in sidecar files
            files = sorted(self.path.parent.glob(glob.escape(self.path.stem) + ".*"))
        return content_version(files, f"vector-{self.attribute}-{self._classes_config}")

    def bounds(self) -> tuple[float, float, float, float]:
        west, south, east, north = self.frame.to_crs(WGS84).total_bounds
        return (float(west), float(south), float(east), float(north))
