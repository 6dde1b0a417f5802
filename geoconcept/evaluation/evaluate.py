"""Evaluate trained checkpoints on one test set and write the report folder.

`evaluate(config)` takes explicit inputs (see geoconcept.evaluation.config) — checkpoints with
their galleries, test feature files, test labels — and refuses to compare runs that were not
evaluated on identical test samples (same keys in the same order) and identical gallery
coordinates. It writes into `config.out`:

* `report.md`, `report.html` — every table and figure below, with the findings in words;
* `predictions.parquet` — GeoParquet of every run's predictions (see evaluation.predict);
* `metrics.json` — per-run metrics and the per-variant mean/std (numbers, for machines);
* `tables/<name>.csv` — each table of the report;
* `figures/<name>.png` — accuracy curves, error map per variant, concept maps, explanation grid.

Everything is recomputed on a re-run (a few seconds to minutes) and each file is replaced
atomically; files a previous evaluation left in `tables/` and `figures/` that this one did not
write are removed, as are temporaries of a crashed run. The lowest seed of each variant is its
*shown* run for figures, the error-bin table and explanations; tables over seeds use all of them.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from geoconcept import atomic
from geoconcept.concepts.bank import ConceptBank, load_bank
from geoconcept.errors import ConfigError, InputError
from geoconcept.evaluation import downstream, faithfulness, figures, report
from geoconcept.evaluation.config import EvaluationConfig, RunSpec
from geoconcept.evaluation.explain import explain_features, format_terms, guess_contributions, top_terms
from geoconcept.evaluation.metrics import (
    THRESHOLDS_KM,
    accuracy_columns,
    accuracy_table,
    error_summary,
    format_mean_spread,
    haversine_km,
    published_table,
    summarise_runs,
    variant_sort_key,
)
from geoconcept.evaluation.predict import GalleryPredictions, predict_locations, predictions_frame, write_predictions
from geoconcept.evaluation.testset import LABEL_PREFIX, TestSet, load_test_set, shard_images
from geoconcept.gallery import Gallery
from geoconcept.layers.registry import Registry
from geoconcept.model.checkpoint import load_model
from geoconcept.model.geoconcept_model import GeoConceptModel

ImageSource = Callable[[Sequence[str]], Mapping[str, bytes]]
MIN_SEEDS = 3
DEFAULT_MAPPED_CONCEPTS = 4
SHOWCASE_ORDER = ("concept+supervised", "concept", "geoclip")
TOP_CONCEPTS = 3


@dataclass
class LoadedRun:
    spec: RunSpec
    variant: str
    seed: int
    model: GeoConceptModel
    gallery: Gallery
    test: TestSet

    @property
    def label(self) -> str:
        return f"{self.variant} (seed {self.seed})"


@dataclass
class RunOutput:
    run: LoadedRun
    found: GalleryPredictions
    errors_km: np.ndarray
    metrics: dict[str, float]
    top_concepts: list[str]


@dataclass
class EvaluationResult:
    out_dir: Path
    report_md: Path
    report_html: Path
    predictions: Path
    metrics_json: Path
    tables: dict[str, pd.DataFrame]  # name → table, as in the report
    figures: dict[str, Path]  # name → PNG
    findings: list[str]  # the accuracy comparison in words
    warnings: list[str] = field(default_factory=list)


# loading and checking ------------------------------------------------------------------------
def _seed_of(model: GeoConceptModel, spec: RunSpec) -> int:
    try:
        recorded = json.loads(model.checkpoint_metadata.get("config") or "{}").get("seed")
    except (json.JSONDecodeError, AttributeError):
        recorded = None
    if spec.seed is not None:
        if recorded is not None and int(recorded) != spec.seed:
            raise ConfigError(
                f"run {spec.checkpoint}: seed {spec.seed} given, but the checkpoint was trained with seed {recorded}"
            )
        return spec.seed
    if recorded is None:
        raise ConfigError(f"run {spec.checkpoint}: the checkpoint does not record its training seed; give `seed`")
    return int(recorded)


def load_runs(config: EvaluationConfig, shared: TestSet) -> list[LoadedRun]:
    runs = []
    for spec in config.runs:
        model = load_model(spec.checkpoint_file)
        if spec.variant is not None and spec.variant != model.variant:
            raise ConfigError(
                f"run {spec.checkpoint}: variant {spec.variant!r} given, the checkpoint is {model.variant!r}"
            )
        test = shared
        if spec.features is not None:
            test = load_test_set(spec.features, config.labels, config.split, config.split_name)
        if model.backbone and test.backbone and model.backbone != test.backbone:
            raise InputError(
                f"checkpoint {spec.checkpoint_file} was trained on {model.backbone} features, "
                f"the test features {test.files[0]} are {test.backbone}"
            )
        runs.append(LoadedRun(spec, model.variant, _seed_of(model, spec), model, Gallery.load(spec.gallery), test))
    seen: dict[tuple[str, int], Path] = {}
    for run in runs:
        key = (run.variant, run.seed)
        if key in seen:
            raise ConfigError(f"{run.label} is listed twice ({seen[key]} and {run.spec.checkpoint})")
        seen[key] = run.spec.checkpoint
    return runs


def check_comparable(runs: Sequence[LoadedRun]) -> None:
    """All runs must see the same test samples (keys, order, coordinates) and the same gallery
    coordinates, and each gallery must have been built with its own checkpoint."""
    first = runs[0]
    for run in runs:
        built_with = run.gallery.info.get("checkpoint_sha256")
        if built_with != run.model.checkpoint_sha256:
            raise InputError(
                f"gallery {run.spec.gallery} was built with checkpoint {str(built_with)[:12]}…, not with "
                f"{run.spec.checkpoint_file} ({str(run.model.checkpoint_sha256)[:12]}…): rebuild it"
            )
    for run in runs[1:]:
        a, b = first.test, run.test
        if a.keys != b.keys:
            if set(a.keys) == set(b.keys):
                problem = "the same samples in a different order"
            else:
                only_a, only_b = sorted(set(a.keys) - set(b.keys)), sorted(set(b.keys) - set(a.keys))
                problem = (
                    f"{len(only_a)} samples only in the first (e.g. {only_a[:3]}), "
                    f"{len(only_b)} only in the other (e.g. {only_b[:3]})"
                )
            raise InputError(f"{first.label} and {run.label} are not evaluated on identical test samples: {problem}")
        if not np.array_equal(a.latlon, b.latlon):
            raise InputError(f"{first.label} and {run.label}: the same test keys have different coordinates")
        g, h = first.gallery.latlon, run.gallery.latlon
        if g.shape != h.shape or not np.array_equal(g, h):
            detail = f"{len(g)} vs {len(h)} locations"
            if g.shape == h.shape:
                row = int(np.argmax(~(g == h).all(axis=1)))
                detail = f"row {row} is {tuple(g[row])} vs {tuple(h[row])}"
            raise InputError(
                f"{first.label} and {run.label} use galleries with different coordinates "
                f"({first.spec.gallery} vs {run.spec.gallery}: {detail})"
            )


# the parts of the evaluation ----------------------------------------------------------------------
def _shown_runs(runs: Sequence[LoadedRun]) -> dict[str, LoadedRun]:
    """The lowest-seed run of each variant, in variant order."""
    shown: dict[str, LoadedRun] = {}
    for run in sorted(runs, key=lambda r: (variant_sort_key(r.variant), r.seed)):
        shown.setdefault(run.variant, run)
    return shown


def predict_run(run: LoadedRun, refine_k: int | None) -> RunOutput:
    found = predict_locations(run.model, run.gallery, run.test.features, refine_k=refine_k)
    metrics = error_summary(found.latlon, run.test.latlon)
    terms = guess_contributions(run.model, run.test.features, found.latlon[:, None, :])
    tops = (
        [""] * len(run.test)
        if terms is None
        else [format_terms(top_terms(t[0], run.model.concept_ids, TOP_CONCEPTS)) for t in terms]
    )
    errors = haversine_km(found.latlon, run.test.latlon)
    return RunOutput(run, found, errors, metrics, tops)


def _fmt(mean: float, std: float) -> str:
    return format_mean_spread(mean, std, decimals=3)


def faithfulness_tables(outputs: Sequence[RunOutput]) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Per-run rows, the per-concept table (mean ± std over seeds per variant), and a per-variant summary."""
    per_run = []
    for out in outputs:
        run = out.run
        if run.model.concepts is None or run.test.labels is None:
            continue
        table = faithfulness.faithfulness_table(run.model, run.test.features, run.test.latlon, run.test.labels)
        per_run.append(table.assign(variant=run.variant, seed=run.seed))
    if not per_run:
        return pd.DataFrame(), pd.DataFrame(), pd.DataFrame()
    long = pd.concat(per_run, ignore_index=True)
    first = long.drop_duplicates("concept")[["concept", "n", "positives", "prevalence", "note"]].reset_index(drop=True)
    wide = first[["concept", "n", "positives", "prevalence"]].copy()
    variants = sorted(long["variant"].unique(), key=variant_sort_key)
    summary = []
    for variant in variants:
        part = long[long["variant"] == variant]
        for metric, title in (
            ("auroc_image", "AUROC img"),
            ("auroc_location", "AUROC loc"),
            ("ap_image", "AP img"),
            ("ap_location", "AP loc"),
        ):
            stats = part.groupby("concept", sort=False)[metric].agg(["mean", "std"])
            wide[f"{variant}: {title}"] = [_fmt(*stats.loc[c]) for c in wide["concept"]]
        for side in ("image", "location"):
            per_seed = part.groupby("seed")[f"auroc_{side}"].mean()
            evaluable = part[part["seed"] == part["seed"].min()][f"auroc_{side}"].notna()
            above = part.groupby("concept")[f"auroc_{side}"].mean() > 0.5
            summary.append(
                {
                    "variant": variant,
                    "side": side,
                    "mean AUROC over concepts": _fmt(
                        per_seed.mean(), per_seed.std(ddof=1) if len(per_seed) > 1 else np.nan
                    ),
                    "concepts evaluated": int(evaluable.sum()),
                    "concepts with AUROC > 0.5": int(above.sum()),
                    "seeds": int(part["seed"].nunique()),
                }
            )
    wide["note"] = first["note"]
    return long, wide, pd.DataFrame(summary)


