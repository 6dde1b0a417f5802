"""User layers from a YAML config (projected rasters, polygon files), config errors, maps and summaries."""

from __future__ import annotations

import hashlib
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import yaml
from affine import Affine
from PIL import Image
from pyproj import Transformer
from shapely.geometry import Point, box

from geoconcept.concepts.bank import load_bank
from geoconcept.concepts.labels import label_points
from geoconcept.errors import ConfigError
from geoconcept.layers.maps import render_layer_map
from geoconcept.layers.neighbourhood import class_fractions
from geoconcept.layers.registry import BUILTIN_NAMES, Registry
from geoconcept.layers.summary import layer_summary

TO_MERCATOR = Transformer.from_crs("EPSG:4326", "EPSG:3857", always_xy=True)


def write_tif(path: Path, array: np.ndarray, transform: Affine, crs: str | None, nodata=None) -> Path:
    profile = dict(driver="GTiff", height=array.shape[0], width=array.shape[1], count=1, dtype=array.dtype)
    if crs is not None:
        profile["crs"] = crs
    with rasterio.open(path, "w", transform=transform, nodata=nodata, **profile) as ds:
        ds.write(array, 1)
    return path


def write_config(folder: Path, *layers: dict) -> Path:
    path = folder / "layers.yaml"
    path.write_text(yaml.safe_dump({"layers": list(layers)}, sort_keys=False))
    return path


@pytest.fixture
def mercator_tif(tmp_path) -> Path:
    """EPSG:3857, x 0–200 km, y 0–200 km, 1 km cells: class 10 west of x = 100 km, 20 east of it."""
    array = np.full((200, 200), 10, dtype=np.uint8)
    array[:, 100:] = 20
    return write_tif(tmp_path / "mercator.tif", array, Affine(1000, 0, 0, 0, -1000, 200_000), "EPSG:3857")


def lonlat_of(x: float, y: float) -> tuple[float, float]:
    lon, lat = TO_MERCATOR.transform(x, y, direction="INVERSE")
    return lat, lon


def test_projected_raster_is_sampled_through_its_crs(tmp_path, mercator_tif):
    config = write_config(
        tmp_path, {"name": "zones", "kind": "raster", "path": "mercator.tif", "classes": {10: "forest", 20: "lake"}}
    )
    layer = Registry.from_config(config)["zones"]
    points = [lonlat_of(50_000, 50_000), lonlat_of(150_000, 150_000), lonlat_of(-50_000, 50_000)]
    lat, lon = np.array(points).T
    assert list(layer.symbols_of(layer.sample(lat, lon))) == ["forest", "lake", None]  # last: off the raster
    assert layer.crs.to_epsg() == 3857 and layer.resolution == "1000 metre"
    west, south, east, _ = layer.bounds()
    assert west == pytest.approx(0) and east == pytest.approx(1.7966, abs=1e-3) and south == pytest.approx(0)
    # 10 km disc centred on the class boundary (Mercator near the equator barely distorts).
    shares = class_fractions(layer, *map(np.array, zip(lonlat_of(100_000, 100_000), strict=True)), radius_km=10)
    assert shares.loc[0, "forest"] == pytest.approx(0.5, abs=0.03)


def test_continuous_raster_with_nan_nodata_feeds_a_threshold_rule(tmp_path):
    elevation = np.tile(np.linspace(0, 3000, 100, dtype=np.float32), (100, 1))  # rises eastwards
    elevation[:10] = np.nan
    write_tif(tmp_path / "dem.tif", elevation, Affine(0.01, 0, 6.0, 0, -0.01, 46.0), "EPSG:4326")
    config = write_config(tmp_path, {"name": "elevation", "kind": "raster", "path": "dem.tif", "units": "m"})
    bank_path = tmp_path / "bank.yaml"
    bank_path.write_text(
        yaml.safe_dump(
            {
                "version": 1,
                "concepts": [
                    {
                        "id": "highland",
                        "name": "Highland",
                        "category": "terrain",
                        "prompts": ["mountains"],
                        "rule": {"layer": "elevation", "threshold": {"op": ">=", "value": 1500}},
                    }
                ],
            }
        )
    )
    registry = Registry.from_config(config)
    bank = load_bank(bank_path, registry=registry)
    labels = label_points([45.5, 45.5, 45.95], [6.1, 6.9, 6.9], bank, registry)
    assert labels["concept__highland"].tolist()[:2] == [0.0, 1.0]
    assert np.isnan(labels["concept__highland"].iloc[2])  # NaN cell: missing, not 0
    assert load_bank(registry=registry).ids  # the default bank still validates with user layers added


@pytest.fixture
def zones_geojson(tmp_path) -> Path:
    frame = gpd.GeoDataFrame(
        {"zone": ["north", "south"], "score": [1.5, 2.5]},
        geometry=[box(0, 0, 10, 10), box(0, -10, 10, 0)],
        crs="EPSG:4326",
    )
    path = tmp_path / "zones.geojson"
    frame.to_file(path, driver="GeoJSON")
    return path


