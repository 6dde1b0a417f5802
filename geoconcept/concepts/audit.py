"""Checks over written concept labels: every ok sample labelled, every soft label in [0, 1]."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from geoconcept.ingest import partition_manifests
from geoconcept.layout import DataRoot

CONCEPT_PREFIX = "concept__"


@dataclass(frozen=True)
class LabelAudit:
    samples: int  # ok samples in the manifests audited
    unlabelled: int  # ok samples without a label row
    out_of_range: int  # concept values outside [0, 1] (NaN = missing is allowed)


def label_files(data_root: str | os.PathLike[str], dataset: str) -> list[Path]:
    base = DataRoot(Path(data_root)).root / "labels" / dataset
    return sorted(base.glob("*/shard-*.parquet"))


def read_labels(paths: Iterable[Path]) -> pd.DataFrame:
    frames = [pd.read_parquet(p) for p in paths]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def audit_partitions(data_root: str | os.PathLike[str], dataset: str, partition_keys: Sequence[str]) -> LabelAudit:
    """Compare each shard manifest of the partitions with its label file."""
    layout = DataRoot(Path(data_root))
    samples = unlabelled = out_of_range = 0
    for key in partition_keys:
        for manifest in partition_manifests(data_root, dataset, key):
            ok_keys = pd.read_parquet(manifest, columns=["key", "status"]).query("status == 'ok'")["key"]
            samples += len(ok_keys)
            label_path = layout.labels(dataset, manifest.parent.name) / manifest.name
            if not label_path.exists():
                unlabelled += len(ok_keys)
                continue
            labels = pd.read_parquet(label_path)
            unlabelled += int((~ok_keys.isin(labels["key"])).sum())
            values = labels[[c for c in labels.columns if c.startswith(CONCEPT_PREFIX)]].to_numpy(dtype=np.float64)
            out_of_range += int(((values < 0) | (values > 1)).sum())
    return LabelAudit(samples=samples, unlabelled=unlabelled, out_of_range=out_of_range)