def _mapped_concepts(config: EvaluationConfig, bank: ConceptBank, runs: Sequence[LoadedRun]) -> list[str]:
    model_ids = {c for r in runs if r.model.concepts is not None for c in r.model.concept_ids}
    ruled = [c.id for c in bank.measured if c.id in model_ids]
    if config.concept_maps is not None:
        unknown = [c for c in config.concept_maps if c not in ruled]
        if unknown:
            raise ConfigError(
                f"concept_maps: {unknown} are not layer-measured concepts of both the bank and the models"
            )
        return list(config.concept_maps)
    labels = next((r.test.labels for r in runs if r.test.labels is not None), None)
    if labels is not None:
        present = {c: float((labels[LABEL_PREFIX + c] >= 0.5).sum()) for c in ruled if LABEL_PREFIX + c in labels}
        ruled = sorted(present, key=lambda c: -present[c])
    return ruled[:DEFAULT_MAPPED_CONCEPTS]


def downstream_tables(
    config: EvaluationConfig, runs: Sequence[LoadedRun], bank: ConceptBank, registry: Registry
) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    settings = config.downstream
    notes: list[str] = []
    points = downstream.random_land_points(settings.points, settings.seed, registry)
    tasks = downstream.builtin_tasks(points, registry)
    tasks += [downstream.user_task(t.path, t.name, t.column, t.kind) for t in settings.tasks]  # type: ignore[arg-type]
    reps: dict[str, downstream.Representation] = {
        "lat/lon": downstream.latlon_degrees,
        "xyz + Fourier": downstream.xyz_fourier,
    }
    if settings.geoclip_pretrained:
        from geoconcept.bundled import BundledDataMissing
        from geoconcept.model.location_encoder import LocationEncoder

        try:
            encoder = LocationEncoder.from_geoclip()
            reps["GeoCLIP pretrained"] = lambda p: encoder.embed(p).numpy()
        except BundledDataMissing as exc:
            notes.append(f"GeoCLIP's pretrained encoder left out: {exc}")
    group = {name: name for name in reps}
    chosen = runs if settings.seeds == "all" else list(_shown_runs(runs).values())
    for run in sorted(chosen, key=lambda r: (variant_sort_key(r.variant), r.seed)):
        reps[run.label] = lambda p, m=run.model: m.embed_locations(p).cpu().numpy()
        group[run.label] = run.variant
    long = downstream.run_probes(tasks, reps, seed=settings.seed, control="xyz + Fourier")
    long["group"] = long["representation"].map(lambda r: group.get(r, r))
    supervised = [r for r in runs if r.variant == "concept+supervised"]
    layers = downstream.supervision_layers(bank, supervised[0].model.concept_ids) if supervised else set()
    rows = []
    for task in tasks:
        for probe in downstream.PROBES:
            part = long[(long["task"] == task.name) & (long["probe"] == probe)]
            shared = sorted(downstream.with_sources(task.layers) & layers)
            row = {
                "task": task.name,
                "source": task.description,
                "metric": task.metric,
                "probe": probe,
                "shares a layer with supervision": ("yes: " + ", ".join(shared))
                if shared
                else ("no" if supervised else "n/a"),
            }
            for name in dict.fromkeys(group[r] for r in reps):
                values = part.loc[part["group"] == name, "test"]
                row[name] = _fmt(values.mean(), values.std(ddof=1) if len(values) > 1 else np.nan)
            row["chance"] = f"{part['chance'].iloc[0]:.3f}"
            control = part.loc[part["representation"] == "shuffled-label control", "test"]
            row["shuffled-label control"] = f"{control.iloc[0]:.3f}"
            row["points (train/val/test)"] = (
                f"{part['n_train'].iloc[0]}/{part['n_val'].iloc[0]}/{part['n_test'].iloc[0]}"
            )
            rows.append(row)
    return long, pd.DataFrame(rows), notes


