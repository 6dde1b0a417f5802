"""Concept-bank construction: candidates from every source, scores with known answers, selection, diff,
and the default bank regenerated from its build spec and vocabulary."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from affine import Affine
from test_layers_user import (
    write_config,
    write_tif,
    zones_geojson,  # noqa: F401 (a fixture, registered by importing it)
)

from geoconcept.cli import main
from geoconcept.concepts import candidates as cand
from geoconcept.concepts import scores as sc
from geoconcept.concepts.bank import DEFAULT_BANK, load_bank, parse_bank
from geoconcept.concepts.diff import diff_banks
from geoconcept.concepts.select import select_bank
from geoconcept.errors import ConfigError
from geoconcept.layers.registry import Registry

SPEC = DEFAULT_BANK.with_name("default_build.yaml")
VOCABULARY = DEFAULT_BANK.with_name("vocabulary.csv")


@pytest.fixture
def halves(tmp_path) -> Path:
    """A layers config with `halves`: a 2-cell global GeoTIFF, class 1 (west) for lon < 0, 2 (east) else."""
    tif = write_tif(
        tmp_path / "halves.tif",
        np.array([[1, 2]], dtype=np.uint8),
        Affine(180.0, 0, -180.0, 0, -180.0, 90.0),
        "EPSG:4326",
    )
    layer = {"name": "halves", "kind": "raster", "path": tif.name, "classes": {1: "west", 2: "east"}}
    return write_config(tmp_path, layer)


def by_id(entries: list[dict]) -> dict[str, dict]:
    return {e["id"]: e for e in entries}


# --- sources ---------------------------------------------------------------------------------------


def test_every_class_of_every_layer_is_a_candidate_with_its_provenance(tmp_path, halves, zones_geojson):  # noqa: F811
    config = yaml.safe_load(halves.read_text())
    config["layers"].append({"name": "zones", "kind": "vector", "path": str(zones_geojson), "attribute": "zone"})
    halves.write_text(yaml.safe_dump(config))
    registry = Registry.from_config(halves)
    found = by_id(cand.build_candidates(registry).entries)

    west = found["halves_west"]
    assert west["rule"] == {"layer": "halves", "classes": ["west"]}
    assert west["provenance"] == {"source": "layer", "layer": "halves", "classes": ["west"]}
    assert west["category"] == "halves" and west["prompts"] == ["a photo of a place where the halves layer is west"]
    assert {"zones_north", "zones_south"} <= set(found)  # a vector layer's attribute values
    for layer in ("koppen_geiger", "koppen_group", "land", "country", "continent"):
        ids = {e["rule"]["classes"][0] for e in found.values() if e.get("rule", {}).get("layer") == layer}
        assert ids == set(registry[layer].classes.symbols.values()), layer
    igbp = [e for e in found.values() if e.get("rule", {}).get("layer") == "igbp"]
    assert len(igbp) == 17 and all(e["rule"]["radius_km"] == 5 for e in igbp)
    coast = found["coast_km_at_most_10"]
    assert coast["rule"]["threshold"] == {"op": "<=", "value": 10}
    assert coast["prompts"] == ["a place at most 10 km from the sea coast"]
    assert found["continent_north_america"]["prompts"] == ["a photo taken in North America"]
    # The candidates file is a valid bank.
    bank = cand.write_candidates(cand.build_candidates(registry), tmp_path / "c.yaml", registry)
    assert bank["halves_east"].provenance["layer"] == "halves"


def test_user_templates_override_one_layer_and_keep_the_others(tmp_path):
    templates = tmp_path / "templates.yaml"
    templates.write_text(yaml.safe_dump({"layers": {"continent": {"category": "place", "prompts": ["in {name}"]}}}))
    found = by_id(cand.build_candidates(Registry.builtin(), cand.load_templates(templates)).entries)
    assert found["continent_africa"]["prompts"] == ["in Africa"] and found["continent_africa"]["category"] == "place"
    assert found["country_fr"]["prompts"] == ["a photo taken in France"]
    templates.write_text(yaml.safe_dump({"layers": {"country": {"prompts": ["in {name}"]}}}))
    found = by_id(cand.build_candidates(Registry.builtin(), cand.load_templates(templates)).entries)
    assert found["country_fr"]["prompts"] == ["in France"] and found["country_fr"]["category"] == "human_geography"
    # An entry gives only what it changes: the category of `country` stays the default one.
    templates.write_text(yaml.safe_dump({"layers": {"country": {"prompts": ["in {nme}"]}}}))
    with pytest.raises(ConfigError, match="nme"):
        cand.build_candidates(Registry.builtin(), cand.load_templates(templates))
    templates.write_text(yaml.safe_dump({"layers": {"coast_km": {"thresholds": [{"op": "=", "value": 3}]}}}))
    with pytest.raises(ConfigError, match="layer 'coast_km': `thresholds`"):
        cand.load_templates(templates)


def test_vocabulary_plain_list_and_csv(tmp_path):
    templates = cand.load_templates()
    plain = tmp_path / "words.txt"
    plain.write_text("# my words\nRed phone box\n\n  Totem pole \n")
    entries = cand.read_vocabulary(plain, templates)
    assert [(e["id"], e["name"], e["category"], e["prompts"]) for e in entries] == [
        ("red_phone_box", "Red phone box", "other", ["a photo of Red phone box"]),
        ("totem_pole", "Totem pole", "other", ["a photo of Totem pole"]),
    ]
    assert entries[1]["provenance"] == {"source": "vocabulary", "file": str(plain), "line": 4}
    table = tmp_path / "words.csv"
    table.write_text('name,category,prompts\nSalt flat,water_terrain,"a white salt flat | a dry salt lake"\n')
    (entry,) = cand.read_vocabulary(table, templates)
    assert entry["prompts"] == ["a white salt flat", "a dry salt lake"] and "rule" not in entry


@pytest.mark.parametrize(
    ("text", "line", "problem"),
    [
        ("name,category\nA,x\n,y\n", 3, "empty concept name"),
        ("name,category\nA,x\nB,x,extra\n", 3, "fields"),
        ("name\nSame thing\nsame_thing\n", 3, "repeats line 2"),
        ("name,colour\nA,red\n", 1, "header"),
    ],
)
def test_a_bad_vocabulary_line_is_one_error_naming_file_and_line(tmp_path, capsys, text, line, problem):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(ConfigError, match=f"{path}:{line}: .*{problem}"):
        cand.read_vocabulary(path, cand.load_templates())
    code = main(["concepts", "build", "--vocabulary", str(path), "--out", str(tmp_path / "c.yaml")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and f"{path}:{line}" in err
    assert not (tmp_path / "c.yaml").exists()


def test_extending_a_bank_keeps_its_concepts_first_and_drops_repeats(tmp_path):
    words = tmp_path / "words.txt"
    words.write_text("Palm trees\nRed phone box\n")  # palm_trees is already in the bank
    found = cand.build_candidates(Registry.builtin(), vocabularies=[words], extend=DEFAULT_BANK)
    old = load_bank()
    assert [e["id"] for e in found.entries[: len(old)]] == old.ids
    assert found.entries[0]["provenance"] == {"source": "bank", "file": str(DEFAULT_BANK), "version": old.version}
    assert found.repeated == ["palm_trees"]
    assert found.entries[-1]["id"] == "red_phone_box" and found.version == old.version
    assert by_id(found.entries)["palm_trees"]["prompts"] == list(old["palm_trees"].prompts)


# --- scores ----------------------------------------------------------------------------------------


def bag_of_words(prompts: list[str]) -> np.ndarray:
    """A deterministic stand-in for the text tower: hashed word counts (same words → cosine 1)."""
    out = np.zeros((len(prompts), 64))
    for i, prompt in enumerate(prompts):
        for word in prompt.lower().split():
            out[i, int(hashlib.sha256(word.encode()).hexdigest(), 16) % 64] += 1
    return out / np.linalg.norm(out, axis=1, keepdims=True)


def half_bank(registry: Registry):
    doc = {
        "version": "t",
        "concepts": [
            {"id": "west", "name": "W", "category": "side", "prompts": ["the western half"],
             "rule": {"layer": "halves", "classes": ["west"]}},
            {"id": "east", "name": "E", "category": "side", "prompts": ["the eastern half"],
             "rule": {"layer": "halves", "classes": ["east"]}},
            {"id": "west_again", "name": "W2", "category": "side", "prompts": ["the western half"]},
            {"id": "tea", "name": "Tea", "category": "text", "prompts": ["tea plantations on hills"]},
        ],
    }  # fmt: skip
    return parse_bank(yaml.safe_dump(doc).encode(), Path("half.yaml"), registry)


def write_as_candidates(bank, path: Path, registry: Registry) -> None:
    found = cand.Candidates(
        entries=[cand.concept_entry(c) for c in bank], version=bank.version, categories=bank.categories
    )
    cand.write_candidates(found, path, registry)


def test_a_concept_covering_half_the_globe_has_the_expected_scores(halves):
    registry = Registry.from_config(halves)
    bank = half_bank(registry)
    lat, lon = sc.sphere_points(4000, seed=1)
    table = sc.score_concepts(bank, registry, lat, lon, bag_of_words).set_index("id")
    west = table.loc["west"]
    share = float((lon < 0).mean())
    assert west["labelled"] == 1.0 and west["coverage"] == pytest.approx(share, abs=1e-9)
    assert abs(share - 0.5) < 0.03  # the sample is uniform
    # Its mass is even over the 36 western cells of 72: entropy log(36)/log(72), less sampling noise.
    assert west["spread"] == pytest.approx(np.log(36) / np.log(72), abs=0.01)
    # Each cell is all west or all east: the cell tells Y completely, I = H(Y) = h(share) ≈ 1 bit.
    h = -(share * np.log2(share) + (1 - share) * np.log2(1 - share))
    for cells in (8, 72, 648):
        assert west[f"mi_{cells}"] == pytest.approx(h, abs=1e-9)
    assert west["redundancy"] == pytest.approx(1.0) and west["redundant_with"] == "east"
    assert west["duplicate_of"] == "west_again" and west["duplicate_cosine"] == pytest.approx(1.0)
    assert list(table.loc["west", "similar"]) == ["west_again"]
    assert table.loc["tea", "measured"] == False and np.isnan(table.loc["tea", "mi"])  # noqa: E712


def test_equal_area_cells_are_equal_in_area():
    lat, lon = sc.sphere_points(200_000, seed=3)
    cells, n = sc.equal_area_cells(lat, lon, 6)
    counts = np.bincount(cells, minlength=n)
    # Uniform points: every cell gets 1/72 of them, within 5 binomial standard deviations.
    expected = lat.size / n
    assert np.all(np.abs(counts - expected) < 5 * np.sqrt(expected))


def test_scores_cli_writes_parquet_and_refuses_bad_points(tmp_path, halves, capsys):
    registry = Registry.from_config(halves)
    bank_path = tmp_path / "half.yaml"
    write_as_candidates(half_bank(registry), bank_path, registry)
    out = tmp_path / "scores.parquet"
    args = ["concepts", "score", "--candidates", str(bank_path), "--layers", str(halves), "--out", str(out)]
    assert main([*args, "--points", "500", "--no-text"]) == 0
    table = pd.read_parquet(out)
    assert list(table["id"]) == ["west", "east", "west_again", "tea"] and table["duplicate_of"].isna().all()
    # Training points instead of a sample: three in the west, one in the east.
    (tmp_path / "points.csv").write_text("LAT,LON\n10,-20\n-30,-100\n50,-1\n0,40\n")
    assert main([*args, "--points-table", str(tmp_path / "points.csv"), "--no-text"]) == 0
    assert pd.read_parquet(out).set_index("id").loc["west", "coverage"] == 0.75
    capsys.readouterr()
    assert main([*args, "--points", "0", "--no-text"]) == 2
    assert capsys.readouterr().err.count("\n") == 1


# --- selection -------------------------------------------------------------------------------------


def toy_candidates():
    """Five measured concepts and two text ones; `forest_again` repeats `forest`'s rule, `tea_again`
    `tea`'s prompt."""
    rules = {
        "desert": ["barren"], "forest": ["enf"], "forest_again": ["enf"], "crops": ["cropland"], "ice": ["snow_ice"],
    }  # fmt: skip
    concepts = [
        {"id": cid, "name": cid, "category": "land", "prompts": [f"a {cid}"], "rule": {"layer": "igbp", "classes": c}}
        for cid, c in rules.items()
    ]
    concepts += [
        {"id": "tea", "name": "Tea", "category": "text", "prompts": ["tea plantations"]},
        {"id": "tea_again", "name": "Tea 2", "category": "text", "prompts": ["tea plantations", "green tea bushes"]},
    ]
    doc = {"version": "c1", "categories": ["text", "land"], "concepts": concepts}
    return parse_bank(yaml.safe_dump(doc).encode(), Path("cands.yaml"), Registry.builtin())


