"""Ingest an image/GPS table and its images into WebDataset shards with per-shard manifests.

Input: a CSV or Parquet table with IMG_ID, LAT, LON (extra columns are kept) and the images, as
a folder tree (IMG_ID is a relative path under it) or as .tar files (one tar, a folder of tars,
or a quoted glob). Output under --out (the data root): raw/<dataset>/<source>.parquet (the staged
table) and shards/<dataset>/<source>/shard-NNNNNN.tar + .parquet (manifest, one row per input
record with its status), sizes.json, and shards/<dataset>/summary.json.

Exits 0 when the run completed, even if records were quarantined (the summary lists them by
reason); 2 with a one-line message when it could not run. Re-running rebuilds only the shards
whose inputs changed (rows of the table, image files, image settings) and skips the others; rows
removed from the end of the table remove their shards. Changing --samples-per-shard or
--shards-per-partition needs --overwrite.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from geoconcept.ingest import IngestResult


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--csv", type=Path, required=True, help="input table: CSV or Parquet with IMG_ID, LAT, LON")
    parser.add_argument("--images", required=True, help="image folder, .tar file, folder of .tar files, or a glob")
    parser.add_argument("--out", type=Path, required=True, help="data root to write under")
    parser.add_argument("--dataset", default="sample", help="dataset name (default: sample)")
    parser.add_argument("--source", help="source name (default: the table's file name, e.g. train)")
    parser.add_argument("--samples-per-shard", type=int, default=1000, help="input rows per shard (default 1000)")
    parser.add_argument("--shards-per-partition", type=int, default=1, help="shards per partition (default 1)")
    parser.add_argument("--image-size", type=int, default=256, help="shorter side of written images (default 256)")
    parser.add_argument("--jpeg-quality", type=int, default=90, help="JPEG quality, 1-95 (default 90)")
    parser.add_argument("--max-pixels", type=int, help="images with more pixels are too_large (default 80 M)")
    parser.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    parser.add_argument(
        "--partition", type=int, action="append", metavar="N", help="build only partition N (repeatable)"
    )
    redo = parser.add_mutually_exclusive_group()
    redo.add_argument(
        "--retry-failed",
        action="store_true",
        help="also rebuild up-to-date shards that hold missing or unreadable images (e.g. permissions fixed since)",
    )
    redo.add_argument(
        "--overwrite",
        action="store_true",
        help="rebuild every shard (needed after a change of --samples-per-shard or --shards-per-partition)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _report(result: IngestResult, out: Path) -> None:
    from geoconcept.ingest.reasons import STATUSES
    from geoconcept.layout import DataRoot

    staged = result.staged
    built = sum(p.built for p in result.partitions)
    shards_run = sum(len(p.shards) for p in result.partitions)
    print(
        f"ingest: {staged.rows} rows of {staged.source!r} -> {staged.shards} shard(s) in "
        f"{staged.partitions} partition(s); {built} built now, {shards_run - built} already done"
    )
    if result.removed_shards:
        print(
            f"  removed {len(result.removed_shards)} shard(s) beyond the table's last row: "
            f"{', '.join(result.removed_shards)}"
        )
    summary = result.summary.sources.get(staged.source)
    if summary is not None:
        print(
            f"  samples in shards: {summary.samples_in_shards}  ({summary.shards_done}/{summary.shards_planned} shards)"
        )
        width = max((len(s) for s in summary.status_counts), default=0)
        order = {status: i for i, status in enumerate(STATUSES)}
        for status, n in sorted(summary.status_counts.items(), key=lambda item: order.get(item[0], len(order))):
            print(f"  {status:<{width}}  {n}")
    print(f"  shards:  {DataRoot(out).shards(staged.dataset, staged.source)}")
    print(f"  summary: {result.summary.path}")


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from geoconcept.ingest import IngestConfig, ingest
    from geoconcept.ingest.config import DEFAULT_MAX_PIXELS

    config = IngestConfig(
        samples_per_shard=args.samples_per_shard,
        shards_per_partition=args.shards_per_partition,
        image_size=args.image_size,
        jpeg_quality=args.jpeg_quality,
        max_pixels=DEFAULT_MAX_PIXELS if args.max_pixels is None else args.max_pixels,
        workers=args.workers,
    )
    redo = "failed" if args.retry_failed else "all" if args.overwrite else "missing"
    with tqdm(desc="shards", unit="shard", disable=args.no_progress or None) as bar:

        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.n = done
            bar.refresh()

        result = ingest(
            args.csv,
            args.images,
            args.out,
            dataset=args.dataset,
            source=args.source,
            config=config,
            redo=redo,
            partitions=args.partition,
            progress=progress,
        )
    _report(result, args.out)
    return 0
