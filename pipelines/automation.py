"""Scheduled dataset refreshes: sensors on the raw folder and on new chunks, a daily schedule for
stale labels/features, and an automation condition that re-evaluates after retraining.

All of them are cursor-, run-key- or condition-based, so nothing is processed twice. They are off
by default (`make ui` shows them; switch them on in the UI or with `dagster sensor start`).
"""

import json

import dagster as dg

from assets.partitions import CHUNKS
from assets.resources import ConceptResource, FeatureResource, IngestResource, StorageResource
from geoconcept import refresh
from geoconcept.concepts.bank import load_bank
from geoconcept.ingest import partition_key
from geoconcept.layers.registry import Registry
from geoconcept.model.backbone import backbone_tag
from pipelines.jobs import chunks_job, stage_job

RETRY_FAILED = {"ops": {"shards": {"config": {"redo": "failed"}}}}


@dg.sensor(
    jobs=[stage_job, chunks_job],
    minimum_interval_seconds=60,
    description="Watches the raw folder: a new or rewritten table (CSV/Parquet) stages the tables (and so "
    "registers its chunks); a new or rewritten tar re-ingests the chunks whose images were missing.",
)
def raw_folder_sensor(
    context: dg.SensorEvaluationContext, storage: StorageResource, ingest_settings: IngestResource
) -> dg.SensorResult | dg.SkipReason:
    seen = json.loads(context.cursor) if context.cursor else {}
    now = refresh.raw_fingerprints(ingest_settings.raw_dir)
    changed = sorted(name for name, fingerprint in now.items() if seen.get(name) != fingerprint)
    if not changed:
        return dg.SkipReason(f"nothing new in {ingest_settings.raw_dir}")
    requests = []
    tables = [name for name in changed if refresh.is_table(name)]
    if tables:
        requests.append(dg.RunRequest(run_key=f"stage:{json.dumps({t: now[t] for t in tables})}", job_name="stage_job"))
    if len(tables) < len(changed):  # new image tars: retry what was missing
        tars = {t: now[t] for t in changed if not refresh.is_table(t)}
        for key in refresh.retryable_chunks(storage.data_root, storage.dataset):
            requests.append(
                dg.RunRequest(
                    run_key=f"retry:{key}:{json.dumps(tars)}",
                    job_name="chunks_job",
                    partition_key=key,
                    run_config=RETRY_FAILED,
                    tags={"geoconcept/reason": "new image tars"},
                )
            )
    context.log.info(f"changed: {', '.join(changed)} -> {len(requests)} run(s)")
    return dg.SensorResult(run_requests=requests, cursor=json.dumps(now, sort_keys=True))


@dg.sensor(
    job=chunks_job,
    minimum_interval_seconds=60,
    description="After the raw tables are staged: registers the chunks as dynamic partitions and requests "
    "one ingest run for each chunk that has never been ingested.",
)
def new_chunks_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult | dg.SkipReason:
    instance = context.instance
    records = instance.fetch_materializations(dg.AssetKey("raw_dataset"), limit=1).records
    if not records:
        return dg.SkipReason("the raw tables have not been staged yet")
    latest = records[0]
    if context.cursor and int(context.cursor) >= latest.storage_id:
        return dg.SkipReason("no new staging since the last tick")
    keys = _staged_chunks(latest.asset_materialization)
    registered = set(instance.get_dynamic_partitions(CHUNKS.name))
    ingested = instance.get_materialized_partitions(dg.AssetKey("shards"))
    return dg.SensorResult(
        dynamic_partitions_requests=[CHUNKS.build_add_request([k for k in keys if k not in registered])],
        run_requests=[dg.RunRequest(run_key=f"chunk:{k}", partition_key=k) for k in keys if k not in ingested],
        cursor=str(latest.storage_id),
    )


def _staged_chunks(materialization: dg.AssetMaterialization) -> list[str]:
    """The chunk keys a `raw_dataset` materialization recorded in its metadata."""
    sources = materialization.metadata["sources"].value  # a table: source, rows, shards, partitions
    return [
        partition_key(record.data["source"], index)
        for record in sources.records
        for index in range(int(record.data["partitions"]))
    ]


@dg.schedule(
    cron_schedule="0 3 * * *",
    job=chunks_job,
    description="Daily: recompute the labels and features of chunks that are stale — the concept bank or a "
    "layer changed, a shard was rebuilt after its labels/features, or a backbone's features are missing.",
)
def stale_chunks_schedule(
    context: dg.ScheduleEvaluationContext,
    storage: StorageResource,
    concepts: ConceptResource,
    features: FeatureResource,
) -> list[dg.RunRequest] | dg.SkipReason:
    registry = Registry.from_config(concepts.layers_config or None)
    bank = load_bank(concepts.bank or None, registry=registry)
    tag = backbone_tag(features.model, features.pretrained or None)
    requests = []
    for key in context.instance.get_dynamic_partitions(CHUNKS.name):
        status = refresh.chunk_staleness(
            storage.data_root, storage.dataset, key, bank=bank, registry=registry, backbone_tag=tag
        )
        if status.stale:
            reasons = "; ".join(status.labels + status.features)
            requests.append(
                dg.RunRequest(
                    run_key=f"stale:{key}:{context.scheduled_execution_time}",
                    partition_key=key,
                    tags={"geoconcept/reason": reasons[:200]},
                )
            )
    return requests or dg.SkipReason("no stale chunk")


# Re-evaluating after a retraining was a hand-written asset sensor on `gallery_index`; it is a
# declarative condition now: `eager` (run when a dependency was updated, none is missing or in
# progress, and the asset is not already running), restricted to `gallery_index` updates so a
# restaged dataset alone does not re-run the evaluation. The sensors above stay hand-written: they
# read the raw folder, add dynamic partitions and compare files' fingerprints, which conditions on
# Dagster's own events cannot express; so does the staleness schedule (a changed concept bank or
# layer is a file, not an asset event). No freshness policy: nothing here has a deadline to miss.
AUTOMATION_CONDITIONS = {
    "evaluation": dg.AutomationCondition.eager().allow(dg.AssetSelection.assets("gallery_index")),
}
AUTOMATION_SENSOR = dg.AutomationConditionSensorDefinition(
    "automation_condition_sensor",
    target=dg.AssetSelection.assets(*AUTOMATION_CONDITIONS),
    minimum_interval_seconds=60,
    description="Evaluates the declarative automation conditions (after a retraining: re-run the evaluation).",
)  # off by default, as the sensors above

SENSORS = [raw_folder_sensor, new_chunks_sensor]
SCHEDULES = [stale_chunks_schedule]
