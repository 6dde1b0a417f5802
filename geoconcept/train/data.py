"""Training inputs: cached features + coordinates, concept labels, the split, the concept embeddings.

Everything is read in bulk and checked against each other before a single step runs:

* feature folder i and label folder i pair their files by shard name, and each pair must hold the
  same sample keys (the error names both files and some differing keys);
* every feature key must appear in the split Parquet (`key`, `split` ∈ train/val/test);
* label columns `concept__<id>` must be concepts of the embedded bank (an unknown id means the
  bank changed after the embeddings were built); bank concepts without a column are text-only
  and stay NaN (= not measured), as do missing values: the supervised loss masks them out;
* if a bank YAML is configured, its sha256 must equal the embeddings' `bank_sha256`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch

from geoconcept.concepts.embeddings import ConceptEmbeddings, load_concept_embeddings
from geoconcept.errors import ConfigError, InputError
from geoconcept.features import FeatureShard, feature_files, read_feature_shard
from geoconcept.hashing import file_sha256
from geoconcept.train.params import TrainConfig

LABEL_PREFIX = "concept__"
SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Samples:
    keys: list[str]
    features: torch.Tensor  # (N, D) float32
    latlon: torch.Tensor  # (N, 2) float32 degrees
    labels: torch.Tensor | None  # (N, k) float32 in [0, 1], NaN = not measured

    def __len__(self) -> int:
        return len(self.keys)


@dataclass(frozen=True)
class TrainingData:
    train: Samples
    val: Samples
    feature_dim: int
    backbone: str  # feature tag, e.g. "ViT-S-32-alt__none"
    backbone_spec: dict[str, str]  # model, pretrained, seed: enough to rebuild the backbone
    backbone_warning: str | None
    concepts: ConceptEmbeddings | None
    labelled_concepts: list[str]  # bank concepts with a label column


def fingerprint(data: TrainingData) -> str:
    """sha256 of everything a run learns from: the train and val samples (keys, features,
    coordinates, labels, in order) and the concept embeddings. Two runs with the same config and
    the same fingerprint are the same run."""
    h = hashlib.sha256()
    for samples in (data.train, data.val):
        h.update("\n".join(samples.keys).encode())
        for tensor in (samples.features, samples.latlon, samples.labels):
            if tensor is not None:
                h.update(tensor.contiguous().numpy().tobytes())
    if data.concepts is not None:
        h.update(data.concepts.embeddings.contiguous().numpy().tobytes())
    return h.hexdigest()


def check_bank(embeddings: ConceptEmbeddings, bank_path: str | Path) -> None:
    """The bank YAML must be the one the embeddings were built from.

    Compared by the sha256 of the file's bytes, which is how `geoconcept.concepts.bank` defines it.
    """
    bank_path = Path(bank_path)
    try:
        sha = file_sha256(bank_path)
    except FileNotFoundError:
        raise ConfigError(f"concept bank {bank_path} not found") from None
    info = embeddings.info
    if sha != info.bank_sha256:
        raise ConfigError(
            f"concept bank {bank_path} changed since the concept embeddings {info.path} were built "
            f"(bank sha256 {sha[:12]}…, embeddings built from {info.bank_sha256[:12]}…): rebuild the embeddings"
        )


def _read_labels(path: Path, features: FeatureShard, concept_ids: list[str]) -> np.ndarray:
    """(N, k) labels of one shard in the feature file's key order."""
    try:
        table = pq.read_table(path)
    except (OSError, ValueError) as exc:
        raise InputError(f"labels file {path} is not readable Parquet ({exc})") from None
    if "key" not in table.column_names:
        raise InputError(f"labels file {path} has no 'key' column")
    keys = [str(k) for k in table.column("key").to_pylist()]
    if len(set(keys)) != len(keys):
        raise InputError(f"labels file {path} repeats sample keys")
    if set(keys) != set(features.keys):
        only_f = sorted(set(features.keys) - set(keys))
        only_l = sorted(set(keys) - set(features.keys))
        raise InputError(
            f"features {features.path} ({len(features.keys)} samples) and labels {path} ({len(keys)} samples) "
            f"do not hold the same keys: {len(only_f)} only in the features (e.g. {only_f[:3]}), "
            f"{len(only_l)} only in the labels (e.g. {only_l[:3]})"
        )
    columns = [c for c in table.column_names if c.startswith(LABEL_PREFIX)]
    unknown = sorted(c.removeprefix(LABEL_PREFIX) for c in columns if c.removeprefix(LABEL_PREFIX) not in concept_ids)
    if unknown:
        raise ConfigError(
            f"labels {path} have concepts that the concept embeddings do not ({unknown[:5]}): the concept bank "
            "changed after the embeddings or the labels were built; rebuild both"
        )
    position = {k: j for j, k in enumerate(keys)}
    order = np.array([position[k] for k in features.keys], dtype=np.int64)
    labels = np.full((len(keys), len(concept_ids)), np.nan, dtype=np.float32)
    for column in columns:
        values = table.column(column).to_numpy(zero_copy_only=False).astype(np.float32)
        bad = ~np.isnan(values) & ((values < 0) | (values > 1))
        if bad.any():
            raise InputError(
                f"labels {path}: column {column} has values outside [0, 1] (e.g. {values[bad][:3].tolist()})"
            )
        labels[:, concept_ids.index(column.removeprefix(LABEL_PREFIX))] = values[order]
    return labels


