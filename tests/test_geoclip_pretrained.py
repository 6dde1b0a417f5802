"""GeoCLIP's published model as a geoconcept checkpoint: same ranking as GeoCLIP's own scoring.

The reference mirrors `geoclip/model/GeoCLIP.py`'s forward on CLIP features (its image encoder
minus the CLIP model, which needs transformers): image MLP, location encoder (GeoCLIP's own module,
loaded without the package __init__), L2-normalise both, `logit_scale.exp() * img @ gps.T`, topk.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from test_model_location_encoder import _geoclip_location_module
from torch import nn

from geoconcept import bundled, gallery
from geoconcept.model.checkpoint import load_model
from geoconcept.model.geoclip_pretrained import geoclip_pretrained_checkpoint

TOP_K = 10
TIE = 1e-3  # logits closer than this are a tie for float32 arithmetic


def _geoclip_logits(features: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """GeoCLIP.forward on CLIP features, with its shipped weights: (N images, M locations)."""
    mlp = nn.Sequential(nn.Linear(768, 768), nn.ReLU(), nn.Linear(768, 512))
    mlp.load_state_dict(torch.load(bundled.GEOCLIP_IMAGE_MLP_WEIGHTS.path(), map_location="cpu", weights_only=True))
    location_encoder = _geoclip_location_module().LocationEncoder().eval()  # loads the shipped weights
    logit_scale = torch.load(bundled.GEOCLIP_LOGIT_SCALE.path(), map_location="cpu", weights_only=True)
    with torch.inference_mode():
        image_features = F.normalize(mlp(features), dim=1)
        location_features = F.normalize(torch.cat([location_encoder(c) for c in coords.split(8192)]), dim=1)
        return logit_scale.exp() * (image_features @ location_features.t())


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return geoclip_pretrained_checkpoint(tmp_path_factory.mktemp("models") / "geoclip-pretrained")


@pytest.fixture
def flush_denormals():
    # GeoCLIP's weights hold subnormals that make CPU matrix products tens of times slower; flushing
    # them in arithmetic changes outputs by < 1e-37 (our loader zeroes them for the same reason).
    torch.set_flush_denormal(True)
    yield
    torch.set_flush_denormal(False)


def _features(n: int) -> torch.Tensor:
    # CLIP ViT-L-14 image features are not normalised; any fixed random 768-d vectors will do.
    return torch.randn(n, 768, generator=torch.Generator().manual_seed(0))


def _check_same_ranking(checkpoint, coords: np.ndarray, tmp_path) -> None:
    model = load_model(checkpoint)
    gallery.build_gallery(coords, model, tmp_path / "gallery", use_gpu=False, source="test")
    found = gallery.Gallery.load(tmp_path / "gallery", use_gpu=False)
    features = _features(16)
    _, scores, ids = found.predict(model, features.numpy(), k=TOP_K)
    logits = _geoclip_logits(features, torch.tensor(coords, dtype=torch.float32))
    expected = torch.topk(logits, TOP_K, dim=1)
    # float32 sums in another order: cosines agree to ~1e-6, logits (x ~40) to ~1e-4. The 100K
    # gallery holds near-duplicate points whose scores tie within that, so where ids differ, GeoCLIP
    # must score ours the same as its own pick (a swap of tied neighbours, not a different ranking).
    theirs_for_ours = logits.gather(1, torch.from_numpy(ids)).numpy()
    assert np.abs(theirs_for_ours - expected.values.numpy()).max() < TIE
    assert np.abs(model.logit_scale.exp().item() * scores - theirs_for_ours).max() < TIE
    assert (ids == expected.indices.numpy()).mean() > 0.9
    assert len(set(ids[:, 0].tolist())) > 1  # not a degenerate ranking that every model would give


def test_checkpoint_records_geoclip_and_its_backbone(checkpoint):
    model = load_model(checkpoint)
    meta = model.checkpoint_metadata
    assert (model.variant, model.feature_dim, model.contrastive_space) == ("geoclip", 768, "embedding")
    assert (meta["backbone_model"], meta["backbone_pretrained"], meta["backbone"]) == (
        "ViT-L-14",
        "openai",
        "ViT-L-14__openai",
    )
    assert json.loads(meta["config"])["source"] == "geoclip package"
    shipped = torch.load(bundled.GEOCLIP_LOGIT_SCALE.path(), map_location="cpu", weights_only=True)
    assert model.logit_scale.item() == shipped.item()


def test_checkpoint_is_written_once(checkpoint):
    before = checkpoint.stat().st_mtime_ns
    assert geoclip_pretrained_checkpoint(checkpoint.parent) == checkpoint
    assert checkpoint.stat().st_mtime_ns == before


def test_same_topk_as_geoclip_on_a_gallery_sample(checkpoint, tmp_path, flush_denormals):
    coords = gallery.geoclip_coordinates()
    pick = np.random.default_rng(0).choice(len(coords), 4000, replace=False)
    _check_same_ranking(checkpoint, coords[pick], tmp_path)


@pytest.mark.slow
def test_same_topk_as_geoclip_on_the_100k_gallery(checkpoint, tmp_path, flush_denormals):
    _check_same_ranking(checkpoint, gallery.geoclip_coordinates(), tmp_path)


def test_commands_take_it_by_name_and_say_what_is_missing_offline(tmp_path, monkeypatch, capsys):
    from PIL import Image

    from geoconcept.cli import main

    monkeypatch.setenv("GEOCONCEPT_DATA_ROOT", str(tmp_path / "data"))
    monkeypatch.delenv("GEOCONCEPT_ALLOW_DOWNLOADS", raising=False)
    monkeypatch.delenv("GEOCONCEPT_BACKBONE_WEIGHTS", raising=False)
    (tmp_path / "coords.csv").write_text("LAT,LON\n48.85,2.35\n-33.9,151.2\n40.7,-74.0\n")
    # gallery needs no backbone: it works offline and writes the model file under the data root
    assert main(["gallery", "--checkpoint", "geoclip-pretrained", "--coords", str(tmp_path / "coords.csv"),
                 "--out", str(tmp_path / "g")]) == 0  # fmt: skip
    assert (tmp_path / "data" / "models" / "geoclip-pretrained" / "final.safetensors").is_file()
    capsys.readouterr()
    Image.new("RGB", (32, 32), "green").save(tmp_path / "a.png")
    code = main(["predict", str(tmp_path / "a.png"), "--checkpoint", "geoclip-pretrained", "--gallery",
                 str(tmp_path / "g")])  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1
    assert "ViT-L-14 'openai' weights" in err and "GEOCONCEPT_BACKBONE_WEIGHTS" in err


@pytest.mark.slow
def test_evaluate_takes_it_by_name_on_cached_features(tmp_path, monkeypatch, capsys):
    from geoconcept.cli import main
    from geoconcept.features import write_feature_shard

    monkeypatch.setenv("GEOCONCEPT_DATA_ROOT", str(tmp_path / "data"))
    coords = gallery.geoclip_coordinates()[:40]
    features = _features(len(coords))
    facts = {"model": "ViT-L-14", "pretrained": "openai", "backbone_seed": "0", "backbone_tag": "ViT-L-14__openai"}
    write_feature_shard(
        tmp_path / "features" / "shard-000000.safetensors",
        [f"k{i}" for i in range(len(coords))],
        features,
        torch.tensor(coords),
        facts | {"normalized": "false"},
    )
    (tmp_path / "coords.csv").write_text("LAT,LON\n" + "".join(f"{a},{b}\n" for a, b in coords))
    assert main(["gallery", "--checkpoint", "geoclip-pretrained", "--coords", str(tmp_path / "coords.csv"),
                 "--out", str(tmp_path / "g")]) == 0  # fmt: skip
    code = main(["evaluate", "--checkpoint", "geoclip-pretrained", "--gallery", str(tmp_path / "g"),
                 "--features", str(tmp_path / "features"), "--out", str(tmp_path / "report"),
                 "--no-downstream", "--no-progress"])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    metrics = json.loads((tmp_path / "report" / "metrics.json").read_text())
    assert [r["variant"] for r in metrics["per_run"]] == ["geoclip"]
    assert metrics["test_samples"] == len(coords)
