"""Geo-localization metrics against hand-computed cases (no torch needed)."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from conftest import REPO

import geoconcept
from geoconcept.evaluation import metrics

R = 6371.0
KM_PER_DEGREE = 2 * math.pi * R / 360  # along the equator or a meridian


def test_known_city_pair_and_geometric_distances():
    # Big Ben to the Statue of Liberty: 5,574.8 km on the 6371 km sphere (the classic haversine example).
    big_ben, liberty = [51.5007, -0.1246], [40.6892, -74.0445]
    assert geoconcept.haversine_km([big_ben], [liberty])[0] == pytest.approx(5574.8, abs=0.05)
    pairs = np.array([[0.0, 0.0], [0.0, 0.0], [-45.0, 30.0]])
    ends = np.array([[0.0, 1.0], [90.0, 0.0], [-44.0, 30.0]])
    expected = [KM_PER_DEGREE, math.pi * R / 2, KM_PER_DEGREE]  # 1° of equator, equator→pole, 1° of meridian
    assert metrics.haversine_km(pairs, ends) == pytest.approx(expected, rel=1e-12)
    # symmetric, and a single point broadcasts against many
    assert metrics.haversine_km(ends, pairs) == pytest.approx(expected, rel=1e-12)
    assert metrics.haversine_km([[0.0, 0.0]], ends[:2]) == pytest.approx(expected[:2], rel=1e-12)


def test_antipodal_and_identical_points():
    a = np.array([[0.0, 0.0], [10.0, 20.0], [90.0, 0.0], [-33.9, 151.2], [45.0, -180.0]])
    antipodes = np.array([[0.0, 180.0], [-10.0, -160.0], [-90.0, 0.0], [33.9, -28.8], [-45.0, 0.0]])
    assert metrics.haversine_km(a, antipodes) == pytest.approx([math.pi * R] * 5, rel=1e-12)
    same = metrics.haversine_km(a, a)
    assert same.tolist() == [0.0] * 5  # exactly zero, not 1e-5 km of rounding


def test_the_dateline():
    west, east = [[0.0, 179.5], [60.0, -180.0]], [[0.0, -179.5], [60.0, 180.0]]
    assert metrics.haversine_km(west, east) == pytest.approx([KM_PER_DEGREE, 0.0], abs=1e-9)


def test_accuracy_counts_points_exactly_at_a_threshold():
    at_25 = 25.0 / KM_PER_DEGREE  # degrees of equator that make exactly 25 km
    true = np.zeros((4, 2))
    pred = np.array([[0.0, at_25], [0.0, -at_25], [0.0, at_25 * 1.0001], [at_25, 0.0]])
    assert metrics.haversine_km(pred, true)[0] == pytest.approx(25.0, abs=1e-9)
    within = geoconcept.accuracy_within(pred, true, thresholds=(25,))
    assert within == {25: 75.0}  # the 25.0025 km point is out, the three at 25 km are in
    assert metrics.accuracy_within(true, true, thresholds=(0,)) == {0: 100.0}  # 0 km error is "within 0 km"
    # the default thresholds, keys as given
    assert list(metrics.accuracy_within(pred, true)) == [1, 25, 200, 750, 2500]


def test_accuracy_and_error_summary_by_hand():
    # errors along the equator of 0, 1, 24, 200, 800 and 3000 km
    errors = np.array([0.0, 1.0, 24.0, 200.0, 800.0, 3000.0])
    pred = np.stack([np.zeros(6), errors / KM_PER_DEGREE], axis=1)
    true = np.zeros((6, 2))
    expected = {1: 200 / 6, 25: 300 / 6, 200: 400 / 6, 750: 400 / 6, 2500: 500 / 6}
    assert metrics.accuracy_within(pred, true) == pytest.approx(expected)
    summary = metrics.error_summary(pred, true)
    assert summary["n"] == 6
    assert summary["within_25km"] == pytest.approx(50.0)
    assert summary["median_km"] == pytest.approx((24.0 + 200.0) / 2)
    assert summary["mean_km"] == pytest.approx(errors.mean())


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match=r"\(N, 2\)"):
        metrics.haversine_km(np.zeros(3), np.zeros(3))
    with pytest.raises(ValueError, match=r"1 rows are not finite"):
        metrics.haversine_km([[91.0, 0.0]], [[0.0, 0.0]])
    with pytest.raises(ValueError, match="at least one prediction"):
        metrics.accuracy_within(np.zeros((0, 2)), np.zeros((0, 2)))


def test_accuracy_table_is_mean_and_std_over_seeds_in_the_published_shape():
    rows = []
    for variant, values in (("concept", (10.0, 12.0, 14.0)), ("geoclip", (20.0, 20.0, 23.0))):
        for seed, v in enumerate(values):
            rows.append({"variant": variant, "seed": seed, "median_km": 100 * v, "mean_km": 200 * v} | {
                metrics.metric_name(t): v for t in metrics.THRESHOLDS_KM
            })  # fmt: skip
    rows.append({"variant": "concept+supervised", "seed": 0, "median_km": 5.0, "mean_km": 6.0} | {
        metrics.metric_name(t): 1.0 for t in metrics.THRESHOLDS_KM
    })  # fmt: skip
    table = metrics.accuracy_table(pd.DataFrame(rows))
    assert list(table.columns) == [
        "variant", "1 km (Street)", "25 km (City)", "200 km (Region)", "750 km (Country)",
        "2500 km (Continent)", "median km", "mean km", "seeds",
    ]  # fmt: skip
    assert table["variant"].tolist() == ["geoclip", "concept", "concept+supervised"]
    concept = table.set_index("variant").loc["concept"]
    assert concept["25 km (City)"] == "12.00 ± 2.00"  # sample std of 10, 12, 14
    assert concept["median km"] == "1200 ± 200"
    assert table.set_index("variant").loc["geoclip", "1 km (Street)"] == f"21.00 ± {np.std([20, 20, 23], ddof=1):.2f}"
    single = table.set_index("variant").loc["concept+supervised"]
    assert single["25 km (City)"] == "1.00" and single["seeds"] == 1  # one seed: no spread to show


def test_published_reference_table():
    table = metrics.published_table().set_index("model")
    geoclip = table.loc["GeoCLIP (Vivanco et al., NeurIPS 2023), published"]
    assert geoclip[["1 km (Street)", "2500 km (Continent)"]].tolist() == ["14.11", "83.82"]
    paper = table.loc["Concept-aware paper (arXiv 2509.01910): with the concept module"]
    assert paper.tolist()[:5] == ["13.2", "34", "49.8", "68.2", "83.5"]


def test_top_level_metrics_do_not_import_torch():
    code = (
        "import sys, geoconcept; "
        "d = geoconcept.haversine_km([[0, 0]], [[0, 1]]); a = geoconcept.accuracy_within([[0, 0]], [[0, 1]]); "
        "print(round(float(d[0]), 3), a[200], 'torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["111.195", "100.0", "False"]
