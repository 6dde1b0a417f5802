"""Concept labels for GPS points: the layers' values at each point plus one soft label per
layer-measured concept of the bank.

Output columns (the contract the per-sample tables and `geoconcept label` share), rows in input order:

| column          | type          | meaning                                                          |
|-----------------|---------------|------------------------------------------------------------------|
| `lat`, `lon`    | float64       | the input coordinates, unchanged                                 |
| `koppen_geiger` | str, nullable | Köppen-Geiger symbol (`Cfb`); null over ocean/nodata             |
| `koppen_group`  | str, nullable | main group `A`–`E`; null over ocean                              |
| `igbp`          | Int16         | IGBP land-cover code 0–16 (0 = water); null = nodata             |
| `igbp_name`     | str, nullable | its name (`Croplands`)                                           |
| `land`          | bool          | on land (GLOBE mask; lakes are land)                             |
| `coast_km`      | float32       | km to the ocean coastline, ≥ 0 on both sides                     |
| `country`       | str, nullable | ISO 3166-1 alpha-2; null in the open ocean                       |
| `continent`     | str, nullable | one of 7: `Africa`, `Antarctica`, … `South America`; null at sea |
| `concept__<id>` | float32       | one per measured concept, bank order: label in [0, 1], NaN = missing |

Each column comes from the registry layer of the same name, so a layers config that replaces
e.g. `country` with polygons changes the column (and `continent` follows it).

Invalid points (NaN, |lat| > 90, |lon| > 180) are an error listing how many and the first few
indices: silently dropping or nulling them would shift or hide rows of a per-sample table.
Longitudes −180 and 180 are the same meridian and get the same labels.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from geoconcept import atomic
from geoconcept.concepts.bank import ConceptBank, Rule, load_bank
from geoconcept.errors import InputError
from geoconcept.layers.base import lookup
from geoconcept.layers.neighbourhood import DEFAULT_SAMPLES, disc_means
from geoconcept.layers.places import ContinentLayer
from geoconcept.layers.registry import Registry
from geoconcept.layers.sphere import normalize_lon

POINT_COLUMNS = (
    "lat",
    "lon",
    "koppen_geiger",
    "koppen_group",
    "igbp",
    "igbp_name",
    "land",
    "coast_km",
    "country",
    "continent",
)
MANIFEST_COLUMNS = ("key", "lat", "lon", "status")
METADATA_KEY = b"geoconcept"
SHOWN_INDICES = 10


class InvalidPointsError(InputError):
    """Some points are NaN or out of range; `indices` holds all of them (0-based)."""

    def __init__(self, indices: np.ndarray, total: int, describe: Callable[[int], str] = str) -> None:
        self.indices = indices
        shown = ", ".join(describe(int(i)) for i in indices[:SHOWN_INDICES])
        more = ", ..." if len(indices) > SHOWN_INDICES else ""
        super().__init__(
            f"{len(indices)} of {total} points have invalid coordinates "
            f"(NaN, latitude outside [-90, 90] or longitude outside [-180, 180]): {shown}{more}"
        )


def check_points(lat, lon) -> tuple[np.ndarray, np.ndarray]:
    """Float64 1-D copies of lat/lon; InvalidPointsError listing the bad indices."""
    lat = np.asarray(lat, dtype=np.float64).ravel()
    lon = np.asarray(lon, dtype=np.float64).ravel()
    if lat.shape != lon.shape:
        raise InputError(f"lat and lon differ in length ({lat.size} vs {lon.size})")
    with np.errstate(invalid="ignore"):
        bad = ~(np.isfinite(lat) & np.isfinite(lon) & (np.abs(lat) <= 90.0) & (np.abs(lon) <= 180.0))
    if bad.any():
        raise InvalidPointsError(np.flatnonzero(bad), lat.size, describe=lambda i: f"index {i}")
    return lat, lon


def label_columns(bank: ConceptBank) -> list[str]:
    """The output columns of `label_points` for this bank, in order."""
    return [*POINT_COLUMNS, *(c.column for c in bank.measured)]


class _PointSamples:
    """Each layer sampled at most once per call (contract columns and rules share samples)."""

    def __init__(self, registry: Registry, lat: np.ndarray, lon: np.ndarray) -> None:
        self.registry, self.lat, self.lon = registry, lat, lon
        self._done: dict[str, np.ma.MaskedArray] = {}

    def __call__(self, name: str) -> np.ma.MaskedArray:
        if name not in self._done:
            layer = self.registry[name]
            if isinstance(layer, ContinentLayer) and layer.country is self.registry[layer.country.name]:
                self._done[name] = layer.continents_of(self(layer.country.name), self.lon)
            else:
                self._done[name] = layer.sample(self.lat, self.lon)
        return self._done[name]


def _text(symbols: np.ndarray) -> pd.Series:
    return pd.Series(symbols, dtype="str")


def _rule_labels(rules: list[Rule], registry: Registry, points: _PointSamples, samples: int) -> dict[Rule, np.ndarray]:
    """float32 label per rule; rules sharing (layer, radius) share one sampling pass."""
    groups: dict[tuple[str, float | None], list[Rule]] = {}
    for rule in rules:
        groups.setdefault((rule.layer, rule.radius_km), []).append(rule)
    labels = {}
    for (layer_name, radius), members in groups.items():
        predicates = [rule.predicate(registry) for rule in members]
        if radius is None:
            values = points(layer_name)
            missing = np.ma.getmaskarray(values)
            data = np.ma.getdata(values)
            for rule, predicate in zip(members, predicates, strict=True):
                labels[rule] = np.where(missing, np.nan, predicate(data)).astype(np.float32)
        else:
            shares = disc_means(registry[layer_name].sample, points.lat, points.lon, radius, predicates, samples)
            for j, rule in enumerate(members):
                labels[rule] = shares[:, j]
    return labels


def label_points(
    lat,
    lon,
    bank: ConceptBank | None = None,
    registry: Registry | None = None,
    *,
    samples: int = DEFAULT_SAMPLES,
) -> pd.DataFrame:
    """Label points (arrays of WGS84 degrees) with the contract columns; see the module docstring.

    `bank` defaults to the packaged bank, `registry` to the built-in layers; `samples` is the
    number of stencil positions per neighbourhood disc.
    """
    registry = registry if registry is not None else Registry.builtin()
    bank = bank if bank is not None else load_bank(registry=registry)
    bank.check_layers(registry)
    lat, lon_in = check_points(lat, lon)
    points = _PointSamples(registry, lat, normalize_lon(lon_in))

    igbp = points("igbp")
    igbp_missing = np.ma.getmaskarray(igbp)
    columns: dict[str, object] = {
        "lat": lat,
        "lon": lon_in,
        "koppen_geiger": _text(registry["koppen_geiger"].symbols_of(points("koppen_geiger"))),
        "koppen_group": _text(registry["koppen_group"].symbols_of(points("koppen_group"))),
        "igbp": pd.arrays.IntegerArray(
            np.where(igbp_missing, 0, np.ma.getdata(igbp)).astype(np.int16), igbp_missing.copy()
        ),
        "igbp_name": _text(lookup(igbp, registry["igbp"].classes.names)),
        "land": registry["land"].symbols_of(points("land")) == "land",
        "coast_km": np.ma.filled(points("coast_km").astype(np.float32), np.nan),
        "country": _text(registry["country"].symbols_of(points("country"))),
        "continent": _text(registry["continent"].symbols_of(points("continent"))),
    }
    rule_labels = _rule_labels([c.rule for c in bank.measured], registry, points, samples)
    for concept in bank.measured:
        columns[concept.column] = rule_labels[concept.rule]
    return pd.DataFrame(columns)


@dataclass(frozen=True)
class ShardLabels:
    """What `label_shard` did: rows in the manifest, rows labelled (status ok), rows skipped."""

    path: Path
    rows: int
    labelled: int
    skipped: int


def label_metadata(bank: ConceptBank, registry: Registry) -> dict[str, object]:
    """Lineage stored in each labels file: the bank's version/sha and the versions of the layers used."""
    used = {name for name in POINT_COLUMNS if name in registry} | {c.rule.layer for c in bank.measured}
    return {
        "bank_version": bank.version,
        "bank_sha256": bank.sha256,
        "layers": {name: registry[name].version for name in sorted(used)},
    }


