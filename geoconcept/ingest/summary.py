"""`sizes.json` per source and `summary.json` per dataset, rebuilt from the shard manifests.

Rebuilt from what is on disk (never accumulated run by run), so they are right after partial
runs, re-runs and parallel runs; a dataset-wide lock makes the last writer the one that saw the
most manifests.

- `shards/<dataset>/<source>/sizes.json`: shard tar name -> samples in that tar (open_clip style).
- `shards/<dataset>/summary.json`: per source the input rows, shards planned and done, samples in
  the tars, and records per status as the `samples` view reports them (so copies of an image in
  different shards count as `duplicate_content`; `samples_in_shards` still counts what the tars hold).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from geoconcept import atomic, catalog
from geoconcept.ingest import locks, plan
from geoconcept.layout import DataRoot

SIZES_FILE = "sizes.json"
SUMMARY_FILE = "summary.json"


@dataclass(frozen=True)
class SourceSummary:
    rows: int  # input rows (0 if the source has no recorded plan)
    shards_planned: int
    shards_done: int
    samples_in_shards: int
    status_counts: dict[str, int] = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        return self.shards_done == self.shards_planned


@dataclass(frozen=True)
class IngestSummary:
    dataset: str
    path: Path
    sources: dict[str, SourceSummary]

    @property
    def status_counts(self) -> dict[str, int]:
        total: dict[str, int] = {}
        for summary in self.sources.values():
            for status, n in summary.status_counts.items():
                total[status] = total.get(status, 0) + n
        return dict(sorted(total.items()))

    def to_json(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "sources": {
                name: {
                    "rows": s.rows,
                    "shards_planned": s.shards_planned,
                    "shards_done": s.shards_done,
                    "samples_in_shards": s.samples_in_shards,
                    "status_counts": s.status_counts,
                }
                for name, s in self.sources.items()
            },
            "status_counts": self.status_counts,
        }


def source_folders(base: Path) -> list[Path]:
    """The source folders under a dataset's shard folder (those with a plan or a manifest)."""

    def holds_shards(folder: Path) -> bool:
        return (folder / plan.PLAN_FILE).exists() or any(folder.glob(catalog.MANIFEST_GLOB))

    return sorted(p for p in base.glob("*") if p.is_dir() and holds_shards(p))


def source_names(data_root: str | os.PathLike[str], dataset: str) -> list[str]:
    """The sources of a dataset that have shards (or a recorded plan), sorted."""
    return [p.name for p in source_folders(DataRoot(Path(data_root)).dataset_shards(dataset))]


def write_summary(data_root: str | os.PathLike[str], dataset: str) -> IngestSummary:
    """Rebuild every source's `sizes.json` and the dataset's `summary.json` from the manifests."""
    base = DataRoot(Path(data_root)).dataset_shards(dataset)
    base.mkdir(parents=True, exist_ok=True)
    with locks.locked(base / plan.LOCKS / "summary.lock", wait=True, what=f"the summary of {base}"):
        sizes: dict[str, dict[str, int]] = {}
        counts: dict[str, dict[str, int]] = {}
        if catalog.manifest_files(data_root, dataset):
            con = catalog.connect(data_root, dataset)
            try:
                for source, shard, samples, _records in catalog.run_sql(con, "ingest_shard_sizes.sql").fetchall():
                    sizes.setdefault(source, {})[f"{shard}.tar"] = samples
                for source, status, records in catalog.run_sql(con, "ingest_status_counts.sql").fetchall():
                    counts.setdefault(source, {})[status] = records
            finally:
                con.close()
        sources = {}
        atomic.remove_stale_temps(base, [SUMMARY_FILE])
        for folder in source_folders(base):
            atomic.remove_stale_temps(folder, [SIZES_FILE])
            recorded = plan.read_plan(folder) or {}
            rows = int(recorded.get("rows", 0))
            shard_sizes = sizes.get(folder.name, {})
            atomic.write_json(folder / SIZES_FILE, shard_sizes)
            sources[folder.name] = SourceSummary(
                rows=rows,
                shards_planned=plan.shard_count(rows, int(recorded.get("samples_per_shard", 1))),
                shards_done=len(shard_sizes),
                samples_in_shards=sum(shard_sizes.values()),
                status_counts=counts.get(folder.name, {}),
            )
        summary = IngestSummary(dataset, base / SUMMARY_FILE, sources)
        atomic.write_json(summary.path, summary.to_json())
    return summary
