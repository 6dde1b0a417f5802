"""What a scheduled dataset refresh needs to know: what changed in the raw folder, which chunks
hold failures worth retrying, and which chunks' labels or features are stale.

Cheap by design (file sizes, modification times, Parquet footers): a sensor or schedule calls these
every few minutes on a 4.7M-image dataset.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow.parquet as pq

from geoconcept.concepts.bank import ConceptBank
from geoconcept.ingest import partition_key, partition_manifests, plan, reasons, shards, source_names
from geoconcept.ingest.discover import TABLE_SUFFIXES
from geoconcept.layers.registry import Registry
from geoconcept.layout import DataRoot

LABEL_METADATA_KEY = b"geoconcept"


def raw_fingerprints(raw_dir: str | os.PathLike[str]) -> dict[str, str]:
    """`name → "size:mtime_ns"` of the input tables directly in `raw_dir` and of every `.tar` below it.

    A changed fingerprint means a file was added or rewritten; contents are not hashed (staging
    hashes a table anyway, and would skip an unchanged one).
    """
    folder = Path(raw_dir)
    if not folder.is_dir():
        return {}
    files = [p for p in folder.iterdir() if p.is_file() and p.name.lower().endswith(TABLE_SUFFIXES)]
    files += [p for p in folder.rglob("*.tar") if p.is_file()]
    found = {}
    for path in sorted(files):
        stat = path.stat()
        found[path.relative_to(folder).as_posix()] = f"{stat.st_size}:{stat.st_mtime_ns}"
    return found


def is_table(name: str) -> bool:
    return "/" not in name and name.lower().endswith(TABLE_SUFFIXES)


def retryable_chunks(data_root: str | os.PathLike[str], dataset: str) -> list[str]:
    """Chunks with a record that failed for a reason that may have gone away (a missing or unreadable
    image): worth re-ingesting with redo="failed" when new image files arrive."""
    base = DataRoot(Path(data_root))
    found = []
    for source in source_names(data_root, dataset):
        folder = base.shards(dataset, source)
        recorded = plan.read_plan(folder)
        if recorded is None:
            continue
        per_partition = int(recorded["shards_per_partition"])
        failing = {
            int(path.stem.split("-")[1]) // per_partition
            for path in sorted(folder.glob("shard-*.parquet"))
            if reasons.RETRYABLE & shards.status_counts(path).keys()
        }
        found += [partition_key(source, index) for index in sorted(failing)]
    return found


@dataclass
class Staleness:
    """Why a chunk needs its labels or features recomputed (empty lists: up to date)."""

    labels: list[str] = field(default_factory=list)
    features: list[str] = field(default_factory=list)

    @property
    def stale(self) -> bool:
        return bool(self.labels or self.features)


def _label_provenance(path: Path) -> dict:
    metadata = pq.read_schema(path).metadata or {}
    return json.loads(metadata.get(LABEL_METADATA_KEY, b"{}"))


def chunk_staleness(
    data_root: str | os.PathLike[str],
    dataset: str,
    key: str,
    *,
    bank: ConceptBank,
    registry: Registry,
    backbone_tag: str,
) -> Staleness:
    """Compare one chunk's label and feature files with its shards and the current bank and layers."""
    layout = DataRoot(Path(data_root))
    layer_versions = {layer.name: layer.version for layer in registry}
    result = Staleness()
    for manifest in partition_manifests(data_root, dataset, key):
        source, name = manifest.parent.name, manifest.stem
        labels = layout.labels(dataset, source) / manifest.name
        if not labels.exists():
            result.labels.append(f"{name}: no labels")
        else:
            recorded = _label_provenance(labels)
            if recorded.get("bank_sha256") != bank.sha256:
                result.labels.append(f"{name}: concept bank changed")
            changed = sorted(k for k, v in recorded.get("layers", {}).items() if layer_versions.get(k) != v)
            if changed:
                result.labels.append(f"{name}: layer(s) {', '.join(changed)} changed")
            if labels.stat().st_mtime_ns < manifest.stat().st_mtime_ns:
                result.labels.append(f"{name}: shard rebuilt since labelling")
        features = layout.features(dataset, backbone_tag, source) / f"{name}.safetensors"
        if not features.exists():
            result.features.append(f"{name}: no {backbone_tag} features")
        elif features.stat().st_mtime_ns < manifest.with_suffix(".tar").stat().st_mtime_ns:
            result.features.append(f"{name}: shard rebuilt since feature extraction")
    return result