def write_labels(
    frames: Iterable[pd.DataFrame], out_parquet: str | os.PathLike[str], metadata: dict[str, object]
) -> Path:
    """Write labels tables (one row group each, all with the first one's columns) atomically as one
    Parquet file, with `metadata` as JSON under the `geoconcept` schema-metadata key."""
    out = Path(out_parquet)
    atomic.remove_stale_temps(out.parent, [out.name])
    writer = None
    with atomic.atomic_path(out) as tmp:
        try:
            for frame in frames:
                table = pa.Table.from_pandas(frame, preserve_index=False)
                if writer is None:
                    schema_metadata = dict(table.schema.metadata or {})
                    schema_metadata[METADATA_KEY] = json.dumps(metadata, sort_keys=True).encode()
                    schema = table.schema.with_metadata(schema_metadata)
                    writer = pq.ParquetWriter(tmp, schema)
                writer.write_table(table.cast(schema))
        finally:
            if writer is not None:
                writer.close()
        if writer is None:
            raise ValueError("write_labels needs at least one table")
    return out


def read_manifest_points(manifest_parquet: str | os.PathLike[str]) -> pd.DataFrame:
    """`key`, `lat`, `lon`, `status` of an ingest manifest; InputError naming the file if unusable."""
    manifest = Path(manifest_parquet)
    if not manifest.is_file():
        raise InputError(f"manifest {manifest} not found")
    try:
        schema = pq.read_schema(manifest)
    except (pa.ArrowException, OSError) as exc:
        raise InputError(f"manifest {manifest} is not a readable Parquet file: {exc}") from exc
    missing = [c for c in MANIFEST_COLUMNS if c not in schema.names]
    if missing:
        raise InputError(f"manifest {manifest} lacks column(s) {missing} (has: {schema.names})")
    try:
        return pq.read_table(manifest, columns=list(MANIFEST_COLUMNS)).to_pandas()
    except (pa.ArrowException, OSError) as exc:
        raise InputError(f"manifest {manifest} could not be read: {exc}") from exc


