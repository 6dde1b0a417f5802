"""What a layer holds, as plain data for metadata: source, CRS, resolution, version, and the share
of the Earth's surface (within the layer's bounds) in each class or value range.

Shares are area-weighted: the layer is sampled at the cell centres of a regular grid in
(longitude, sin latitude), which is an equal-area grid, so every sample stands for the same area
(counting raster cells instead would weigh a polar cell of a lat/lon grid like an equatorial one).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from geoconcept.layers.base import Layer

SUMMARY_GRID = (1024, 512)  # (longitudes, latitudes): 524,288 equal-area samples


def equal_area_points(
    bounds: tuple[float, float, float, float], n_lon: int, n_lat: int
) -> tuple[np.ndarray, np.ndarray]:
    """Flat (lat, lon) arrays of n_lon × n_lat equal-area cell centres covering `bounds`."""
    west, south, east, north = bounds
    if east < west:  # crosses the dateline
        east += 360.0
    lon = west + (np.arange(n_lon) + 0.5) * (east - west) / n_lon
    sin_s, sin_n = np.sin(np.radians(south)), np.sin(np.radians(north))
    lat = np.degrees(np.arcsin(sin_s + (np.arange(n_lat) + 0.5) * (sin_n - sin_s) / n_lat))
    lat2d, lon2d = np.meshgrid(lat, (lon + 180.0) % 360.0 - 180.0, indexing="ij")
    return lat2d.ravel(), lon2d.ravel()


def layer_summary(layer: Layer, grid: tuple[int, int] = SUMMARY_GRID) -> dict[str, Any]:
    """Metadata of a layer; `class_histogram` (categorical) or `value_quantiles` (continuous).

    `coverage` is the share of the bounds' area where the layer has a value; the histogram gives
    each class's share of that valued area (all classes of the table, in code order).
    """
    bounds = layer.bounds()
    lat, lon = equal_area_points(bounds, *grid)
    values = layer.sample(lat, lon)
    valid = ~np.ma.getmaskarray(values)
    data = np.ma.getdata(values)[valid]
    summary: dict[str, Any] = {
        "name": layer.name,
        "kind": layer.kind,
        "description": layer.description,
        "source": layer.source,
        "crs": layer.crs.to_string(),
        "resolution": layer.resolution,
        "version": layer.version,
        "bounds": [round(float(b), 6) for b in bounds],
        "categorical": layer.categorical,
        "coverage": round(float(valid.mean()), 6),
    }
    if layer.classes is not None:
        total = max(data.size, 1)
        summary["class_histogram"] = {
            sym: round(float(np.count_nonzero(data == code)) / total, 6)
            for code, sym in sorted(layer.classes.symbols.items())
        }
    else:
        summary["units"] = layer.units
        if data.size:
            p10, p50, p90 = np.percentile(data, [10, 50, 90])
            stats = {"min": data.min(), "p10": p10, "p50": p50, "p90": p90, "max": data.max(), "mean": data.mean()}
            summary["value_quantiles"] = {k: round(float(v), 6) for k, v in stats.items()}
        else:
            summary["value_quantiles"] = {}
    return summary
