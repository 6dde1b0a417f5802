"""Turn library results into Dagster metadata a person wants to see in the UI."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq
from dagster import DataVersion, MetadataValue, TableColumn, TableRecord, TableSchema

from geoconcept import atomic
from geoconcept.hashing import file_sha256, parquet_rows_sha256

SIGNIFICANT = 4  # digits of a float shown in a UI table: 0.009607582353055477 -> 0.009608
NONE = MetadataValue.text("none")


def table(frame: pd.DataFrame, limit: int = 50) -> MetadataValue:
    """A DataFrame as a UI table (first `limit` rows, floats to `SIGNIFICANT` digits)."""
    frame = frame.head(limit)
    schema = TableSchema(columns=[TableColumn(str(c), _kind(frame[c])) for c in frame.columns])
    records = [TableRecord({str(k): _plain(v) for k, v in row.items()}) for row in frame.to_dict(orient="records")]
    return MetadataValue.table(records=records, schema=schema)


def table_or_none(frame: pd.DataFrame, limit: int = 50) -> MetadataValue:
    """`table`, or the text "none" for an empty frame (an empty table reads like a rendering failure)."""
    return NONE if frame.empty else table(frame, limit)


def listing(values: Iterable[Any]) -> MetadataValue:
    """A list shown as a list (JSON), not a comma-joined string."""
    return MetadataValue.json([_plain(v) for v in values])


def image(path: Path) -> MetadataValue:
    """An image as a link to its file: base64 inside metadata grows the event log by megabytes per run."""
    return MetadataValue.path(str(path)) if path.exists() else NONE


def image_bytes(data: bytes | None, path: Path) -> MetadataValue:
    """Write a rendered PNG to `path` (atomically) and link it; "none" when there is nothing to show."""
    if not data:
        return NONE
    atomic.write_bytes(path, data)
    return image(path)


def parquet_table(path: Path) -> dict[str, MetadataValue | int]:
    """Dagster's standard row count and column schema of a Parquet file."""
    schema = pq.read_schema(path)
    columns = [TableColumn(field.name, str(field.type)) for field in schema]
    return {
        "dagster/row_count": pq.ParquetFile(path).metadata.num_rows,
        "dagster/column_schema": MetadataValue.table_schema(TableSchema(columns=columns)),
    }


def accuracy_headlines(per_run: pd.DataFrame) -> dict[str, float]:
    """Float metadata (the Plots tab) per variant, mean over seeds: `<variant>/within_<t>km` and `/median_km`."""
    columns = [c for c in per_run.columns if c.startswith("within_") or c == "median_km"]
    means = per_run.groupby("variant", sort=False)[columns].mean()
    return {f"{variant}/{c}": float(means.loc[variant, c]) for variant in means.index for c in columns}


def auroc_headlines(faithfulness_per_run: pd.DataFrame | None) -> dict[str, float]:
    """`<variant>/mean_auroc_image` and `/mean_auroc_location`: mean over concepts and seeds (NaN skipped)."""
    if faithfulness_per_run is None or faithfulness_per_run.empty:
        return {}
    means = faithfulness_per_run.groupby("variant", sort=False)[["auroc_image", "auroc_location"]].mean()
    return {
        f"{variant}/mean_{c}": float(means.loc[variant, c])
        for variant in means.index
        for c in means.columns
        if not math.isnan(means.loc[variant, c])
    }


def counts_table(counts: Mapping[str, int], key: str = "status", value: str = "count") -> MetadataValue:
    return table(pd.DataFrame({key: list(counts), value: list(counts.values())}))


def data_version(parts: Iterable[Any]) -> DataVersion:
    """A content hash of the given parts (file hashes, counts...) as Dagster's data version."""
    h = hashlib.sha256()
    for part in parts:
        h.update(repr(part).encode())
        h.update(b"\0")
    return DataVersion(h.hexdigest()[:24])


def shards_version(tars: Sequence[Path], manifests: Sequence[Path]) -> DataVersion:
    """Data version of shards: the tars' bytes and the manifests' rows (not their provenance metadata,
    so a shard rebuilt from a touched but unchanged image keeps its version)."""
    return data_version([file_sha256(p) for p in tars] + [parquet_rows_sha256(p) for p in manifests])


def files_version(paths: Sequence[Path]) -> DataVersion:
    """Data version of a set of output files: the sha256 of their bytes, in order."""
    return data_version((path.name, file_sha256(path)) for path in paths)


def _kind(series: pd.Series) -> str:
    if pd.api.types.is_bool_dtype(series):
        return "bool"
    if pd.api.types.is_integer_dtype(series):
        return "int"
    if pd.api.types.is_float_dtype(series):
        return "float"
    return "string"


def _plain(value: Any) -> Any:
    if hasattr(value, "item"):
        value = value.item()
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, float):
        return float(f"{value:.{SIGNIFICANT}g}")
    return value if isinstance(value, (bool, int, str)) else str(value)
