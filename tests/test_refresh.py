"""What a scheduled refresh sees: raw-folder fingerprints, chunks worth retrying, stale labels/features."""

from __future__ import annotations

import os
import time

import pytest
import yaml
from hostile_corpus import Record, noise_jpeg, write_image_tar, write_table

from geoconcept import refresh
from geoconcept.concepts.bank import load_bank
from geoconcept.concepts.labels import label_shard
from geoconcept.ingest import IngestConfig, ingest
from geoconcept.layers.registry import Registry
from geoconcept.layout import DataRoot

CONFIG = IngestConfig(samples_per_shard=3, image_size=32)
TAG = "test-backbone__none"


@pytest.fixture
def tar_dataset(tmp_path):
    """6 records in 2 chunks; the image of record 4 is in no tar yet."""
    raw = tmp_path / "raw"
    (raw / "tars").mkdir(parents=True)
    records = [Record(f"im/{i}.jpg", f"{10 + i}", f"{20 + i}", "ok", noise_jpeg(40, 30, seed=i)) for i in range(6)]
    write_table(raw / "train.csv", records)
    write_image_tar(raw / "tars" / "a.tar", {r.img_id: r.image for r in records if r.img_id != "im/4.jpg"})
    out = tmp_path / "data"
    ingest(raw / "train.csv", raw / "tars", out, config=CONFIG)
    return raw, out, records


def test_fingerprints_change_with_new_or_rewritten_tables_and_tars(tmp_path):
    raw = tmp_path / "raw"
    (raw / "tars").mkdir(parents=True)
    (raw / "train.csv").write_text("IMG_ID,LAT,LON\n")
    (raw / "notes.txt").write_text("not an input")
    first = refresh.raw_fingerprints(raw)
    assert set(first) == {"train.csv"}
    write_image_tar(raw / "tars" / "b.tar", {"x.jpg": b"1"})
    (raw / "test.parquet").write_bytes(b"x")
    second = refresh.raw_fingerprints(raw)
    assert set(second) == {"train.csv", "test.parquet", "tars/b.tar"} and second["train.csv"] == first["train.csv"]
    (raw / "train.csv").write_text("IMG_ID,LAT,LON\na.jpg,1,2\n")
    assert refresh.raw_fingerprints(raw)["train.csv"] != first["train.csv"]
    assert refresh.is_table("train.csv") and not refresh.is_table("tars/b.tar")
    assert refresh.raw_fingerprints(tmp_path / "missing") == {}


def test_retryable_chunks_are_those_with_a_missing_image(tar_dataset):
    raw, out, records = tar_dataset
    assert refresh.retryable_chunks(out, "sample") == ["train-00001"]  # rows 3-5 hold im/4.jpg
    write_image_tar(raw / "tars" / "b.tar", {"im/4.jpg": records[4].image})
    ingest(raw / "train.csv", raw / "tars", out, config=CONFIG, redo="failed")
    assert refresh.retryable_chunks(out, "sample") == []


def test_staleness_follows_the_bank_the_layers_and_rebuilt_shards(tar_dataset, tmp_path):
    _, out, _ = tar_dataset
    registry = Registry.builtin()
    bank = load_bank(registry=registry)
    layout = DataRoot(out)

    def status(key, bank=bank):
        return refresh.chunk_staleness(out, "sample", key, bank=bank, registry=registry, backbone_tag=TAG)

    assert status("train-00000").labels == ["shard-000000: no labels"]
    assert status("train-00000").features == [f"shard-000000: no {TAG} features"]
    manifests = sorted(layout.shards("sample", "train").glob("shard-*.parquet"))
    for manifest in manifests:
        label_shard(manifest, layout.labels("sample", "train") / manifest.name, bank, registry)
        feature = layout.features("sample", TAG, "train") / f"{manifest.stem}.safetensors"
        feature.parent.mkdir(parents=True, exist_ok=True)
        feature.write_bytes(b"stands for a feature file")
    assert not status("train-00000").stale and not status("train-00001").stale

    edited = yaml.safe_load(bank.path.read_text())
    edited["version"] = "edited"
    other = tmp_path / "bank.yaml"
    other.write_text(yaml.safe_dump(edited))
    assert status("train-00000", load_bank(other, registry=registry)).labels == ["shard-000000: concept bank changed"]

    tar = manifests[1].with_suffix(".tar")
    later = time.time_ns() + 10**9  # the shard is rebuilt after its labels and features were written
    os.utime(tar, ns=(later, later))
    os.utime(manifests[1], ns=(later, later))
    again = status("train-00001")
    assert again.labels == ["shard-000001: shard rebuilt since labelling"]
    assert again.features == ["shard-000001: shard rebuilt since feature extraction"]
    assert not status("train-00000").stale
