"""`geoconcept features` and `geoconcept gallery` on small inputs (train: tests/test_train_main.py)."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import torch
from _model_inputs import write_dataset, write_tar

from geoconcept.cli import main as cli_main
from geoconcept.features import read_feature_shard
from geoconcept.layout import DataRoot
from geoconcept.model.checkpoint import save_model
from geoconcept.model.geoconcept_model import GeoConceptModel


def test_features_command_extracts_finished_shards_and_skips_them_next_time(data_root, capsys):
    shards = DataRoot(data_root).shards("sample", "train")
    shards.mkdir(parents=True)
    keys = write_tar(shards / "shard-000000.tar", n=3)
    pq.write_table(pa.table({"key": keys, "status": ["ok"] * 3}), shards / "shard-000000.parquet")
    write_tar(shards / "shard-000001.tar", n=2)  # no manifest: not finished, left alone
    args = ["features", "--data-root", str(data_root), "--source", "train", "--no-progress"]
    assert cli_main(args) == 0
    captured = capsys.readouterr()
    assert "no pretrained image weights" in captured.err
    assert "1 shard(s) computed, 0 up to date, 3 images" in captured.out
    out = DataRoot(data_root).features("sample", "ViT-S-32-alt__none", "train")
    assert [p.name for p in out.iterdir()] == ["shard-000000.safetensors"]
    assert read_feature_shard(out / "shard-000000.safetensors").keys == keys
    assert cli_main(args) == 0
    assert "0 shard(s) computed, 1 up to date" in capsys.readouterr().out


def test_features_command_without_shards_fails_clearly(data_root, capsys):
    assert cli_main(["features", "--data-root", str(data_root), "--source", "train"]) == 2
    assert "geoconcept features: error: no finished shards" in capsys.readouterr().err


def test_gallery_command(tmp_path, capsys):
    torch.manual_seed(0)
    checkpoint = tmp_path / "final.safetensors"
    save_model(GeoConceptModel(variant="geoclip", feature_dim=8, sigmas=[1.0]), checkpoint)
    coords = tmp_path / "coords.csv"
    coords.write_text("lat,lon\n" + "".join(f"{i - 40},{3 * i - 100}\n" for i in range(60)))
    out = tmp_path / "gallery"
    assert cli_main(["gallery", "--checkpoint", str(checkpoint), "--out", str(out), "--coords", str(coords)]) == 0
    assert "gallery: 60 locations, Flat index, 512-d" in capsys.readouterr().out
    info = json.loads((out / "gallery.json").read_text())
    assert info["source"] == str(coords) and info["count"] == 60
    assert cli_main(["gallery", "--checkpoint", str(checkpoint), "--out", str(out), "--sample", "5"]) == 2
    assert "--sample needs --from-features" in capsys.readouterr().err
    assert cli_main(["gallery", "--checkpoint", str(tmp_path / "none.safetensors"), "--out", str(out)]) == 2
    assert "none.safetensors not found" in capsys.readouterr().err


def test_gallery_command_from_training_coordinates(tmp_path, capsys):
    paths = write_dataset(tmp_path / "in", n=60)
    torch.manual_seed(0)
    checkpoint = tmp_path / "final.safetensors"
    save_model(GeoConceptModel(variant="geoclip", feature_dim=16, sigmas=[1.0]), checkpoint)
    base = ["gallery", "--checkpoint", str(checkpoint), "--from-features", str(paths["features"])]
    assert cli_main([*base, "--out", str(tmp_path / "k"), "--kmeans", "8"]) == 0
    assert json.loads((tmp_path / "k/gallery.json").read_text())["source"] == "kmeans8"
    assert cli_main([*base, "--out", str(tmp_path / "s"), "--sample", "10", "--index", "hnsw"]) == 0
    info = json.loads((tmp_path / "s/gallery.json").read_text())
    assert (info["count"], info["factory"]) == (10, "HNSW32")
    empty = tmp_path / "empty"
    empty.mkdir()
    assert cli_main(["gallery", "--checkpoint", str(checkpoint), "--from-features", str(empty), "--out", "x"]) == 2
    assert "no feature files" in capsys.readouterr().err
