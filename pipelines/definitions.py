"""The one code location: `defs`, loaded by `dg dev` ([tool.dg] in pyproject.toml) and by
workspace.yaml (`dagster dev -w workspace.yaml`).

Where data lives comes from the environment through `dg.EnvVar` (the resources' defaults, see
assets/resources.py; the IO manager's base folder here): a job's definition (its snapshot) holds the
variables' names, each run reads their values. So the jobs are the same whichever process loads
them with whichever values — a run re-executed from the UI matches its snapshot.
"""

import os

import dagster as dg

from assets import bank_building, concepts, evaluation, features, ingest, training
from assets.resources import (
    ConceptResource,
    EvaluationResource,
    FeatureResource,
    GalleryResource,
    IngestResource,
    StorageResource,
    TrainingResource,
)
from pipelines.automation import AUTOMATION_CONDITIONS, AUTOMATION_SENSOR, SCHEDULES, SENSORS
from pipelines.executors import executor_from_env
from pipelines.io_manager import JsonIOManagerFactory
from pipelines.jobs import JOBS

ASSET_MODULES = [ingest, concepts, bank_building, features, training, evaluation]
DATA_ROOT, RAW_DIR, IMAGES = "GEOCONCEPT_DATA_ROOT", "GEOCONCEPT_RAW_DIR", "GEOCONCEPT_IMAGES"


def set_environment_defaults() -> None:
    """An EnvVar must be set when a run reads it; these defaults (the embedded sample under ./data)
    are set in this process's environment only, where the deployment left a variable unset. Every
    process that runs steps loads this module, so each derives the same values."""
    os.environ.setdefault(DATA_ROOT, os.path.abspath("data"))
    os.environ.setdefault(RAW_DIR, os.path.join(os.environ[DATA_ROOT], "input", "sample"))
    os.environ.setdefault(IMAGES, "")


def with_automation(assets: list) -> list:
    """The declarative automation conditions of pipelines.automation, set on their assets."""
    return dg.map_asset_specs(
        lambda spec: spec.replace_attributes(automation_condition=AUTOMATION_CONDITIONS[spec.key.to_user_string()])
        if spec.key.to_user_string() in AUTOMATION_CONDITIONS
        else spec,
        assets,
    )


set_environment_defaults()
# Code references: each asset links to the file and line that defines it (local paths, no network).
ASSETS = dg.with_source_code_references(with_automation(dg.load_assets_from_modules(ASSET_MODULES)))

defs = dg.Definitions(
    assets=ASSETS,
    asset_checks=dg.load_asset_checks_from_modules(ASSET_MODULES),
    resources={
        "storage": StorageResource(),
        "ingest_settings": IngestResource(),
        "concepts": ConceptResource(),
        "features": FeatureResource(),
        "training": TrainingResource(),
        "gallery": GalleryResource(),
        "evaluation_settings": EvaluationResource(),
        "pipes_subprocess_client": training.pipes_client(),
        "io_manager": JsonIOManagerFactory(base_dir=dg.EnvVar(DATA_ROOT), subdir="dagster_io"),
    },
    jobs=JOBS,
    sensors=[*SENSORS, AUTOMATION_SENSOR],
    schedules=SCHEDULES,
    executor=executor_from_env(),
)