def _read_split(path: Path) -> dict[str, str]:
    try:
        table = pq.read_table(path, columns=["key", "split"])
    except FileNotFoundError:
        raise InputError(f"split file {path} not found") from None
    except (OSError, ValueError, KeyError) as exc:
        raise InputError(f"split file {path} must be Parquet with columns key, split ({exc})") from None
    keys = [str(k) for k in table.column("key").to_pylist()]
    splits = [str(s) for s in table.column("split").to_pylist()]
    unknown = sorted(set(splits) - set(SPLITS))
    if unknown:
        raise InputError(f"split file {path} has unknown split values {unknown} (expected {', '.join(SPLITS)})")
    mapping = dict(zip(keys, splits, strict=True))
    if len(mapping) != len(keys):
        raise InputError(f"split file {path} lists some keys more than once")
    return mapping


def load_training_data(config: TrainConfig) -> TrainingData:
    concepts = None
    if config.concept_embeddings is not None and config.variant != "geoclip":
        concepts = load_concept_embeddings(config.concept_embeddings)
        if config.concept_bank is not None:
            check_bank(concepts, config.concept_bank)
    concept_ids = concepts.info.concept_ids if concepts else []
    use_labels = bool(config.labels) and concepts is not None
    split = _read_split(Path(config.split))

    keys: list[str] = []
    feats: list[torch.Tensor] = []
    coords: list[torch.Tensor] = []
    labels: list[np.ndarray] = []
    identity: tuple[str, str, str, str] | None = None
    first: Path | None = None
    backbone, warning, spec = "", None, {}
    labelled: set[str] = set()
    for i, folder in enumerate(config.features):
        files = feature_files(folder)
        if not files:
            raise InputError(f"no feature files (shard-*.safetensors) in {folder}")
        for path in files:
            shard = read_feature_shard(path)
            this = (
                shard.metadata["model"],
                shard.metadata["pretrained"],
                shard.metadata["dim"],
                shard.metadata["normalized"],
            )
            if identity is None:
                identity, first = this, path
                backbone = shard.metadata["backbone_tag"]
                spec = {
                    k: shard.metadata.get(f, "")
                    for k, f in [("model", "model"), ("pretrained", "pretrained"), ("seed", "backbone_seed")]
                }
                warning = shard.metadata.get("warning") or None
            elif this != identity:
                raise InputError(
                    f"feature files come from different backbones: {first} has (model, pretrained, dim, normalized) "
                    f"= {identity}, {path} has {this}"
                )
            missing = [k for k in shard.keys if k not in split]
            if missing:
                raise InputError(
                    f"{len(missing)} samples of {path} are not in the split file {config.split} (e.g. {missing[:3]})"
                )
            if use_labels:
                label_path = Path(config.labels[i]) / (path.name.removesuffix(".safetensors") + ".parquet")
                if not label_path.exists():
                    raise InputError(f"no labels for features {path}: expected {label_path}")
                labels.append(_read_labels(label_path, shard, concept_ids))
                names = pq.read_schema(label_path).names
                labelled |= {c.removeprefix(LABEL_PREFIX) for c in names if c.startswith(LABEL_PREFIX)}
            keys += shard.keys
            feats.append(shard.features)
            coords.append(shard.latlon.float())
    if len(set(keys)) != len(keys):
        raise InputError("the same sample key appears in more than one feature file")
    all_features = torch.cat(feats)
    all_latlon = torch.cat(coords)
    all_labels = torch.from_numpy(np.concatenate(labels)) if use_labels else None

    def subset(name: str) -> Samples:
        idx = [j for j, k in enumerate(keys) if split[k] == name]
        index = torch.tensor(idx, dtype=torch.long)
        return Samples(
            keys=[keys[j] for j in idx],
            features=all_features[index],
            latlon=all_latlon[index],
            labels=all_labels[index] if all_labels is not None else None,
        )

    return TrainingData(
        train=subset("train"),
        val=subset("val"),
        feature_dim=int(all_features.shape[1]),
        backbone=backbone,
        backbone_spec=spec,
        backbone_warning=warning,
        concepts=concepts,
        labelled_concepts=[c for c in concept_ids if c in labelled],
    )
