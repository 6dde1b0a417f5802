"""Configuration of the pipeline as Dagster resources (one per domain).

Defaults suit the embedded sample. Where data lives defaults to environment variables, never read
at import: the defaults are `EnvVar`s (GEOCONCEPT_DATA_ROOT, GEOCONCEPT_RAW_DIR, GEOCONCEPT_IMAGES),
so a job's definition holds the variables' names and each run reads their values (the code location
sets them where the environment does not: pipelines/definitions.py). They are class defaults, not
values given when the code location builds the resources, because Dagster replaces constructor
values with a run's config for that resource, while it merges a partial run config (e.g. only
`samples_per_shard`) with class defaults. Run config overrides any setting.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dagster import ConfigurableResource, EnvVar
from pydantic import Field, ValidationInfo, field_validator

from geoconcept.errors import ConfigError
from geoconcept.evaluation.config import MIN_DOWNSTREAM_POINTS
from geoconcept.layout import DataRoot
from geoconcept.validate import int_at_least, int_between, number_between


def _checked(check: Callable[..., Any], *args: Any) -> Any:
    """A geoconcept.validate check as a pydantic validator: the same message as the CLI and the
    config files give, raised as the ValueError pydantic turns into a config error."""
    try:
        return check(*args)
    except ConfigError as exc:
        raise ValueError(str(exc)) from None


HALF_EARTH_CIRCUMFERENCE_KM = 20_038.0  # no two points are farther apart


class StorageResource(ConfigurableResource):
    """Where everything lives: the data root (outputs) and the dataset name."""

    data_root: str = EnvVar("GEOCONCEPT_DATA_ROOT")
    dataset: str = "sample"

    @property
    def layout(self) -> DataRoot:
        return DataRoot(self.data_root)


class IngestResource(ConfigurableResource):
    """Raw input and how it is cut into shards (defaults: GEOCONCEPT_RAW_DIR, GEOCONCEPT_IMAGES).

    `raw_dir` holds one table per source (`train.csv`, `test.csv`, ... with IMG_ID,LAT,LON) and
    the images: a folder tree (`images/`, default) or tar files (set `images` to a tar, a folder
    of tars or a glob).
    """

    raw_dir: str = EnvVar("GEOCONCEPT_RAW_DIR")
    images: str = EnvVar("GEOCONCEPT_IMAGES")  # empty: <raw_dir>/images
    samples_per_shard: int = 1000
    shards_per_partition: int = 1
    image_size: int = 256
    jpeg_quality: int = 90
    workers: int = 2
    max_reject_rate: float = 0.05

    @field_validator("samples_per_shard", "shards_per_partition", "image_size", "workers")
    @classmethod
    def _sizes(cls, value: int, info: ValidationInfo) -> int:
        return _checked(int_at_least, value, info.field_name)

    @field_validator("jpeg_quality")
    @classmethod
    def _quality(cls, value: int) -> int:
        return _checked(int_between, value, "jpeg_quality", 1, 95)

    @field_validator("max_reject_rate")
    @classmethod
    def _rate(cls, value: float) -> float:
        return _checked(number_between, value, "max_reject_rate", 0.0, 1.0)

    def images_path(self) -> str:
        return self.images or os.path.join(self.raw_dir, "images")


class ConceptResource(ConfigurableResource):
    """The concept bank, extra layers and the text tower that embeds the concepts.

    Empty `bank` / `layers_config` mean the packaged bank and the built-in layers only. The
    text tower runs with random weights unless `text_pretrained` names an open_clip tag or a
    local checkpoint file (offline, only a local file works).
    """

    bank: str = ""
    layers_config: str = ""
    text_model: str = "ViT-B-32"
    text_pretrained: str = ""


class FeatureResource(ConfigurableResource):
    """The frozen image backbone. The demo default is a small open_clip model with random weights
    (no pretrained weights can be had offline); real runs use GeoCLIP's ViT-L-14 with `openai`
    weights, or a local checkpoint file, on `device: cuda` (each partition's step on one GPU; the
    executors run partitions in parallel). Empty/None settings take the device's defaults:
    `precision` bf16 on CUDA, fp32 on CPU (part of the feature cache's identity); `batch_size` 256
    on CUDA, 32 on CPU; `workers` (decode processes) the available cores - 1. `compile` runs
    torch.compile (pays off on long GPU runs only)."""

    model: str = "ViT-S-32-alt"
    pretrained: str = ""
    batch_size: int | None = None
    device: str = "cpu"
    precision: str = ""
    compile: bool = False
    workers: int | None = None


class TrainingResource(ConfigurableResource):
    """How checkpoints are trained: the seeds (each variant is trained once per seed), the trainer
    settings YAML (default: geoconcept/train/sample.yaml) and the launcher (`python`, or
    `torchrun` with `nproc_per_node` processes)."""

    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2])
    settings: str = ""
    launcher: str = "python"
    nproc_per_node: int = 1

    def launcher_command(self) -> list[str]:
        if self.launcher == "python":
            return [sys.executable, "-m", "pipelines.train_pipes"]
        if self.launcher == "torchrun":
            torchrun = str(Path(sys.executable).with_name("torchrun"))
            return [torchrun, f"--nproc_per_node={self.nproc_per_node}", "-m", "pipelines.train_pipes"]
        raise ValueError(f"launcher {self.launcher!r}: expected python or torchrun")


class GalleryResource(ConfigurableResource):
    """The GPS gallery predictions are drawn from: `coordinates` "geoclip" (GeoCLIP's 100K MP16
    coordinates) or a CSV/Parquet of lat/lon; optionally a seeded subset (`max_points`); `index`:
    flat (exact), hnsw, or a FAISS factory string.

    Gallery entries within `exclude_test_within_km` of a test point are dropped: the embedded
    sample's points are drawn from the same 100K list, so each test location would otherwise be
    in the gallery itself. The default (10 m) removes exactly those copies, not the other MP16
    photos taken nearby, which a real gallery has too."""

    coordinates: str = "geoclip"
    max_points: int = 0
    exclude_test_within_km: float = 0.01
    index: str = "flat"

    @field_validator("max_points")
    @classmethod
    def _max_points(cls, value: int) -> int:
        return _checked(int_at_least, value, "max_points", 0)  # 0: all of them

    @field_validator("exclude_test_within_km")
    @classmethod
    def _exclude(cls, value: float) -> float:
        return _checked(number_between, value, "exclude_test_within_km", 0.0, HALF_EARTH_CIRCUMFERENCE_KM)


class EvaluationResource(ConfigurableResource):
    """Evaluation extras: random land points for the downstream probes, test images in the
    explanation grid."""

    downstream_points: int = 1500
    explain_images: int = 8

    # The names and minimums of geoconcept.evaluation.config.check_config, which the asset's config meets again.
    @field_validator("downstream_points")
    @classmethod
    def _points(cls, value: int) -> int:
        return _checked(int_at_least, value, "downstream.points", MIN_DOWNSTREAM_POINTS)

    @field_validator("explain_images")
    @classmethod
    def _explain(cls, value: int) -> int:
        return _checked(int_at_least, value, "explain_images", 0)
