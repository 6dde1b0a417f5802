"""What an evaluation reads and writes, from a YAML file or built in code.

    name: sample                      # title of the report
    out: evaluation/sample            # report folder (relative paths: relative to this file)
    features: [features/sample/ViT-S-32-alt__none/test]   # test feature files or folders
    labels: [labels/sample/test]      # optional: concept labels of the test samples
    split: null                       # optional: split Parquet (key, split) ...
    split_name: test                  # ... and the split to keep
    shards: [shards/sample/test]      # optional: WebDataset tars, for the explanation thumbnails
    runs:                             # one entry per trained checkpoint
      - checkpoint: runs/geoclip_s0/final.safetensors   # or the run folder
        gallery: gallery/geoclip_s0
        # variant / seed: read from the checkpoint; if given they must agree with it
    bank: null                        # concept bank YAML (default: the packaged bank)
    layers: null                      # layers config (default: the built-in layers)
    refine_k: null                    # GeoCLIP-style refinement over the top k (null: top-1)
    explain_images: 8                 # test images in the explanation grid
    explain_top_k: 5
    concept_maps: null                # concept ids to map (null: the 4 most common in the test labels)
    map_width: 180                    # grid cells around the world (2°)
    downstream:
      enabled: true
      points: 1500                    # random land points (independent of the test images)
      seed: 0
      seeds: all                      # probe every seed's checkpoint (all) or the lowest seed's (first)
      geoclip_pretrained: true        # include GeoCLIP's published location encoder
      tasks:                          # optional user tasks: point tables LAT, LON, value
        - {path: tasks/elevation.csv, column: elevation_m, kind: regression, name: elevation}

Unknown keys and wrong types are a `ConfigError` naming the file and the key.
"""

from __future__ import annotations

import os
import tarfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from geoconcept.errors import ConfigError, InputError
from geoconcept.validate import check_output_folder, int_at_least
from geoconcept.yaml_files import read_yaml

MIN_DOWNSTREAM_POINTS = 40  # fewer random land points leave the downstream probes too few to fit and test on


@dataclass
class RunSpec:
    checkpoint: Path  # final.safetensors (or a training checkpoint), or its run folder
    gallery: Path  # the gallery folder built with this checkpoint
    variant: str | None = None  # checked against the checkpoint when given
    seed: int | None = None  # default: the seed in the checkpoint's training config
    features: list[Path] | None = None  # test features of this run, if not the shared ones

    @property
    def checkpoint_file(self) -> Path:
        from geoconcept.model.checkpoint import resolve_checkpoint  # torch: only when a run is evaluated

        return resolve_checkpoint(self.checkpoint)


@dataclass
class UserTask:
    path: Path
    column: str | None = None
    kind: str | None = None  # classification | regression (default: inferred)
    name: str | None = None


@dataclass
class DownstreamSettings:
    enabled: bool = True
    points: int = 1500
    seed: int = 0
    seeds: str = "all"  # all | first
    geoclip_pretrained: bool = True
    tasks: list[UserTask] = field(default_factory=list)


@dataclass
class EvaluationConfig:
    runs: list[RunSpec]
    features: list[Path]
    out: Path
    name: str = "evaluation"
    labels: list[Path] = field(default_factory=list)
    split: Path | None = None
    split_name: str = "test"
    shards: list[Path] = field(default_factory=list)
    bank: Path | None = None
    layers: Path | None = None
    refine_k: int | None = None
    explain_images: int = 8
    explain_top_k: int = 5
    concept_maps: list[str] | None = None
    map_width: int = 180
    downstream: DownstreamSettings = field(default_factory=DownstreamSettings)


class _Reader:
    """Typed access to one mapping of the YAML, with errors naming the file and key."""

    def __init__(self, data: Any, where: str, base: Path, source: Path) -> None:
        if not isinstance(data, dict):
            raise ConfigError(f"evaluation config {source}: {where} must be a mapping")
        self.data, self.where, self.base, self.source = data, where, base, source
        self.used: set[str] = set()

    def _fail(self, key: str, expected: str) -> ConfigError:
        return ConfigError(
            f"evaluation config {self.source}: {self.where}{key} must be {expected}, got {self.data[key]!r}"
        )

    def get(self, key: str, kind: type, expected: str, default: Any = None) -> Any:
        """The value of `key` (`default` if absent or null); `expected` describes `kind` in errors."""
        self.used.add(key)
        if key not in self.data or self.data[key] is None:
            return default
        value = self.data[key]
        if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
            raise self._fail(key, expected)
        return value

    def path(self, key: str, required: bool = False) -> Path | None:
        value = self.get(key, str, "a path")
        if value is None:
            if required:
                raise ConfigError(f"evaluation config {self.source}: {self.where}{key} is required")
            return None
        p = Path(value).expanduser()
        return p if p.is_absolute() else self.base / p

    def paths(self, key: str, required: bool = False) -> list[Path]:
        self.used.add(key)
        value = self.data.get(key)
        if isinstance(value, str):
            value = [value]
        if value is None or value == []:
            if required:
                raise ConfigError(f"evaluation config {self.source}: {self.where}{key} is required")
            return []
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self._fail(key, "a path or a list of paths")
        return [p if (p := Path(v).expanduser()).is_absolute() else self.base / p for v in value]

    def finish(self) -> None:
        unknown = sorted(set(self.data) - self.used)
        if unknown:
            raise ConfigError(
                f"evaluation config {self.source}: unknown key(s) {unknown} in {self.where or 'the top level'} "
                f"(known: {sorted(self.used)})"
            )


