"""DuckDB over the ingest outputs: runs the SQL files in `sql/` with bound parameters.

`connect(data_root, dataset)` returns an in-memory DuckDB connection with these views over the
dataset's shard manifests (`shards/<dataset>/<source>/shard-NNNNNN.parquet`):

- `samples`: every manifest row (one per input record, good or bad) plus `source` and
  `in_tar`; an `ok` row whose image bytes were already accepted elsewhere in the dataset (in
  another shard or source) has status `duplicate_content` here (shards are written
  independently). Copies in the `test` source win, so a test image never leaks into training.
- `rejects`: the rows of `samples` whose status is not `ok`.
- `splits`: the `ok` samples with their `split` (train / val / test): a `split` column in the
  input wins (values train, val or test, any case); else the source named `test` is test; else
  the first 32 bits of the key (a hash of IMG_ID) send a `val_fraction` of records to val and
  the rest to train. Deterministic: the same IMG_ID always lands in the same split.
- `split_counts`: samples per source and split.

Helpers over a connection: `rejects`, `shard_sizes`, `ok_rows_with_bad_gps`; over the files:
`split_table`, `write_splits` (`shards/<dataset>/splits.parquet`), `verify_shards`.
The file list and the val fraction are bound as DuckDB variables, never formatted into SQL.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd

from geoconcept import atomic
from geoconcept.errors import InputError
from geoconcept.layout import DataRoot

SQL_DIR = Path(__file__).resolve().parent.parent / "sql"
DEFAULT_VAL_FRACTION = 0.05
MANIFEST_GLOB = "shard-[0-9]*.parquet"
SPLITS_FILE = "splits.parquet"


def sql_text(name: str) -> str:
    path = SQL_DIR / name
    if not path.is_file():
        raise FileNotFoundError(f"SQL file {path} is missing (geoconcept runs from a source checkout)")
    return path.read_text(encoding="utf-8")


def run_sql(con: duckdb.DuckDBPyConnection, name: str, **params: Any) -> duckdb.DuckDBPyConnection:
    """Run every statement of `sql/<name>`, each with the named parameters it uses."""
    result = con
    for statement in duckdb.extract_statements(sql_text(name)):
        wanted = statement.named_parameters
        missing = wanted - params.keys()
        if missing:
            raise TypeError(f"{name} needs parameters {sorted(missing)}")
        result = con.execute(statement, {k: params[k] for k in wanted}) if wanted else con.execute(statement)
    return result


def new_connection(scratch_parent: Path, memory_limit: str = "2GB") -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB that spills (if it must) into a private folder under `scratch_parent`.

    The scratch folder is unique per connection (two processes never share one) and DuckDB
    creates it only when it spills and deletes it on close; it lives under the data root so that
    nothing is written elsewhere.
    """
    scratch = scratch_parent / f".duckdb-tmp-{os.getpid()}-{secrets.token_hex(4)}"
    con = duckdb.connect(":memory:", config={"temp_directory": str(scratch), "memory_limit": memory_limit})
    con.execute("SET enable_progress_bar = false")  # the library reports progress itself, not on stdout
    return con


@contextlib.contextmanager
def scratch_connection(scratch_parent: Path, memory_limit: str = "2GB") -> Iterator[duckdb.DuckDBPyConnection]:
    con = new_connection(scratch_parent, memory_limit)
    try:
        yield con
    finally:
        con.close()


def manifest_files(data_root: str | os.PathLike[str], dataset: str, source: str | None = None) -> list[Path]:
    """The finished shard manifests of a dataset (or one source), in source and shard order."""
    base = DataRoot(Path(data_root)).dataset_shards(dataset)
    folders = [base / source] if source else sorted(p for p in base.glob("*") if p.is_dir())
    return [path for folder in folders for path in sorted(folder.glob(MANIFEST_GLOB))]


