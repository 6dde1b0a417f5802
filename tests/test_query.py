"""`geoconcept query`: the mechanics of text → world map (with random weights the map means nothing)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
import torch

from geoconcept import query
from geoconcept.cli import main
from geoconcept.concepts.bank import load_bank
from geoconcept.model.backbone import Backbone
from geoconcept.model.checkpoint import load_model, save_model
from geoconcept.model.geoconcept_model import GeoConceptModel

BACKBONE = "ViT-S-32-alt"  # the demo's fast backbone, randomly initialised (offline)
RESOLUTION = 10.0  # 18 x 36 cells: enough for the mechanics, fast on a CPU


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("run") / "final.safetensors"
    save_model(
        GeoConceptModel(variant="geoclip", feature_dim=256),
        path,
        backbone_spec={"model": BACKBONE, "pretrained": "none", "seed": "0"},
    )
    return path


@pytest.fixture(scope="module")
def parts(checkpoint):
    model = load_model(checkpoint)
    return model, Backbone.from_metadata(model.checkpoint_metadata), load_bank()


@pytest.fixture(scope="module")
def beach(parts):
    return query.query_map(*parts, "a tropical beach with palm trees", RESOLUTION, top=5)


def test_grid_covers_the_globe_north_up():
    lat, lon = query.grid(RESOLUTION)
    assert (lat[0], lat[-1], lon[0], lon[-1]) == (85.0, -85.0, -175.0, 175.0)
    assert len(query.grid(1.0)[0]) * len(query.grid(1.0)[1]) == 180 * 360


def test_scores_and_top_places(beach):
    assert beach.scores.shape == (18, 36)
    assert np.isfinite(beach.scores).all() and beach.scores.std() > 0
    top = beach.top
    assert top["rank"].tolist() == [1, 2, 3, 4, 5]
    assert top["score"].is_monotonic_decreasing
    assert top["score"].iloc[0] == pytest.approx(float(beach.scores.max()), abs=1e-7)
    assert top["place"].str.len().gt(0).all()  # a GeoNames name for each cell
    assert beach.warning == query.MEANINGLESS  # random backbone


def test_geotiff_georeferencing(beach, tmp_path):
    path = query.write_geotiff(beach, tmp_path / "scores.tif")
    with rasterio.open(path) as src:
        assert src.crs.to_epsg() == 4326
        assert (src.height, src.width) == (18, 36)
        row, col = src.index(2.35, 48.85)  # Paris lies in the cell 40..50°N, 0..10°E
        assert (row, col) == (4, 18)
        assert src.xy(row, col) == (5.0, 45.0)  # its centre
        assert src.read(1)[row, col] == beach.scores[row, col]
        assert src.index(-179.9, -89.9) == (17, 0)


def test_concept_id_equals_its_prompt_text(parts):
    bank = parts[2]
    concept = next(c for c in bank.concepts if len(c.prompts) == 1)
    by_id = query.query_map(*parts, concept.id, RESOLUTION)
    by_text = query.query_map(*parts, concept.prompts[0], RESOLUTION)
    assert by_id.prompts == list(concept.prompts)
    assert np.array_equal(by_id.scores, by_text.scores)


def test_several_prompts_average_their_directions_at_their_mean_norm(parts):
    backbone = parts[1]
    prompts = ["a sandy beach", "snowy mountains", "a busy city street"]
    singles = torch.stack([query.text_vector(backbone, [p]) for p in prompts])
    combined = query.text_vector(backbone, prompts)
    direction = torch.nn.functional.normalize(torch.nn.functional.normalize(singles, dim=1).mean(0), dim=0)
    assert torch.allclose(combined / combined.norm(), direction, atol=1e-5)
    assert combined.norm().item() == pytest.approx(singles.norm(dim=1).mean().item(), rel=1e-5)


def test_command_writes_the_map_and_says_it_means_nothing(checkpoint, tmp_path, capsys):
    out = tmp_path / "q"
    assert main(["query", "a tropical beach", "--checkpoint", str(checkpoint), "--out", str(out),
                 "--resolution", "10", "--top", "3"]) == 0  # fmt: skip
    captured = capsys.readouterr()
    assert query.MEANINGLESS in captured.err
    assert {p.name for p in out.iterdir()} == set(query.OUTPUT_FILES.values())
    document = json.loads((out / "top_places.json").read_text())
    assert document["warning"] == query.MEANINGLESS and len(document["top_places"]) == 3
    assert (out / "map.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["tropical_rainforrest_climate"], "unknown concept id 'tropical_rainforrest_climate' (did you mean"),
        (["   "], "the query is empty"),
        (["a beach", "--resolution", "7"], "--resolution must divide 180 degrees"),
    ],
)
def test_bad_input_is_one_line_exit_2(checkpoint, argv, message, capsys):
    assert main(["query", *argv[:1], "--checkpoint", str(checkpoint), *argv[1:]]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err


def test_missing_checkpoint_is_one_line_exit_2(tmp_path, capsys):
    assert main(["query", "a beach", "--checkpoint", str(tmp_path / "nope.safetensors")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "not found" in err