def _explained_rows(errors_km: np.ndarray, n: int) -> np.ndarray:
    """`n` test rows spread evenly over the error distribution (best … worst), deterministic."""
    order = np.argsort(errors_km, kind="stable")
    picks = np.unique(np.linspace(0, len(order) - 1, min(n, len(order))).round().astype(int))
    return order[picks]


def _facts(config: EvaluationConfig, test: TestSet, runs: Sequence[LoadedRun]) -> list[str]:
    """What was evaluated, in words, for the top of the report."""
    split = f", split {config.split_name!r} of `{config.split}`" if config.split else ""
    info = runs[0].gallery.info
    seeds = {
        v: sorted(r.seed for r in runs if r.variant == v)
        for v in sorted({r.variant for r in runs}, key=variant_sort_key)
    }
    method = (
        f"probability-weighted mean of the top {config.refine_k} gallery candidates near the best (refinement)"
        if config.refine_k
        else "top-1 of the gallery (GeoCLIP's rule)"
    )
    return [
        f"test set: {len(test):,} images, `{test.backbone}` features from {len(test.files)} file(s){split}",
        f"gallery: {len(runs[0].gallery):,} locations (source `{info.get('source', '?')}`, {info.get('factory', '?')} "
        "index); every run uses the same coordinates (checked), each embedded by its own checkpoint",
        "runs: " + "; ".join(f"`{v}` seeds {', '.join(map(str, s))}" for v, s in seeds.items()),
        f"prediction: {method}; distance: great-circle, mean Earth radius 6371 km; within t km means error <= t",
        "± is the sample standard deviation over training seeds (ddof = 1); "
        "no hyper-parameter was tuned on this test set",
    ]


