"""The SQL views over the manifests, the split rules, sizes.json and summary.json."""

from __future__ import annotations

import hashlib
import json
import tarfile

import pandas as pd
import pytest
from hostile_corpus import Record, noise_jpeg, simple_dataset, write_table

from geoconcept import catalog
from geoconcept.errors import InputError
from geoconcept.ingest import IngestConfig, ingest
from geoconcept.layout import DataRoot

CONFIG = IngestConfig(samples_per_shard=4, image_size=32)


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def hash_split(key: str, val_fraction: float) -> str:
    """The documented rule: the first 32 bits of the key against val_fraction."""
    return "val" if int(key[:8], 16) < val_fraction * 2**32 else "train"


@pytest.fixture
def two_sources(tmp_path):
    """train (with a copy of one image in a later shard, and a missing image) + test."""
    train = simple_dataset(tmp_path / "in", 30)
    copy = train.records[2]
    extra = [Record("copies/again.jpg", "1", "2", "duplicate_content", copy.image)]
    (train.images / "copies").mkdir()
    (train.images / "copies" / "again.jpg").write_bytes(copy.image)
    extra.append(Record("gone.jpg", "1", "2", "missing_image"))
    write_table(train.csv, train.records + extra)
    test_records = [Record(f"t/{i}.jpg", "3", "4", "ok", noise_jpeg(30, 30, seed=9000 + i)) for i in range(5)]
    (train.images / "t").mkdir()
    for r in test_records:
        (train.images / r.img_id).write_bytes(r.image)
    test_csv = write_table(tmp_path / "in" / "test.csv", test_records)
    out = tmp_path / "out"
    ingest(train.csv, train.images, out, config=CONFIG)
    result = ingest(test_csv, train.images, out, config=CONFIG)
    return out, train, result


def test_samples_view_marks_copies_across_shards(two_sources):
    out, train, _ = two_sources
    con = catalog.connect(out, "sample")
    assert con.execute("SELECT count(*) FROM samples").fetchone()[0] == 32 + 5
    again = con.execute("SELECT status, detail, in_tar FROM samples WHERE img_id = 'copies/again.jpg'").fetchone()
    assert again[0] == "duplicate_content" and again[2] is True
    assert f"IMG_ID {train.records[2].img_id} (source train, row 2)" in again[1]
    rejects = con.execute("SELECT img_id, status FROM rejects ORDER BY img_id").fetchall()
    assert rejects == [("copies/again.jpg", "duplicate_content"), ("gone.jpg", "missing_image")]
    assert con.execute("SELECT DISTINCT source FROM samples ORDER BY 1").fetchall() == [("test",), ("train",)]


def test_an_image_in_test_and_train_leaves_training_not_the_test_set(tmp_path):
    data = simple_dataset(tmp_path / "in", 6)
    leaked = data.records[1]
    test_csv = write_table(tmp_path / "in" / "test.csv", [Record("t/leak.jpg", "5", "6", "ok", leaked.image)])
    (data.images / "t").mkdir()
    (data.images / "t" / "leak.jpg").write_bytes(leaked.image)
    out = tmp_path / "out"
    ingest(data.csv, data.images, out, config=CONFIG)
    ingest(test_csv, data.images, out, config=CONFIG)
    con = catalog.connect(out, "sample")
    rows = dict(
        con.execute("SELECT img_id, status FROM samples WHERE sha256 = ?", [sha256_of(leaked.image)]).fetchall()
    )
    assert rows == {"t/leak.jpg": "ok", leaked.img_id: "duplicate_content"}
    splits = dict(
        con.execute("SELECT img_id, split FROM splits WHERE img_id IN (?, ?)", ["t/leak.jpg", leaked.img_id]).fetchall()
    )
    assert splits == {"t/leak.jpg": "test"}


