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
