"""How a source's rows map to shards and partitions, and the record of the settings used.

Shard i of a source holds input rows [i*S, (i+1)*S) (S = samples_per_shard), whatever happens to
those rows, so shard numbers have no gaps and any shard can be rebuilt alone. A partition is
`shards_per_partition` consecutive shards; its key is `f"{source}-{index:05d}"`.

`plan.json` in the source's shard folder records the current plan: the staged input's
fingerprint, its row count and `IngestConfig.plan_settings()` (the location of the images is not
part of it, so moving them and pointing ingest at the new place is fine). A changed input table or
image setting is simply recorded: each shard's input fingerprint (`fingerprint`) decides which
shards are rebuilt. A changed layout (`LAYOUT_SETTINGS`: samples_per_shard, shards_per_partition)
changes what every shard and partition key holds, so it is refused unless everything is rebuilt.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from geoconcept import atomic
from geoconcept.errors import ConfigError
from geoconcept.ingest.config import LAYOUT_SETTINGS, IngestConfig
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


def layout_changes(recorded: dict[str, Any], wanted: dict[str, Any]) -> list[str]:
    """The layout settings (and plan format) in which two plans differ."""
    return sorted(k for k in ("format", *LAYOUT_SETTINGS) if recorded.get(k) != wanted.get(k))


def layout_error(folder: Path, recorded: dict[str, Any], wanted: dict[str, Any]) -> ConfigError:
    changes = ", ".join(f"{k} {recorded.get(k)} -> {wanted.get(k)}" for k in layout_changes(recorded, wanted))
    return ConfigError(
        f"the shards in {folder} were cut with other layout settings (changed: {changes}); that changes what "
        "every shard and partition key holds: rebuild them all with `geoconcept ingest --overwrite` "
        "(library: redo='all'), or ingest into another dataset name"
    )


def write_plan(folder: Path, plan: dict[str, Any]) -> None:
    """Record `plan` for the shards in `folder` (callers hold the plan lock and checked the layout)."""
    atomic.remove_stale_temps(folder, [PLAN_FILE])
    if read_plan(folder) != plan:
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
