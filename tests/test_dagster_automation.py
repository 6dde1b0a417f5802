"""Sensors and the schedule of the scheduled dataset refresh, with Dagster's own test helpers."""

from __future__ import annotations

import datetime

import dagster as dg
import pytest
from hostile_corpus import Record, noise_jpeg, write_image_tar, write_table

from assets.ingest import raw_dataset, shards
from assets.partitions import CHUNKS
from assets.resources import ConceptResource, FeatureResource, IngestResource, StorageResource
from pipelines.automation import RETRY_FAILED, new_chunks_sensor, raw_folder_sensor, stale_chunks_schedule
from pipelines.definitions import defs
from pipelines.io_manager import JsonIOManagerFactory

pytestmark = pytest.mark.slow


def sensor_context(**kwargs) -> dg.SensorEvaluationContext:
    """A sensor context that knows the project's definitions (partitioned run requests need them)."""
    return dg.build_sensor_context(definitions=defs, **kwargs)


@pytest.fixture
def setup(tmp_path):
    """A raw folder (train.csv + a tar missing one image) and the resources pointing at it."""
    raw = tmp_path / "raw"
    (raw / "tars").mkdir(parents=True)
    records = [Record(f"im/{i}.jpg", f"{10 + i}", f"{20 + i}", "ok", noise_jpeg(40, 30, seed=i)) for i in range(6)]
    write_table(raw / "train.csv", records)
    write_image_tar(raw / "tars" / "a.tar", {r.img_id: r.image for r in records if r.img_id != "im/4.jpg"})
    resources = {
        "storage": StorageResource(data_root=str(tmp_path / "data"), dataset="sample"),
        "ingest_settings": IngestResource(
            raw_dir=str(raw), images=str(raw / "tars"), samples_per_shard=3, image_size=32, workers=1
        ),
        "concepts": ConceptResource(),
        "features": FeatureResource(model="test-backbone"),
        "io_manager": JsonIOManagerFactory(base_dir=str(tmp_path / "data" / "dagster_io")),
    }
    return raw, records, resources


def test_raw_folder_sensor_stages_new_tables_and_retries_chunks_when_tars_arrive(setup):
    raw, records, resources = setup
    with dg.instance_for_test() as instance:
        first = raw_folder_sensor(sensor_context(instance=instance, resources=resources))
        assert [r.job_name for r in first.run_requests] == ["stage_job"]
        again = raw_folder_sensor(sensor_context(instance=instance, cursor=first.cursor, resources=resources))
        assert isinstance(again, dg.SkipReason)  # the cursor remembers what was seen

        # Ingest, as the requested runs would: one chunk misses im/4.jpg.
        dg.materialize([raw_dataset], instance=instance, resources=resources)
        for key in instance.get_dynamic_partitions(CHUNKS.name):
            dg.materialize([shards], partition_key=key, instance=instance, resources=resources)

        write_image_tar(raw / "tars" / "b.tar", {"im/4.jpg": records[4].image})
        retry = raw_folder_sensor(sensor_context(instance=instance, cursor=first.cursor, resources=resources))
        assert [(r.job_name, r.partition_key) for r in retry.run_requests] == [("chunks_job", "train-00001")]
        assert retry.run_requests[0].run_config == RETRY_FAILED

        result = dg.materialize(
            [shards], partition_key="train-00001", instance=instance, resources=resources, run_config=RETRY_FAILED
        )
        counts = result.asset_materializations_for_node("shards")[0].metadata["status_counts"].value.records
        assert {r.data["status"]: r.data["count"] for r in counts} == {"ok": 3}

        write_table(raw / "test.csv", records[:2])
        new_table = raw_folder_sensor(sensor_context(instance=instance, cursor=retry.cursor, resources=resources))
        assert [r.job_name for r in new_table.run_requests] == ["stage_job"]
        assert "test.csv" in new_table.run_requests[0].run_key and "train.csv" not in new_table.run_requests[0].run_key


def test_new_chunks_sensor_registers_partitions_and_requests_only_new_chunks(setup):
    raw, records, resources = setup
    with dg.instance_for_test() as instance:
        assert isinstance(new_chunks_sensor(sensor_context(instance=instance)), dg.SkipReason)
        dg.materialize([raw_dataset], instance=instance, resources=resources)
        instance.delete_dynamic_partition(CHUNKS.name, "train-00001")  # as if only the sensor registered it
        first = new_chunks_sensor(sensor_context(instance=instance))
        assert [r.partition_key for r in first.run_requests] == ["train-00000", "train-00001"]
        assert first.dynamic_partitions_requests[0].partition_keys == ["train-00001"]
        assert isinstance(new_chunks_sensor(sensor_context(instance=instance, cursor=first.cursor)), dg.SkipReason)

        instance.add_dynamic_partitions(CHUNKS.name, ["train-00001"])
        dg.materialize([shards], partition_key="train-00000", instance=instance, resources=resources)
        write_table(raw / "test.csv", records[:2])
        dg.materialize([raw_dataset], instance=instance, resources=resources)
        later = new_chunks_sensor(sensor_context(instance=instance, cursor=first.cursor))
        assert [r.partition_key for r in later.run_requests] == ["test-00000", "train-00001"]
        assert later.dynamic_partitions_requests[0].partition_keys == []  # raw_dataset registered them already


def test_stale_chunks_schedule_requests_chunks_whose_labels_or_features_are_missing(setup, tmp_path):
    _, _, resources = setup
    with dg.instance_for_test() as instance:
        dg.materialize([raw_dataset], instance=instance, resources=resources)
        for key in instance.get_dynamic_partitions(CHUNKS.name):
            dg.materialize([shards], partition_key=key, instance=instance, resources=resources)
        context = dg.build_schedule_context(
            instance=instance,
            resources=resources,
            repository_def=defs.get_repository_def(),
            scheduled_execution_time=datetime.datetime(2026, 11, 22, 3, tzinfo=datetime.UTC),
        )
        requests = stale_chunks_schedule(context)
        assert sorted(r.partition_key for r in requests) == ["train-00000", "train-00001"]
        assert "no labels" in requests[0].tags["geoconcept/reason"]


def test_retrained_galleries_request_one_evaluation_through_the_automation_condition():
    def requested(instance, cursor=None):
        result = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=cursor)
        return result.get_num_requested(dg.AssetKey("evaluation")), result.cursor

    def gallery(instance, variant):
        instance.report_runless_asset_event(dg.AssetMaterialization("gallery_index", partition=variant))

    with dg.instance_for_test() as instance:
        count, cursor = requested(instance)
        assert count == 0  # no gallery yet
        gallery(instance, "geoclip")
        count, cursor = requested(instance, cursor)
        assert count == 0  # two variants' galleries are still missing: nothing to compare yet
        gallery(instance, "concept")
        gallery(instance, "concept_supervised")
        count, cursor = requested(instance, cursor)
        assert count == 1
        count, cursor = requested(instance, cursor)
        assert count == 0  # handled: not requested again without a new gallery
        instance.report_runless_asset_event(dg.AssetMaterialization("splits"))
        count, cursor = requested(instance, cursor)
        assert count == 0  # only a retraining (a new gallery) re-runs the evaluation
        gallery(instance, "concept")
        count, cursor = requested(instance, cursor)
        assert count == 1
