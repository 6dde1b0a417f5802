"""Model files: safetensors with metadata, byte-stable, and clear errors for bad files."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

import geoconcept
from geoconcept.errors import InputError
from geoconcept.model.checkpoint import load_model, save_model
from geoconcept.model.geoconcept_model import GeoConceptModel
from geoconcept.model.tensor_files import save_tensors


def small(variant: str = "concept+supervised") -> GeoConceptModel:
    torch.manual_seed(0)
    return GeoConceptModel(variant=variant, feature_dim=8, concept_ids=["x", "y"], sigmas=[1.0, 4.0])


def test_round_trip_gives_the_same_model_and_metadata(tmp_path):
    model = small()
    path = tmp_path / "final.safetensors"
    sha = save_model(model, path, config={"lr": 0.1}, bank_sha256="abc", backbone="ViT-S-32-alt__none")
    loaded = load_model(path)
    feats, places = torch.randn(4, 8), torch.tensor([[1.0, 2.0], [50.0, -120.0]])
    assert torch.equal(loaded.similarity(feats, places), model.similarity(feats, places))
    assert loaded.variant == "concept+supervised" and loaded.concept_ids == ["x", "y"]
    assert loaded.location_encoder.sigmas == (1.0, 4.0)
    assert loaded.checkpoint_sha256 == sha and loaded.backbone == "ViT-S-32-alt__none"
    meta = loaded.checkpoint_metadata
    assert json.loads(meta["config"]) == {"lr": 0.1} and meta["bank_sha256"] == "abc"
    assert json.loads(meta["sigmas"]) == [1.0, 4.0] and meta["feature_dim"] == "8"
    assert not loaded.training
    assert geoconcept.load_model is load_model


def test_same_model_same_bytes(tmp_path):
    a, b = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    save_model(small(), a, config={"z": 1, "a": 2})
    save_model(small(), b, config={"a": 2, "z": 1})
    assert a.read_bytes() == b.read_bytes()


def test_missing_file(tmp_path):
    with pytest.raises(InputError, match=r"nothere\.safetensors not found"):
        load_model(tmp_path / "nothere.safetensors")


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
def test_corrupt_file_is_named(tmp_path, damage):
    path = tmp_path / "final.safetensors"
    save_model(small(), path)
    data = path.read_bytes()
    path.write_bytes({"truncate": data[: len(data) // 2], "garbage": b"\x00" * 64, "empty": b""}[damage])
    with pytest.raises(InputError, match=r"final\.safetensors is not a readable safetensors file"):
        load_model(path)


def test_other_safetensors_files_are_refused(tmp_path):
    path = tmp_path / "features.safetensors"
    save_tensors(path, {"features": torch.zeros(2, 2)}, {"format": "geoconcept-image-features"})
    with pytest.raises(InputError, match="not a geoconcept model file"):
        load_model(path)


def _rewrite(path, drop: str | None = None, **meta_changes: str) -> None:
    with safe_open(path, framework="pt") as fh:
        meta = fh.metadata()
    tensors = load_file(path)
    if drop:
        tensors.pop(drop)
    save_tensors(path, tensors, meta | meta_changes)


def test_missing_tensors_are_named(tmp_path):
    path = tmp_path / "final.safetensors"
    save_model(small(), path)
    _rewrite(path, drop="concepts.delta")
    with pytest.raises(InputError, match=r"missing \['concepts.delta'\]"):
        load_model(path)


def test_metadata_that_does_not_fit_the_tensors_is_refused(tmp_path):
    path = tmp_path / "final.safetensors"
    save_model(small(), path)
    _rewrite(path, feature_dim="9")
    with pytest.raises(InputError, match=r"final\.safetensors: .*size mismatch"):
        load_model(path)
    _rewrite(path, variant="nonsense")
    with pytest.raises(InputError, match="inconsistent metadata"):
        load_model(path)
