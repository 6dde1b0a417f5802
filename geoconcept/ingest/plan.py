"""How a source's rows map to shards and partitions, and the record of the settings used.

Shard i of a source holds input rows [i*S, (i+1)*S) (S = samples_per_shard), whatever happens to
those rows, so shard numbers have no gaps and any shard can be rebuilt alone. A partition is
`shards_per_partition` consecutive shards; its key is `f"{source}-{index:05d}"`.

`plan.json` in the source's shard folder records what the shards were built from and how (the
staged input's fingerprint, row count and `IngestConfig.plan_settings()`; the location of the
images is not part of it, so moving them and pointing ingest at the new place is fine). A later
run with a different input or settings stops with a clear error instead of mixing shards built
two ways in one folder.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from geoconcept import atomic
from geoconcept.errors import ConfigError
from geoconcept.ingest.config import IngestConfig
from geoconcept.layout import DataRoot, shard_name

PLAN_FILE = "plan.json"
PLAN_FORMAT = 1
LOCKS = ".locks"
_PARTITION_KEY = re.compile(r"^(?P<source>[A-Za-z0-9][A-Za-z0-9_]*)-(?P<index>\d{5,})$")


def partition_key(source: str, index: int) -> str:
    """The partition key Dagster and the CLI use: `train-00003`."""
    return f"{source}-{index:05d}"


def parse_partition_key(key: str) -> tuple[str, int]:
    """`train-00003` -> ("train", 3)."""
    match = _PARTITION_KEY.match(key)
    if match is None:
        raise ConfigError(f"not a partition key: {key!r} (expected SOURCE-NNNNN)")
    return match["source"], int(match["index"])


def shard_count(rows: int, samples_per_shard: int) -> int:
    return -(-rows // samples_per_shard)


def partition_count(rows: int, config: IngestConfig) -> int:
    return -(-shard_count(rows, config.samples_per_shard) // config.shards_per_partition)


def shard_rows(shard: int, rows: int, samples_per_shard: int) -> range:
    """The input rows of shard `shard`."""
    start = shard * samples_per_shard
    return range(start, min(start + samples_per_shard, rows))


def partition_shards(partition: int, rows: int, config: IngestConfig) -> range:
    """The shard indices of partition `partition`."""
    shards = shard_count(rows, config.samples_per_shard)
    first = partition * config.shards_per_partition
    return range(first, min(first + config.shards_per_partition, shards))


def lock_path(data_root: DataRoot, dataset: str, source: str, name: str) -> Path:
    """Lock files live in a hidden folder beside the shards (`.locks/<name>.lock`)."""
    return data_root.shards(dataset, source) / LOCKS / f"{name}.lock"


def expected_plan(input_sha256: str, rows: int, config: IngestConfig) -> dict[str, Any]:
    return {"format": PLAN_FORMAT, "input_sha256": input_sha256, "rows": rows, **config.plan_settings()}


def read_plan(folder: Path) -> dict[str, Any] | None:
    path = folder / PLAN_FILE
    if not path.exists():
        return None
    return json.loads(path.read_text(encoding="utf-8"))


def check_plan(folder: Path, plan: dict[str, Any], *, replace: bool) -> None:
    """Record `plan` for the shards in `folder`, or refuse if they were built another way.

    With `replace`, a different recorded plan is overwritten (the caller rebuilds every shard).
    Callers hold the source lock, so two processes cannot record different plans.
    """
    atomic.remove_stale_temps(folder, [PLAN_FILE])
    recorded = read_plan(folder)
    if recorded == plan:
        return
    if recorded is not None and not replace:
        changed = sorted(k for k in plan.keys() | recorded.keys() if plan.get(k) != recorded.get(k))
        raise ConfigError(
            f"the shards in {folder} were built from a different input table or with different settings "
            f"(changed: {', '.join(changed)}); rebuild them all with `geoconcept ingest --overwrite` "
            "(library: redo='all'), or ingest into another dataset name"
        )
    atomic.write_json(folder / PLAN_FILE, plan)


def partition_manifests(data_root: str | os.PathLike[str], dataset: str, key: str) -> list[Path]:
    """The manifests of the finished shards of partition `key` (e.g. `train-00003`), in shard order.

    The partition's shards follow from the source's `plan.json`; an unknown source or a partition
    beyond the source's last shard gives an empty list.
    """
    source, index = parse_partition_key(key)
    folder = DataRoot(Path(data_root)).shards(dataset, source)
    recorded = read_plan(folder)
    if recorded is None:
        return []
    config = IngestConfig(
        samples_per_shard=recorded["samples_per_shard"], shards_per_partition=recorded["shards_per_partition"]
    )
    manifests = [folder / f"{shard_name(i)}.parquet" for i in partition_shards(index, recorded["rows"], config)]
    return [m for m in manifests if m.exists()]
