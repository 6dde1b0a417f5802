"""How much each candidate concept is worth, measured on a set of points (`geoconcept concepts score`).

The points are a seeded sample uniform on the sphere (land and sea alike: latitude = asin(u),
u ~ U(-1, 1), longitude ~ U(-180, 180)) or a given table of training points; they are labelled with
the real labelling code (`geoconcept.concepts.labels.label_points`), soft labels y ∈ [0, 1] or NaN.

Location cells are equal-area: `bands` latitude bands equally spaced in sin(latitude) (on a sphere a
band's area is proportional to its sin-latitude extent) times 2·bands longitude bins of equal width
starting at -180°, so every cell has the same area and the meridians 0° and ±90° are cell edges.

Columns of the table (one row per candidate, in the candidates' order):

- `measured`: the concept has a rule (else the measured columns are NaN);
- `labelled`: share of the points with a label (not NaN);
- `coverage`: share of the points whose label is >= 0.5;
- `spread`: entropy of the concept's label mass over the SPREAD_BANDS grid's cells divided by
  log(cells): 1 = spread evenly over the globe, 0 = all in one cell;
- `mi_<cells>`: mutual information (bits) between Y ~ Bernoulli(y) and the cell, a plug-in estimate
  over the labelled points, one column per resolution of MI_BANDS; `mi`: their mean (what
  `concepts select` maximises);
- `redundancy`, `redundant_with`: the highest |Pearson r| of the labels with another measured
  concept's (NaN labels count as 0), and that concept;
- `duplicate_cosine`, `duplicate_of`: the highest cosine between the concept's mean prompt
  embedding and another concept's, and that concept (NaN without an embedder);
- `correlated`/`correlations`: every measured concept with |r| >= PAIR_MIN_R and its r;
  `similar`/`similarities`: every concept with cosine >= PAIR_MIN_COSINE and its cosine (the
  selection's redundancy penalty and near-duplicate merging read these).

A concept that covers exactly the western hemisphere has coverage 1/2, spread log(cells/2)/log(cells)
and 1 bit of mutual information at every resolution (each cell is all in or all out).

How far a trained checkpoint's location-side map separates regions is not scored (not built).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from geoconcept import atomic
from geoconcept.concepts.bank import ConceptBank
from geoconcept.concepts.labels import label_points
from geoconcept.layers.registry import Registry

MI_BANDS = (2, 6, 18)  # 8, 72 and 648 equal-area cells
SPREAD_BANDS = 6
PAIR_MIN_R = 0.1
PAIR_MIN_COSINE = 0.9
DEFAULT_POINTS = 10_000

Embedder = Callable[[list[str]], np.ndarray]


def sphere_points(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """`n` points uniform on the sphere (lat, lon in degrees), reproducible from `seed`."""
    rng = np.random.default_rng(seed)
    lat = np.degrees(np.arcsin(rng.uniform(-1.0, 1.0, n)))
    return lat, rng.uniform(-180.0, 180.0, n)


def equal_area_cells(lat: np.ndarray, lon: np.ndarray, bands: int) -> tuple[np.ndarray, int]:
    """Cell index of each point in the bands × 2·bands equal-area grid, and the number of cells."""
    row = np.clip(((np.sin(np.radians(lat)) + 1.0) / 2.0 * bands).astype(np.int64), 0, bands - 1)
    col = np.clip(((lon + 180.0) / 360.0 * 2 * bands).astype(np.int64), 0, 2 * bands - 1)
    return row * 2 * bands + col, 2 * bands * bands


def _binary_entropy(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 0.0, 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        h = -(p * np.log2(p) + (1 - p) * np.log2(1 - p))
    return np.nan_to_num(h, nan=0.0)


def mutual_information(y: np.ndarray, cells: np.ndarray, n_cells: int) -> float:
    """I(Y; cell) in bits for soft labels y (NaN rows ignored): H(mean y) − Σ_cell w·H(mean y in cell)."""
    known = ~np.isnan(y)
    if not known.any():
        return float("nan")
    y, cells = y[known], cells[known]
    count = np.bincount(cells, minlength=n_cells)
    mass = np.bincount(cells, weights=y, minlength=n_cells)
    used = count > 0
    conditional = (count[used] / y.size * _binary_entropy(mass[used] / count[used])).sum()
    return float(_binary_entropy(np.array([y.mean()]))[0] - conditional)


def spread(y: np.ndarray, cells: np.ndarray, n_cells: int) -> float:
    """Normalised entropy of the label mass over cells (0: one cell, 1: even over all)."""
    mass = np.bincount(cells, weights=np.nan_to_num(y, nan=0.0), minlength=n_cells)
    if mass.sum() <= 0:
        return float("nan")
    p = mass[mass > 0] / mass.sum()
    return float(-(p * np.log(p)).sum() / np.log(n_cells))


def _pairs(
    matrix: np.ndarray, ids: list[str], rows: Sequence[int], minimum: float
) -> list[tuple[list, list, str, float]]:
    """Per row: (ids, values) of the other columns with |value| >= minimum, the top one and its value."""
    out = []
    for i in rows:
        values = matrix[i].copy()
        values[i] = np.nan
        magnitude = np.nan_to_num(np.abs(values), nan=-1.0)
        top = int(np.argmax(magnitude))
        keep = np.flatnonzero(magnitude >= minimum)
        out.append(([ids[j] for j in keep], [round(float(values[j]), 4) for j in keep], ids[top], values[top]))
    return out


def score_concepts(
    bank: ConceptBank,
    registry: Registry,
    lat: np.ndarray,
    lon: np.ndarray,
    embed: Embedder | None = None,
) -> pd.DataFrame:
    """The scores table of `bank`'s concepts on the points (see the module docstring)."""
    ids = bank.ids
    table = pd.DataFrame(
        {"id": ids, "category": [c.category for c in bank], "measured": [c.rule is not None for c in bank]}
    )
    for column in ("labelled", "coverage", "spread", *(f"mi_{2 * b * b}" for b in MI_BANDS), "mi", "redundancy"):
        table[column] = np.nan
    for column in ("redundant_with", "duplicate_of"):
        table[column] = pd.Series([None] * len(ids), dtype=object)
    table["duplicate_cosine"] = np.nan
    table["correlated"] = table["correlations"] = table["similar"] = table["similarities"] = [[] for _ in ids]
    measured = [i for i, c in enumerate(bank) if c.rule is not None]
    if measured:
        _score_measured(table, bank, registry, lat, lon, measured)
    if embed is not None:
        # One call for every prompt (the tower batches them), then each concept's mean.
        flat = embed([p for c in bank for p in c.prompts])
        starts = np.cumsum([0] + [len(c.prompts) for c in bank])
        vectors = np.stack([flat[a:b].mean(axis=0) for a, b in itertools.pairwise(starts)])
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        cosine = vectors @ vectors.T
        for i, (near, values, top, value) in enumerate(_pairs(cosine, ids, range(len(ids)), PAIR_MIN_COSINE)):
            table.at[i, "similar"], table.at[i, "similarities"] = near, values
            table.at[i, "duplicate_of"], table.at[i, "duplicate_cosine"] = top, float(value)
    return table


