"""Labelling GPS points: vectorised sampling of the bundled rasters vs `rasterio.sample`, full
`label_points`, 25 km neighbourhood class fractions vs a windowed read per point, and the peak
memory of the `geoconcept label` command.

Points are uniform on the sphere (fixed seed). rasterio's per-point paths are timed on a subset and
reported as a per-point rate (the full million would take minutes).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import rasterio
from rasterio.windows import from_bounds

from benchmarks.harness import Result, best_rate, memory_result
from geoconcept import bundled
from geoconcept.concepts.bank import load_bank
from geoconcept.concepts.labels import label_points
from geoconcept.layers import builtin
from geoconcept.layers.base import KM_PER_DEGREE
from geoconcept.layers.neighbourhood import class_fractions
from geoconcept.layers.registry import Registry
from geoconcept.layers.sphere import great_circle_km

RADIUS_KM = 25.0
MODIS_NODATA = 255
LABEL_RSS_GOAL_MB = 600.0
# The `label` command in a child process; with "plain", the rasters' band-by-band reads are swapped
# for plain fancy indexing of the same memory maps (how they were read before).
LABEL_CHILD = """
import sys
from geoconcept.layers import grid
if sys.argv[1] == "plain":
    grid.MappedArray.cells = lambda self, row, col: self.array[row, col]
