"""Reading user point tables (CSV or Parquet with LAT/LON columns in any case)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from geoconcept.errors import InputError


def read_point_table(path: str | os.PathLike[str], what: str) -> tuple[pd.DataFrame, np.ndarray]:
    """The table and its (N, 2) float64 lat/lon. `what` names the file in errors ("task table", ...):
    a missing or unreadable file, missing LAT/LON columns or any invalid coordinate is an InputError."""
    path = Path(path)
    try:
        table = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
    except FileNotFoundError:
        raise InputError(f"{what} {path} not found") from None
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise InputError(f"{what} {path} is unreadable ({exc})") from None
    by_lower = {c.lower(): c for c in table.columns}
    if "lat" not in by_lower or "lon" not in by_lower:
        raise InputError(f"{what} {path} needs LAT and LON columns, has {list(table.columns)}")
    latlon = table[[by_lower["lat"], by_lower["lon"]]].to_numpy(dtype=np.float64)
    bad = ~np.isfinite(latlon).all(1) | (np.abs(latlon[:, 0]) > 90) | (np.abs(latlon[:, 1]) > 180)
    if bad.any():
        raise InputError(
            f"{what} {path}: {int(bad.sum())} rows have invalid coordinates (first: row {int(np.argmax(bad))})"
        )
    return table, latlon
