"""Ingest assets: raw tables → WebDataset shards (partitioned by chunk) → manifest → splits."""

from collections import Counter
from typing import Literal

import dagster as dg
import pandas as pd

from assets import metadata as md
from assets.partitions import CHUNKS, chunk_backfill_policy
from assets.resources import IngestResource, StorageResource
from geoconcept import catalog, ingest, preview
from geoconcept.ingest import partition_manifests
from geoconcept.ingest.discover import discover_sources

GROUP = "ingest"
OWNERS = ["team:geoconcept-data"]


def ingest_config(settings: IngestResource) -> ingest.IngestConfig:
    return ingest.IngestConfig(
        samples_per_shard=settings.samples_per_shard,
        shards_per_partition=settings.shards_per_partition,
        image_size=settings.image_size,
        jpeg_quality=settings.jpeg_quality,
        workers=settings.workers,
    )


@dg.asset(
    group_name=GROUP,
    owners=OWNERS,
    kinds={"python", "parquet"},
    code_version="1",
    description="Every input table (<source>.csv / .parquet in the raw folder) staged to Parquet with row "
    "numbers and duplicate-ID flags; registers one ingest partition per chunk of rows.",
)
def raw_dataset(
    context: dg.AssetExecutionContext, storage: StorageResource, ingest_settings: IngestResource
) -> dg.Output[dict]:
    config = ingest_config(ingest_settings)
    staged = [
        ingest.stage_source(path, storage.dataset, source, storage.data_root, config)
        for source, path in discover_sources(ingest_settings.raw_dir).items()
    ]
    keys = [key for s in staged for key in s.partition_keys]
    new = [k for k in keys if not context.instance.has_dynamic_partition(CHUNKS.name, k)]
    context.instance.add_dynamic_partitions(CHUNKS.name, new)
    frame = pd.DataFrame(
        [{"source": s.source, "rows": s.rows, "shards": s.shards, "partitions": s.partitions} for s in staged]
    )
    value = {"sources": {s.source: {"path": str(s.path), "rows": s.rows} for s in staged}, "partitions": keys}
    return dg.Output(
        value,
        metadata={
            "sources": md.table(frame),
            "rows": int(frame["rows"].sum()) if len(frame) else 0,
            "dagster/row_count": int(frame["rows"].sum()) if len(frame) else 0,
            "new_partitions": len(new),
        },
        data_version=md.files_version([s.path for s in staged]),
    )


class ShardsConfig(dg.Config):
    """`redo`: "missing" builds only shards not done yet; "failed" also rebuilds shards holding a
    retryable failure (a missing or unreadable image that may have arrived since); "all" rebuilds."""

    redo: Literal["missing", "failed", "all"] = "missing"


@dg.asset(
    group_name=GROUP,
    owners=OWNERS,
    kinds={"python", "webdataset"},
    code_version="1",
    partitions_def=CHUNKS,
    backfill_policy=chunk_backfill_policy(),
    deps=[raw_dataset],
    description="WebDataset shards (<key>.jpg + <key>.json) of one chunk of input rows, with a Parquet "
    "manifest per shard holding every input record and its status.",
    retry_policy=dg.RetryPolicy(max_retries=2, delay=5),
)
def shards(
    context: dg.AssetExecutionContext,
    config: ShardsConfig,
    storage: StorageResource,
    ingest_settings: IngestResource,
) -> dg.MaterializeResult:
    settings = ingest_config(ingest_settings)
    rows, tars, manifests, totals = [], [], [], Counter()
    for key in context.partition_keys:
        source, index = ingest.parse_partition_key(key)
        stats = ingest.ingest_partition(
            storage.data_root,
            storage.dataset,
            source,
            index,
            ingest_settings.images_path(),
            settings,
            redo=config.redo,
        )
        folder = storage.layout.shards(storage.dataset, source)
        tars += [folder / f"{s.shard}.tar" for s in stats.shards]
        manifests += [folder / f"{s.shard}.parquet" for s in stats.shards]
        totals.update(stats.counts)
        rows.append({"partition": key, "records": stats.records, "ok": stats.ok, "shards_built": stats.built})
        context.log.info(f"{key}: {stats.ok}/{stats.records} ok, {stats.built} shard(s) built")
    # One run may cover a range of chunks (single-run backfill): the metadata has a row per chunk.
    return dg.MaterializeResult(
        metadata={"partitions": md.table(pd.DataFrame(rows)), "status_counts": md.counts_table(dict(totals))},
        data_version=md.shards_version(tars, manifests),
    )


