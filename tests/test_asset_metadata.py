"""What the Dagster UI gets: numbers as numbers, lists as lists, images as file links, rounded tables."""

from __future__ import annotations

import dagster as dg
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hostile_corpus import Record, noise_jpeg, write_image_tar, write_table

from assets import metadata as md


def _records(value: dg.TableMetadataValue) -> list[dict]:
    return [record.data for record in value.records]


def test_table_rounds_floats_to_significant_digits():
    value = md.table(pd.DataFrame({"bin": ["0-1 km"], "share": [0.009607582353055477], "n": [np.int64(3)]}))
    assert _records(value) == [{"bin": "0-1 km", "share": 0.009608, "n": 3}]
    assert [(c.name, c.type) for c in value.schema.columns] == [("bin", "string"), ("share", "float"), ("n", "int")]
    nan = md.table(pd.DataFrame({"x": np.array([np.nan], dtype=np.float32)}))
    assert _records(nan) == [{"x": None}]


def test_empty_table_reads_none_and_lists_are_lists():
    assert md.table_or_none(pd.DataFrame(columns=["problem"])) == dg.MetadataValue.text("none")
    assert isinstance(md.table_or_none(pd.DataFrame({"a": [1]})), dg.TableMetadataValue)
    assert md.listing(np.array(["a", "b"])) == dg.MetadataValue.json(["a", "b"])


def test_images_are_file_links(tmp_path):
    assert md.image(tmp_path / "missing.png") == dg.MetadataValue.text("none")
    assert md.image_bytes(None, tmp_path / "empty.png") == dg.MetadataValue.text("none")
    value = md.image_bytes(b"\x89PNG fake", tmp_path / "plots" / "loss.png")
    assert value == dg.MetadataValue.path(str(tmp_path / "plots" / "loss.png"))
    assert (tmp_path / "plots" / "loss.png").read_bytes() == b"\x89PNG fake"


def test_parquet_row_count_and_column_schema(tmp_path):
    path = tmp_path / "splits.parquet"
    pq.write_table(pa.table({"key": ["a", "b", "c"], "split": ["train", "test", "val"]}), path)
    meta = md.parquet_table(path)
    assert meta["dagster/row_count"] == 3
    schema = meta["dagster/column_schema"].schema
    assert [(c.name, c.type) for c in schema.columns] == [("key", "string"), ("split", "string")]


def test_accuracy_and_auroc_headlines_are_floats_per_variant():
    per_run = pd.DataFrame(
        {
            "variant": ["geoclip", "geoclip", "concept"],
            "seed": [0, 1, 0],
            "n": [100.0, 100.0, 100.0],
            "within_25km": [10.0, 20.0, 30.0],
            "median_km": [900.0, 1100.0, 800.0],
            "mean_km": [1.0, 2.0, 3.0],
        }
    )
    headlines = md.accuracy_headlines(per_run)
    assert headlines == {
        "geoclip/within_25km": 15.0,
        "geoclip/median_km": 1000.0,
        "concept/within_25km": 30.0,
        "concept/median_km": 800.0,
    }
    faith = pd.DataFrame(
        {"variant": ["concept"] * 3, "auroc_image": [0.6, 0.8, np.nan], "auroc_location": [np.nan] * 3}
    )
    assert md.auroc_headlines(faith) == {"concept/mean_auroc_image": pytest.approx(0.7)}
    assert md.auroc_headlines(None) == {}


@pytest.mark.slow
def test_ingest_assets_record_numbers_schemas_and_file_links(tmp_path):
    from assets.ingest import manifest, raw_dataset, shards, splits
    from assets.partitions import CHUNKS
    from assets.resources import IngestResource, StorageResource
    from pipelines.io_manager import JsonIOManagerFactory

    raw = tmp_path / "raw"
    (raw / "tars").mkdir(parents=True)
    records = [Record(f"im/{i}.jpg", f"{10 + i}", f"{20 + i}", "ok", noise_jpeg(40, 30, seed=i)) for i in range(6)]
    write_table(raw / "train.csv", records)
    write_image_tar(raw / "tars" / "a.tar", {r.img_id: r.image for r in records})
    resources = {
        "storage": StorageResource(data_root=str(tmp_path / "data"), dataset="sample"),
        "ingest_settings": IngestResource(
            raw_dir=str(raw), images=str(raw / "tars"), samples_per_shard=3, image_size=32, workers=1
        ),
        "io_manager": JsonIOManagerFactory(base_dir=str(tmp_path / "data" / "dagster_io")),
    }
    with dg.instance_for_test() as instance:
        dg.materialize([raw_dataset], instance=instance, resources=resources)
        for key in instance.get_dynamic_partitions(CHUNKS.name):
            dg.materialize([shards], partition_key=key, instance=instance, resources=resources)
        result = dg.materialize([manifest, splits], instance=instance, resources=resources)
    events = {
        m.event_specific_data.materialization.asset_key.path[-1]: m.event_specific_data.materialization.metadata
        for m in result.get_asset_materialization_events()
    }
    split_meta = events["splits"]
    assert split_meta["dagster/row_count"].value == 6
    assert isinstance(split_meta["dagster/column_schema"], dg.TableSchemaMetadataValue)
    assert sum(split_meta[f"{s}_samples"].value for s in ("train", "val", "test") if f"{s}_samples" in split_meta) == 6
    manifest_meta = events["manifest"]
    assert manifest_meta["records"].value == 6 and manifest_meta["ok"].value == 6
    assert isinstance(manifest_meta["sample_grid"], dg.PathMetadataValue)
    assert manifest_meta["reject_examples"] == dg.MetadataValue.text("none")
    for meta in events.values():  # no inline images left
        assert not any(isinstance(v, dg.MarkdownMetadataValue) and "base64" in v.value for v in meta.values())
