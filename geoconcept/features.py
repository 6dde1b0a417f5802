"""Cached image features: the frozen backbone runs once per shard, training reads the cache.

One file per shard, `DataRoot.features(dataset, backbone_tag, source)/shard-NNNNNN.safetensors`:

* tensor `features`: (N, D) float32, the backbone's projected image embedding, **not**
  normalised (GeoCLIP's image MLP consumes CLIP's unnormalised projection; `normalized` = "false");
* tensor `latlon`: (N, 2) float64, each sample's (lat, lon) from its `.json`, so that training
  needs no other file for coordinates;
* metadata (strings): `format` = "geoconcept-image-features", `keys` (JSON list, row order),
  `model`, `pretrained` ("none" when random), `pretrained_weights_loaded` ("true"/"false"),
  `backbone_tag`, `backbone_seed`, `image_size`, `dim`, `normalized`, `count`, `source` (tar name),
  `source_sha256` (of the tar), `warning` (empty, or the random-backbone warning).

A shard is skipped when its file exists and records the same backbone and the same tar bytes.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import webdataset
from PIL import Image, UnidentifiedImageError

from geoconcept import atomic
from geoconcept.errors import InputError
from geoconcept.hashing import file_sha256
from geoconcept.model.backbone import Backbone
from geoconcept.model.tensor_files import json_metadata, read_metadata, read_tensors, require_metadata, save_tensors

FORMAT = "geoconcept-image-features"
FEATURES = "features"
LATLON = "latlon"
SUFFIX = ".safetensors"


@dataclass
class FeatureShard:
    path: Path
    keys: list[str]
    features: torch.Tensor  # (N, D) float32
    latlon: torch.Tensor  # (N, 2) float64
    metadata: dict[str, str]


@dataclass
class ExtractResult:
    path: Path
    count: int
    skipped: bool  # already up to date
    seconds: float
    warning: str | None


def _identity(backbone: Backbone) -> dict[str, str]:
    """The metadata that decides whether an existing feature file came from this backbone."""
    return {
        "format": FORMAT,
        "model": backbone.model_name,
        "pretrained": backbone.pretrained,
        "pretrained_weights_loaded": "true" if backbone.weights_loaded else "false",
        "backbone_seed": str(backbone.seed),
        "image_size": str(backbone.image_size),
        "dim": str(backbone.dim),
    }


def is_up_to_date(out_path: Path, backbone: Backbone, source_sha256: str) -> bool:
    if not out_path.exists():
        return False
    try:
        meta = read_metadata(out_path, "feature file")
    except InputError:
        return False  # unreadable: extract again
    wanted = _identity(backbone) | {"source_sha256": source_sha256}
    return all(meta.get(k) == v for k, v in wanted.items())


def _samples(tar_path: Path) -> Iterator[tuple[str, Image.Image, dict]]:
    """(key, RGB image, json) per sample, in tar order, with errors naming the tar and key."""
    dataset = webdataset.WebDataset(str(tar_path), shardshuffle=False, empty_check=False)
    try:
        for sample in dataset:
            key = sample["__key__"]
            if "jpg" not in sample or "json" not in sample:
                raise InputError(f"{tar_path}: sample {key!r} lacks its .jpg or .json member")
            try:
                meta = json.loads(sample["json"])
                image = Image.open(io.BytesIO(sample["jpg"])).convert("RGB")
            except (json.JSONDecodeError, UnidentifiedImageError, OSError) as exc:
                raise InputError(f"{tar_path}: sample {key!r} is unreadable ({exc})") from None
            yield key, image, meta
    except (OSError, ValueError, tarfile.TarError) as exc:  # truncated or corrupt tar
        reason = exc.args[0] if exc.args else exc
        raise InputError(f"{tar_path}: not a readable WebDataset shard ({reason})") from None


def _latlon(tar_path: Path, key: str, meta: dict) -> tuple[float, float]:
    try:
        lat, lon = float(meta["lat"]), float(meta["lon"])
    except (KeyError, TypeError, ValueError):
        raise InputError(f"{tar_path}: sample {key!r} has no numeric lat/lon in its .json") from None
    if not (np.isfinite(lat) and np.isfinite(lon) and abs(lat) <= 90 and abs(lon) <= 180):
        raise InputError(f"{tar_path}: sample {key!r} has coordinates out of range ({lat}, {lon})")
    return lat, lon


def extract_shard_features(
    tar_path: str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    backbone: Backbone,
    batch_size: int = 64,
    on_batch: Callable[[int], None] | None = None,
) -> ExtractResult:
    """Run the frozen backbone over one WebDataset shard and write its feature file atomically.

    `on_batch(n)` is called after each batch of n images (for progress bars).
    """
    tar_path, out_path = Path(tar_path), Path(out_path)
    start = time.perf_counter()
    if not tar_path.is_file():
        raise InputError(f"shard {tar_path} not found")
    atomic.remove_stale_temps(out_path.parent, [out_path.name])
    source_sha = file_sha256(tar_path)
    if is_up_to_date(out_path, backbone, source_sha):
        count = int(read_metadata(out_path, "feature file").get("count", 0))
        return ExtractResult(out_path, count, True, time.perf_counter() - start, backbone.warning)

    keys: list[str] = []
    coords: list[tuple[float, float]] = []
    chunks: list[torch.Tensor] = []
    pending: list[torch.Tensor] = []

    def flush() -> None:
        chunks.append(backbone.encode(torch.stack(pending)))
        if on_batch is not None:
            on_batch(len(pending))
        pending.clear()

    for key, image, meta in _samples(tar_path):
        keys.append(key)
        coords.append(_latlon(tar_path, key, meta))
        pending.append(backbone.preprocess(image))
        if len(pending) == batch_size:
            flush()
    if pending:
        flush()
    if len(set(keys)) != len(keys):
        raise InputError(f"{tar_path}: duplicate sample keys")
    features = torch.cat(chunks) if chunks else torch.empty(0, backbone.dim)
    metadata = _identity(backbone) | {
        "backbone_tag": backbone.tag,
        "normalized": "false",
        "source": tar_path.name,
        "source_sha256": source_sha,
        "warning": backbone.warning or "",
    }
    write_feature_shard(out_path, keys, features, torch.tensor(coords, dtype=torch.float64), metadata)
    return ExtractResult(out_path, len(keys), False, time.perf_counter() - start, backbone.warning)


def write_feature_shard(
    out_path: str | os.PathLike[str],
    keys: list[str],
    features: torch.Tensor,
    latlon: torch.Tensor,
    metadata: dict[str, str],
) -> None:
    """Write one feature file atomically; `metadata` gives the backbone facts (see module doc)."""
    if features.shape[0] != len(keys) or latlon.shape[0] != len(keys):
        raise ValueError(f"{len(keys)} keys but {features.shape[0]} feature rows and {latlon.shape[0]} coordinates")
    meta = {"format": FORMAT, "dim": str(features.shape[1])} | metadata
    meta |= {"keys": json.dumps(keys), "count": str(len(keys))}
    tensors = {FEATURES: features.float(), LATLON: latlon.to(torch.float64).reshape(-1, 2)}
    save_tensors(out_path, tensors, meta)


def read_feature_shard(path: str | os.PathLike[str]) -> FeatureShard:
    """One feature file, checked for consistency (keys vs rows, tensor shapes)."""
    path = Path(path)
    tensors, meta = read_tensors(path, "feature file")
    if meta.get("format") != FORMAT:
        raise InputError(f"feature file {path} is not a geoconcept feature file (format {meta.get('format')!r})")
    require_metadata(meta, ["keys", "model", "pretrained", "backbone_tag", "normalized", "dim"], path, "feature file")
    keys = json_metadata(meta, "keys", path, "feature file")
    features, latlon = tensors.get(FEATURES), tensors.get(LATLON)
    if features is None or latlon is None:
        raise InputError(f"feature file {path} lacks the {FEATURES!r} or {LATLON!r} tensor")
    if (
        not isinstance(keys, list)
        or features.ndim != 2
        or features.shape[0] != len(keys)
        or latlon.shape != (len(keys), 2)
    ):
        raise InputError(
            f"feature file {path}: {len(keys) if isinstance(keys, list) else '?'} keys but features "
            f"{tuple(features.shape)} and latlon {tuple(latlon.shape)}"
        )
    return FeatureShard(path, [str(k) for k in keys], features.float(), latlon.double(), meta)


def feature_files(folder: str | os.PathLike[str]) -> list[Path]:
    return sorted(Path(folder).glob(f"shard-*{SUFFIX}"))