def test_vector_layers_text_numeric_and_presence(tmp_path, zones_geojson):
    config = write_config(
        tmp_path,
        {"name": "zone", "kind": "vector", "path": "zones.geojson", "attribute": "zone"},
        {"name": "score", "kind": "vector", "path": "zones.geojson", "attribute": "score"},
        {"name": "in_zones", "kind": "vector", "path": "zones.geojson"},
        {
            "name": "zone_coded",
            "kind": "vector",
            "path": "zones.geojson",
            "attribute": "zone",
            "classes": {"north": "n"},
        },
    )
    registry = Registry.from_config(config)
    lat, lon = np.array([5.0, -5.0, 5.0, 0.0]), np.array([5.0, 5.0, 50.0, 5.0])
    assert list(registry["zone"].symbols_of(registry["zone"].sample(lat, lon))) == ["north", "south", None, "north"]
    score = registry["score"].sample(lat, lon)
    assert registry["score"].classes is None
    assert score.tolist() == [1.5, 2.5, None, 1.5]  # on the shared border: the first polygon in the file
    assert registry["in_zones"].symbols_of(registry["in_zones"].sample(lat, lon)).tolist() == [
        "inside",
        "inside",
        "outside",
        "inside",
    ]
    coded = registry["zone_coded"]
    assert coded.symbols_of(coded.sample(lat, lon)).tolist() == ["n", None, None, "n"]  # unlisted value: missing


def test_polygon_country_layer_replaces_the_builtin(tmp_path):
    # A deliberately wrong polygon over Paris proves the polygons are used, and continent follows.
    frame = gpd.GeoDataFrame(
        {"ISO_A2": ["DE", "JP"]}, geometry=[box(2.0, 48.5, 3.0, 49.5), box(139, 35, 140, 36)], crs="EPSG:4326"
    )
    frame.to_crs("EPSG:3035").to_file(tmp_path / "countries.gpkg", driver="GPKG")  # a projected CRS
    config = write_config(
        tmp_path,
        {"name": "country", "kind": "vector", "path": "countries.gpkg", "attribute": "ISO_A2", "replace": True},
    )
    registry = Registry.from_config(config)
    labels = label_points([48.85, 35.68, -3.5], [2.35, 139.7, -62.0], registry=registry)
    assert labels["country"].tolist()[:2] == ["DE", "JP"] and labels["country"].isna().iloc[2]
    assert labels["continent"].tolist()[:2] == ["Europe", "Asia"]
    # The bank's rule naming countries the polygons lack still validates, and simply never matches.
    assert labels["concept__left_hand_traffic"].tolist()[:2] == [0.0, 1.0]


def test_replacement_must_be_categorical_like_the_builtin(tmp_path, zones_geojson):
    message = config_error(
        tmp_path, {"name": "igbp", "kind": "vector", "path": "zones.geojson", "attribute": "score", "replace": True}
    )
    assert "replaces a categorical built-in layer" in message


def test_layer_written_as_geoparquet_and_shapefile(tmp_path, zones_geojson):
    frame = gpd.read_file(zones_geojson)
    frame.to_parquet(tmp_path / "zones.parquet")
    frame.to_file(tmp_path / "zones.shp")
    config = write_config(
        tmp_path,
        {"name": "zp", "kind": "vector", "path": "zones.parquet", "attribute": "zone"},
        {"name": "zs", "kind": "vector", "path": "zones.shp", "attribute": "zone"},
    )
    registry = Registry.from_config(config)
    for name in ("zp", "zs"):
        layer = registry[name]
        assert layer.symbols_of(layer.sample(np.array([-5.0]), np.array([5.0]))).tolist() == ["south"]


def config_error(tmp_path: Path, *layers: dict) -> str:
    with pytest.raises(ConfigError) as info:
        Registry.from_config(write_config(tmp_path, *layers))
    return str(info.value)


def test_missing_file_is_named(tmp_path):
    message = config_error(tmp_path, {"name": "dem", "kind": "raster", "path": "nowhere.tif"})
    assert "layers.yaml" in message and "dem" in message and "nowhere.tif" in message and "not found" in message


def test_corrupt_raster_is_named(tmp_path):
    (tmp_path / "broken.tif").write_bytes(b"II*\x00 this is not a tiff" * 10)
    message = config_error(tmp_path, {"name": "broken", "kind": "raster", "path": "broken.tif"})
    assert "broken.tif" in message and "cannot read" in message


def test_raster_without_crs_is_refused(tmp_path):
    write_tif(tmp_path / "nocrs.tif", np.ones((4, 4), np.uint8), Affine(1, 0, 0, 0, -1, 4), None)
    message = config_error(tmp_path, {"name": "nocrs", "kind": "raster", "path": "nocrs.tif"})
    assert "nocrs.tif" in message and "no CRS" in message


