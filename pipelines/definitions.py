"""The one code location: `defs`, loaded by workspace.yaml (`dagster dev -w workspace.yaml`)."""

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
    default_data_root,
)
from pipelines.automation import SCHEDULES, SENSORS
from pipelines.executors import executor_from_env
from pipelines.io_manager import JsonIOManagerFactory
from pipelines.jobs import JOBS

ASSET_MODULES = [ingest, concepts, bank_building, features, training, evaluation]

defs = dg.Definitions(
    assets=dg.load_assets_from_modules(ASSET_MODULES),
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
        "io_manager": JsonIOManagerFactory(base_dir=f"{default_data_root()}/dagster_io"),
    },
    jobs=JOBS,
    sensors=SENSORS,
    schedules=SCHEDULES,
    executor=executor_from_env(),
)