def label_shard(
    manifest_parquet: str | os.PathLike[str],
    out_parquet: str | os.PathLike[str],
    bank: ConceptBank | None = None,
    registry: Registry | None = None,
) -> ShardLabels:
    """Label the `status == "ok"` rows of one ingest manifest; write `key` + the label columns.

    Output rows follow the manifest's order. Written atomically (a re-run replaces the file and
    clears a crashed run's temporary). Its Parquet schema metadata holds `label_metadata` as JSON.
    """
    registry = registry if registry is not None else Registry.builtin()
    bank = bank if bank is not None else load_bank(registry=registry)
    manifest = read_manifest_points(manifest_parquet)
    ok = manifest[manifest["status"] == "ok"].reset_index(drop=True)
    try:
        labels = label_points(
            pd.to_numeric(ok["lat"], errors="coerce"), pd.to_numeric(ok["lon"], errors="coerce"), bank, registry
        )
    except InvalidPointsError as exc:
        keys = ", ".join(str(ok["key"].iloc[i]) for i in exc.indices[:SHOWN_INDICES])
        raise InputError(
            f"manifest {manifest_parquet}: {len(exc.indices)} rows with status 'ok' have invalid coordinates "
            f"(keys {keys}{', ...' if len(exc.indices) > SHOWN_INDICES else ''})"
        ) from exc
    labels.insert(0, "key", ok["key"].astype(str).to_numpy())
    path = write_labels([labels], out_parquet, label_metadata(bank, registry))
    return ShardLabels(path=path, rows=len(manifest), labelled=len(ok), skipped=len(manifest) - len(ok))


def concept_coverage(labels: pd.DataFrame, bank: ConceptBank) -> pd.DataFrame:
    """Per measured concept: share of points with a label (`labelled`), mean label (`mean`), share
    of points with label >= 0.5 (`present`). For metadata and the "zero coverage" check."""
    rows = []
    for concept in bank.measured:
        values = labels[concept.column].to_numpy(dtype=np.float64)
        known = ~np.isnan(values)
        rows.append(
            {
                "id": concept.id,
                "category": concept.category,
                "labelled": float(known.mean()) if values.size else 0.0,
                "mean": float(values[known].mean()) if known.any() else float("nan"),
                "present": float((values[known] >= 0.5).sum() / values.size) if values.size else 0.0,
            }
        )
    return pd.DataFrame(rows, columns=["id", "category", "labelled", "mean", "present"])