from geoconcept.cli import main
sys.exit(main(["label", "--points", sys.argv[2], "--out", sys.argv[3], "--no-progress"]))
"""


def random_points(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return np.degrees(np.arcsin(rng.uniform(-1, 1, n))), rng.uniform(-180, 180, n)


def rasterio_sample(lat: np.ndarray, lon: np.ndarray) -> int:
    """The straightforward way: `DatasetReader.sample` on each GeoTIFF."""
    for tif in (bundled.KOPPEN_GROUPS_TIF, bundled.MODIS_LANDCOVER_TIF):
        with rasterio.open(tif.path()) as ds:
            for _ in ds.sample(zip(lon, lat, strict=True), indexes=1):
                pass
    return len(lat)


def windowed_fractions(lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    """The straightforward neighbourhood: per point, read the bounding window of the disc, keep the
    cells whose centres are within the radius, count classes. (Windows do not wrap the dateline.)"""
    out = np.full((len(lat), 17), np.nan)
    with rasterio.open(bundled.MODIS_LANDCOVER_TIF.path()) as ds:
        for i, (la, lo) in enumerate(zip(lat, lon, strict=True)):
            dlat = RADIUS_KM / KM_PER_DEGREE
            dlon = min(180.0, dlat / max(np.cos(np.radians(la)), 1e-6))
            window = from_bounds(lo - dlon, la - dlat, lo + dlon, la + dlat, transform=ds.transform).round_offsets()
            window = window.round_lengths()
            cells = ds.read(1, window=window, boundless=True, fill_value=MODIS_NODATA)
            transform = ds.window_transform(window)
            rows, cols = np.mgrid[0 : cells.shape[0], 0 : cells.shape[1]]
            cell_lon, cell_lat = transform * (cols + 0.5, rows + 0.5)
            inside = (great_circle_km(la, lo, cell_lat, cell_lon) <= RADIUS_KM) & (cells != MODIS_NODATA)
            if inside.any():
                weight = np.cos(np.radians(cell_lat[inside]))
                out[i] = np.bincount(cells[inside], weights=weight, minlength=17)[:17] / weight.sum()
    return out


def label_peak_rss_mb(how: str, points_csv: Path, out: Path) -> float:
    """Peak resident memory (MB) of one `geoconcept label` process (its own rusage, from wait4)."""
    child = subprocess.Popen(
        [sys.executable, "-c", LABEL_CHILD, how, str(points_csv), str(out)], stdout=subprocess.DEVNULL
    )
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        raise RuntimeError(f"label ({how}) exited with {child.returncode}")
    return usage.ru_maxrss / 1024  # ru_maxrss is in kB on Linux


def label_memory(n: int) -> Result:
    """Peak RSS of `geoconcept label` on n points: band-by-band raster reads vs plain memory maps."""
    lat, lon = random_points(n, seed=1)
    with tempfile.TemporaryDirectory() as scratch:
        points = Path(scratch) / "points.csv"
        pd.DataFrame({"LAT": lat, "LON": lon}).to_csv(points, index=False)
        label_peak_rss_mb("banded", points, Path(scratch) / "warm.parquet")  # converts rasters if not cached
        ours = label_peak_rss_mb("banded", points, Path(scratch) / "ours.parquet")
        plain = label_peak_rss_mb("plain", points, Path(scratch) / "plain.parquet")
        same = (Path(scratch) / "ours.parquet").read_bytes() == (Path(scratch) / "plain.parquet").read_bytes()
    return memory_result(
        f"`geoconcept label` {n:,} points: 1 / peak RSS",
        ours,
        plain,
        "same command, rasters read by plain memory-map indexing",
        LABEL_RSS_GOAL_MB,
        f"peak RSS {ours:,.0f} MB vs {plain:,.0f} MB (goal: under {LABEL_RSS_GOAL_MB:g} MB); "
        f"outputs byte-identical: {same}",
    )


def run(quick: bool) -> list[Result]:
    n_points = 100_000 if quick else 1_000_000
    n_baseline = 2_000 if quick else 20_000
    n_label = 10_000 if quick else 100_000
    n_disc = 20_000 if quick else 200_000
    n_disc_baseline = 200 if quick else 2_000
    lat, lon = random_points(n_points)
    registry = Registry.builtin()
    bank = load_bank(registry=registry)
    groups, igbp = builtin.koppen_groups(), builtin.modis_igbp()

    def ours_sample() -> int:
        groups.sample(lat, lon)
        igbp.sample(lat, lon)
        return n_points

    ours_sample()  # warm the page cache of the memory-mapped arrays
    results = [
        Result(
            benchmark=f"sample 2 bundled GeoTIFFs (1 km Köppen groups + MODIS IGBP), {n_points:,} points",
            unit="points/s",
            ours=best_rate(ours_sample),
            baseline=best_rate(lambda: rasterio_sample(lat[:n_baseline], lon[:n_baseline]), repeats=1),
            baseline_name="rasterio.sample, same files",
            goal=50.0,
            note=f"rasterio.sample timed on the first {n_baseline:,} points (per-point rate)",
        )
    ]

    label_points(lat[:1000], lon[:1000], bank, registry)  # builds the coast and city k-d trees
    results.append(
        Result(
            benchmark=f"label_points: all contract columns + {len(bank.measured)} concept labels, {n_label:,} points",
            unit="points/s",
            ours=best_rate(lambda: len(label_points(lat[:n_label], lon[:n_label], bank, registry)), repeats=1),
            baseline=results[0].baseline,
            baseline_name="rasterio.sample of the 2 GeoTIFFs only",
            note="ours does far more work (4 rasters, coast distance, country, 3 neighbourhood passes)",
        )
    )

    layer = registry["igbp"]
    started = time.perf_counter()
    base = windowed_fractions(lat[:n_disc_baseline], lon[:n_disc_baseline])
    baseline_rate = n_disc_baseline / (time.perf_counter() - started)
    ours = class_fractions(layer, lat[:n_disc_baseline], lon[:n_disc_baseline], RADIUS_KM).to_numpy()
    both = ~np.isnan(base).any(axis=1) & ~np.isnan(ours).any(axis=1)
    difference = np.abs(ours[both] - base[both]).sum(axis=1) / 2  # total-variation distance per point
    results.append(
        Result(
            benchmark=f"IGBP class fractions within {RADIUS_KM:g} km (17 classes), {n_disc:,} points",
            unit="points/s",
            ours=best_rate(lambda: len(class_fractions(layer, lat[:n_disc], lon[:n_disc], RADIUS_KM)), repeats=1),
            baseline=baseline_rate,
            baseline_name="rasterio windowed read + distance mask per point",
            note=(
                f"baseline on the first {n_disc_baseline:,} points; share difference vs it: mean "
                f"{difference.mean():.3f}, 99th percentile {np.percentile(difference, 99):.3f}"
            ),
        )
    )
    results.append(label_memory(10_000))
    return results
