"""Label your own points: a CSV with LAT and LON columns in, a Parquet of concept labels out.

LAT and LON are matched case-insensitively; any other columns are passed through first, as text.
Then come lat, lon, koppen_geiger, koppen_group, igbp, igbp_name, land, coast_km, country,
continent and one concept__<id> column (label in [0, 1], NaN = missing) per layer-measured
concept of the bank, rows in input order. --layers adds (or replaces) layers from a YAML config.

Exits 0 on success; 2 with a message naming the problem (missing file or column, invalid
coordinates with their CSV line numbers, an invalid bank or layers config). The output is written
atomically: a failed run leaves no partial file.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from geoconcept.validate import check_input_file, check_output_file, int_at_least

CHUNK_ROWS = 100_000
SHOWN_LINES = 10


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--points", type=Path, required=True, help="CSV with LAT and LON columns (any case)")
    parser.add_argument("--out", type=Path, required=True, help="Parquet file to write")
    parser.add_argument("--bank", type=Path, help="concept bank YAML (default: the packaged bank)")
    parser.add_argument("--layers", type=Path, help="layers config YAML adding user layers")
    parser.add_argument("--chunk-rows", type=int, default=CHUNK_ROWS, help=f"points per batch (default {CHUNK_ROWS})")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _coordinate_columns(points: Path, header: list[str]) -> tuple[str, str]:
    from geoconcept.errors import InputError

    found = {}
    for want in ("lat", "lon"):
        matches = [c for c in header if c.strip().lower() == want]
        if len(matches) != 1:
            problem = "no" if not matches else f"{len(matches)} ({matches})"
            raise InputError(f"{points}: {problem} {want.upper()} column (columns: {header})")
        found[want] = matches[0]
    return found["lat"], found["lon"]


def _check_coordinates(points: Path, lat_col: str, lon_col: str) -> int:
    """The number of points; every bad coordinate in the file reported by CSV line number, before any work."""
    import numpy as np
    import pandas as pd

    from geoconcept.errors import InputError

    coords = pd.read_csv(points, usecols=[lat_col, lon_col], dtype=str)
    lat = pd.to_numeric(coords[lat_col], errors="coerce").to_numpy(dtype=np.float64)
    lon = pd.to_numeric(coords[lon_col], errors="coerce").to_numpy(dtype=np.float64)
    with np.errstate(invalid="ignore"):
        bad = np.flatnonzero(~(np.isfinite(lat) & np.isfinite(lon) & (np.abs(lat) <= 90) & (np.abs(lon) <= 180)))
    if bad.size:
        lines = ", ".join(str(i + 2) for i in bad[:SHOWN_LINES]) + (", ..." if bad.size > SHOWN_LINES else "")
        raise InputError(
            f"{points}: {bad.size} of {lat.size} rows have invalid coordinates (empty, not a number, latitude "
            f"outside [-90, 90] or longitude outside [-180, 180]) on line(s) {lines}"
        )
    return int(lat.size)


def run(args: argparse.Namespace) -> int:
    import pandas as pd
    from tqdm import tqdm

    from geoconcept.concepts.bank import load_bank
    from geoconcept.concepts.labels import POINT_COLUMNS, label_metadata, label_points, write_labels
    from geoconcept.errors import InputError
    from geoconcept.layers.registry import Registry

    points: Path = args.points
    int_at_least(args.chunk_rows, "--chunk-rows", 1)
    check_input_file(points, "points file")
    check_output_file(args.out, "--out")
    registry = Registry.from_config(args.layers)
    bank = load_bank(args.bank, registry=registry)
    try:
        header = list(pd.read_csv(points, nrows=0).columns)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise InputError(f"{points} is not a readable CSV: {exc}") from exc
    lat_col, lon_col = _coordinate_columns(points, header)
    extra = [c for c in header if c not in (lat_col, lon_col)]
    clashes = [c for c in extra if c in POINT_COLUMNS or c.startswith("concept__")]
    if clashes:
        raise InputError(f"{points}: column(s) {clashes} would clash with output columns; rename them")
    rows = _check_coordinates(points, lat_col, lon_col)

    def labelled_chunks():
        with tqdm(total=rows, unit="points", desc="label", disable=args.no_progress) as progress:
            chunks = (
                pd.read_csv(points, dtype=str, chunksize=args.chunk_rows)
                if rows
                else [pd.DataFrame({c: pd.Series([], dtype="str") for c in header})]
            )
            for chunk in chunks:
                labels = label_points(
                    pd.to_numeric(chunk[lat_col]).to_numpy(dtype="float64"),
                    pd.to_numeric(chunk[lon_col]).to_numpy(dtype="float64"),
                    bank,
                    registry,
                )
                progress.update(len(chunk))
                yield pd.concat([chunk[extra].reset_index(drop=True), labels], axis=1)

    write_labels(labelled_chunks(), args.out, label_metadata(bank, registry))
    print(f"label: {rows} points, {len(bank.measured)} concept labels -> {args.out}")
    return 0
