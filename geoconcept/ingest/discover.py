"""Find the input tables of a dataset: one table per source in a folder (`train.csv`, `test.parquet`)."""

from __future__ import annotations

import os
from pathlib import Path

from geoconcept.errors import InputError
from geoconcept.ingest.staging import check_names, default_source_name

TABLE_SUFFIXES = (".csv", ".csv.gz", ".parquet", ".pq")


def discover_sources(raw_dir: str | os.PathLike[str], dataset: str = "sample") -> dict[str, Path]:
    """source name -> input table, for the tables directly inside `raw_dir` (sorted by source).

    Other files (images, READMEs) and sub-folders are ignored. Two tables with the same source
    name (`train.csv` and `train.parquet`) are an error, as is a folder without any table.
    """
    folder = Path(raw_dir)
    if not folder.is_dir():
        raise InputError(f"input folder {folder} does not exist")
    tables = sorted(p for p in folder.iterdir() if p.is_file() and p.name.lower().endswith(TABLE_SUFFIXES))
    if not tables:
        raise InputError(f"no input tables ({', '.join('*' + s for s in TABLE_SUFFIXES)}) in {folder}")
    found: dict[str, Path] = {}
    for table in tables:
        source = default_source_name(table)
        check_names(dataset, source)
        if source in found:
            raise InputError(f"{found[source].name} and {table.name} in {folder} are both source {source!r}")
        found[source] = table
    return dict(sorted(found.items()))
