"""Ingest: an image/GPS table + images -> WebDataset shards with a manifest of every record.

Entry points (the CLI `geoconcept ingest` and the Dagster assets call exactly these):

- `stage_source(table, dataset, source, data_root, config) -> StagedSource`: the input CSV or
  Parquet (IMG_ID, LAT, LON, any extra columns) streamed into `raw/<dataset>/<source>.parquet`
  with row numbers, all values as text, and `duplicate_of` for repeated IMG_IDs.
  `StagedSource` has `rows`, `columns`, `shards`, `partitions` and `partition_keys`.
- `ingest_partition(data_root, dataset, source, partition_index, images, config, redo=...)
  -> PartitionStats`: build one partition's shards (skips done shards).
- `ingest(table, images, data_root, dataset, source, config, redo=..., partitions=...)
  -> IngestResult`: stage + all (or some) partitions with `config.workers` processes + summary.
- `write_summary(data_root, dataset) -> IngestSummary`: rebuild `sizes.json` and `summary.json`.
- `IngestConfig`: samples_per_shard=1000, shards_per_partition=1, image_size=256,
  jpeg_quality=90, max_pixels, max_image_bytes, workers=1.
- `partition_key(source, index)` / `parse_partition_key(key)`: `train-00003`;
  `partition_manifests(data_root, dataset, key)`: the finished manifests of a partition.
- `discover_sources(raw_dir)`: source name -> input table for the tables in a folder.

Layout (`geoconcept.layout.DataRoot`): shard i of a source holds input rows [i*S, (i+1)*S)
(S = samples_per_shard), so shard numbers have no gaps whatever fails, and any shard can be
rebuilt alone. `shards/<dataset>/<source>/shard-NNNNNN.tar` holds `<key>.jpg` + `<key>.json` per
accepted record; `shard-NNNNNN.parquet` beside it is the manifest, one row per input record of
the shard, with its status (`ok` or a reason code from `reasons`) and detail.

Done: every shard has an input fingerprint (`fingerprint`): a sha256 over its staged rows, the
settings that shape its bytes, and what each of its records' images resolves to, by stat alone
(folder: resolved path, size, mtime; tars: tar name, size, mtime, member offset and size; or why
the lookup failed). The manifest (written atomically after the tar) records it; a shard is done
when its manifest exists and records the fingerprint of its current inputs, a partition when all
its shards are. Computing it reads no image: skipping a done 1,000-record shard costs milliseconds.

Re-runs (redo="missing", the default) rebuild exactly the shards that are not done: never built,
or built from other inputs: a row edited, an image replaced or touched (a touched image gives the
same tar bytes), rows appended (new shards), an image setting changed. When the input table
shrank, the shards beyond its new end are removed (`removed_shards` of the result). Changing
samples_per_shard or shards_per_partition changes what every shard and partition key holds, so it
is refused (`plan.json`) unless `redo="all"` (CLI `--overwrite`) rebuilds everything.
`redo="failed"` (CLI `--retry-failed`) also rebuilds the done shards whose manifests hold a
retryable failure (`missing_image`, `unreadable_image`: an image that became readable by a change
its stat does not show, e.g. permissions). A rebuilt shard's manifest is deleted first, so a crash
mid-rebuild leaves it "not done".

Duplicates: a repeated IMG_ID is `duplicate_id` (decided at staging over the whole table). The
same image bytes under two IDs: within a shard, the later copy is `duplicate_content` when the
shard is written; across shards (and so across partitions), the `samples` view in `sql/` marks
the later copies `duplicate_content` (their tar entries stay, `in_tar` says so). Shards stay
independent so partitions can be built in parallel, on one machine or many.

Parallel runs: a partition is locked (flock) while built; the same partition in two processes at
once gives a clear error (`locks.Busy`), different partitions of a source never touch the same
files. Files are written atomically, so a killed run leaves no partial file under a final name,
and re-running it gives shards byte-identical to an uninterrupted run.
"""

from geoconcept.ingest.build import ShardStats
from geoconcept.ingest.config import IngestConfig
from geoconcept.ingest.discover import discover_sources
from geoconcept.ingest.locks import Busy
from geoconcept.ingest.plan import parse_partition_key, partition_key, partition_manifests
from geoconcept.ingest.run import REDO_CHOICES, IngestResult, PartitionStats, ingest, ingest_partition
from geoconcept.ingest.staging import StagedSource, load_staged, stage_source
from geoconcept.ingest.summary import IngestSummary, SourceSummary, source_names, write_summary

__all__ = [
    "REDO_CHOICES",
    "Busy",
    "IngestConfig",
    "IngestResult",
    "IngestSummary",
    "PartitionStats",
    "ShardStats",
    "SourceSummary",
    "StagedSource",
    "discover_sources",
    "ingest",
    "ingest_partition",
    "load_staged",
    "parse_partition_key",
    "partition_key",
    "partition_manifests",
    "source_names",
    "stage_source",
    "write_summary",
]
