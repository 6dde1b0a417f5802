"""Neighbourhood class fractions on small synthetic GeoTIFFs whose answers can be worked out by hand."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from scipy.ndimage import gaussian_filter

from geoconcept.layers.grid import WGS84, Grid
from geoconcept.layers.neighbourhood import class_fractions, disc_means, disc_positions, disc_stencil
from geoconcept.layers.registry import Registry
from geoconcept.layers.sphere import EARTH_RADIUS_KM, great_circle_km

KM_PER_DEG = np.pi * EARTH_RADIUS_KM / 180.0


def write_tif(path: Path, array: np.ndarray, west: float, north: float, res: float, nodata=None) -> Path:
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        height=array.shape[0],
        width=array.shape[1],
        count=1,
        dtype=array.dtype,
        crs="EPSG:4326",
        transform=Affine(res, 0, west, 0, -res, north),
        nodata=nodata,
    ) as ds:
        ds.write(array, 1)
    return path


def layer_from(tmp_path: Path, array: np.ndarray, west: float, north: float, res: float, classes, nodata=None):
    write_tif(tmp_path / "synthetic.tif", array, west, north, res, nodata)
    config = tmp_path / "layers.yaml"
    entry = {"name": "synthetic", "kind": "raster", "path": "synthetic.tif", "classes": classes}
    import yaml

    config.write_text(yaml.safe_dump({"layers": [entry]}))
    return Registry.from_config(config)["synthetic"]


def segment_share(offset_km: float, radius_km: float) -> float:
    """Share of a disc beyond a straight line `offset_km` from its centre (circular segment)."""
    a = offset_km / radius_km
    return (np.arccos(a) - a * np.sqrt(1 - a * a)) / np.pi


@pytest.fixture(scope="module")
def halves(tmp_path_factory):
    """lon 0–2°, lat −1–1° at 0.002°: class 1 west of 1°E, class 2 east of it."""
    tmp = tmp_path_factory.mktemp("halves")
    array = np.ones((1000, 1000), dtype=np.uint8)
    array[:, 500:] = 2
    return layer_from(tmp, array, 0.0, 1.0, 0.002, {1: "west", 2: "east"})


def test_stencil_is_area_uniform():
    fraction, bearing = disc_stencil(256)
    assert fraction.max() < 1 and fraction.min() > 0
    # a uniform disc has half its area within r/√2 and a quarter in each quadrant
    assert np.mean(fraction < 1 / np.sqrt(2)) == pytest.approx(0.5, abs=0.01)
    assert np.histogram(bearing, bins=4, range=(0, 2 * np.pi))[0] == pytest.approx([64] * 4, abs=2)


def test_disc_positions_are_at_the_right_distances():
    lat, lon = disc_positions(np.array([45.0, 89.9, -10.0]), np.array([10.0, 0.0, 179.99]), 25.0, 64)
    fraction, _ = disc_stencil(64)
    distances = great_circle_km(np.array([[45.0], [89.9], [-10.0]]), np.array([[10.0], [0.0], [179.99]]), lat, lon)
    assert np.allclose(distances, 25.0 * fraction[None, :], atol=0.01)
    assert (np.abs(lon) <= 180).all()


def test_boundary_through_the_centre_gives_half_and_half(halves):
    shares = class_fractions(halves, np.array([0.0]), np.array([1.0]), radius_km=10)
    assert list(shares.columns) == ["west", "east"]
    assert shares.loc[0, "west"] == pytest.approx(0.5, abs=0.01)
    assert shares.loc[0, "west"] + shares.loc[0, "east"] == pytest.approx(1.0)


@pytest.mark.parametrize("offset_km", [2.0, 5.0, 8.0])
def test_boundary_off_centre_gives_the_circular_segment(halves, offset_km):
    lon = 1.0 - offset_km / KM_PER_DEG  # west of the boundary by offset_km
    east = disc_means(halves.sample, np.array([0.0]), np.array([lon]), 10.0, [lambda v: v == 2])[0, 0]
    assert east == pytest.approx(segment_share(offset_km, 10.0), abs=0.02)  # worst case 0.018 at S = 256
    finer = disc_means(halves.sample, np.array([0.0]), np.array([lon]), 10.0, [lambda v: v == 2], samples=1024)
    assert finer[0, 0] == pytest.approx(segment_share(offset_km, 10.0), abs=0.007)


def test_disc_entirely_in_one_class(halves):
    shares = class_fractions(halves, np.array([0.0, 0.0]), np.array([0.3, 1.7]), radius_km=10)
    assert shares["west"].tolist() == [1.0, 0.0]


def test_nodata_is_left_out_and_all_nodata_is_nan(tmp_path):
    array = np.ones((1000, 1000), dtype=np.uint8)
    array[:, 500:] = 0  # east half is nodata
    layer = layer_from(tmp_path, array, 0.0, 1.0, 0.002, {1: "west"}, nodata=0)
    shares = class_fractions(layer, np.array([0.0, 0.0]), np.array([1.0, 1.8]), radius_km=10)
    assert shares.loc[0, "west"] == 1.0  # the valid half is all class 1: not diluted by nodata
    assert np.isnan(shares.loc[1, "west"])  # no valid position at all: missing, not 0


@pytest.fixture(scope="module")
def dateline(tmp_path_factory):
    """Global 0.1° raster: 1 for lon in [170, 180), 2 for [-180, -170), 3 elsewhere."""
    tmp = tmp_path_factory.mktemp("dateline")
    array = np.full((1800, 3600), 3, dtype=np.uint8)
    array[:, 3500:] = 1
    array[:, :100] = 2
    return layer_from(tmp, array, -180.0, 90.0, 0.1, {1: "east_edge", 2: "west_edge", 3: "elsewhere"})


def test_neighbourhood_across_the_dateline(dateline):
    lat = np.array([0.0, 0.0, 30.0])
    shares = class_fractions(dateline, lat, np.array([180.0, -180.0, 180.0]), radius_km=50)
    assert np.allclose(shares.iloc[0], shares.iloc[1])
    assert shares.loc[0, "east_edge"] == pytest.approx(0.5, abs=0.02)
    assert shares.loc[0, "west_edge"] == pytest.approx(0.5, abs=0.02)
    assert shares.loc[2, "east_edge"] == pytest.approx(0.5, abs=0.02)
    assert shares["elsewhere"].max() == 0.0


def test_neighbourhood_around_the_pole(tmp_path):
    """Class 1 north of 89.5° (a cap of radius 55.6 km): a 100 km disc at the pole is ~31 % class 1."""
    array = np.full((1800, 3600), 2, dtype=np.uint8)
    array[:5] = 1
    layer = layer_from(tmp_path, array, -180.0, 90.0, 0.1, {1: "cap", 2: "rest"})
    cap_km, radius_km = 0.5 * KM_PER_DEG, 100.0
    expected = (1 - np.cos(cap_km / EARTH_RADIUS_KM)) / (1 - np.cos(radius_km / EARTH_RADIUS_KM))
    shares = class_fractions(layer, np.array([90.0, 90.0, 89.9]), np.array([0.0, 123.0, 45.0]), radius_km)
    assert shares.loc[0, "cap"] == pytest.approx(expected, abs=0.02)
    assert shares.loc[1, "cap"] == pytest.approx(shares.loc[0, "cap"], abs=0.01)  # any longitude at the pole
    assert shares.loc[2, "cap"] == pytest.approx(expected, abs=0.05)  # 11 km off the pole


def test_accuracy_against_exact_cell_shares():
    """The module docstring's accuracy claim: rough class boundaries, 25 km discs, S = 256."""
    rng = np.random.default_rng(1)
    res, west, north = 0.005, 9.0, 43.0
    field = gaussian_filter(rng.normal(size=(800, 1200)), 20)
    array = (field > 0).astype(np.uint8)
    grid = Grid(array, Affine(res, 0, west, 0, -res, north), WGS84)
    lats = north - (np.arange(800) + 0.5) * res
    lons = west + (np.arange(1200) + 0.5) * res
    cell_lat, cell_lon = np.meshgrid(lats, lons, indexing="ij")
    points_lat, points_lon = rng.uniform(40.5, 41.5, 12), rng.uniform(11.0, 13.0, 12)
    estimate = disc_means(grid.sample, points_lat, points_lon, 25.0, [lambda v: v == 1])[:, 0]
    for i in range(12):
        inside = great_circle_km(points_lat[i], points_lon[i], cell_lat, cell_lon) <= 25.0
        weight = np.cos(np.radians(cell_lat[inside]))  # cell area ∝ cos(lat)
        exact = (array[inside] * weight).sum() / weight.sum()
        assert estimate[i] == pytest.approx(exact, abs=0.02)


def test_builtin_land_cover_fractions_sum_to_one():
    registry = Registry.builtin()
    shares = class_fractions(registry["igbp"], np.array([48.85, -3.5]), np.array([2.35, -62.0]), radius_km=25)
    assert np.allclose(shares.sum(axis=1), 1.0)
    assert shares.loc[0, "urban"] > 0.3  # Paris
    assert shares.loc[1, "ebf"] > 0.9  # Amazon rainforest