def toy_scores(bank) -> pd.DataFrame:
    mi = {"desert": 0.5, "forest": 0.4, "forest_again": 0.4, "crops": 0.35, "ice": 0.05}
    rows = []
    for c in bank:
        row = {"id": c.id, "mi": mi.get(c.id, np.nan), "coverage": 0.1, "correlated": [], "correlations": []}
        row |= {"similar": [], "similarities": []}
        rows.append(row)
    table = pd.DataFrame(rows).set_index("id", drop=False)
    table.at["crops", "correlated"], table.at["crops", "correlations"] = ["desert"], [-0.9]  # crops ≈ not desert
    table.at["desert", "correlated"], table.at["desert", "correlations"] = ["crops"], [-0.9]
    table.at["tea", "similar"], table.at["tea", "similarities"] = ["tea_again"], [0.995]
    table.at["tea_again", "similar"], table.at["tea_again", "similarities"] = ["tea"], [0.995]
    return table.reset_index(drop=True)


def test_selection_is_greedy_deterministic_and_merges_planted_duplicates(tmp_path):
    bank = toy_candidates()
    scores = toy_scores(bank)
    first = select_bank(bank, scores, k=3)
    assert first.document == select_bank(bank, scores, k=3).document
    ids = [c["id"] for c in first.document["concepts"]]
    # One per category first (text: tea; land: desert, the highest MI), then forest: crops is 0.9
    # correlated with desert, so worth 0.35·0.1; forest_again was merged into forest (same rule).
    assert ids == ["tea", "desert", "forest"]
    assert first.merged == {"forest": ["forest_again"], "tea": ["tea_again"]}
    tea = first.document["concepts"][0]
    assert tea["prompts"] == ["tea plantations", "green tea bushes"] and tea["provenance"]["merged"] == ["tea_again"]
    assert first.document["concepts"][1]["scores"] == {"coverage": 0.1, "mi": 0.5}
    # Without the redundancy penalty, crops (0.35) beats ice (0.05) and comes before it.
    assert [c["id"] for c in select_bank(bank, scores, k=4, alpha=0).document["concepts"]][-1] == "crops"
    written = cand.write_bank_yaml(first.document, tmp_path / "bank.yaml", Registry.builtin(), "# x\n")
    assert written.ids == ids and written.version == "c1" and load_bank(tmp_path / "bank.yaml").ids == ids


