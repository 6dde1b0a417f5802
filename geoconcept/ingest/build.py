"""Build one shard: the unit of work of ingest (what a worker process runs).

For each input row of the shard, in order: IMG_ID checks, repeated IMG_ID, GPS, image lookup,
same bytes as an accepted record of this shard, decode and normalise. Accepted records go into
the tar; every record, accepted or not, gets a manifest row. The manifest records the input
fingerprint the job was planned with (computed from the same `ShardInput` before the build).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from geoconcept.ingest import images as imaging
from geoconcept.ingest import reasons, records, sources, staging
from geoconcept.ingest.config import IngestConfig
from geoconcept.ingest.shards import ShardWriter
from geoconcept.layout import DataRoot, shard_name


@dataclass(frozen=True)
class ShardJob:
    """Everything a worker needs to build shard `index` (picklable)."""

    data_root: str
    dataset: str
    source: str
    staged: str
    extra_columns: tuple[str, ...]
    index: int
    rows: range
    images: sources.ImagesSpec
    config: IngestConfig
    fingerprint: str  # of the shard's inputs when the job was planned (recorded in the manifest)


@dataclass(frozen=True)
class ShardStats:
    """What a shard holds: records per status; `built` is False when it was already done."""

    shard: str
    index: int
    records: int
    counts: dict[str, int] = field(default_factory=dict)
    built: bool = True

    @property
    def ok(self) -> int:
        return self.counts.get(reasons.OK, 0)


def _counts(statuses: list[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for status in statuses:
        counts[status] = counts.get(status, 0) + 1
    return dict(sorted(counts.items()))


@dataclass(frozen=True)
class ShardInput:
    """A shard's staged rows, parsed, with the verdicts of the checks made before any image lookup."""

    table: pa.Table  # the staged rows: `row`, the input's columns as text, `duplicate_of`
    img_ids: list[str]
    gps: list[tuple[float | None, float | None, str | None]]
    status: list[str | None]  # None: the record's image is looked up
    detail: list[str | None]
    paths: list[str]  # relative image path per record ("" for a bad IMG_ID)

    @property
    def looked_up(self) -> list[int]:
        """The records whose image is looked up (those no earlier check rejected)."""
        return [i for i, s in enumerate(self.status) if s is None]


def read_shard_input(staged: str | os.PathLike[str], rows: range) -> ShardInput:
    """Rows `rows` of a staged table, checked up to (not including) the image lookup."""
    table = staging.read_rows(staged, rows)
    img_ids = [v or "" for v in table.column("IMG_ID").to_pylist()]
    lats, lons = table.column("LAT").to_pylist(), table.column("LON").to_pylist()
    gps = [records.parse_gps(la, lo) for la, lo in zip(lats, lons, strict=True)]
    status, detail, paths = _check_records(img_ids, table.column("duplicate_of").to_pylist(), gps)
    return ShardInput(table, img_ids, gps, status, detail, paths)


def _check_records(
    img_ids: list[str], duplicate_of: list[int | None], gps: list[tuple[float | None, float | None, str | None]]
) -> tuple[list[str | None], list[str | None], list[str]]:
    """The checks before any image is read: (status, detail, image path) per record; status None = go on."""
    n = len(img_ids)
    status: list[str | None] = [None] * n
    detail: list[str | None] = [None] * n
    paths: list[str] = [""] * n
    for i, img_id in enumerate(img_ids):
        try:
            paths[i] = records.relative_image_path(img_id)
        except reasons.Rejected as rejected:
            status[i], detail[i] = rejected.status, rejected.detail
            continue
        if duplicate_of[i] is not None:
            status[i], detail[i] = reasons.DUPLICATE_ID, f"IMG_ID {img_id!r} first appears at row {duplicate_of[i]}"
        elif gps[i][2] is not None:
            status[i], detail[i] = reasons.BAD_GPS, gps[i][2]
    return status, detail, paths


def build_shard(job: ShardJob) -> ShardStats:
    """Write shard `job.index` (tar, then manifest) and return its counts."""
    config = job.config
    folder = DataRoot(Path(job.data_root)).shards(job.dataset, job.source)
    name = shard_name(job.index)
    shard = read_shard_input(job.staged, job.rows)
    img_ids, gps, paths = shard.img_ids, shard.gps, shard.paths
    n = len(img_ids)
    rows = shard.table.column("row").to_pylist()
    extras = {c: shard.table.column(c).to_pylist() for c in job.extra_columns}
    keys = [records.sample_key(v) for v in img_ids]
    status, detail = list(shard.status), list(shard.detail)

    sha256: list[str | None] = [None] * n
    width: list[int | None] = [None] * n
    height: list[int | None] = [None] * n
    jpeg_bytes: list[int | None] = [None] * n
    todo = shard.looked_up
    image_source = sources.open_images(job.images, config.max_image_bytes)
    first_copy: dict[str, int] = {}  # sha256 -> index of the accepted record with those bytes
    with ShardWriter(folder, job.index, job.extra_columns, job.fingerprint) as writer:
        for i, data in zip(todo, image_source.read_all([paths[i] for i in todo]), strict=True):
            if isinstance(data, reasons.Rejected):
                status[i], detail[i] = data.status, data.detail
                continue
            digest = sha256[i] = hashlib.sha256(data).hexdigest()
            if digest in first_copy:
                j = first_copy[digest]
                status[i] = reasons.DUPLICATE_CONTENT
                detail[i] = f"same image bytes as IMG_ID {img_ids[j]!r} (row {rows[j]})"
                continue
            try:
                image = imaging.normalise_image(
                    data, image_size=config.image_size, jpeg_quality=config.jpeg_quality, max_pixels=config.max_pixels
                )
            except reasons.Rejected as rejected:
                status[i], detail[i] = rejected.status, rejected.detail
                continue
            first_copy[digest] = i
            status[i] = reasons.OK
            width[i], height[i], jpeg_bytes[i] = image.width, image.height, len(image.jpeg)
            lat, lon, _ = gps[i]
            meta: dict[str, Any] = {"img_id": img_ids[i], "lat": lat, "lon": lon, "row": rows[i], "source": job.source}
            meta.update((c, values[i]) for c, values in extras.items())
            writer.add_sample(keys[i], image.jpeg, meta)
        final_status = [s for s in status if s is not None]
        assert len(final_status) == n, "every record has a status"
        writer.finish(
            {
                "key": keys,
                "img_id": img_ids,
                "row": rows,
                "lat": [g[0] for g in gps],
                "lon": [g[1] for g in gps],
                "shard": [name] * n,
                "status": final_status,
                "detail": detail,
                "sha256": sha256,
                "width": width,
                "height": height,
                "jpeg_bytes": jpeg_bytes,
                **extras,
            }
        )
    return ShardStats(name, job.index, n, _counts(final_status))
