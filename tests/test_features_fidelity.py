"""bf16 features against fp32 features of the same images (issue 10, fidelity).

Images are rendered like the embedded sample's (map patches around MP16 land coordinates), so
they differ the way the sample's do; the backbone is the demo's random ViT-S-32-alt.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import webdataset

from geoconcept.features import extract_shard_features, read_feature_shard
from geoconcept.model.backbone import Backbone
from geoconcept.model.geoconcept_model import GeoConceptModel
from geoconcept.sample import SampleConfig, draw_points, encode_jpeg, render_patch

MODEL = "ViT-S-32-alt"


def write_rendered_tar(path, points: np.ndarray, first: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    config = SampleConfig(image_size=64)
    keys = [f"r{first + i:05d}" for i in range(len(points))]
    with webdataset.TarWriter(str(path)) as sink:
        for key, (lat, lon) in zip(keys, points, strict=True):
            meta = {"img_id": key, "lat": float(lat), "lon": float(lon)}
            jpeg = encode_jpeg(render_patch(lat, lon, config, rng), 90)
            sink.write({"__key__": key, "jpg": jpeg, "json": json.dumps(meta).encode()})
    return keys


@pytest.fixture(scope="module")
def backbones() -> dict[str, Backbone]:
    return {p: Backbone.create(MODEL, None, precision=p) for p in ("fp32", "bf16")}


def test_bf16_features_agree_with_fp32_for_every_image(backbones, tmp_path):
    tar = tmp_path / "shard-000000.tar"
    write_rendered_tar(tar, draw_points(64, seed=3).to_numpy(), 0, seed=3)
    shards = {}
    for precision, backbone in backbones.items():
        extract_shard_features(tar, tmp_path / precision / "shard-000000.safetensors", backbone, batch_size=32)
        shards[precision] = read_feature_shard(tmp_path / precision / "shard-000000.safetensors")
    # read back as float32 whatever was stored (bf16 features are stored as float16)
    assert shards["bf16"].features.dtype == torch.float32
    assert (
        shards["bf16"].metadata["features_dtype"] == "float16"
        and shards["fp32"].metadata["features_dtype"] == "float32"
    )
    cosine = F.cosine_similarity(shards["fp32"].features, shards["bf16"].features, dim=1)
    assert cosine.shape == (64,) and cosine.min().item() >= 0.999
    assert not torch.equal(shards["fp32"].features, shards["bf16"].features)  # bf16 really ran


def train_geoclip(features: torch.Tensor, latlon: torch.Tensor, steps: int) -> GeoConceptModel:
    """A small geoclip variant trained with in-batch InfoNCE (the trainer's objective without its queue)."""
    torch.manual_seed(0)
    model = GeoConceptModel(variant="geoclip", feature_dim=features.shape[1], sigmas=[1.0, 16.0])
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    generator = torch.Generator().manual_seed(0)
    for _ in range(steps):
        batch = torch.randperm(len(features), generator=generator)[:64]
        loss = F.cross_entropy(model(features[batch], latlon[batch]).logits, torch.arange(len(batch)))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


@pytest.mark.slow
def test_retrieval_top1_barely_changes_between_bf16_and_fp32_features(backbones, tmp_path):
    points = draw_points(420, seed=5).to_numpy()
    write_rendered_tar(tmp_path / "train.tar", points[:300], 0, seed=0)
    write_rendered_tar(tmp_path / "test.tar", points[300:], 300, seed=1)
    train = tmp_path / "fp32" / "train.safetensors"
    extract_shard_features(tmp_path / "train.tar", train, backbones["fp32"], 64)
    test = {}
    for precision, backbone in backbones.items():
        test[precision] = tmp_path / precision / "test.safetensors"
        extract_shard_features(tmp_path / "test.tar", test[precision], backbone, 64)
    shard = read_feature_shard(train)
    model = train_geoclip(shard.features, shard.latlon.float(), steps=300)

    with torch.inference_mode():  # the gallery: every sample's location, as GeoCLIP's gallery holds MP16's
        gallery = model.retrieval_location_vectors(torch.tensor(points, dtype=torch.float32))
        top1 = {
            p: (model.retrieval_image_vectors(read_feature_shard(f).features) @ gallery.T).argmax(1)
            for p, f in test.items()
        }
    assert len(set(top1["fp32"].tolist())) > 20  # the model tells images apart: the comparison means something
    changed = (top1["fp32"] != top1["bf16"]).float().mean().item()
    # The issue asks < 1% for a trained model. With this random backbone it is 1-3 of 120 (300
    # steps; 9 after 150): bf16 moves each image's feature by ~1.9% of its distance to the mean
    # feature (open_clip's mixed precision and torch autocast alike), and this weak model (~11%
    # exact top-1) ranks half its test images with a top-1/top-2 cosine margin under 0.005, so
    # near-ties flip. The bound here catches a broken cast (which flips most images), not the target.
    assert changed < 0.05, f"top-1 changed for {changed:.1%} of the 120 test images"
