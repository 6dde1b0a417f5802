"""Per-shard feature extraction with a real (randomly initialised) open_clip backbone."""

from __future__ import annotations

import io
import os

import pytest
import torch
from _model_inputs import jpeg, write_tar
from PIL import Image

from geoconcept.errors import ConfigError, InputError
from geoconcept.features import extract_shard_features, read_feature_shard
from geoconcept.model.backbone import RANDOM_WEIGHTS_WARNING, Backbone, backbone_tag
from geoconcept.model.tensor_files import read_metadata

MODEL = "ViT-S-32-alt"


@pytest.fixture(scope="module")
def backbone() -> Backbone:
    return Backbone.create(MODEL, pretrained=None)


def test_random_backbone_is_deterministic_and_says_so(backbone):
    # as a checkpoint records it (the features' backbone, to embed new images the same way)
    again = Backbone.from_metadata({"backbone_model": MODEL, "backbone_pretrained": "none", "backbone_seed": "0"})
    images = torch.rand(2, 3, backbone.image_size, backbone.image_size, generator=torch.Generator().manual_seed(0))
    assert torch.equal(backbone.encode(images), again.encode(images))
    other_seed = Backbone.create(MODEL, pretrained=None, seed=1)
    assert not torch.equal(backbone.encode(images), other_seed.encode(images))
    assert backbone.warning == RANDOM_WEIGHTS_WARNING and not backbone.weights_loaded
    assert backbone.tag == "ViT-S-32-alt__none" and other_seed.tag == "ViT-S-32-alt__none-s1"


def test_extracts_features_keys_and_coordinates_in_tar_order(backbone, tmp_path):
    tar = tmp_path / "shard-000000.tar"
    keys = write_tar(tar)
    out = tmp_path / "features" / "shard-000000.safetensors"
    result = extract_shard_features(tar, out, backbone, batch_size=2)
    assert not result.skipped and result.count == 5 and result.warning == RANDOM_WEIGHTS_WARNING
    shard = read_feature_shard(out)
    assert shard.keys == keys
    assert shard.features.shape == (5, backbone.dim) and shard.features.dtype == torch.float32
    assert shard.latlon[:, 0].tolist() == [-40.0, -20.0, 0.0, 20.0, 40.0]
    meta = shard.metadata
    assert meta["model"] == MODEL and meta["pretrained"] == "none" and meta["pretrained_weights_loaded"] == "false"
    assert meta["normalized"] == "false" and meta["image_size"] == "224" and meta["backbone_tag"] == backbone.tag
    # the model's own preprocessing, batched or not, gives the same rows
    image = Image.open(io.BytesIO(jpeg(3))).convert("RGB")
    alone = backbone.encode(backbone.preprocess(image)[None])
    assert torch.allclose(shard.features[3], alone[0], atol=1e-4)


def test_up_to_date_shards_are_skipped_and_changed_ones_redone(backbone, tmp_path):
    tar = tmp_path / "shard-000000.tar"
    write_tar(tar, n=3)
    out = tmp_path / "shard-000000.safetensors"
    extract_shard_features(tar, out, backbone)
    first = out.read_bytes()
    stamp = out.stat().st_mtime_ns
    again = extract_shard_features(tar, out, backbone)
    assert again.skipped and again.count == 3 and out.stat().st_mtime_ns == stamp
    out.unlink()
    extract_shard_features(tar, out, backbone)
    assert out.read_bytes() == first  # same inputs, same bytes
    write_tar(tar, n=4)
    redone = extract_shard_features(tar, out, backbone)
    assert not redone.skipped and len(read_feature_shard(out).keys) == 4


def test_a_broken_image_fails_clearly_and_leaves_no_file(backbone, tmp_path):
    tar = tmp_path / "shard-000001.tar"
    write_tar(tar, n=4, broken=2)
    out = tmp_path / "out" / "shard-000001.safetensors"
    with pytest.raises(InputError, match=r"shard-000001\.tar: sample '0002abc' is unreadable"):
        extract_shard_features(tar, out, backbone)
    assert not out.exists() and not any(p.name.startswith(out.name) for p in out.parent.glob("*"))


def test_a_truncated_tar_fails_clearly(backbone, tmp_path):
    tar = tmp_path / "shard-000002.tar"
    write_tar(tar, n=3)
    tar.write_bytes(tar.read_bytes()[:1500])
    with pytest.raises(InputError, match=r"shard-000002\.tar"):
        extract_shard_features(tar, tmp_path / "x.safetensors", backbone)


def test_a_crash_leftover_is_removed(backbone, tmp_path):
    tar = tmp_path / "shard-000000.tar"
    write_tar(tar, n=2)
    leftover = tmp_path / "shard-000000.safetensors.tmp-abc"
    leftover.write_bytes(b"half")
    extract_shard_features(tar, tmp_path / "shard-000000.safetensors", backbone)
    assert not leftover.exists()
    assert read_metadata(tmp_path / "shard-000000.safetensors", "f")["count"] == "2"


def test_backbone_configuration_errors(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown open_clip model 'ViT-S-32-alternative'.*ViT-S-32-alt"):
        Backbone.create("ViT-S-32-alternative")
    with pytest.raises(ConfigError, match="does not record its backbone"):
        Backbone.from_metadata({"variant": "geoclip"})
    with pytest.raises(ConfigError, match="not found"):
        Backbone.create(MODEL, pretrained=str(tmp_path / "missing.pt"))
    ckpt = tmp_path / "my weights.pt"
    ckpt.write_bytes(b"")
    assert backbone_tag("ViT-L-14", str(ckpt)) == "ViT-L-14__local-my_weights"
    assert backbone_tag("ViT-L-14", "openai") == "ViT-L-14__openai"
    assert os.sep not in backbone_tag("a/b", "c/d")
