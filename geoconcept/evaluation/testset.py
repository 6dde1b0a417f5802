"""The test samples of an evaluation: cached image features, keys, true coordinates, concept labels.

Inputs are explicit files or folders (never "the newest file on disk"):

* feature files `shard-NNNNNN.safetensors` (see geoconcept.features), read in the given order
  (folders in shard order); all must come from one backbone;
* optionally a split Parquet (`key`, `split`) and the split to keep (default `test`);
* optionally labels Parquet files (`key` + label columns, see geoconcept.concepts.labels); every
  test sample needs a labels row.

Images for the report's explanation grid are read by key from the WebDataset shards.

The standard test sets come as CSVs that `geoconcept ingest` and `geoconcept predict` take as
they are (`read_image_table`; column aliases in `geoconcept.ingest.staging.COLUMN_ALIASES`):

* Im2GPS3k, `im2gps3k_places365.csv` (GeoEstimation's `meta/` folder, also in GeoCLIP's, Img2Loc's
  and PIGEON's repositories; images from the Im2GPS authors' page): `IMG_ID,AUTHOR,LAT,LON,S3_Label,
  S16_Label,S365_Label,Prob_indoor,Prob_natural,Prob_urban`. An early copy heads (lat, lon) values
  `LON,LAT`; where the values show it (a "LAT" beyond ±90), the table is refused with that message;
* YFCC4k, `yfcc4k_places365.csv` (same sources): `IMG_ID,AUTHOR,LAT,LON,...`; some copies name the
  image `photo_id`, give IDs without `.jpg` (predict then tries `<id>.jpg`), or use `lat,lng` /
  `latitude,longitude`.

Extra columns (AUTHOR, the Places365 labels and probabilities) are kept as text.
"""

from __future__ import annotations

import os
import tarfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import webdataset

from geoconcept.errors import InputError
from geoconcept.features import read_feature_shard
from geoconcept.ingest.staging import canonical_columns

LABEL_PREFIX = "concept__"


@dataclass
class TestSet:
    keys: list[str]
    features: np.ndarray  # (N, D) float32, the frozen backbone's features
    latlon: np.ndarray  # (N, 2) float64, true (lat, lon)
    labels: pd.DataFrame | None  # one row per key, same order; label columns only
    backbone: str  # feature tag, e.g. "ViT-S-32-alt__none"
    warning: str | None  # e.g. the random-backbone warning of the feature files
    files: list[Path]

    def __len__(self) -> int:
        return len(self.keys)