def test_pins_stay_and_are_never_merged_away():
    bank = toy_candidates()
    scores = toy_scores(bank)
    result = select_bank(bank, scores, k=2, pins=["ice", "tea_again"])
    assert [c["id"] for c in result.document["concepts"]] == ["tea_again", "ice"]
    assert all(c["pinned"] for c in result.document["concepts"])
    assert result.merged["tea_again"] == ["tea"]  # the pinned member keeps the group
    with pytest.raises(ConfigError, match="pinned"):
        select_bank(bank, scores, k=1, pins=["ice", "tea"])
    with pytest.raises(ConfigError, match="nope"):
        select_bank(bank, scores, k=3, pins=["nope"])
    with pytest.raises(ConfigError, match="no row"):
        select_bank(bank, scores.iloc[1:], k=3)


def test_select_cli_round_trip_and_bad_k(tmp_path, capsys):
    bank = toy_candidates()
    cand_path = tmp_path / "cands.yaml"
    write_as_candidates(bank, cand_path, Registry.builtin())
    sc.write_scores(toy_scores(bank), tmp_path / "s.parquet")
    out = tmp_path / "bank.yaml"
    base = ["concepts", "select", "--candidates", str(cand_path), "--scores", str(tmp_path / "s.parquet")]
    assert main([*base, "--k", "3", "--version", "2.0", "--out", str(out)]) == 0
    assert load_bank(out).version == "2.0" and load_bank(out).ids == ["tea", "desert", "forest"]
    capsys.readouterr()
    assert main([*base, "--k", "0", "--out", str(tmp_path / "x.yaml")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--k" in err and not (tmp_path / "x.yaml").exists()


# --- the default bank and diff -----------------------------------------------------------------------


def concept_content(bank) -> list[tuple]:
    return [(c.id, c.name, c.category, c.prompts, c.rule) for c in bank]


def test_the_shipped_bank_is_regenerated_from_its_spec_and_vocabulary(tmp_path, capsys):
    candidates, out = tmp_path / "candidates.yaml", tmp_path / "bank.yaml"
    build = ["concepts", "build", "--templates", str(SPEC), "--vocabulary", str(VOCABULARY), "--out", str(candidates)]
    assert main(build) == 0
    assert main(["concepts", "select", "--candidates", str(candidates), "--k", "117", "--out", str(out)]) == 0
    shipped, rebuilt = load_bank(), load_bank(out)
    assert concept_content(rebuilt) == concept_content(shipped)
    assert (rebuilt.version, rebuilt.categories, rebuilt.description) == (
        shipped.version, shipped.categories, shipped.description
    )  # fmt: skip
    assert rebuilt["palm_trees"].provenance == {"source": "vocabulary", "file": str(VOCABULARY), "line": 2}
    assert rebuilt["coastal"].provenance["source"] == "spec"
    capsys.readouterr()
    assert main(["concepts", "diff", str(DEFAULT_BANK), str(out)]) == 0
    assert capsys.readouterr().out.strip().endswith("identical concepts")


def test_diff_reports_added_removed_and_changed(tmp_path, capsys):
    doc = yaml.safe_load(DEFAULT_BANK.read_text())
    doc["version"] = "1.1.0"
    doc["concepts"] = [c for c in doc["concepts"] if c["id"] != "camels"]
    doc["concepts"][0]["prompts"] = ["a rainforest"]
    doc["concepts"][1]["rule"]["radius_km"] = 10
    doc["concepts"].append({"id": "llamas", "name": "Llamas", "category": "culture", "prompts": ["llamas"]})
    new = tmp_path / "new.yaml"
    new.write_text(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True))
    result = diff_banks(load_bank(), load_bank(new))
    assert (result.added, result.removed) == (["llamas"], ["camels"])
    assert result.changed == {
        "tropical_rainforest_climate": {"prompts": {"a": list(load_bank().concepts[0].prompts), "b": ["a rainforest"]}},
        "tropical_monsoon_climate": {
            "rule": {"a": "koppen_geiger in ['Am']", "b": "koppen_geiger in ['Am'] within 10 km"}
        },
    }
    assert not result.same and not result.reordered
    assert main(["concepts", "diff", str(DEFAULT_BANK), str(new), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["added"] == ["llamas"] and printed["b_version"] == "1.1.0" and printed["same"] is False
    assert main(["concepts", "diff", str(DEFAULT_BANK), str(tmp_path / "missing.yaml")]) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_bank_reads_provenance_scores_and_pins_but_still_refuses_unknown_keys():
    doc = {"version": "1", "concepts": [
        {"id": "a", "name": "A", "category": "c", "prompts": ["a"], "provenance": {"source": "vocabulary", "line": 3},
         "scores": {"mi": 0.5, "redundant_with": None}, "pinned": True},
    ]}  # fmt: skip
    (concept,) = parse_bank(yaml.safe_dump(doc).encode(), Path("b.yaml")).concepts
    assert concept.provenance["line"] == 3 and concept.scores["mi"] == 0.5 and concept.pinned
    doc["concepts"][0]["provenence"] = {}
    with pytest.raises(ConfigError, match="unknown key"):
        parse_bank(yaml.safe_dump(doc).encode(), Path("b.yaml"))
    del doc["concepts"][0]["provenence"]
    doc["concepts"][0]["scores"] = [1, 2]
    doc["concepts"][0]["pinned"] = "yes"
    with pytest.raises(ConfigError, match=r"(?s)`scores` must be a mapping.*`pinned` must be true or false"):
        parse_bank(yaml.safe_dump(doc).encode(), Path("b.yaml"))


@pytest.mark.slow
def test_concept_candidates_asset_shows_the_scores_table(tmp_path):
    import dagster as dg

    from assets.bank_building import concept_candidates
    from assets.concepts import concept_bank
    from assets.resources import ConceptResource, StorageResource

    resources = {"storage": StorageResource(data_root=str(tmp_path)), "concepts": ConceptResource()}
    result = dg.materialize([concept_bank, concept_candidates], resources=resources)
    assert result.success
    (event,) = [e for e in result.get_asset_materialization_events() if e.asset_key.path == ["concept_candidates"]]
    meta = event.materialization.metadata
    assert meta["candidates"].value > len(load_bank())
    rows = [r.data for r in meta["scores"].records]
    assert rows[0]["mi"] >= rows[-1]["mi"] and all(r["id"] for r in rows)
    assert (tmp_path / "concepts" / "candidate_scores.parquet").is_file()
