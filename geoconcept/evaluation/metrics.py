"""Geo-localization metrics: great-circle error, accuracy within distance thresholds, seed statistics.

Conventions (as GeoCLIP and the Im2GPS3k/YFCC4k literature report them):

* distance = great-circle distance on a sphere of mean Earth radius 6371 km;
* a prediction is "within t km" when its error is **<= t** (a point exactly at the threshold
  counts). Distances computed from coordinates carry float rounding of ~1e-12 km, so an error
  within `AT_THRESHOLD_TOLERANCE_KM` (1 mm) above t still counts as at t;
* accuracy is a percentage of the test images; median and mean error are in km;
* over training seeds a figure is reported as mean ± spread, the spread being the sample
  standard deviation (ddof = 1) of the per-seed values.

`error_summary` is the one function every accuracy figure of an evaluation comes from. This
module imports numpy and pandas only (no torch), so `geoconcept.haversine_km` stays cheap.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

EARTH_RADIUS_KM = 6371.0
THRESHOLDS_KM: tuple[float, ...] = (1, 25, 200, 750, 2500)
SCALE_NAMES = {1: "Street", 25: "City", 200: "Region", 750: "Country", 2500: "Continent"}
AT_THRESHOLD_TOLERANCE_KM = 1e-6
SPREAD = "std"  # what "±" means in every table: sample standard deviation over seeds
VARIANT_ORDER = ("geoclip", "concept", "concept+supervised")

# Published Im2GPS3k accuracies (% within 1/25/200/750/2500 km), from ../shared/DESIGN.md. They are
# printed beside our tables for orientation only: a different test set, backbone and training data.
PUBLISHED_IM2GPS3K: dict[str, tuple[float, float, float, float, float]] = {
    "GeoCLIP (Vivanco et al., NeurIPS 2023), published": (14.11, 34.47, 50.65, 69.67, 83.82),
    "Concept-aware paper (arXiv 2509.01910): its GeoCLIP baseline": (10.8, 31.1, 48.7, 67.6, 83.2),
    "Concept-aware paper (arXiv 2509.01910): with the concept module": (13.2, 34.0, 49.8, 68.2, 83.5),
}


def _points(x: np.ndarray | Sequence, name: str) -> np.ndarray:
    points = np.asarray(x, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 2:
        raise ValueError(f"{name} must be an (N, 2) array of (lat, lon) degrees, got shape {points.shape}")
    bad = ~np.isfinite(points).all(axis=1) | (np.abs(points[:, 0]) > 90)
    if bad.any():
        raise ValueError(
            f"{name}: {int(bad.sum())} rows are not finite (lat, lon) with |lat| <= 90 "
            f"(first: row {int(np.argmax(bad))})"
        )
    return points


def haversine_km(a: np.ndarray | Sequence, b: np.ndarray | Sequence) -> np.ndarray:
    """Great-circle distance in km between row i of `a` and row i of `b`, (N, 2) (lat, lon) degrees → (N,).

    A (1, 2) array broadcasts against (N, 2). The value is the haversine distance; it is computed
    in the equivalent atan2 form (Vincenty's formula on a sphere), which stays accurate for
    coincident points (exactly 0) and antipodal points (π·R), where the textbook
    2R·arcsin(√h) loses precision. Longitudes need no normalisation (180 and −180 coincide).
    """
    p, q = np.broadcast_arrays(_points(a, "a"), _points(b, "b"))
    phi1, phi2 = np.radians(p[:, 0]), np.radians(q[:, 0])
    dlam = np.radians(q[:, 1] - p[:, 1])
    sin1, cos1, sin2, cos2 = np.sin(phi1), np.cos(phi1), np.sin(phi2), np.cos(phi2)
    cos_dlam = np.cos(dlam)
    across = np.hypot(cos2 * np.sin(dlam), cos1 * sin2 - sin1 * cos2 * cos_dlam)
    along = sin1 * sin2 + cos1 * cos2 * cos_dlam
    return EARTH_RADIUS_KM * np.arctan2(across, along)


def _within(errors_km: np.ndarray, thresholds: Sequence[float]) -> dict[float, float]:
    if errors_km.size == 0:
        raise ValueError("accuracy needs at least one prediction")
    return {t: float(100.0 * np.mean(errors_km <= t + AT_THRESHOLD_TOLERANCE_KM)) for t in thresholds}


def accuracy_within(
    pred: np.ndarray | Sequence, true: np.ndarray | Sequence, thresholds: Sequence[float] = THRESHOLDS_KM
) -> dict[float, float]:
    """`{threshold_km: percent of predictions with error <= threshold_km}` (see the module docstring)."""
    return _within(haversine_km(pred, true), thresholds)


def metric_name(threshold_km: float) -> str:
    """Column name of an accuracy figure: `within_25km`."""
    return f"within_{threshold_km:g}km"


def error_summary(
    pred: np.ndarray | Sequence, true: np.ndarray | Sequence, thresholds: Sequence[float] = THRESHOLDS_KM
) -> dict[str, float]:
    """Every accuracy figure of one set of predictions: `n`, `within_<t>km` (percent) for each
    threshold, `median_km` and `mean_km` of the error."""
    errors = haversine_km(pred, true)
    within = _within(errors, thresholds)
    return {
        "n": float(errors.size),
        **{metric_name(t): v for t, v in within.items()},
        "median_km": float(np.median(errors)),
        "mean_km": float(np.mean(errors)),
    }


def mean_spread(values: Sequence[float]) -> tuple[float, float]:
    """(mean, sample standard deviation) of per-seed values; the deviation is NaN for one value."""
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        raise ValueError("mean_spread needs at least one value")
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else float("nan")


def format_mean_spread(mean: float, spread: float, decimals: int = 2) -> str:
    """`34.47 ± 1.20`, or just the mean when there is no spread (a single seed)."""
    if np.isnan(mean):
        return "n/a"
    if np.isnan(spread):
        return f"{mean:.{decimals}f}"
    return f"{mean:.{decimals}f} ± {spread:.{decimals}f}"


def accuracy_columns(thresholds: Sequence[float] = THRESHOLDS_KM) -> dict[str, str]:
    """Metric key → column title in the published tables' shape: `1 km (Street)` … `mean km`."""
    titles = {metric_name(t): f"{t:g} km ({SCALE_NAMES[t]})" if t in SCALE_NAMES else f"{t:g} km" for t in thresholds}
    return titles | {"median_km": "median km", "mean_km": "mean km"}


def variant_sort_key(variant: str) -> tuple[int, str]:
    return (VARIANT_ORDER.index(variant) if variant in VARIANT_ORDER else len(VARIANT_ORDER), variant)


def summarise_runs(per_run: pd.DataFrame, metrics: Sequence[str], group: str = "variant") -> pd.DataFrame:
    """Numeric mean and spread per group: columns `<group>`, `seeds`, `<metric>_mean`, `<metric>_std`."""
    rows = []
    for name, runs in per_run.groupby(group, sort=False):
        row: dict[str, object] = {group: name, "seeds": int(runs["seed"].nunique())}
        for m in metrics:
            row[f"{m}_mean"], row[f"{m}_std"] = mean_spread(runs[m].to_numpy())
        rows.append(row)
    out = pd.DataFrame(rows)
    if group == "variant" and not out.empty:
        out = out.sort_values(group, key=lambda s: s.map(variant_sort_key)).reset_index(drop=True)
    return out


def accuracy_table(per_run: pd.DataFrame, thresholds: Sequence[float] = THRESHOLDS_KM) -> pd.DataFrame:
    """The published Im2GPS3k table shape, one row per variant, each cell "mean ± std" over seeds.

    `per_run` has one row per (variant, seed) with `error_summary`'s keys. Columns: `variant`,
    `1 km (Street)` … `2500 km (Continent)` (percent), `median km`, `mean km`, `seeds`.
    """
    titles = accuracy_columns(thresholds)
    summary = summarise_runs(per_run, list(titles))
    table = pd.DataFrame({"variant": summary["variant"]})
    for key, title in titles.items():
        decimals = 2 if key.startswith("within_") else 0
        table[title] = [
            format_mean_spread(m, s, decimals)
            for m, s in zip(summary[f"{key}_mean"], summary[f"{key}_std"], strict=True)
        ]
    table["seeds"] = summary["seeds"]
    return table


def published_table(published: Mapping[str, Sequence[float]] = PUBLISHED_IM2GPS3K) -> pd.DataFrame:
    """Published Im2GPS3k accuracies in the same columns as `accuracy_table` (no median/mean reported)."""
    titles = list(accuracy_columns(THRESHOLDS_KM).values())
    rows = [
        {"model": name, **{t: f"{v:g}" for t, v in zip(titles, values, strict=False)}}
        for name, values in published.items()
    ]
    table = pd.DataFrame(rows)
    table["median km"] = "not reported"
    table["mean km"] = "not reported"
    return table
