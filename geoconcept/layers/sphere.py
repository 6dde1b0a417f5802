"""Points on a spherical Earth: unit vectors, chord ↔ great-circle distance, destination points.

Nearest-neighbour searches (coastline, GeoNames cities) run in a k-d tree over 3-D unit vectors:
the Euclidean chord between two unit vectors is a monotonic function of their great-circle
distance, so the nearest by chord is the nearest on the sphere, with no trouble at the dateline or
the poles. The sphere (mean radius) differs from the WGS84 ellipsoid by under 0.5 % in distance.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree

EARTH_RADIUS_KM = 6371.0088  # IUGG mean radius


def unit_vectors(lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    """(n, 3) unit vectors of points given in degrees."""
    phi = np.radians(np.asarray(lat, dtype=np.float64))
    lam = np.radians(np.asarray(lon, dtype=np.float64))
    cos_phi = np.cos(phi)
    return np.stack([cos_phi * np.cos(lam), cos_phi * np.sin(lam), np.sin(phi)], axis=-1)


def point_tree(lat: np.ndarray, lon: np.ndarray) -> cKDTree:
    """k-d tree over the unit vectors of points.

    Points on a sphere, and coastlines in particular, are strongly clustered: sliding-midpoint
    splits (`balanced_tree=False`) without `compact_nodes` answer far-away queries ~7x faster here
    than scipy's default median splits.
    """
    return cKDTree(unit_vectors(lat, lon), balanced_tree=False, compact_nodes=False)


def chord_to_km(chord: np.ndarray) -> np.ndarray:
    """Great-circle distance (km) of a chord between unit vectors."""
    return 2.0 * EARTH_RADIUS_KM * np.arcsin(np.clip(np.asarray(chord) / 2.0, 0.0, 1.0))


def km_to_chord(km: float) -> float:
    return float(2.0 * np.sin(min(km / EARTH_RADIUS_KM, np.pi) / 2.0))


def normalize_lon(lon: np.ndarray) -> np.ndarray:
    """Longitudes in [-180, 180): 180 and -180 are the same meridian."""
    return (np.asarray(lon, dtype=np.float64) + 180.0) % 360.0 - 180.0


def destinations(
    lat: np.ndarray,
    lon: np.ndarray,
    distance_km: np.ndarray,
    bearing_rad: np.ndarray,
    dtype: type[np.floating] = np.float64,
) -> tuple[np.ndarray, np.ndarray]:
    """Points reached from each (lat, lon) by each (distance, bearing): arrays of shape (n, m),
    longitudes in [-180, 180].

    Works in 3-D: q = cos δ·p + sin δ·(cos θ·north + sin θ·east). The local east/north vectors
    stay orthonormal at the poles, so a disc around a pole comes out right, and longitudes wrap.
    `dtype=np.float32` halves the work; its error is a few metres at most.
    """
    phi = np.radians(np.asarray(lat, dtype=np.float64))
    lam = np.radians(np.asarray(lon, dtype=np.float64))
    sin_phi, cos_phi, sin_lam, cos_lam = np.sin(phi), np.cos(phi), np.sin(lam), np.cos(lam)
    delta = np.asarray(distance_km, dtype=np.float64) / EARTH_RADIUS_KM
    along = np.cos(delta).astype(dtype)
    to_north = (np.sin(delta) * np.cos(bearing_rad)).astype(dtype)
    to_east = (np.sin(delta) * np.sin(bearing_rad)).astype(dtype)

    def combine(p: np.ndarray, north: np.ndarray, east: np.ndarray | None) -> np.ndarray:
        q = np.multiply.outer(p.astype(dtype), along)
        q += np.multiply.outer(north.astype(dtype), to_north)
        if east is not None:
            q += np.multiply.outer(east.astype(dtype), to_east)
        return q

    qx = combine(cos_phi * cos_lam, -sin_phi * cos_lam, -sin_lam)
    qy = combine(cos_phi * sin_lam, -sin_phi * sin_lam, cos_lam)
    qz = combine(sin_phi, cos_phi, None)  # east has no z component
    # atan2(z, hypot(x, y)) rather than asin(z): asin loses precision near the poles (z ≈ 1).
    lat2 = np.degrees(np.arctan2(qz, np.hypot(qx, qy)), out=qz)
    lon2 = np.degrees(np.arctan2(qy, qx, out=qy), out=qy)
    return lat2, lon2


def great_circle_km(lat1: np.ndarray, lon1: np.ndarray, lat2: np.ndarray, lon2: np.ndarray) -> np.ndarray:
    """Haversine distance in km (broadcasting)."""
    phi1, phi2 = np.radians(lat1), np.radians(lat2)
    dphi = phi2 - phi1
    dlam = np.radians(np.asarray(lon2) - np.asarray(lon1))
    a = np.sin(dphi / 2) ** 2 + np.cos(phi1) * np.cos(phi2) * np.sin(dlam / 2) ** 2
    return 2.0 * EARTH_RADIUS_KM * np.arcsin(np.sqrt(np.clip(a, 0.0, 1.0)))