def test_vector_without_crs_is_refused(tmp_path, zones_geojson):
    gpd.read_file(zones_geojson).to_file(tmp_path / "zones.shp")
    (tmp_path / "zones.prj").unlink()
    message = config_error(tmp_path, {"name": "z", "kind": "vector", "path": "zones.shp"})
    assert "zones.shp" in message and "no CRS" in message


def test_points_are_not_polygons(tmp_path):
    gpd.GeoDataFrame(geometry=[Point(0, 0)], crs="EPSG:4326").to_file(tmp_path / "pts.geojson", driver="GeoJSON")
    message = config_error(tmp_path, {"name": "p", "kind": "vector", "path": "pts.geojson"})
    assert "polygons" in message and "Point" in message


def test_every_config_problem_is_reported_at_once(tmp_path, mercator_tif, zones_geojson):
    message = config_error(
        tmp_path,
        {"name": "a", "kind": "raster", "path": "mercator.tif", "colour": "red"},
        {"name": "b", "kind": "netcdf", "path": "mercator.tif"},
        {"name": "c", "kind": "raster", "path": "mercator.tif", "band": 2},
        {"name": "c", "kind": "raster", "path": "mercator.tif"},
        {"name": "igbp", "kind": "raster", "path": "mercator.tif"},
        {"name": "Bad Name", "kind": "raster", "path": "mercator.tif"},
        {"name": "d", "kind": "vector", "path": "zones.geojson", "attribute": "nope"},
        {"name": "e", "kind": "raster", "path": "mercator.tif", "classes": {10: "x", 20: "x"}},
    )
    for expected in [
        "layer 'a': unknown key(s) ['colour']",
        "layer 'b': kind 'netcdf'",
        "layer 'c': raster file",
        "not band 2",
        "layer 'c': is defined twice",
        "layer 'igbp': has the name of a built-in layer",
        "'Bad Name' must be lowercase",
        "no attribute column 'nope'",
        "class names must be non-empty and distinct",
    ]:
        assert expected in message


def test_invalid_yaml_and_shape(tmp_path):
    path = tmp_path / "layers.yaml"
    path.write_text("layers: [ {name: x\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        Registry.from_config(path)
    path.write_text("- just a list\n")
    with pytest.raises(ConfigError, match="one key `layers:`"):
        Registry.from_config(path)


def test_builtin_registry_without_config():
    assert Registry.from_config(None).names == list(BUILTIN_NAMES)


def test_map_png_is_written_atomically_and_deterministically(tmp_path, mercator_tif):
    config = write_config(
        tmp_path, {"name": "zones", "kind": "raster", "path": "mercator.tif", "classes": {10: "forest", 20: "lake"}}
    )
    layer = Registry.from_config(config)["zones"]
    first = render_layer_map(layer, tmp_path / "maps" / "zones.png", width=200)
    digest = hashlib.sha256(first.read_bytes()).hexdigest()
    render_layer_map(layer, first, width=200)
    assert hashlib.sha256(first.read_bytes()).hexdigest() == digest
    with Image.open(first) as image:
        assert image.width == 200 and image.height > 200  # map + title + legend
        colours = {c for _, c in image.convert("RGB").getcolors(100_000)}
    assert (0x1F, 0x77, 0xB4) in colours and (0xAE, 0xC7, 0xE8) in colours  # tab20's first two: both classes
    assert sorted(p.name for p in first.parent.iterdir()) == ["zones.png"]  # no temporaries left


def test_continuous_map_has_a_colour_bar(tmp_path):
    registry = Registry.builtin()
    out = render_layer_map(registry["coast_km"], tmp_path / "coast.png", width=64)
    with Image.open(out) as image:
        assert image.width == 64


def test_summary_shares_are_area_weighted(tmp_path):
    """Class 1 north of 60°N: a sixth of a lat/lon raster's cells but only 6.7 % of the Earth's area."""
    array = np.full((180, 360), 2, dtype=np.uint8)
    array[:30] = 1
    write_tif(tmp_path / "cap.tif", array, Affine(1, 0, -180, 0, -1, 90), "EPSG:4326")
    config = write_config(tmp_path, {"name": "cap", "kind": "raster", "path": "cap.tif", "classes": {1: "n", 2: "s"}})
    summary = layer_summary(Registry.from_config(config)["cap"])
    assert summary["class_histogram"]["n"] == pytest.approx((1 - np.sin(np.radians(60))) / 2, abs=0.002)
    assert summary["coverage"] == 1.0
    assert summary["crs"] == "EPSG:4326" and summary["kind"] == "raster" and len(summary["version"]) == 64


def test_summary_of_a_continuous_builtin():
    summary = layer_summary(Registry.builtin()["coast_km"], grid=(64, 32))
    quantiles = summary["value_quantiles"]
    assert 0 <= quantiles["min"] <= quantiles["p50"] <= quantiles["max"] < 3000
    assert summary["units"] == "km" and "class_histogram" not in summary
