"""Concept faithfulness: do the model's concept scores agree with what the rasters measure?

* `faithfulness_table`: for every layer-measured concept, AUROC and average precision of the
  image-side scores z_img (from the test image) and of the location-side scores z_loc (at the
  test image's true location) against the concept labels of the held-out test points. A label
  (in [0, 1]; a neighbourhood share for radius rules) counts as present when >= 0.5, as in
  `concepts.labels.concept_coverage`; NaN labels (not measured) are left out. A concept with a
  single class among the test labels gets NaN and the reason, not an error. AP's chance level
  is the prevalence (the `prevalence` column), AUROC's is 0.5. The supervised variant's
  calibration is monotone per concept, so raw scores rank exactly as its probabilities do.
* `concept_maps`: the location side's score for a concept on a global lat/lon grid (cell
  centres) beside the raster truth (the concept's rule evaluated at the same cell centres), and
  their Pearson and Spearman correlation over the cells where the truth is measured. The grid
  is equirectangular and the correlations are unweighted, so high latitudes weigh more than
  their area.
* `error_bin_table`: the paper's per-error-bin view: median image-side concept scores of the
  test images whose error falls in 0–25, 25–200 and 200–750 km, and the concepts with the
  highest and lowest medians in each bin.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats
from sklearn.metrics import average_precision_score, roc_auc_score

from geoconcept.concepts.bank import Concept, ConceptBank
from geoconcept.concepts.labels import label_points
from geoconcept.evaluation.testset import LABEL_PREFIX
from geoconcept.layers.registry import Registry
from geoconcept.model.geoconcept_model import GeoConceptModel

POSITIVE_AT = 0.5
ERROR_BINS_KM: tuple[tuple[float, float], ...] = ((0, 25), (25, 200), (200, 750))
DEFAULT_MAP_WIDTH = 180  # cells: 2° at the default
FAITHFULNESS_COLUMNS = [
    "concept",
    "n",
    "positives",
    "prevalence",
    "auroc_image",
    "ap_image",
    "auroc_location",
    "ap_location",
    "note",
]


@dataclass
class ConceptScore:
    auroc: float
    ap: float
    n: int  # test points with a label
    positives: int
    note: str = ""  # why the scores are NaN


def concept_auc(scores: np.ndarray, labels: np.ndarray) -> ConceptScore:
    """AUROC and AP of scores against labels (>= 0.5 = present; NaN labels ignored)."""
    labels = np.asarray(labels, dtype=np.float64)
    scores = np.asarray(scores, dtype=np.float64)
    valid = ~np.isnan(labels) & np.isfinite(scores)
    present = labels[valid] >= POSITIVE_AT
    n, positives = int(valid.sum()), int(present.sum())
    if n == 0:
        return ConceptScore(np.nan, np.nan, 0, 0, "no labelled test points")
    if positives in (0, n):
        which = "absent" if positives == 0 else "present"
        return ConceptScore(np.nan, np.nan, n, positives, f"single class: {which} at all {n} labelled test points")
    s = scores[valid]
    return ConceptScore(float(roc_auc_score(present, s)), float(average_precision_score(present, s)), n, positives)


def measured_concepts(model: GeoConceptModel, labels: pd.DataFrame) -> list[str]:
    """The model's concepts that the labels measure (have a `concept__<id>` column), in model order."""
    return [c for c in model.concept_ids if LABEL_PREFIX + c in labels.columns]


def faithfulness_table(
    model: GeoConceptModel, features: np.ndarray, latlon: np.ndarray, labels: pd.DataFrame
) -> pd.DataFrame:
    """One row per measured concept: the columns of `FAITHFULNESS_COLUMNS` (see the module docstring)."""
    concepts = measured_concepts(model, labels)
    z_img = model.image_concepts(features).cpu().numpy()
    z_loc = model.location_concepts(latlon).cpu().numpy()
    rows = []
    for concept in concepts:
        j = model.concept_ids.index(concept)
        truth = labels[LABEL_PREFIX + concept].to_numpy(dtype=np.float64)
        image, location = concept_auc(z_img[:, j], truth), concept_auc(z_loc[:, j], truth)
        rows.append(
            {
                "concept": concept,
                "n": image.n,
                "positives": image.positives,
                "prevalence": image.positives / image.n if image.n else np.nan,
                "auroc_image": image.auroc,
                "ap_image": image.ap,
                "auroc_location": location.auroc,
                "ap_location": location.ap,
                "note": image.note,
            }
        )
    return pd.DataFrame(rows, columns=FAITHFULNESS_COLUMNS)


