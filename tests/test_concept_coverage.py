"""Zero concept coverage is flagged only when the reference shares make it unlikely."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from geoconcept.concepts.coverage import SURPRISE_COLUMNS, p_zero, surprising_zero_coverage


def _coverage(present: dict[str, float]) -> pd.DataFrame:
    return pd.DataFrame({"id": list(present), "present": list(present.values())})


def test_p_zero_known_values():
    assert p_zero(0.01, 2500) == pytest.approx(0.99**2500, rel=1e-9)  # ~1.2e-11
    assert p_zero(0.0001, 2500) == pytest.approx(math.exp(2500 * math.log(0.9999)), rel=1e-9)  # ~0.78
    assert p_zero(0.0, 2500) == 1.0
    assert p_zero(1.0, 1) == 0.0
    assert p_zero(0.5, 0) == 1.0


def test_flags_only_unexpected_zeros():
    coverage = _coverage({"common": 0.0, "rare": 0.0, "seen": 0.0004, "unmeasured": 0.0, "ice": 0.0})
    shares = {"common": 0.01, "rare": 0.0001, "seen": 0.05, "ice": 0.0}
    flagged = surprising_zero_coverage(coverage, shares, n=2500)
    assert list(flagged.columns) == SURPRISE_COLUMNS
    assert flagged["id"].tolist() == ["common"]  # rare: P(0) = 0.78; seen has positives; no reference share
    assert flagged.loc[0, "expected_positives"] == pytest.approx(25.0)


def test_threshold_is_on_the_probability_of_zero():
    n = 2500
    share_at_alpha = -math.expm1(math.log(1e-3) / n)  # (1 - p)^n = 1e-3 exactly
    coverage = _coverage({"above": 0.0, "below": 0.0})
    shares = {"above": share_at_alpha * 1.01, "below": share_at_alpha * 0.99}
    assert surprising_zero_coverage(coverage, shares, n)["id"].tolist() == ["above"]
    # the same concept with few points is no surprise
    assert surprising_zero_coverage(coverage, shares, 100).empty


def test_most_surprising_first():
    coverage = _coverage({"a": 0.0, "b": 0.0})
    flagged = surprising_zero_coverage(coverage, {"a": 0.01, "b": 0.1}, n=2500)
    assert flagged["id"].tolist() == ["b", "a"]


@pytest.mark.slow
def test_the_embedded_sample_is_healthy_and_a_lost_concept_is_not(tmp_path):
    from geoconcept.concepts.bank import load_bank
    from geoconcept.concepts.coverage import reference_shares
    from geoconcept.concepts.labels import concept_coverage, label_points
    from geoconcept.layers.registry import Registry
    from geoconcept.sample import draw_points

    registry = Registry.builtin()
    bank = load_bank(registry=registry)
    points = draw_points(2500, 0)  # the demo's points
    coverage = concept_coverage(label_points(points["LAT"], points["LON"], bank, registry), bank)
    assert (coverage["present"] == 0).sum() >= 1  # e.g. ice caps: zero, and rightly so
    shares = reference_shares(bank, registry, cache_dir=tmp_path)
    assert surprising_zero_coverage(coverage, shares, 2500).empty
    assert len(list(tmp_path.glob("reference_shares-*.json"))) == 1  # computed once, then read back
    assert reference_shares(bank, registry, cache_dir=tmp_path) == shares
    broken = coverage.assign(present=coverage["present"].where(coverage["id"] != "oceanic_climate", 0.0))
    assert surprising_zero_coverage(broken, shares, 2500)["id"].tolist() == ["oceanic_climate"]
