"""Turn library results into Dagster metadata a person wants to see in the UI."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from dagster import DataVersion, MetadataValue, TableColumn, TableRecord, TableSchema

from geoconcept.hashing import file_sha256, parquet_rows_sha256


def table(frame: pd.DataFrame, limit: int = 50) -> MetadataValue:
    """A DataFrame as a UI table (first `limit` rows)."""
    frame = frame.head(limit)
    schema = TableSchema(columns=[TableColumn(str(c), _kind(frame[c])) for c in frame.columns])
    records = [TableRecord({str(k): _plain(v) for k, v in row.items()}) for row in frame.to_dict(orient="records")]
    return MetadataValue.table(records=records, schema=schema)


def counts_table(counts: Mapping[str, int], key: str = "status", value: str = "count") -> MetadataValue:
    return table(pd.DataFrame({key: list(counts), value: list(counts.values())}))


def png(data: bytes | None, alt: str) -> MetadataValue:
    """An image shown inline in the UI (markdown with a data URI)."""
    if not data:
        return MetadataValue.md(f"*({alt}: nothing to show)*")
    return MetadataValue.md(f"![{alt}](data:image/png;base64,{base64.b64encode(data).decode()})")


def png_file(path: Path, alt: str) -> MetadataValue:
    return png(path.read_bytes() if path.exists() else None, alt)


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
    if value is None or (isinstance(value, float) and value != value):
        return None
    if hasattr(value, "item"):
        return value.item()
    return value if isinstance(value, (bool, int, float, str)) else str(value)
