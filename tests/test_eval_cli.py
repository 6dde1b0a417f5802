"""`geoconcept predict` and `geoconcept evaluate` on tiny inputs."""

from __future__ import annotations

import json

import pytest
from _eval_inputs import TEST_BANK, coords, make_runs, save_checkpoint
from _model_inputs import jpeg, write_dataset

from geoconcept import gallery
from geoconcept.cli import main as cli_main
from geoconcept.evaluation.config import load_config
from geoconcept.model.checkpoint import load_model

DEMO_BACKBONE = {"model": "ViT-S-32-alt", "pretrained": "", "seed": "0"}  # random init, 256-d features


@pytest.fixture(scope="module")
def predict_inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("predict")
    run = root / "run"
    save_checkpoint(run / "final.safetensors", "concept", seed=0, feature_dim=256, backbone_spec=DEMO_BACKBONE)
    gallery.build_gallery(coords(60), load_model(run / "final.safetensors"), root / "gallery", use_gpu=False)
    images = [root / "a.jpg", root / "b.jpg"]
    for i, path in enumerate(images):
        path.write_bytes(jpeg(i))
    return run, root / "gallery", images


def test_predict_prints_guesses_places_and_concepts(predict_inputs, capsys):
    run, folder, images = predict_inputs
    args = ["predict", *map(str, images), "--checkpoint", str(run), "--gallery", str(folder), "--top-k", "3"]
    assert cli_main(args) == 0
    captured = capsys.readouterr()
    assert "warning: no pretrained image weights" in captured.err and "ViT-S-32-alt__none" in captured.err
    blocks = captured.out.split("\n\n")
    assert blocks[0].startswith("concept checkpoint ") and "(60 locations)" in blocks[0]
    for block, image in zip(blocks[1:], images, strict=True):
        lines = block.strip().splitlines()
        assert lines[0] == f"{image}  (concept)"
        guesses = [line for line in lines if line.lstrip()[:2] in ("1.", "2.", "3.")]
        concepts = [line for line in lines if line.strip().startswith("concepts: ")]
        assert len(guesses) == 3 and len(concepts) == 3 and all(" near " in g for g in guesses)
        assert all(line.count(",") == 2 for line in concepts)  # three signed terms per guess


def test_predict_json_with_the_default_gallery(predict_inputs, tmp_path, monkeypatch, capsys):
    run, _, images = predict_inputs
    monkeypatch.setenv("GEOCONCEPT_CACHE", str(tmp_path / "cache"))
    args = ["predict", *map(str, images), "--checkpoint", str(run / "final.safetensors"), "--json", "--top-k", "2"]
    assert cli_main([*args, "--concepts", "2"]) == 0
    captured = capsys.readouterr()
    assert "building the default gallery" in captured.err
    doc = json.loads(captured.out)
    assert doc["variant"] == "concept" and "randomly initialised" in doc["warning"]
    assert doc["gallery_locations"] == 100_000 and "galleries/geoclip100k-" in doc["gallery"]
    assert [i["key"] for i in doc["images"]] == [str(p) for p in images]
    for image in doc["images"]:
        first, second = image["guesses"]
        assert (first["rank"], second["rank"]) == (1, 2) and first["score"] >= second["score"]
        assert isinstance(first["place"]["name"], str) and len(first["place"]["country_code"]) == 2
        assert [set(c) for c in first["concepts"]] == [{"concept", "contribution"}] * 2
    assert (tmp_path / "cache" / "galleries").is_dir()  # kept for the next call (build_gallery then skips)


def test_predict_bad_inputs(predict_inputs, tmp_path, capsys):
    run, _, images = predict_inputs
    missing = tmp_path / "nope.jpg"
    assert cli_main(["predict", str(images[0]), str(missing), "--checkpoint", str(run)]) == 2
    assert f"geoconcept predict: error: image {missing} not found" in capsys.readouterr().err
    text = tmp_path / "notes.jpg"
    text.write_text("not an image")
    assert cli_main(["predict", str(text), "--checkpoint", str(run)]) == 2
    assert "is not a readable image" in capsys.readouterr().err
    assert cli_main(["predict", str(images[0]), "--checkpoint", str(tmp_path / "none")]) == 2
    assert "not found" in capsys.readouterr().err


@pytest.fixture(scope="module")
def eval_inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("evaluate")
    paths = write_dataset(root / "data", n=100, dim=16)
    (root / "bank.yaml").write_text(TEST_BANK)
    runs = make_runs(root, ("geoclip", "concept"), (0,), coords(120, seed=2))
    return root, paths, runs


def test_evaluate_from_flags(eval_inputs, tmp_path, capsys):
    root, paths, runs = eval_inputs
    args = ["evaluate", "--features", str(paths["features"]), "--labels", str(paths["labels"])]
    args += ["--split", str(paths["split"]), "--out", str(tmp_path / "out"), "--bank", str(root / "bank.yaml")]
    for run in runs:
        args += ["--checkpoint", str(run.checkpoint), "--gallery", str(run.gallery)]
    assert cli_main([*args, "--no-downstream", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("| variant | 1 km (Street) | 25 km (City) |")
    assert "| geoclip |" in out and "| concept |" in out and "`concept` " in out
    assert "warning: geoclip: 1 seed(s); at least 3 are needed" in out
    assert f"report: {tmp_path / 'out' / 'report.md'}" in out and (tmp_path / "out" / "report.html").exists()
    assert cli_main([*args, "--gallery", str(runs[0].gallery), "--no-progress"]) == 2  # 2 checkpoints, 3 galleries
    assert "give each --checkpoint with its --gallery (2 checkpoints, 3 galleries)" in capsys.readouterr().err


def test_evaluate_from_a_config_file(eval_inputs, tmp_path, capsys):
    root, paths, runs = eval_inputs
    config = tmp_path / "eval.yaml"
    lines = [
        "name: from yaml",
        "out: report",  # relative to the config file
        f"features: {paths['features']}",
        f"labels: [{paths['labels']}]",
        f"split: {paths['split']}",
        f"bank: {root / 'bank.yaml'}",
        "explain_images: 2",
        "downstream: {enabled: false}",
        "runs:",
        *[f"  - {{checkpoint: {r.checkpoint}, gallery: {r.gallery}}}" for r in runs],
    ]
    config.write_text("\n".join(lines) + "\n")
    loaded = load_config(config)
    assert loaded.out == tmp_path / "report" and loaded.downstream.enabled is False and len(loaded.runs) == 2
    assert cli_main(["evaluate", "--config", str(config), "--no-progress"]) == 0
    assert "| variant |" in capsys.readouterr().out
    assert (tmp_path / "report" / "report.md").read_text().startswith("# Evaluation: from yaml")
    assert cli_main(["evaluate", "--config", str(config), "--out", str(tmp_path / "x")]) == 2
    assert "--config excludes --out" in capsys.readouterr().err
    config.write_text("\n".join([*lines, "bogus: 1"]) + "\n")
    assert cli_main(["evaluate", "--config", str(config)]) == 2
    assert "unknown key(s) ['bogus'] in the top level" in capsys.readouterr().err
    config.write_text("\n".join(lines).replace("explain_images: 2", "explain_images: many") + "\n")
    assert cli_main(["evaluate", "--config", str(config)]) == 2
    assert "explain_images must be an integer, got 'many'" in capsys.readouterr().err
