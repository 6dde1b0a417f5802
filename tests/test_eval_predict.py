"""Gallery predictions, the top-k refinement, the predictions GeoParquet, and explanations."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from _eval_inputs import coords, save_checkpoint

from geoconcept import gallery
from geoconcept.errors import InputError
from geoconcept.evaluation import explain, predict
from geoconcept.evaluation.metrics import haversine_km
from geoconcept.ingest.reasons import Rejected
from geoconcept.model.checkpoint import load_model


@pytest.fixture(scope="module")
def concept_run(tmp_path_factory):
    """A concept-space model (the paper's variant) and its exact gallery of 300 locations."""
    root = tmp_path_factory.mktemp("concept_run")
    model = load_model(save_checkpoint(root / "final.safetensors", "concept", seed=3))
    gallery.build_gallery(coords(300, seed=1), model, root / "gallery", use_gpu=False)
    return model, gallery.Gallery.load(root / "gallery")


def features(n: int, seed: int = 0) -> np.ndarray:
    return torch.randn(n, 16, generator=torch.Generator().manual_seed(seed)).numpy()


def test_top1_prediction_is_the_galleries_best_match(concept_run):
    model, g = concept_run
    found = predict.predict_locations(model, g, features(12), top_k=3)
    latlon, _, rows = g.predict(model, features(12), k=3)
    assert np.array_equal(found.latlon, latlon[:, 0]) and np.array_equal(found.rows, rows)
    assert found.candidates.shape == (12, 3, 2) and np.all(np.diff(found.scores, axis=1) <= 0)


def test_refinement_averages_nearby_candidates_only():
    candidates = np.array([[[0.0, 0.0], [0.0, 1.0], [40.0, 40.0]]])  # two ~111 km apart, one far away
    refined = predict.refine_top_k(candidates, np.array([[0.9, 0.9, 0.95]]), logit_scale=10.0)
    # equal weights for the two near ones put the result halfway between them; the far one, though it
    # scores highest of the three, is beyond REFINE_RADIUS_KM of the top-1 (the first column) and ignored
    assert refined == pytest.approx(np.array([[0.0, 0.5]]), abs=1e-9)
    weighted = predict.refine_top_k(candidates[:, :2], np.array([[0.9, 0.8]]), logit_scale=10.0)
    share = 1 / (1 + np.exp(-1.0))  # softmax weight of the first: e^9 / (e^9 + e^8)
    assert weighted[0, 1] == pytest.approx(1 - share, abs=1e-4) and abs(weighted[0, 0]) < 1e-6
    alone = predict.refine_top_k(candidates[:, [0, 2]], np.array([[0.9, 0.95]]), logit_scale=10.0)
    assert alone == pytest.approx(np.array([[0.0, 0.0]]), abs=1e-9)


def test_refined_predictions_stay_near_the_top_candidates(concept_run):
    model, g = concept_run
    found = predict.predict_locations(model, g, features(20), refine_k=5)
    top1 = g.predict(model, features(20), k=1)[0][:, 0]
    assert np.all(haversine_km(found.latlon, top1) <= predict.REFINE_RADIUS_KM + 1e-6)
    with pytest.raises(ValueError, match="refine_k must be at least 2"):
        predict.predict_locations(model, g, features(2), refine_k=1)


def test_predictions_geoparquet_round_trip(tmp_path):
    true = np.array([[48.8566, 2.3522], [-33.87, 151.21], [10.0, 179.9]])
    pred = np.array([[51.5074, -0.1278], [-33.87, 151.21], [10.0, -179.9]])
    frame = predict.predictions_frame(
        ["a", "b", "c"], true, pred, np.array([0.5, 0.9, 0.1]), variant="concept", seed=2,
        top_concepts=["tropical:+0.100", "", "polar:-0.200"],
    )  # fmt: skip
    other = predict.predictions_frame(["a"], true[:1], true[:1], np.array([1.0]), variant="geoclip", seed=0)
    path = predict.write_predictions([frame, other], tmp_path / "predictions.parquet")
    back = predict.read_predictions(path)
    assert list(back.columns[: len(predict.COLUMNS)]) == predict.COLUMNS
    assert back.crs.to_epsg() == 4326 and back.geometry.name == "geometry"
    assert isinstance(back["prediction"], gpd.GeoSeries) and back["prediction"].crs.to_epsg() == 4326
    with pytest.raises(InputError, match="is not a readable GeoParquet"):
        predict.read_predictions(tmp_path / "missing.parquet")
    assert back.geometry.x.tolist()[:3] == true[:, 1].tolist() and back.geometry.y.tolist()[:3] == true[:, 0].tolist()
    assert back["prediction"].x.tolist()[:3] == pred[:, 1].tolist()
    assert back["error_km"].tolist()[:3] == pytest.approx([343.56, 0.0, 21.9], abs=0.05)  # Paris–London, same, dateline
    assert back["variant"].tolist() == ["concept"] * 3 + ["geoclip"] and back["error_km"].iloc[3] == 0.0
    assert back["top_concepts"].tolist()[:3] == ["tropical:+0.100", "", "polar:-0.200"]
    geo = pq.read_schema(path).metadata[b"geo"]
    assert b'"primary_column": "geometry"' in geo and b'"prediction"' in geo  # two geometry columns


def test_contributions_sum_to_the_concept_space_score(concept_run):
    model, g = concept_run
    x = features(6, seed=5)
    found = predict.predict_locations(model, g, x, top_k=4)
    terms = explain.guess_contributions(model, x, found.candidates)
    assert terms.shape == (6, 4, len(model.concept_ids))
    # the gallery's score (FAISS inner product of normalised concept vectors) is the sum of the terms
    assert terms.sum(axis=2) == pytest.approx(found.scores, abs=1e-5)
    explanations = explain.explain_features(model, g, x, [f"img{i}" for i in range(6)], top_k=4, concepts=2)
    first = explanations[0].guesses[0]
    assert [t.concept for t in first.concepts] == [
        model.concept_ids[j] for j in np.argsort(-np.abs(terms[0, 0]), kind="stable")[:2]
    ]
    assert first.concepts[0].contribution == pytest.approx(
        terms[0, 0][model.concept_ids.index(first.concepts[0].concept)]
    )
    assert first.score == pytest.approx(found.scores[0, 0]) and explanations[0].note == ""


def test_explanations_name_the_nearest_geonames_place(concept_run, tmp_path):
    places = explain.nearest_places(np.array([[48.8566, 2.3522], [-33.8688, 151.2093]]))
    assert [(p.name, p.admin1, p.country_code) for p in places] == [
        ("Paris", "Ile-de-France", "FR"),
        ("Sydney", "New South Wales", "AU"),
    ]
    assert places[0].distance_km < 1
    model = load_model(save_checkpoint(tmp_path / "g.safetensors", "geoclip", seed=0))
    gallery.build_gallery(coords(50), model, tmp_path / "gallery", use_gpu=False)
    [e] = explain.explain_features(model, gallery.Gallery.load(tmp_path / "gallery"), features(1), ["x.jpg"], top_k=2)
    assert e.variant == "geoclip" and all(g.concepts == [] for g in e.guesses)  # no concepts to explain with
    text = explain.format_explanation(e)
    assert text.startswith("x.jpg  (geoclip)") and "near " + e.guesses[0].place.name in text


def test_unreadable_images_carry_ingests_status(tmp_path, monkeypatch):
    from PIL import Image

    Image.new("RGB", (20, 20)).save(tmp_path / "bomb.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # 400 pixels: a bomb at this limit (restored after)
    (tmp_path / "text.jpg").write_text("not an image\n")
    (tmp_path / "folder").mkdir()
    expected = {"missing.jpg": "missing_image", "folder": "missing_image", "bomb.png": "too_large"}
    expected |= {"text.jpg": "corrupt_image"}
    for name, status in expected.items():
        with pytest.raises(Rejected) as info:
            predict.open_rgb(tmp_path / name)
        assert info.value.status == status and name in info.value.detail
    with pytest.raises(InputError, match="too large to decode safely"):  # the single-image CLI's error
        predict.read_images([tmp_path / "bomb.png"])