def _score_measured(
    table: pd.DataFrame, bank: ConceptBank, registry: Registry, lat: np.ndarray, lon: np.ndarray, rows: list[int]
) -> None:
    labels = label_points(lat, lon, bank, registry)
    lon = labels["lon"].to_numpy()
    grids = {b: equal_area_cells(labels["lat"].to_numpy(), lon, b) for b in {*MI_BANDS, SPREAD_BANDS}}
    matrix = np.column_stack([labels[bank.concepts[i].column].to_numpy(dtype=np.float64) for i in rows])
    for j, i in enumerate(rows):
        y = matrix[:, j]
        table.at[i, "labelled"] = float((~np.isnan(y)).mean())
        table.at[i, "coverage"] = float((np.nan_to_num(y, nan=0.0) >= 0.5).mean())
        table.at[i, "spread"] = spread(y, *grids[SPREAD_BANDS])
        mis = [mutual_information(y, *grids[b]) for b in MI_BANDS]
        for b, value in zip(MI_BANDS, mis, strict=True):
            table.at[i, f"mi_{2 * b * b}"] = value
        table.at[i, "mi"] = float(np.nanmean(mis)) if not np.isnan(mis).all() else np.nan
    filled = np.nan_to_num(matrix, nan=0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        corr = np.corrcoef(filled, rowvar=False).reshape(len(rows), len(rows))
    corr = np.nan_to_num(corr, nan=0.0)  # a constant label correlates with nothing
    measured_ids = [bank.concepts[i].id for i in rows]
    for j, (near, values, top, value) in enumerate(_pairs(corr, measured_ids, range(len(rows)), PAIR_MIN_R)):
        i = rows[j]
        table.at[i, "correlated"], table.at[i, "correlations"] = near, values
        if len(rows) > 1:
            table.at[i, "redundant_with"], table.at[i, "redundancy"] = top, abs(float(value))


def text_tower_embedder(model_name: str = "ViT-B-32", pretrained: str | None = None) -> Embedder:
    """prompts → L2-normalised embeddings from the same open_clip text tower as `concepts embed`
    (randomly initialised with its fixed seed when `pretrained` is None)."""
    import open_clip

    from geoconcept.concepts.embeddings import SEED, _create_model, encode_prompts

    model = _create_model(model_name, pretrained, SEED)
    tokenizer = open_clip.get_tokenizer(model_name)
    return lambda prompts: encode_prompts(model, tokenizer, prompts).numpy()


def write_scores(table: pd.DataFrame, out: str | Path) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic.atomic_path(out) as tmp:
        table.to_parquet(tmp, index=False)
    return out


def read_scores(path: str | Path) -> pd.DataFrame:
    from geoconcept.errors import InputError

    try:
        return pd.read_parquet(path)
    except FileNotFoundError:
        raise InputError(f"scores table {path} not found") from None
    except (OSError, ValueError) as exc:
        raise InputError(f"scores table {path} is not a readable Parquet file ({exc})") from None


def display_table(table: pd.DataFrame, digits: int = 3) -> pd.DataFrame:
    """The per-concept columns (no pair lists), floats rounded, best `mi` first: for the UI and README."""
    columns = [c for c in table.columns if c not in ("correlated", "correlations", "similar", "similarities")]
    shown = table[columns].sort_values("mi", ascending=False, kind="stable", na_position="last")
    return shown.round(digits).reset_index(drop=True)
