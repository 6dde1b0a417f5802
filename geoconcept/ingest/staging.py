"""Stage an input table: CSV or Parquet -> `raw/<dataset>/<source>.parquet`, streamed.

The staged table has `row` (int64, 0-based input order), every input column as text (LAT/LON
keep their raw strings so that a bad value can be quarantined with what the input said), and
`duplicate_of` (the first row with the same IMG_ID, for later repeats; decided by DuckDB over the
whole table, so it is global across partitions). Two passes, both in bounded memory: pyarrow's
streaming reader writes the rows batch by batch, then `sql/stage_source.sql` adds `duplicate_of`
(DuckDB spills to disk if it must). The input's sha256 is stored in the Parquet metadata: staging
the same input again is skipped, a changed input is staged again.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from geoconcept import atomic, catalog
from geoconcept.errors import ConfigError, InputError
from geoconcept.hashing import file_sha256
from geoconcept.ingest import locks, plan
from geoconcept.ingest.config import IngestConfig
from geoconcept.layout import DataRoot, check_name

REQUIRED_COLUMNS = ("IMG_ID", "LAT", "LON")
# The column names of image tables as they are distributed, and the names the project uses: the one
# place these aliases live (staging and batch predict read through `canonical_columns`). Im2GPS3k
# (`im2gps3k_places365.csv`: IMG_ID,AUTHOR,LAT,LON,S3_Label,...) and YFCC4k (`yfcc4k_places365.csv`)
# as GeoCLIP, Img2Loc and PIGEON distribute them already use IMG_ID/LAT/LON; other copies use
# lowercase `lat,lng`, `latitude,longitude`, or name the image `photo_id` (YFCC). Matched
# case-insensitively; a name that is already canonical is never renamed.
COLUMN_ALIASES = {
    "img_id": "IMG_ID",
    "image_id": "IMG_ID",
    "photo_id": "IMG_ID",
    "lat": "LAT",
    "latitude": "LAT",
    "lon": "LON",
    "lng": "LON",
    "long": "LON",
    "longitude": "LON",
}
# Names the manifest, the sample json or the SQL views use themselves (compared case-insensitively,
# as DuckDB does): an input column with one of these names would be ambiguous.
RESERVED_COLUMNS = frozenset(
    {"row", "key", "img_id", "lat", "lon", "shard", "status", "detail", "sha256", "width", "height"}
    | {"jpeg_bytes", "source", "duplicate_of", "in_tar", "input_split", "filename"}
)
CSV_BLOCK_BYTES = 1 << 20  # pyarrow parses the CSV this many bytes at a time
PARQUET_BATCH_ROWS = 65_536
STAGING_FORMAT = "1"
_META_SHA = b"geoconcept_input_sha256"
_META_FORMAT = b"geoconcept_staging_format"
_PARQUET_SUFFIXES = (".parquet", ".pq")


@dataclass(frozen=True)
class StagedSource:
    """A staged input table and how its rows are cut into shards and partitions."""

    path: Path
    dataset: str
    source: str
    rows: int
    columns: tuple[str, ...]  # the input's columns, in input order
    input_sha256: str
    config: IngestConfig = field(default_factory=IngestConfig)

    @property
    def extra_columns(self) -> tuple[str, ...]:
        """Input columns other than IMG_ID, LAT and LON (kept in the manifest and sample json)."""
        return tuple(c for c in self.columns if c not in REQUIRED_COLUMNS)

    @property
    def shards(self) -> int:
        return plan.shard_count(self.rows, self.config.samples_per_shard)

    @property
    def partitions(self) -> int:
        return plan.partition_count(self.rows, self.config)

    @property
    def partition_keys(self) -> list[str]:
        return [plan.partition_key(self.source, i) for i in range(self.partitions)]


def default_source_name(table: str | os.PathLike[str]) -> str:
    """The source name of an input table: its file name without extensions (`train.csv` -> `train`)."""
    return Path(table).name.split(".")[0]


def check_names(dataset: str, source: str) -> None:
    """Dataset and source names become folder names and partition-key parts."""
    try:
        check_name("dataset", dataset)
        check_name("source", source)
    except ValueError as exc:
        raise ConfigError(f"{exc} (set it with --dataset / --source)") from None


def _is_parquet(path: Path) -> bool:
    return path.suffix.lower() in _PARQUET_SUFFIXES


def _csv_column_names(path: Path) -> list[str]:
    # The first block is parsed (with type inference) only to learn the header; the real read
    # below declares every column as text so that no value is reinterpreted.
    try:
        reader = pa_csv.open_csv(path, read_options=pa_csv.ReadOptions(block_size=CSV_BLOCK_BYTES))
    except (pa.ArrowException, OSError) as exc:
        raise InputError(f"{path}: cannot be read as CSV: {exc}") from None
    names = reader.schema.names
    reader.close()
    return names


def canonical_columns(names: list[str]) -> list[str]:
    """`names` with `COLUMN_ALIASES` applied, where that gives each canonical name at most once."""
    renamed = [COLUMN_ALIASES.get(n.lower(), n) for n in names]
    return [new if renamed.count(new) == 1 else old for old, new in zip(names, renamed, strict=True)]


def check_input_table(table: str | os.PathLike[str]) -> list[str]:
    """The input table's columns as they are in the file, or an InputError naming the file and the
    problem (the required columns may come under an alias, see COLUMN_ALIASES). Writes nothing."""
    path = Path(table)
    if not path.exists():
        raise InputError(f"input table {path} does not exist")
    if not path.is_file():
        raise InputError(f"input table {path} is not a file")
    if _is_parquet(path):
        try:
            names = pq.read_schema(path).names
        except (pa.ArrowException, OSError) as exc:
            raise InputError(f"{path}: cannot be read as Parquet: {exc}") from None
    else:
        names = _csv_column_names(path)
    found = names
    names = canonical_columns(found)
    missing = [c for c in REQUIRED_COLUMNS if c not in names]
    if missing:
        raise InputError(
            f"{path}: missing required column(s) {', '.join(missing)} "
            f"(an input table needs {', '.join(REQUIRED_COLUMNS)}; found: {', '.join(names) or 'no columns'})"
        )
    if "" in names:
        raise InputError(f"{path}: a column has an empty name")
    lowered = [n.lower() for n in names]
    repeated = sorted({n for n in names if lowered.count(n.lower()) > 1})
    if repeated:
        raise InputError(f"{path}: repeated column name(s) {', '.join(repeated)} (names are case-insensitive)")
    clashes = [n for n in names if n not in REQUIRED_COLUMNS and n.lower() in RESERVED_COLUMNS]
    if clashes:
        raise InputError(f"{path}: column(s) {', '.join(clashes)} clash with manifest columns; rename them")
    return found


def _text_batches(path: Path, names: list[str]) -> Iterator[pa.RecordBatch]:
    """The input as record batches of text columns, never more than one batch in memory."""
    if _is_parquet(path):
        with pq.ParquetFile(path) as pf:
            for batch in pf.iter_batches(batch_size=PARQUET_BATCH_ROWS, columns=names):
                try:
                    columns = [pc.cast(batch.column(n), pa.string()) for n in names]
                except pa.ArrowException as exc:
                    raise InputError(f"{path}: a column cannot be read as text: {exc}") from None
                yield pa.RecordBatch.from_arrays(columns, names=names)
        return
    reader = pa_csv.open_csv(
        path,
        read_options=pa_csv.ReadOptions(block_size=CSV_BLOCK_BYTES),
        convert_options=pa_csv.ConvertOptions(
            column_types={n: pa.string() for n in names},
            strings_can_be_null=False,
            quoted_strings_can_be_null=False,
        ),
    )
    with contextlib.closing(reader):
        while True:
            try:
                batch = reader.read_next_batch()
            except StopIteration:
                return
            except pa.ArrowException as exc:
                raise InputError(f"{path}: {exc}") from None
            yield batch


def _write_numbered_rows(path: Path, names: list[str], out: Path) -> int:
    """Stream the input into `out` with a `row` column; return the row count."""
    schema = pa.schema([("row", pa.int64()), *[(n, pa.string()) for n in canonical_columns(names)]])
    rows = 0
    with pq.ParquetWriter(out, schema, compression="zstd") as writer:
        for batch in _text_batches(path, names):
            numbers = pa.array(np.arange(rows, rows + batch.num_rows, dtype=np.int64))
            writer.write_batch(pa.RecordBatch.from_arrays([numbers, *batch.columns], schema=schema))
            rows += batch.num_rows
    return rows


@contextlib.contextmanager
def _scratch_file(beside: Path) -> Iterator[Path]:
    """A temporary file next to `beside`, always deleted; named so `remove_stale_temps` finds it."""
    fd, name = tempfile.mkstemp(prefix=beside.name + atomic.TEMP_MARKER, dir=beside.parent)
    os.close(fd)
    try:
        yield Path(name)
    finally:
        Path(name).unlink(missing_ok=True)


def _staged_fingerprint(path: Path) -> tuple[str | None, str | None]:
    meta = pq.read_metadata(path).metadata or {}
    sha, fmt = meta.get(_META_SHA), meta.get(_META_FORMAT)
    return (sha.decode() if sha else None, fmt.decode() if fmt else None)


def stage_source(
    table: str | os.PathLike[str],
    dataset: str,
    source: str | None,
    data_root: str | os.PathLike[str],
    config: IngestConfig | None = None,
) -> StagedSource:
    """Stage an input table (CSV or Parquet with IMG_ID, LAT, LON) as `raw/<dataset>/<source>.parquet`.

    `source` defaults to the table's file name stem. Re-staging an unchanged input is skipped.
    A missing file or a table without the required columns raises InputError before anything is written.
    """
    path = Path(table)
    source = source or default_source_name(path)
    check_names(dataset, source)
    names = check_input_table(path)
    input_sha256 = file_sha256(path)
    final = DataRoot(Path(data_root)).staged_table(dataset, source)
    final.parent.mkdir(parents=True, exist_ok=True)
    # Two runs of different partitions of one source may both start by staging it: one stages,
    # the other waits and then finds the table ready.
    with locks.locked(final.parent / plan.LOCKS / f"{source}.lock", wait=True, what=f"staging of {final}"):
        atomic.remove_stale_temps(final.parent, [final.name])
        if not (final.exists() and _staged_fingerprint(final) == (input_sha256, STAGING_FORMAT)):
            with _scratch_file(final) as numbered, atomic.atomic_path(final) as tmp:
                _write_numbered_rows(path, names, numbered)
                with catalog.scratch_connection(final.parent) as con:
                    catalog.run_sql(
                        con,
                        "stage_source.sql",
                        rows=str(numbered),
                        staged=str(tmp),
                        input_sha256=input_sha256,
                        staging_format=STAGING_FORMAT,
                    )
    return load_staged(data_root, dataset, source, config)


def load_staged(
    data_root: str | os.PathLike[str], dataset: str, source: str, config: IngestConfig | None = None
) -> StagedSource:
    """The StagedSource of an already staged input table."""
    check_names(dataset, source)
    path = DataRoot(Path(data_root)).staged_table(dataset, source)
    if not path.exists():
        raise InputError(f"source {source!r} of dataset {dataset!r} is not staged ({path} is missing): stage it first")
    meta = pq.read_metadata(path)
    sha, _ = _staged_fingerprint(path)
    names = tuple(n for n in meta.schema.to_arrow_schema().names if n not in ("row", "duplicate_of"))
    return StagedSource(path, dataset, source, meta.num_rows, names, sha or "", config or IngestConfig())


def read_rows(staged: str | os.PathLike[str], rows: range) -> pa.Table:
    """Rows `rows` of a staged table, reading only the row groups that hold them."""
    if not rows:
        raise ValueError("empty row range")
    with pq.ParquetFile(staged) as pf:
        groups, first_row, offset = [], None, 0
        for g in range(pf.metadata.num_row_groups):
            size = pf.metadata.row_group(g).num_rows
            if offset < rows.stop and offset + size > rows.start:
                groups.append(g)
                first_row = offset if first_row is None else first_row
            offset += size
        if first_row is None:
            raise InputError(f"{staged}: has {offset} rows, rows {rows.start}..{rows.stop - 1} were asked for")
        table = pf.read_row_groups(groups).slice(rows.start - first_row, len(rows))
    numbers = table.column("row")
    if len(table) != len(rows) or numbers[0].as_py() != rows.start or numbers[-1].as_py() != rows.stop - 1:
        raise InputError(f"{staged}: rows are not numbered in order; delete it and stage the input again")
    return table