def read_image_table(path: str | os.PathLike[str]) -> pd.DataFrame:
    """An image table (CSV or Parquet) with IMG_ID and optionally LAT, LON, under any accepted alias.

    Columns come back canonical and as text (`IMG_ID`, `LAT`, `LON` when given, then the rest);
    parsing the coordinates is the caller's (a bad value is that row's problem, not the table's).
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"image table {path} {'is a directory' if path.is_dir() else 'not found'}")
    try:
        if path.suffix.lower() in (".parquet", ".pq"):
            frame = pq.read_table(path).to_pandas().astype(str)
        else:
            frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(f"image table {path} is not a readable CSV or Parquet ({reason})") from None
    frame.columns = canonical_columns([str(c) for c in frame.columns])
    if "IMG_ID" not in frame.columns:
        raise InputError(f"image table {path} has no IMG_ID column (found: {list(frame.columns)[:12]})")
    if ("LAT" in frame.columns) != ("LON" in frame.columns):
        raise InputError(f"image table {path} has only one of LAT, LON: give both or neither")
    if "LAT" in frame.columns:
        _refuse_swapped_header(path, frame)
    return frame


def _refuse_swapped_header(path: Path, frame: pd.DataFrame) -> None:
    """An early `im2gps3k_places365.csv` in GeoEstimation's repository heads its columns
    `LON,LAT` over (lat, lon) values: every distance would be wrong, so say so instead."""
    lat, lon = (pd.to_numeric(frame[c], errors="coerce").abs() for c in ("LAT", "LON"))
    if (lat > 90).any() and not (lon > 90).any():
        raise InputError(
            f"image table {path}: LAT has values beyond ±90 and LON none: its header names LAT and LON "
            "the wrong way round (as an early im2gps3k_places365.csv does); swap the two names"
        )


def _expand(paths: Iterable[str | os.PathLike[str]], glob: str, what: str) -> list[Path]:
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(p.glob(glob))
            if not found:
                raise InputError(f"no {what} ({glob}) in {p}")
            files += found
        elif p.is_file():
            files.append(p)
        else:
            raise InputError(f"{what} {p} not found")
    return files


def _split_keys(path: Path, split_name: str) -> set[str]:
    try:
        table = pq.read_table(path, columns=["key", "split"]).to_pandas()
    except FileNotFoundError:
        raise InputError(f"split file {path} not found") from None
    except (OSError, ValueError, KeyError) as exc:
        raise InputError(f"split file {path} must be Parquet with columns key, split ({exc})") from None
    return set(table.loc[table["split"] == split_name, "key"].astype(str))


def read_labels(paths: Sequence[str | os.PathLike[str]], keys: Sequence[str]) -> pd.DataFrame:
    """Label rows of `keys`, in that order, from Parquet files/folders (`key` + label columns)."""
    frames = []
    for path in _expand(paths, "shard-*.parquet", "labels files"):
        try:
            frame = pq.read_table(path).to_pandas()
        except (OSError, ValueError) as exc:
            raise InputError(f"labels file {path} is not readable Parquet ({exc})") from None
        if "key" not in frame.columns:
            raise InputError(f"labels file {path} has no 'key' column")
        frames.append(frame.assign(key=frame["key"].astype(str)))
    labels = pd.concat(frames, ignore_index=True)
    repeated = labels["key"][labels["key"].duplicated()]
    if not repeated.empty:
        raise InputError(f"labels repeat sample keys (e.g. {repeated.head(3).tolist()})")
    known = set(labels["key"])
    missing = [k for k in keys if k not in known]
    if missing:
        raise InputError(
            f"labels {', '.join(map(str, paths))} lack {len(missing)} of the {len(keys)} test samples "
            f"(e.g. {missing[:3]}): label the test split first"
        )
    return labels.set_index("key").loc[list(keys)].drop(columns=["lat", "lon"], errors="ignore").reset_index(drop=True)


def load_test_set(
    features: Sequence[str | os.PathLike[str]],
    labels: Sequence[str | os.PathLike[str]] = (),
    split: str | os.PathLike[str] | None = None,
    split_name: str = "test",
) -> TestSet:
    """Read the test samples (see the module docstring); the order is the feature files' order."""
    files = _expand(features, "shard-*.safetensors", "feature files")
    keep = _split_keys(Path(split), split_name) if split is not None else None
    keys: list[str] = []
    feats, coords = [], []
    identity, backbone, warning = None, "", None
    for path in files:
        shard = read_feature_shard(path)
        this = (shard.metadata["model"], shard.metadata["pretrained"], shard.metadata["dim"])
        if identity is None:
            identity, backbone = this, shard.metadata["backbone_tag"]
            warning = shard.metadata.get("warning") or None
        elif this != identity:
            raise InputError(
                f"test feature files come from different backbones: {files[0]} has {identity}, {path} {this}"
            )
        rows = np.arange(len(shard.keys)) if keep is None else np.flatnonzero([k in keep for k in shard.keys])
        keys += [shard.keys[i] for i in rows]
        feats.append(shard.features.numpy()[rows])
        coords.append(shard.latlon.numpy()[rows])
    if not keys:
        where = f" in split {split_name!r} of {split}" if split is not None else ""
        raise InputError(f"no test samples{where} in the feature files {', '.join(map(str, features))}")
    if len(set(keys)) != len(keys):
        raise InputError("the same sample key appears more than once in the test feature files")
    return TestSet(
        keys=keys,
        features=np.concatenate(feats).astype(np.float32),
        latlon=np.concatenate(coords).astype(np.float64),
        labels=read_labels(labels, keys) if labels else None,
        backbone=backbone,
        warning=warning,
        files=files,
    )


def shard_images(tars: Sequence[str | os.PathLike[str]], keys: Iterable[str]) -> dict[str, bytes]:
    """JPEG bytes of the wanted sample keys, read from WebDataset tars (files or folders of `*.tar`)."""
    wanted = set(keys)
    found: dict[str, bytes] = {}
    for tar in _expand(tars, "shard-*.tar", "shard tars"):
        try:
            for sample in webdataset.WebDataset(str(tar), shardshuffle=False, empty_check=False):
                if sample["__key__"] in wanted and "jpg" in sample:
                    found[sample["__key__"]] = sample["jpg"]
        except (tarfile.TarError, OSError, ValueError) as exc:
            raise InputError(f"shard tar {tar} is not a readable tar ({exc})") from None
        if len(found) == len(wanted):
            break
    return found
