"""Small synthetic inputs in the real file formats (for tests/test_model_*, test_train_*, test_gallery).

WebDataset shards like ingest's (`write_tar`), and trainer inputs (`write_dataset`).

Features carry a learnable signal: each is a fixed random projection of the sample's position on
the unit sphere plus noise, so a few training steps measurably improve retrieval. Labels are
simple functions of latitude (as a raster would give), with some values missing (NaN).
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
import webdataset
from PIL import Image

from geoconcept.features import write_feature_shard
from geoconcept.model.tensor_files import save_tensors

CONCEPTS = ["tropical", "northern", "polar", "text_only"]
MEASURED = ["tropical", "northern", "polar"]
BANK_TEXT = "concepts:\n  - id: tropical\n  - id: northern\n  - id: polar\n  - id: text_only\n"


def sphere(latlon: np.ndarray) -> np.ndarray:
    lat, lon = np.deg2rad(latlon[:, 0]), np.deg2rad(latlon[:, 1])
    return np.stack([np.cos(lat) * np.cos(lon), np.cos(lat) * np.sin(lon), np.sin(lat)], axis=1)


def concept_values(latlon: np.ndarray) -> dict[str, np.ndarray]:
    lat = latlon[:, 0]
    return {
        "tropical": (np.abs(lat) < 23.4).astype(np.float32),
        "northern": (lat > 0).astype(np.float32),
        "polar": (np.abs(lat) > 66.5).astype(np.float32),
    }


def write_dataset(
    root: Path,
    *,
    n: int = 96,
    shards: int = 2,
    dim: int = 16,
    seed: int = 0,
    model: str = "test-backbone",
    text_dim: int = 512,
) -> dict[str, Path]:
    """Feature + label shards, a split (70% train / 20% val / 10% test), concept embeddings, a bank."""
    rng = np.random.default_rng(seed)
    latlon = np.stack([rng.uniform(-80, 80, n), rng.uniform(-180, 180, n)], axis=1)
    projection = rng.normal(size=(3, dim))
    features = sphere(latlon) @ projection + 0.05 * rng.normal(size=(n, dim))
    keys = [f"k{i:05d}" for i in range(n)]
    feat_dir, label_dir = root / "features", root / "labels"
    values = concept_values(latlon)
    for s, rows in enumerate(np.array_split(np.arange(n), shards)):
        write_feature_shard(
            feat_dir / f"shard-{s:06d}.safetensors",
            [keys[i] for i in rows],
            torch.tensor(features[rows], dtype=torch.float32),
            torch.tensor(latlon[rows]),
            {
                "model": model,
                "pretrained": "none",
                "backbone_seed": "0",
                "backbone_tag": f"{model}__none",
                "normalized": "false",
            },
        )
        columns = {"key": [keys[i] for i in rows]}
        for c in MEASURED:
            col = values[c][rows].copy()
            col[::7] = np.nan  # not measured for some points
            columns[f"concept__{c}"] = col
        columns["koppen_geiger"] = np.arange(len(rows), dtype=np.int32)
        label_dir.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.table(columns), label_dir / f"shard-{s:06d}.parquet")
    split = np.where(np.arange(n) % 10 < 7, "train", np.where(np.arange(n) % 10 < 9, "val", "test"))
    pq.write_table(pa.table({"key": keys, "split": split.tolist()}), root / "split.parquet")
    bank = root / "bank.yaml"
    bank.write_text(BANK_TEXT)
    vectors = torch.tensor(rng.normal(size=(len(CONCEPTS), text_dim)), dtype=torch.float32)
    vectors = vectors / vectors.norm(dim=1, keepdim=True)
    write_embeddings(root / "embeddings.safetensors", CONCEPTS, vectors, hashlib.sha256(bank.read_bytes()).hexdigest())
    return {
        "features": feat_dir,
        "labels": label_dir,
        "split": root / "split.parquet",
        "embeddings": root / "embeddings.safetensors",
        "bank": bank,
    }


def write_embeddings(path: Path, ids: list[str], vectors: torch.Tensor, bank_sha256: str) -> None:
    save_tensors(
        path,
        {"embeddings": vectors},
        {
            "concept_ids": json.dumps(ids),
            "bank_sha256": bank_sha256,
            "bank_version": "test",
            "model": "ViT-B-32",
            "pretrained": "none",
            "pretrained_weights_loaded": "false",
        },
    )


def train_args(
    paths: dict[str, Path], out: Path, variant: str = "concept+supervised", **overrides: object
) -> list[str]:
    """A tiny, fast trainer command line over `write_dataset`'s files."""
    settings: dict[str, object] = {
        "features": str(paths["features"]),
        "labels": str(paths["labels"]),
        "split": str(paths["split"]),
        "concept_embeddings": str(paths["embeddings"]),
        "concept_bank": str(paths["bank"]),
        "output": str(out),
        "variant": variant,
        "location_init": "random",
        "sigmas": [1],
        "batch_size": 16,
        "queue_size": 24,
        "steps": 6,
        "lr": 1e-3,
        "lr_schedule": "cosine",
        "log_interval": 2,
        "checkpoint_interval": 3,
        "progress": False,
        "gps_noise_km": 5.0,
    } | overrides
    args: list[str] = []
    for key, value in settings.items():
        args += ["--set", f"{key}={json.dumps(value) if not isinstance(value, str) else value}"]
    return args


def jpeg(seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 255, (40, 56, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG")
    return buffer.getvalue()


def write_tar(path, n: int = 5, broken: int | None = None) -> list[str]:
    keys = [f"{i:04x}abc" for i in range(n)]
    with webdataset.TarWriter(str(path)) as sink:
        for i, key in enumerate(keys):
            meta = {"img_id": f"img{i}.jpg", "lat": -40.0 + 20 * i, "lon": 170.0 - 80 * i, "row": i, "source": "t"}
            image = b"not a jpeg" if i == broken else jpeg(i)
            sink.write({"__key__": key, "jpg": image, "json": json.dumps(meta).encode()})
    return keys