def _clear_stale(folder: Path, suffix: str, keep: set[str]) -> None:
    """Remove files of an earlier evaluation that this one did not write, and crashed writers' temporaries."""
    if folder.is_dir():
        for path in folder.iterdir():
            stale = path.suffix == suffix and path.name not in keep
            if path.is_file() and (stale or atomic.TEMP_MARKER in path.name):
                path.unlink()


# the evaluation -----------------------------------------------------------------------------------------
def evaluate(
    config: EvaluationConfig, *, images: ImageSource | None = None, progress: bool = False
) -> EvaluationResult:
    """Run the whole evaluation (see the module docstring). `images(keys) → {key: JPEG bytes}` feeds the
    explanation grid; by default the images are read from `config.shards`."""
    stages = [
        "test set",
        "checkpoints",
        "predictions",
        "faithfulness",
        "concept maps",
        "downstream",
        "explanations",
        "report",
    ]
    bar = tqdm(total=len(stages), disable=not progress, file=sys.stderr, unit="stage")

    started: list[str] = []

    def stage(name: str) -> None:
        if started:  # the previous stage is done
            bar.update(1)
        started.append(name)
        bar.set_description(name)

    out = Path(config.out)
    warnings: list[str] = []
    tables: dict[str, pd.DataFrame] = {}
    pngs: dict[str, bytes] = {}
    captions: dict[str, str] = {}

    stage("test set")
    atomic.remove_stale_temps(out, ["report.md", "report.html", "predictions.parquet", "metrics.json"])
    shared = load_test_set(config.features, config.labels, config.split, config.split_name)
    registry = Registry.from_config(config.layers)
    bank = load_bank(config.bank, registry)
    if shared.warning:
        warnings.append(f"test features: {shared.warning}; accuracies measure the pipeline, not a real image model")

    stage("checkpoints")
    runs = load_runs(config, shared)
    check_comparable(runs)
    for variant, count in pd.Series([r.variant for r in runs]).value_counts().items():
        if count < MIN_SEEDS:
            warnings.append(f"{variant}: {count} seed(s); at least {MIN_SEEDS} are needed for a meaningful spread")
    for run in runs:
        recorded = run.model.checkpoint_metadata.get("bank_sha256")
        if run.model.concepts is not None and recorded and recorded != bank.sha256:
            warnings.append(
                f"{run.label}: trained with concept bank {recorded[:12]}…, the evaluation reads {bank.sha256[:12]}…"
            )

    stage("predictions")
    outputs = [predict_run(run, config.refine_k) for run in runs]
    per_run = pd.DataFrame([{"variant": o.run.variant, "seed": o.run.seed, **o.metrics} for o in outputs])
    per_run = per_run.sort_values(
        ["variant", "seed"], key=lambda s: s.map(variant_sort_key) if s.name == "variant" else s
    )
    per_run = per_run.reset_index(drop=True)
    tables["accuracy"] = accuracy_table(per_run)
    tables["published_im2gps3k"] = published_table()
    tables["accuracy_per_run"] = per_run
    findings = report.accuracy_findings(per_run)
    frames = [
        predictions_frame(
            o.run.test.keys, o.run.test.latlon, o.found.latlon, o.found.scores[:, 0],
            variant=o.run.variant, seed=o.run.seed, top_concepts=o.top_concepts,
        )
        for o in outputs
    ]  # fmt: skip
    predictions_path = write_predictions(frames, out / "predictions.parquet")
    shown = _shown_runs(runs)
    by_run = {(o.run.variant, o.run.seed): o for o in outputs}
    pngs["accuracy_curves"] = figures.accuracy_curve_png({k: o.errors_km for k, o in by_run.items()})
    captions["accuracy_curves"] = "Share of test images within d km, per variant (line: mean over seeds; band: min–max)"
    for variant, run in shown.items():
        o = by_run[(variant, run.seed)]
        title = f"{run.label}: errors of {len(run.test):,} test images (median {o.metrics['median_km']:,.0f} km)"
        name = f"error_map_{variant.replace('+', '_')}"
        pngs[name] = figures.error_map_png(run.test.latlon, o.found.latlon, title)
        captions[name] = f"Errors of {run.label}: a line from each true location to its prediction"

    stage("faithfulness")
    faith_long, faith_wide, faith_summary = faithfulness_tables(outputs)
    if not faith_wide.empty:
        tables["faithfulness"], tables["faithfulness_summary"], tables["faithfulness_per_run"] = (
            faith_wide,
            faith_summary,
            faith_long,
        )
    bins = []
    for variant, run in shown.items():
        if run.model.concepts is not None:
            z_img = run.model.image_concepts(run.test.features).cpu().numpy()
            table = faithfulness.error_bin_table(by_run[(variant, run.seed)].errors_km, z_img, run.model.concept_ids)
            bins.append(table.assign(variant=run.label))
    if bins:
        tables["error_bins"] = pd.concat(bins, ignore_index=True)

    stage("concept maps")
    concept_runs = [r for r in shown.values() if r.model.concepts is not None]
    mapped = _mapped_concepts(config, bank, concept_runs) if concept_runs else []
    correlations = []
    if mapped:
        truths = faithfulness.truth_grids([bank[c] for c in mapped], registry, config.map_width)
        for run in concept_runs:
            for cmap in faithfulness.concept_maps(run.model, truths, config.map_width):
                name = f"concept_map_{run.variant.replace('+', '_')}_{cmap.concept}"
                pngs[name] = figures.concept_map_png(cmap)
                captions[name] = f"`{cmap.concept}`, {run.label}: location-side score (left) and raster truth (right)"
                correlations.append(
                    {
                        "concept": cmap.concept,
                        "run": run.label,
                        "pearson": cmap.pearson,
                        "spearman": cmap.spearman,
                        "cells": cmap.cells,
                    }
                )
    if correlations:
        tables["concept_map_correlation"] = pd.DataFrame(correlations)

    stage("downstream")
    if config.downstream.enabled:
        probe_long, probe_wide, notes = downstream_tables(config, runs, bank, registry)
        tables["downstream"], tables["downstream_per_fit"] = probe_wide, probe_long
        warnings += notes

    stage("explanations")
    explained = []
    if config.explain_images > 0:
        showcase = next(shown[v] for v in (*SHOWCASE_ORDER, *shown) if v in shown)
        rows = _explained_rows(by_run[(showcase.variant, showcase.seed)].errors_km, config.explain_images)
        keys = [showcase.test.keys[i] for i in rows]
        explained = explain_features(
            showcase.model, showcase.gallery, showcase.test.features[rows], keys,
            top_k=config.explain_top_k, true_latlon=showcase.test.latlon[rows],
        )  # fmt: skip
        source = images or (lambda k: shard_images(config.shards, k) if config.shards else {})
        thumbnails = source(keys)
        if len(thumbnails) < len(keys):
            warnings.append(
                f"explanation grid: {len(keys) - len(thumbnails)} of {len(keys)} images not found (grey squares)"
            )
        pngs["explanations"] = figures.explanation_grid_png(explained, thumbnails)
        captions["explanations"] = (
            f"Test images of {showcase.label}, spread from best to worst error: top guesses with the nearest GeoNames "
            "place, and the concepts contributing most to guess 1 (+: image and place agree on the concept)"
        )

    stage("report")
    figure_paths = {name: out / "figures" / f"{name}.png" for name in pngs}
    for name, data in pngs.items():
        atomic.write_bytes(figure_paths[name], data)
    for name, table in tables.items():
        atomic.write_text(out / "tables" / f"{name}.csv", table.to_csv(index=False))
    _clear_stale(out / "figures", ".png", {p.name for p in figure_paths.values()})
    _clear_stale(out / "tables", ".csv", {f"{n}.csv" for n in tables})
    summary = summarise_runs(per_run, list(accuracy_columns(THRESHOLDS_KM)))
    metrics_json = out / "metrics.json"
    atomic.write_json(
        metrics_json,
        {
            "name": config.name,
            "test_samples": len(shared),
            # NaN (the spread of a single seed) is not JSON: null
            "per_run": per_run.astype(object).where(per_run.notna(), None).to_dict(orient="records"),
            "per_variant": summary.astype(object).where(summary.notna(), None).to_dict(orient="records"),
            "findings": findings,
            "warnings": warnings,
        },
    )
    md, page = report.write_evaluation_report(
        out,
        config.name,
        facts=_facts(config, shared, runs),
        tables=tables,
        figures={n: (str(p.relative_to(out)), captions[n]) for n, p in figure_paths.items()},
        findings=findings,
        warnings=warnings,
        explained=explained,
    )
    bar.update(1)
    bar.close()
    return EvaluationResult(out, md, page, predictions_path, metrics_json, tables, figure_paths, findings, warnings)