def load_config(path: str | os.PathLike[str]) -> EvaluationConfig:
    """Read an evaluation YAML (see the module docstring)."""
    path = Path(path)
    data = read_yaml(path, "evaluation config")
    base = path.resolve().parent
    top = _Reader(data, "", base, path)
    runs = []
    entries = top.get("runs", list, "a list of runs", [])
    if not entries:
        raise ConfigError(f"evaluation config {path}: `runs` must list at least one checkpoint and its gallery")
    for i, entry in enumerate(entries):
        r = _Reader(entry, f"runs[{i}].", base, path)
        runs.append(
            RunSpec(
                checkpoint=r.path("checkpoint", required=True),  # type: ignore[arg-type]
                gallery=r.path("gallery", required=True),  # type: ignore[arg-type]
                variant=r.get("variant", str, "a variant name"),
                seed=r.get("seed", int, "an integer"),
                features=r.paths("features") or None,
            )
        )
        r.finish()
    d = _Reader(top.get("downstream", dict, "a mapping", {}), "downstream.", base, path)
    tasks = []
    for i, entry in enumerate(d.get("tasks", list, "a list of tasks", [])):
        t = _Reader(entry, f"downstream.tasks[{i}].", base, path)
        kind = t.get("kind", str, "classification or regression")
        if kind not in (None, "classification", "regression"):
            raise ConfigError(
                f"evaluation config {path}: downstream.tasks[{i}].kind must be classification or regression"
            )
        tasks.append(
            UserTask(
                t.path("path", required=True),  # type: ignore[arg-type]
                t.get("column", str, "a column name"),
                kind,
                t.get("name", str, "a string"),
            )
        )
        t.finish()
    downstream = DownstreamSettings(
        enabled=d.get("enabled", bool, "true or false", True),
        points=d.get("points", int, "an integer", 1500),
        seed=d.get("seed", int, "an integer", 0),
        seeds=d.get("seeds", str, "all or first", "all"),
        geoclip_pretrained=d.get("geoclip_pretrained", bool, "true or false", True),
        tasks=tasks,
    )
    d.finish()
    config = EvaluationConfig(
        runs=runs,
        features=top.paths("features", required=True),
        out=top.path("out", required=True),  # type: ignore[arg-type]
        name=top.get("name", str, "a string", "evaluation"),
        labels=top.paths("labels"),
        split=top.path("split"),
        split_name=top.get("split_name", str, "a string", "test"),
        shards=top.paths("shards"),
        bank=top.path("bank"),
        layers=top.path("layers"),
        refine_k=top.get("refine_k", int, "an integer >= 2 or null", None),
        explain_images=top.get("explain_images", int, "an integer", 8),
        explain_top_k=top.get("explain_top_k", int, "an integer", 5),
        concept_maps=top.get("concept_maps", list, "a list of concept ids", None),
        map_width=top.get("map_width", int, "an integer", 180),
        downstream=downstream,
    )
    top.finish()
    check_config(config)
    return config


def check_config(config: EvaluationConfig) -> None:
    """Value checks shared by the YAML, the command line and the Dagster resource (same messages)."""
    problems = []
    checks: list[tuple[Callable[..., Any], tuple[Any, ...]]] = [
        (int_at_least, (config.explain_images, "explain_images", 0)),
        (int_at_least, (config.explain_top_k, "explain_top_k", 1)),
        (int_at_least, (config.map_width, "map_width", 8)),
        (int_at_least, (config.downstream.seed, "downstream.seed", 0)),
    ]
    if config.refine_k is not None:
        checks.append((int_at_least, (config.refine_k, "refine_k", 2)))
    if config.downstream.enabled:
        checks.append((int_at_least, (config.downstream.points, "downstream.points", MIN_DOWNSTREAM_POINTS)))
    for check, arguments in checks:
        try:
            check(*arguments)
        except ConfigError as exc:
            problems.append(str(exc))
    if not config.runs:
        problems.append("at least one run (checkpoint + gallery) is needed")
    if config.map_width % 2:
        problems.append(f"map_width must be even, got {config.map_width}")
    if config.downstream.seeds not in ("all", "first"):
        problems.append(f"downstream.seeds must be all or first, got {config.downstream.seeds!r}")
    if config.concept_maps is not None and not all(isinstance(c, str) for c in config.concept_maps):
        problems.append("concept_maps must be a list of concept ids")
    try:  # before any work: a report folder that cannot be written is found now, not after the evaluation
        check_output_folder(config.out, "out")
    except InputError as exc:
        problems.append(str(exc))
    # The thumbnails' tars are read last, with the report half written: a file that is no tar is refused now.
    problems += [f"shards: {p} is not a tar file" for p in config.shards if p.is_file() and not tarfile.is_tarfile(p)]
    if problems:
        raise ConfigError("evaluation config: " + "; ".join(problems))