@dg.asset(
    group_name=GROUP,
    owners=OWNERS,
    kinds={"duckdb", "parquet"},
    code_version="1",
    deps=[shards],
    description="Dataset-wide view of the shards: sizes.json, summary.json (counts per status), rejects.",
)
def manifest(context: dg.AssetExecutionContext, storage: StorageResource) -> dg.Output[dict]:
    summary = ingest.write_summary(storage.data_root, storage.dataset)
    with catalog.connect(storage.data_root, storage.dataset) as con:
        rejects = catalog.rejects(con, limit=20)
        shard_sizes = catalog.shard_sizes(con)
    tars = sorted(storage.layout.dataset_shards(storage.dataset).glob("*/shard-*.tar"))
    return dg.Output(
        summary.to_json(),
        metadata={
            "status_counts": md.counts_table(summary.status_counts),
            "reject_examples": md.table_or_none(rejects),
            "shard_sizes": md.table(shard_sizes),
            "sample_grid": md.image_bytes(preview.contact_sheet(tars[:1]), summary.path.with_name("sample_grid.png")),
            "records": sum(summary.status_counts.values()),
            "ok": summary.status_counts.get("ok", 0),
            "summary_path": dg.MetadataValue.path(str(summary.path)),
        },
        data_version=md.files_version([summary.path]),
    )


@dg.asset(
    group_name=GROUP,
    owners=OWNERS,
    kinds={"duckdb", "parquet"},
    code_version="1",
    deps=[manifest],
    description="Deterministic train/val/test split of the ok samples (input split column, else the `test` "
    "source, else a hash of IMG_ID).",
)
def splits(context: dg.AssetExecutionContext, storage: StorageResource) -> dg.Output[dict]:
    path = catalog.write_splits(storage.data_root, storage.dataset)
    frame = pd.read_parquet(path, columns=["split"])
    counts = frame["split"].value_counts().sort_index()
    return dg.Output(
        {"path": str(path), "counts": {k: int(v) for k, v in counts.items()}},
        metadata={
            "split_counts": md.counts_table(counts.to_dict(), key="split"),
            "path": dg.MetadataValue.path(str(path)),
            **{f"{split}_samples": int(n) for split, n in counts.items()},
            **md.parquet_table(path),
        },
        data_version=md.files_version([path]),
    )


@dg.asset_check(
    asset=shards,
    partitions_def=CHUNKS,
    blocking=True,
    description="Every tar of the chunk is complete and readable and holds exactly the ok records of its manifest.",
)
def shards_complete(context: dg.AssetCheckExecutionContext, storage: StorageResource) -> dg.AssetCheckResult:
    manifests = [
        m for key in context.partition_keys for m in partition_manifests(storage.data_root, storage.dataset, key)
    ]
    problems = catalog.verify_shards(storage.data_root, storage.dataset, manifests)
    return dg.AssetCheckResult(
        passed=not problems,
        metadata={"shards": len(manifests), "problems": md.table_or_none(pd.DataFrame(problems))},
    )


@dg.asset_check(asset=manifest, description="Latitude/longitude of every ok sample are finite and in range.")
def gps_in_range(context: dg.AssetCheckExecutionContext, storage: StorageResource) -> dg.AssetCheckResult:
    with catalog.connect(storage.data_root, storage.dataset) as con:
        bad = catalog.ok_rows_with_bad_gps(con)
    return dg.AssetCheckResult(passed=bad == 0, metadata={"bad_rows": bad})


@dg.asset_check(
    asset=manifest,
    blocking=True,
    description="The share of rejected records is under `max_reject_rate` (blocks training on a broken input).",
)
def reject_rate(
    context: dg.AssetCheckExecutionContext, ingest_settings: IngestResource, manifest: dict
) -> dg.AssetCheckResult:
    counts = manifest["status_counts"]
    total = sum(counts.values())
    rate = (total - counts.get("ok", 0)) / total if total else 0.0
    return dg.AssetCheckResult(
        passed=rate <= ingest_settings.max_reject_rate,
        metadata={"reject_rate": rate, "threshold": ingest_settings.max_reject_rate, "records": total},
    )