def test_split_rules_and_counts(two_sources):
    out, _, _ = two_sources
    table = catalog.split_table(out, "sample", val_fraction=0.3)
    assert list(table.columns) == ["key", "img_id", "lat", "lon", "source", "shard", "split"]
    assert len(table) == 30 + 5  # accepted samples only (no copy, no missing image)
    test = table[table.source == "test"]
    assert set(test.split) == {"test"}
    train = table[table.source == "train"]
    assert list(train.split) == [hash_split(k, 0.3) for k in train.key]
    assert {"train", "val"} == set(train.split)
    assert table.equals(catalog.split_table(out, "sample", val_fraction=0.3))  # deterministic
    assert set(catalog.split_table(out, "sample", val_fraction=0.0).query("source == 'train'").split) == {"train"}
    assert set(catalog.split_table(out, "sample", val_fraction=1.0).query("source == 'train'").split) == {"val"}

    con = catalog.connect(out, "sample", val_fraction=0.3)
    counts = {(s, sp): n for s, sp, n in con.execute("SELECT * FROM split_counts").fetchall()}
    expected = train.split.value_counts().to_dict()
    assert counts == {("test", "test"): 5, **{("train", k): v for k, v in expected.items()}}


def test_a_split_column_wins(tmp_path):
    data = simple_dataset(tmp_path / "in", 6)
    write_table(data.csv, data.records, {"split": ["TRAIN", " val ", "test", "holdout", "", "Test"]})
    out = tmp_path / "out"
    ingest(data.csv, data.images, out, config=CONFIG)
    table = catalog.split_table(out, "sample", val_fraction=0.5)
    keys = list(table.key)
    assert list(table.split) == ["train", "val", "test", hash_split(keys[3], 0.5), hash_split(keys[4], 0.5), "test"]
    con = catalog.connect(out, "sample")
    assert con.execute('SELECT split FROM samples ORDER BY "row"').fetchall()[1] == (" val ",)  # kept as given


def test_sizes_and_summary_match_the_tars(two_sources):
    out, _, result = two_sources
    folder = DataRoot(out).shards("sample", "train")
    sizes = json.loads((folder / "sizes.json").read_text())
    assert sorted(sizes) == [p.name for p in sorted(folder.glob("shard-*.tar"))]
    for name, n in sizes.items():
        with tarfile.open(folder / name) as tf:
            assert len(tf.getnames()) == 2 * n
    summary = json.loads((folder.parent / "summary.json").read_text())
    assert summary == result.summary.to_json()
    assert summary["sources"]["train"] == {
        "rows": 32,
        "shards_planned": 8,
        "shards_done": 8,
        "samples_in_shards": 31,  # the copy in a later shard is in its tar
        "status_counts": {"duplicate_content": 1, "missing_image": 1, "ok": 30},
    }
    assert summary["status_counts"] == {"duplicate_content": 1, "missing_image": 1, "ok": 35}


def test_connect_without_manifests_is_a_clear_error(tmp_path):
    with pytest.raises(InputError, match="no shard manifests"):
        catalog.connect(tmp_path, "sample")


def test_connection_helpers_and_written_splits(two_sources):
    out, _, _ = two_sources
    with catalog.connect(out, "sample") as con:
        rejects = catalog.rejects(con, limit=1)
        assert list(rejects.img_id) == ["copies/again.jpg"] and len(catalog.rejects(con)) == 2
        sizes = catalog.shard_sizes(con)
        assert list(sizes.columns) == ["source", "shard", "samples", "records"]
        assert sizes.groupby("source").samples.sum().to_dict() == {"test": 5, "train": 31}
        assert catalog.ok_rows_with_bad_gps(con) == 0
    path = catalog.write_splits(out, "sample", val_fraction=0.3)
    assert path == DataRoot(out).dataset_shards("sample") / "splits.parquet"
    written = pd.read_parquet(path)
    assert written.equals(catalog.split_table(out, "sample", val_fraction=0.3))


def test_verify_shards_finds_damaged_tars(two_sources):
    out, _, _ = two_sources
    assert catalog.verify_shards(out, "sample") == []
    folder = DataRoot(out).shards("sample", "train")
    (folder / "shard-000001.tar").write_bytes((folder / "shard-000001.tar").read_bytes()[:3000])
    (folder / "shard-000002.tar").write_bytes((folder / "shard-000003.tar").read_bytes())
    (folder / "shard-000004.tar").unlink()
    problems = {(p["shard"], p["problem"].split(" ")[0]) for p in catalog.verify_shards(out, "sample")}
    assert problems == {("shard-000001", "tar"), ("shard-000002", "tar"), ("shard-000004", "tar")}
    text = " ".join(p["problem"] for p in catalog.verify_shards(out, "sample"))
    assert "cut short" in text and "4 unexpected, 4 missing" in text and "missing" in text