# concept maps -------------------------------------------------------------------------------
@dataclass
class ConceptMap:
    concept: str
    variant: str
    score: np.ndarray  # (h, w) location-side score z_loc, rows north → south
    truth: np.ndarray  # (h, w) label in [0, 1], NaN where not measured
    pearson: float
    spearman: float
    cells: int  # cells with a measured truth

    extent = (-180.0, 180.0, -90.0, 90.0)  # west, east, south, north


def grid_points(width: int = DEFAULT_MAP_WIDTH) -> tuple[np.ndarray, tuple[int, int]]:
    """Cell centres of a global width × width/2 lat/lon grid, (h·w, 2) rows north → south, and (h, w)."""
    height = width // 2
    lats = 90.0 - (np.arange(height) + 0.5) * 180.0 / height
    lons = -180.0 + (np.arange(width) + 0.5) * 360.0 / width
    lat2d, lon2d = np.meshgrid(lats, lons, indexing="ij")
    return np.stack([lat2d.ravel(), lon2d.ravel()], axis=1), (height, width)


def truth_grids(
    concepts: Sequence[Concept], registry: Registry | None = None, width: int = DEFAULT_MAP_WIDTH
) -> dict[str, np.ndarray]:
    """Each concept's rule evaluated at the grid's cell centres (`label_points` with these concepts only)."""
    measured = [c for c in concepts if c.rule is not None]
    if not measured:
        return {}
    points, shape = grid_points(width)
    bank = ConceptBank(concepts=list(measured), version="concept-maps", sha256="")
    labels = label_points(points[:, 0], points[:, 1], bank, registry)
    return {c.id: labels[c.column].to_numpy(dtype=np.float64).reshape(shape) for c in measured}


def _correlations(score: np.ndarray, truth: np.ndarray) -> tuple[float, float, int]:
    valid = ~np.isnan(truth)
    s, t = score[valid], truth[valid]
    if valid.sum() < 3 or np.ptp(t) == 0 or np.ptp(s) == 0:
        return np.nan, np.nan, int(valid.sum())
    return float(stats.pearsonr(s, t).statistic), float(stats.spearmanr(s, t).statistic), int(valid.sum())


def concept_maps(
    model: GeoConceptModel, truths: dict[str, np.ndarray], width: int = DEFAULT_MAP_WIDTH
) -> list[ConceptMap]:
    """Location-side score maps of the concepts in `truths` (from `truth_grids` at the same width)."""
    wanted = [c for c in truths if c in model.concept_ids]
    if not wanted:
        return []
    points, shape = grid_points(width)
    z_loc = model.location_concepts(points).cpu().numpy()
    maps = []
    for concept in wanted:
        score = z_loc[:, model.concept_ids.index(concept)].reshape(shape)
        pearson, spearman, cells = _correlations(score, truths[concept])
        maps.append(ConceptMap(concept, model.variant, score, truths[concept], pearson, spearman, cells))
    return maps


# per-error-bin concept activations ----------------------------------------------------------------
def _bin_label(lo: float, hi: float) -> str:
    return f"{lo:g}–{hi:g} km"


def error_bin_table(
    errors_km: np.ndarray,
    image_scores: np.ndarray,
    concept_ids: Sequence[str],
    bins: Sequence[tuple[float, float]] = ERROR_BINS_KM,
    top: int = 5,
) -> pd.DataFrame:
    """Per error bin (lo, hi] (the first bin includes 0): the `top` concepts with the highest and the
    lowest median image-side score. Columns: `bin`, `images`, `rank`, `top_concept`, `top_median`,
    `bottom_concept`, `bottom_median` (empty bins get one row with `images` = 0)."""
    errors_km = np.asarray(errors_km)
    rows = []
    for i, (lo, hi) in enumerate(bins):
        members = (errors_km <= hi) & ((errors_km > lo) if i > 0 else (errors_km >= lo))
        label = _bin_label(lo, hi)
        if not members.any():
            rows.append({"bin": label, "images": 0, "rank": np.nan})
            continue
        medians = np.median(image_scores[members], axis=0)
        order = np.argsort(-medians, kind="stable")
        for r in range(min(top, len(concept_ids))):
            hi_j, lo_j = order[r], order[len(order) - 1 - r]
            rows.append(
                {
                    "bin": label,
                    "images": int(members.sum()),
                    "rank": r + 1,
                    "top_concept": concept_ids[hi_j],
                    "top_median": float(medians[hi_j]),
                    "bottom_concept": concept_ids[lo_j],
                    "bottom_median": float(medians[lo_j]),
                }
            )
    columns = ["bin", "images", "rank", "top_concept", "top_median", "bottom_concept", "bottom_median"]
    return pd.DataFrame(rows, columns=columns)
