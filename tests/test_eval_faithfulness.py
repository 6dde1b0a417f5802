"""Concept faithfulness: AUROC/AP against labels, concept maps, the per-error-bin table."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from _eval_inputs import tiny_model
from _model_inputs import CONCEPTS

from geoconcept.concepts.bank import Concept, Rule
from geoconcept.evaluation import faithfulness


def test_perfectly_predictive_scores_give_auroc_1_and_random_ones_about_half():
    rng = np.random.default_rng(0)
    labels = (rng.random(4000) < 0.3).astype(float)
    perfect = faithfulness.concept_auc(labels + 0.1 * rng.random(4000), labels)
    assert (perfect.auroc, perfect.ap, perfect.n, perfect.note) == (1.0, 1.0, 4000, "")
    assert perfect.positives == int(labels.sum())
    noise = faithfulness.concept_auc(rng.normal(size=4000), labels)
    assert noise.auroc == pytest.approx(0.5, abs=0.03)
    assert noise.ap == pytest.approx(labels.mean(), abs=0.03)  # AP's chance level is the prevalence
    inverted = faithfulness.concept_auc(-labels, labels)
    assert inverted.auroc == 0.0


def test_soft_and_missing_labels():
    labels = np.array([0.0, 0.2, 0.5, 0.9, np.nan, 1.0])  # 0.5 and up count as present; NaN is left out
    scores = np.array([0.0, 1.0, 2.0, 3.0, -100.0, 4.0])
    result = faithfulness.concept_auc(scores, labels)
    assert (result.n, result.positives, result.auroc) == (5, 3, 1.0)


def test_single_class_concepts_get_nan_and_a_reason():
    absent = faithfulness.concept_auc(np.arange(5.0), np.zeros(5))
    assert np.isnan(absent.auroc) and np.isnan(absent.ap)
    assert absent.note == "single class: absent at all 5 labelled test points"
    present = faithfulness.concept_auc(np.arange(3.0), np.array([1.0, np.nan, 0.7]))
    assert present.note == "single class: present at all 2 labelled test points"
    empty = faithfulness.concept_auc(np.arange(2.0), np.full(2, np.nan))
    assert (empty.n, empty.note) == (0, "no labelled test points")


def test_faithfulness_table_scores_each_side_against_its_concept():
    model = tiny_model("concept", seed=1)
    rng = np.random.default_rng(2)
    latlon = np.stack([rng.uniform(-70, 70, 600), rng.uniform(-180, 180, 600)], axis=1)
    features = rng.normal(size=(600, 16)).astype(np.float32)
    z_loc = model.location_concepts(latlon).numpy()
    j = CONCEPTS.index("polar")
    labels = pd.DataFrame(
        {
            # a label the location side measures perfectly, another one the model cannot know
            "concept__polar": (z_loc[:, j] > np.median(z_loc[:, j])).astype(np.float32),
            "concept__tropical": (rng.random(600) < 0.5).astype(np.float32),
            "concept__northern": np.zeros(600, dtype=np.float32),  # single class
            "koppen_geiger": "Cfb",  # not a concept column: ignored
        }
    )
    table = faithfulness.faithfulness_table(model, features, latlon, labels).set_index("concept")
    assert list(table.index) == ["tropical", "northern", "polar"]  # model order, measured concepts only
    assert table.loc["polar", "auroc_location"] == 1.0 and table.loc["polar", "ap_location"] == 1.0
    assert table.loc["polar", "auroc_image"] == pytest.approx(0.5, abs=0.1)  # random features
    assert table.loc["tropical", "auroc_location"] == pytest.approx(0.5, abs=0.1)
    assert np.isnan(table.loc["northern", "auroc_image"]) and "single class" in table.loc["northern", "note"]
    assert table.loc["polar", "prevalence"] == pytest.approx(0.5)


def test_error_bin_table_by_hand():
    errors = np.array([5.0, 25.0, 30.0, 150.0, 600.0, 9000.0])
    scores = np.array(
        [[3.0, 1.0, 0.0], [1.0, 3.0, 0.0], [0.0, 1.0, 2.0], [0.0, 3.0, 1.0], [5.0, 0.0, 1.0], [9.0, 9.0, 9.0]]
    )
    table = faithfulness.error_bin_table(errors, scores, ["a", "b", "c"], top=2)
    first = table[table["bin"] == "0–25 km"]  # 5 and 25 km (25 is in the first bin: within 25 km)
    assert first["images"].tolist() == [2, 2]
    assert first[["top_concept", "top_median", "bottom_concept", "bottom_median"]].values.tolist() == [
        ["a", 2.0, "c", 0.0],
        ["b", 2.0, "b", 2.0],
    ]
    second = table[table["bin"] == "25–200 km"]  # 30 and 150 km: medians a 0, b 2, c 1.5
    assert second["top_concept"].tolist() == ["b", "c"] and second["top_median"].tolist() == [2.0, 1.5]
    third = table[table["bin"] == "200–750 km"]
    assert third["images"].tolist() == [1, 1] and third["top_concept"].iloc[0] == "a"  # 9000 km is in no bin
    empty = faithfulness.error_bin_table(np.array([5000.0]), scores[:1], ["a", "b", "c"])
    assert empty["images"].tolist() == [0, 0, 0]


def test_concept_maps_against_raster_truth():
    bank_concepts = [
        Concept("tropical", "Tropical", "climate", ("t",), Rule("koppen_group", ("A",))),
        Concept("text_only", "Text", "climate", ("x",)),  # no rule: no truth, no map
    ]
    truths = faithfulness.truth_grids(bank_concepts, width=36)
    assert list(truths) == ["tropical"] and truths["tropical"].shape == (18, 36)
    points, _ = faithfulness.grid_points(36)
    row = int(np.argmin(np.abs(points[::36, 0] - 1)))  # the cell row at 1°N
    col = int(np.argmin(np.abs(points[:36, 1] - 25)))  # 25°E: the Congo basin
    assert truths["tropical"][row, col] == 1.0
    assert np.isnan(truths["tropical"][row, int(np.argmin(np.abs(points[:36, 1] + 25)))])  # mid-Atlantic: no label
    model = tiny_model("concept", seed=0)
    z = model.location_concepts(points).numpy()[:, CONCEPTS.index("tropical")].reshape(18, 36)
    echo = np.where(np.isnan(truths["tropical"]), np.nan, 2 * z + 1)  # a truth the score explains exactly
    [cmap] = faithfulness.concept_maps(model, {"tropical": echo, "not_in_model": echo}, width=36)
    assert cmap.concept == "tropical" and cmap.variant == "concept"
    assert np.array_equal(cmap.score, z) and cmap.pearson == pytest.approx(1.0) and cmap.spearman == pytest.approx(1.0)
    assert cmap.cells == int((~np.isnan(echo)).sum())
    [real] = faithfulness.concept_maps(model, truths, width=36)
    assert -1 <= real.pearson <= 1 and real.cells == cmap.cells
