"""Is a concept's zero coverage a surprise? Expected positives from a reference distribution.

A measured concept with no positive among n points is only suspicious when the layer says it
should have shown up: with a share p of positives in the reference points, P(0 positives among n
independent draws) = (1 - p)^n. A concept is flagged when that probability is below `alpha`
(1e-3 by default): at p = 0.3% and n = 2,500 it is 5e-4 (flagged), at p = 0.01% it is 0.78 (a
zero is normal, e.g. ice caps in a photo dataset).

The reference is where photos are taken, not the Earth's area: a seeded sample of GeoCLIP's 100K
MP16 coordinates. Area weighting would expect ~3% of points in Antarctica and flag every healthy
photo dataset. The shares are computed once per bank and layer versions and cached as JSON.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from geoconcept import atomic, gallery
from geoconcept.concepts.bank import ConceptBank
from geoconcept.concepts.labels import concept_coverage, label_metadata, label_points
from geoconcept.layers.registry import Registry

ZERO_COVERAGE_ALPHA = 1e-3
REFERENCE_POINTS = 5000
REFERENCE_SEED = 2023  # not the embedded sample's seed (0): the reference must not contain the demo's points
REFERENCE = f"{REFERENCE_POINTS:,} MP16 photo coordinates (GeoCLIP's gallery, seed {REFERENCE_SEED})"
SURPRISE_COLUMNS = ["id", "reference_share", "expected_positives", "p_zero"]


def p_zero(share: float, n: int) -> float:
    """P(no positive among n independent points) when a share `share` of points is positive."""
    if share >= 1.0:
        return 0.0 if n > 0 else 1.0
    return math.exp(n * math.log1p(-share))  # log1p: exact for the tiny shares that matter here


def reference_shares(
    bank: ConceptBank, registry: Registry, cache_dir: str | os.PathLike[str] | None = None
) -> dict[str, float]:
    """Share of reference points with label >= 0.5, per measured concept id (cached under `cache_dir`)."""
    key = json.dumps(label_metadata(bank, registry) | {"n": REFERENCE_POINTS, "seed": REFERENCE_SEED}, sort_keys=True)
    cache = None
    if cache_dir is not None:
        cache = Path(cache_dir) / f"reference_shares-{hashlib.sha256(key.encode()).hexdigest()[:16]}.json"
        if cache.is_file():
            return json.loads(cache.read_text(encoding="utf-8"))
    coords = gallery.geoclip_coordinates()
    pick = np.random.default_rng(REFERENCE_SEED).choice(len(coords), REFERENCE_POINTS, replace=False)
    labels = label_points(coords[pick, 0], coords[pick, 1], bank, registry)
    coverage = concept_coverage(labels, bank)
    shares = dict(zip(coverage["id"], coverage["present"].astype(float), strict=True))
    if cache is not None:
        atomic.write_json(cache, shares)
    return shares


def surprising_zero_coverage(
    coverage: pd.DataFrame, shares: Mapping[str, float], n: int, alpha: float = ZERO_COVERAGE_ALPHA
) -> pd.DataFrame:
    """Concepts of `coverage` (see `concept_coverage`) with no positive among `n` points although the
    reference shares make that less likely than `alpha`; columns `SURPRISE_COLUMNS`, most surprising first."""
    rows = []
    for concept_id in coverage.loc[coverage["present"] == 0, "id"]:
        share = float(shares.get(concept_id, 0.0))
        chance = p_zero(share, n)
        if chance < alpha:
            rows.append({"id": concept_id, "reference_share": share, "expected_positives": share * n, "p_zero": chance})
    return pd.DataFrame(rows, columns=SURPRISE_COLUMNS).sort_values("p_zero", kind="stable").reset_index(drop=True)
