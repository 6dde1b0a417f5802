"""Staging an input table: streamed in batches, raw text kept, global duplicate IDs, clear errors."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hostile_corpus import snapshot

from geoconcept.errors import ConfigError, InputError
from geoconcept.ingest import IngestConfig, load_staged, stage_source, staging


def write_csv(path, text):
    path.write_text(text, encoding="utf-8")
    return path


def test_staged_table_keeps_raw_text_row_numbers_and_extra_columns(tmp_path, data_root):
    table = write_csv(
        tmp_path / "train.csv",
        "IMG_ID,LAT,LON,city\n"
        'a.jpg,45.10, 7 ,"Paris, FR"\n'
        "b.jpg,north,,Köln\n"
        "a.jpg,1,2,again\n"
        "c.jpg,1e1,-0,\n"
        "b.jpg,3,4,and again\n",
    )
    staged = stage_source(table, "sample", None, data_root, IngestConfig(samples_per_shard=2))
    assert staged.source == "train"
    assert staged.path == data_root / "raw" / "sample" / "train.parquet"
    assert (staged.rows, staged.columns, staged.extra_columns) == (5, ("IMG_ID", "LAT", "LON", "city"), ("city",))
    assert (staged.shards, staged.partitions, staged.partition_keys) == (
        3,
        3,
        ["train-00000", "train-00001", "train-00002"],
    )
    rows = pq.read_table(staged.path).to_pylist()
    assert [r["row"] for r in rows] == [0, 1, 2, 3, 4]
    assert rows[0] == {
        "row": 0,
        "IMG_ID": "a.jpg",
        "LAT": "45.10",
        "LON": " 7 ",
        "city": "Paris, FR",
        "duplicate_of": None,
    }
    assert rows[1]["LAT"] == "north" and rows[1]["LON"] == "" and rows[1]["city"] == "Köln"
    assert [r["duplicate_of"] for r in rows] == [None, None, 0, None, 1]


def test_csv_is_read_in_batches(tmp_path, data_root, monkeypatch):
    n = 3000
    lines = "".join(f"{i:04d}/{i}.jpg,{i % 90}.5,{i % 180}.25\n" for i in range(n))
    table = write_csv(tmp_path / "big.csv", "IMG_ID,LAT,LON\n" + lines + "0007/7.jpg,1,1\n")
    monkeypatch.setattr(staging, "CSV_BLOCK_BYTES", 4096)  # about 150 rows per batch
    batches: list[int] = []
    original = pq.ParquetWriter.write_batch

    def spy(self, batch, *args, **kwargs):
        batches.append(batch.num_rows)
        return original(self, batch, *args, **kwargs)

    monkeypatch.setattr(pq.ParquetWriter, "write_batch", spy)
    staged = stage_source(table, "sample", "big", data_root)
    assert staged.rows == n + 1
    assert sum(batches) == n + 1
    assert len(batches) > 10 and max(batches) < 400  # never the whole table at once
    duplicates = pq.read_table(staged.path, columns=["row", "duplicate_of"]).to_pylist()
    assert [d for d in duplicates if d["duplicate_of"] is not None] == [{"row": n, "duplicate_of": 7}]


def test_read_rows_reads_only_the_row_groups_it_needs(tmp_path, data_root, monkeypatch):
    n = 40_000
    table = write_csv(tmp_path / "t.csv", "IMG_ID,LAT,LON\n" + "".join(f"{i}.jpg,1,2\n" for i in range(n)))
    staged = stage_source(table, "sample", "t", data_root)
    assert pq.ParquetFile(staged.path).metadata.num_row_groups > 1
    asked: list[list[int]] = []
    original = pq.ParquetFile.read_row_groups

    def spy(self, groups, *args, **kwargs):
        asked.append(list(groups))
        return original(self, groups, *args, **kwargs)

    monkeypatch.setattr(pq.ParquetFile, "read_row_groups", spy)
    rows = staging.read_rows(staged.path, range(20_000, 20_010))
    assert rows.column("row").to_pylist() == list(range(20_000, 20_010))
    assert rows.column("IMG_ID").to_pylist()[0] == "20000.jpg"
    assert len(asked) == 1 and len(asked[0]) == 1


def test_parquet_input_becomes_text(tmp_path, data_root):
    path = tmp_path / "test.parquet"
    pq.write_table(
        pa.table({"IMG_ID": ["x.jpg", None], "LAT": [1.5, float("nan")], "LON": [2.0, 3.0], "views": [10, 20]}), path
    )
    staged = stage_source(path, "sample", None, data_root)
    assert staged.source == "test"
    rows = pq.read_table(staged.path).to_pylist()
    assert rows[0] == {"row": 0, "IMG_ID": "x.jpg", "LAT": "1.5", "LON": "2", "views": "10", "duplicate_of": None}
    assert rows[1]["IMG_ID"] is None and rows[1]["LAT"].lower() == "nan"


def test_unchanged_input_is_not_staged_again_and_a_changed_one_is(tmp_path, data_root):
    table = write_csv(tmp_path / "train.csv", "IMG_ID,LAT,LON\na.jpg,1,2\n")
    staged = stage_source(table, "sample", None, data_root)
    first = staged.path.stat().st_ino
    assert stage_source(table, "sample", None, data_root).path.stat().st_ino == first
    write_csv(table, "IMG_ID,LAT,LON\na.jpg,1,2\nb.jpg,3,4\n")
    again = stage_source(table, "sample", None, data_root)
    assert again.rows == 2 and again.input_sha256 != staged.input_sha256
    assert load_staged(data_root, "sample", "train").rows == 2


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("IMG_ID,LAT\na.jpg,1\n", "missing required column(s) LON"),
        ("name,y,x\na.jpg,1,2\n", "missing required column(s) IMG_ID, LAT, LON"),
        ("IMG_ID,LAT,LON,city,City\na,1,2,x,y\n", "repeated column name(s) City, city"),
        ("IMG_ID,LAT,LON,status\na,1,2,x\n", "clash with manifest columns"),
        ("", "cannot be read as CSV"),
    ],
)
def test_bad_tables_fail_clearly_and_write_nothing(tmp_path, text, words):
    table = write_csv(tmp_path / "train.csv", text)
    root = tmp_path / "data"
    with pytest.raises(InputError) as info:
        stage_source(table, "sample", None, root)
    assert words in str(info.value)
    assert str(table) in str(info.value)
    assert not root.exists()


def test_malformed_row_names_the_file(tmp_path, data_root):
    table = write_csv(tmp_path / "train.csv", "IMG_ID,LAT,LON\na.jpg,1,2\nb.jpg,1,2,3\n")
    with pytest.raises(InputError, match=r"train\.csv.*Expected 3 columns"):
        stage_source(table, "sample", None, data_root)
    assert not list(data_root.rglob("*.parquet*"))


def test_missing_input_and_bad_names(tmp_path, data_root):
    before = snapshot(tmp_path)
    with pytest.raises(InputError, match="does not exist"):
        stage_source(tmp_path / "nope.csv", "sample", None, data_root)
    table = write_csv(tmp_path / "my-data.csv", "IMG_ID,LAT,LON\n")
    with pytest.raises(ConfigError, match="--source"):
        stage_source(table, "sample", None, data_root)
    with pytest.raises(ConfigError, match="dataset name"):
        stage_source(table, "bad name", "ok", data_root)
    assert snapshot(tmp_path) == before | {"my-data.csv": b"IMG_ID,LAT,LON\n"}
