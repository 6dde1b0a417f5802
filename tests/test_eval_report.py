"""`evaluate`: comparable inputs only, the report folder and its tables, determinism."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace

import geopandas as gpd
import pandas as pd
import pytest
from _eval_inputs import TEST_BANK, coords, make_runs, save_checkpoint
from _model_inputs import jpeg, write_dataset

from geoconcept import gallery
from geoconcept.errors import InputError
from geoconcept.evaluation import report
from geoconcept.evaluation.config import DownstreamSettings, EvaluationConfig, RunSpec
from geoconcept.evaluation.evaluate import evaluate
from geoconcept.evaluation.metrics import error_summary
from geoconcept.model.checkpoint import load_model

VARIANTS = ("geoclip", "concept", "concept+supervised")
GALLERY = coords(200, seed=11)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    paths = write_dataset(root / "data", n=200, dim=16)
    (root / "bank.yaml").write_text(TEST_BANK)
    runs = make_runs(root, VARIANTS, (0, 1, 2), GALLERY)
    return root, paths, runs


def config_for(root, paths, runs, out, **changes) -> EvaluationConfig:
    config = EvaluationConfig(
        runs=runs,
        features=[paths["features"]],
        labels=[paths["labels"]],
        split=paths["split"],
        out=out,
        name="test",
        bank=root / "bank.yaml",
        map_width=36,
        explain_images=4,
        explain_top_k=3,
        downstream=DownstreamSettings(points=80, seeds="first"),
    )
    return replace(config, **changes)


def test_evaluation_writes_the_report_with_every_table(inputs, tmp_path):
    root, paths, runs = inputs
    asked: list[list[str]] = []

    def images(keys):
        asked.append(list(keys))
        return {k: jpeg(i) for i, k in enumerate(keys)}

    result = evaluate(config_for(root, paths, runs, tmp_path / "out"), images=images)
    out = tmp_path / "out"
    md, page = (out / "report.md").read_text(), (out / "report.html").read_text()
    assert result.report_md == out / "report.md" and result.report_html == out / "report.html"

    # accuracy: the published table's shape, every variant over its 3 seeds, recomputed from the predictions
    header = "| variant | 1 km (Street) | 25 km (City) | 200 km (Region) | 750 km (Country) | 2500 km (Continent) |"
    assert header + " median km | mean km | seeds |" in md
    accuracy = result.tables["accuracy"]
    assert accuracy["variant"].tolist() == list(VARIANTS) and accuracy["seeds"].tolist() == [3, 3, 3]
    predictions = gpd.read_parquet(result.predictions)
    n_test = 20
    assert len(predictions) == 9 * n_test and predictions.crs.to_epsg() == 4326
    per_run = result.tables["accuracy_per_run"].set_index(["variant", "seed"])
    for (variant, seed), rows in predictions.groupby(["variant", "seed"]):
        expected = error_summary(rows[["pred_lat", "pred_lon"]].to_numpy(), rows[["true_lat", "true_lon"]].to_numpy())
        assert per_run.loc[(variant, seed)].to_dict() == pytest.approx(expected)
    concept_rows = predictions[predictions["variant"] == "concept"]
    assert concept_rows["top_concepts"].str.count(":").eq(3).all()  # three signed concept terms per prediction
    assert (predictions.loc[predictions["variant"] == "geoclip", "top_concepts"] == "").all()
    # the published figures, in their own clearly labelled table
    assert "Published on Im2GPS3k — not comparable to this test set" in md
    assert "| GeoCLIP (Vivanco et al., NeurIPS 2023), published | 14.11 | 34.47 | 50.65 | 69.67 | 83.82 |" in md
    # findings in words, faithfulness, error bins, concept maps, downstream, explanations
    assert len(result.findings) == 2 and all("`geoclip`" in f for f in result.findings)
    assert all(f in md for f in result.findings)
    faith = result.tables["faithfulness"]
    assert faith["concept"].tolist() == ["tropical", "northern", "polar"]
    assert "concept+supervised: AUROC loc" in faith.columns and "| concept | n | positives | prevalence |" in md
    assert set(result.tables["faithfulness_summary"]["side"]) == {"image", "location"}
    assert set(result.tables["error_bins"]["variant"]) == {"concept (seed 0)", "concept+supervised (seed 0)"}
    correlation = result.tables["concept_map_correlation"]
    assert set(correlation["concept"]) == {"tropical", "polar"}  # the bank's measured concepts only
    downstream = result.tables["downstream"]
    assert downstream["task"].nunique() == 5 and "GeoCLIP pretrained" in downstream.columns
    for column in ("lat/lon", "xyz + Fourier", *VARIANTS, "chance", "shuffled-label control"):
        assert column in downstream.columns
    # the supervised runs were trained on tropical/polar, measured on koppen_group: shares the Köppen source
    shares = downstream.set_index(["task", "probe"])["shares a layer with supervision"]
    assert shares[("Köppen-Geiger class", "linear")] == "yes: koppen_geiger"
    assert shares[("IGBP land cover", "MLP")] == "no"
    assert "## Downstream geospatial tasks" in md and "## Explanations" in md
    assert asked and len(asked[0]) == 4 and not any("images not found" in w for w in result.warnings)
    # files: figures and tables referenced by the report exist
    for name, path in result.figures.items():
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
        assert f"(figures/{path.name})" in md and f'src="figures/{path.name}"' in page
    assert {"accuracy_curves", "error_map_geoclip", "error_map_concept_supervised", "explanations"} <= set(
        result.figures
    )
    assert any(name.startswith("concept_map_concept_") for name in result.figures)
    for name in result.tables:
        assert (out / "tables" / f"{name}.csv").exists()
    md_tables = sum(line.startswith("|---") for line in md.splitlines())
    assert page.count("<table") == md_tables == 9 and "<h2>Concept faithfulness</h2>" in page
    metrics = json.loads((out / "metrics.json").read_text())
    assert len(metrics["per_run"]) == 9 and metrics["test_samples"] == n_test
    assert any("randomly initialised" in w for w in result.warnings) is False  # test features carry no warning


def per_run_rows(variant: str, values: list[float], median: list[float]) -> list[dict]:
    metrics = ("within_1km", "within_25km", "within_200km", "within_750km", "within_2500km")
    return [
        {"variant": variant, "seed": s, "median_km": m, "mean_km": m, **dict.fromkeys(metrics, v)}
        for s, (v, m) in enumerate(zip(values, median, strict=True))
    ]


def test_findings_say_plainly_whether_a_variant_beats_the_baseline():
    base = per_run_rows("geoclip", [10.0, 11.0, 12.0], [900.0, 1000.0, 1100.0])
    better = per_run_rows("concept", [20.0, 21.0, 22.0], [500.0, 510.0, 520.0])
    worse = per_run_rows("concept+supervised", [9.0, 10.0, 11.0], [1000.0, 1100.0, 1200.0])
    [win, loss] = report.accuracy_findings(pd.DataFrame(base + better + worse))
    assert win.startswith("`concept` beats `geoclip` on every metric; the gap exceeds the seeds' spread on 1 km")
    assert "25 km (City): 21.00 ± 1.00 vs 11.00 ± 1.00 %" in win and "median km: 510 ± 10 vs 1000 ± 100 km" in win
    assert loss.startswith("`concept+supervised` does NOT beat `geoclip`: it is worse or equal on every metric")
    assert "every gap is within the seeds' spread" in loss
    mixed = per_run_rows("concept", [12.0], [2000.0])
    [one] = report.accuracy_findings(pd.DataFrame(base[:1] + mixed))
    assert "does NOT beat `geoclip` overall: better on 5 metric(s)" in one and "no spread to judge" in one
    assert report.accuracy_findings(pd.DataFrame(better)) == [
        "No `geoclip` run: there is no baseline to compare the concept variants with."
    ]


def test_runs_must_share_test_samples_and_gallery_coordinates(inputs, tmp_path):
    root, paths, runs = inputs
    base = [runs[0], runs[3]]  # geoclip and concept, seed 0
    one_shard = tmp_path / "one"
    one_shard.mkdir()
    shutil.copy(paths["features"] / "shard-000000.safetensors", one_shard)
    fewer = [base[0], replace(base[1], features=[one_shard])]
    with pytest.raises(
        InputError,
        match=r"not evaluated on identical test samples: 10 samples only in the first .*, 0 only in the other",
    ):
        evaluate(config_for(root, paths, fewer, tmp_path / "a"))
    shards = sorted(paths["features"].glob("*.safetensors"))
    reordered = [base[0], replace(base[1], features=shards[::-1])]
    with pytest.raises(InputError, match="the same samples in a different order"):
        evaluate(config_for(root, paths, reordered, tmp_path / "b"))
    moved = tmp_path / "moved_gallery"
    gallery.build_gallery(GALLERY[::-1].copy(), load_model(base[1].checkpoint_file), moved, use_gpu=False)
    with pytest.raises(InputError, match=r"use galleries with different coordinates .* row 0 is"):
        evaluate(config_for(root, paths, [base[0], replace(base[1], gallery=moved)], tmp_path / "c"))
    other = save_checkpoint(tmp_path / "other" / "final.safetensors", "concept", seed=9)
    with pytest.raises(InputError, match=r"was built with checkpoint .* not with"):
        evaluate(config_for(root, paths, [base[0], RunSpec(other, base[1].gallery)], tmp_path / "d"))
    assert not (tmp_path / "a").exists()  # refused before writing anything


def test_same_inputs_give_the_same_files(inputs, tmp_path):
    root, paths, runs = inputs
    chosen = [runs[0], runs[1], runs[3], runs[4]]  # two seeds of geoclip and concept
    quick = {"downstream": DownstreamSettings(enabled=False), "explain_images": 2}
    first = evaluate(config_for(root, paths, chosen, tmp_path / "a", **quick))
    second = evaluate(config_for(root, paths, chosen, tmp_path / "b", **quick))
    for name in ("predictions.parquet", "metrics.json", "report.md", "report.html", "tables/accuracy.csv"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    for name, path in first.figures.items():
        assert path.read_bytes() == second.figures[name].read_bytes(), name
    assert "downstream" not in first.tables and "## Downstream" not in (tmp_path / "a/report.md").read_text()
    # a re-run into the same folder replaces the files and drops the ones it no longer writes
    stale = tmp_path / "a" / "figures" / "concept_map_old.png"
    stale.write_bytes(b"old")
    evaluate(config_for(root, paths, chosen[:1], tmp_path / "a", **quick))
    assert not stale.exists() and not (tmp_path / "a/figures/error_map_concept.png").exists()
    assert pd.read_csv(tmp_path / "a/tables/accuracy.csv")["variant"].tolist() == ["geoclip"]
    # one seed has no spread: strict JSON null, not NaN
    strict = json.loads((tmp_path / "a/metrics.json").read_text(), parse_constant=lambda c: pytest.fail(c))
    assert strict["per_variant"][0]["within_25km_std"] is None and strict["per_variant"][0]["seeds"] == 1