def connect(
    data_root: str | os.PathLike[str], dataset: str, *, val_fraction: float = DEFAULT_VAL_FRACTION
) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB with the views `samples`, `rejects`, `splits` and `split_counts`."""
    if not 0.0 <= val_fraction <= 1.0:
        raise ValueError(f"val_fraction must be in [0, 1], got {val_fraction}")
    files = manifest_files(data_root, dataset)
    if not files:
        where = DataRoot(Path(data_root)).dataset_shards(dataset)
        raise InputError(f"no shard manifests under {where}: ingest the dataset first (geoconcept ingest)")
    con = new_connection(DataRoot(Path(data_root)).dataset_shards(dataset))
    run_sql(con, "ingest_manifest_rows.sql", files=[str(p) for p in files], val_fraction=val_fraction)
    columns = {row[0] for row in con.execute("DESCRIBE manifest_files").fetchall()}
    # The input's optional `split` column exists only if some source had one; DuckDB binds column
    # names when a view is created, so the view that reads it is chosen here.
    run_sql(con, "ingest_input_split.sql" if "split" in columns else "ingest_no_input_split.sql")
    run_sql(con, "ingest_views.sql")
    return con


def split_table(
    data_root: str | os.PathLike[str], dataset: str, *, val_fraction: float = DEFAULT_VAL_FRACTION
) -> pd.DataFrame:
    """The accepted samples with their split: key, img_id, lat, lon, source, shard, split."""
    con = connect(data_root, dataset, val_fraction=val_fraction)
    try:
        return run_sql(con, "ingest_split_table.sql").df()
    finally:
        con.close()


def rejects(con: duckdb.DuckDBPyConnection, limit: int | None = None) -> pd.DataFrame:
    """Rejected records (source, shard, row, img_id, key, status, detail, sha256) in input order."""
    return run_sql(con, "ingest_rejects.sql", limit=limit).df()


def shard_sizes(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """Per finished shard: source, shard, samples (in its tar), records (in its manifest)."""
    return run_sql(con, "ingest_shard_sizes.sql").df()


def ok_rows_with_bad_gps(con: duckdb.DuckDBPyConnection) -> int:
    """Accepted records with a missing or out-of-range coordinate (0 unless something is broken)."""
    return int(run_sql(con, "ingest_bad_gps_count.sql").fetchone()[0])


def write_splits(
    data_root: str | os.PathLike[str], dataset: str, *, val_fraction: float = DEFAULT_VAL_FRACTION
) -> Path:
    """Write `split_table` to `shards/<dataset>/splits.parquet` (atomically) and return its path."""
    path = DataRoot(Path(data_root)).dataset_shards(dataset) / SPLITS_FILE
    con = connect(data_root, dataset, val_fraction=val_fraction)
    try:
        with atomic.atomic_path(path) as tmp:
            run_sql(con, "ingest_write_splits.sql", path=str(tmp))
    finally:
        con.close()
    return path


def _tar_problems(tar: Path, expected_keys: set[str]) -> list[str]:
    """What is wrong with a shard tar, judged from its headers (member data is not read)."""
    if not tar.is_file():
        return ["tar is missing"]
    size = tar.stat().st_size
    if size % tarfile.RECORDSIZE:
        return [f"tar size {size} is not a whole number of tar records (cut short?)"]
    try:
        with tarfile.open(tar, "r:") as tf:
            members = tf.getmembers()
    except (tarfile.TarError, OSError) as exc:
        return [f"tar cannot be read: {exc}"]
    problems = []
    if any(not m.isreg() or m.offset_data + m.size > size for m in members):
        problems.append("tar has a member that is not a complete regular file")
    names = sorted(m.name for m in members)
    if names != sorted(f"{k}.{ext}" for k in expected_keys for ext in ("jpg", "json")):
        keys = {n.rsplit(".", 1)[0] for n in names}
        problems.append(
            f"tar holds {len(keys)} samples, the manifest lists {len(expected_keys)} ok records "
            f"({len(keys - expected_keys)} unexpected, {len(expected_keys - keys)} missing)"
        )
    return problems


def verify_shards(
    data_root: str | os.PathLike[str], dataset: str, manifests: list[Path] | None = None
) -> list[dict[str, str]]:
    """Problems of the finished shards of a dataset (or of the given manifests' shards): each tar
    complete and readable, and holding exactly the `ok` records of its manifest. An empty list
    means all is well."""
    problems = []
    for manifest in manifest_files(data_root, dataset) if manifests is None else manifests:
        ok = pd.read_parquet(manifest, columns=["key", "status"]).query("status == 'ok'")["key"]
        tar = manifest.with_suffix(".tar")
        for problem in _tar_problems(tar, set(ok)):
            problems.append({"source": manifest.parent.name, "shard": manifest.stem, "problem": problem})
    return problems
