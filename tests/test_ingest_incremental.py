"""Incremental re-runs: a shard is rebuilt exactly when its input fingerprint (staged rows, output
settings, what its images resolve to) differs from the one its manifest records."""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from hostile_corpus import Record, noise_jpeg, simple_dataset, snapshot, write_image_tar, write_table

from geoconcept.cli import main
from geoconcept.errors import ConfigError
from geoconcept.ingest import IngestConfig, IngestResult, ingest, ingest_partition, shards, stage_source, write_summary
from geoconcept.layout import DataRoot

CONFIG = IngestConfig(samples_per_shard=4, shards_per_partition=2, image_size=32)


def folder(root: Path) -> Path:
    return DataRoot(root).shards("sample", "train")


def outputs(root: Path) -> dict[str, bytes]:
    """Shards, manifests, sizes.json and plan.json of the source, and the dataset summary."""
    files = {p.name: p.read_bytes() for p in sorted(folder(root).glob("shard-*"))}
    files |= {name: (folder(root) / name).read_bytes() for name in ("sizes.json", "plan.json")}
    files["summary.json"] = (folder(root).parent / "summary.json").read_bytes()
    return files


def file_ids(root: Path) -> dict[str, tuple[int, int]]:
    """(inode, mtime) of every shard file: a rebuilt file is a new inode (atomic rename)."""
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in sorted(folder(root).glob("shard-*"))}


def changed(before: dict[str, tuple[int, int]], after: dict[str, tuple[int, int]]) -> set[str]:
    return {name for name in before.keys() | after.keys() if before.get(name) != after.get(name)}


def built(result: IngestResult) -> list[str]:
    return [s.shard for p in result.partitions for s in p.shards if s.built]


def rewrite(corpus, records: list[Record]) -> None:
    write_table(corpus.csv, records)


def fresh_outputs(tmp_path: Path, csv: Path, images: Path | list[Path], config: IngestConfig = CONFIG):
    fresh = tmp_path / "fresh"
    ingest(csv, images, fresh, config=config)
    return outputs(fresh)


def test_an_edited_row_rebuilds_only_its_shard(tmp_path):
    data = simple_dataset(tmp_path / "in", 12)
    out = tmp_path / "out"
    ingest(data.csv, data.images, out, config=CONFIG)
    before = file_ids(out)

    data.records[5].lat = "12.5"  # row 5: shard 1
    rewrite(data, data.records)
    result = ingest(data.csv, data.images, out, config=CONFIG)
    assert built(result) == ["shard-000001"]
    assert changed(before, file_ids(out)) == {"shard-000001.tar", "shard-000001.parquet"}
    manifest = pq.read_table(folder(out) / "shard-000001.parquet").to_pydict()
    assert manifest["lat"][manifest["row"].index(5)] == 12.5
    assert outputs(out) == fresh_outputs(tmp_path, data.csv, data.images)


def test_a_replaced_image_rebuilds_only_its_shard(tmp_path):
    data = simple_dataset(tmp_path / "in", 12)
    out = tmp_path / "out"
    ingest(data.csv, data.images, out, config=CONFIG)
    before = file_ids(out)

    other = noise_jpeg(64, 40, seed=7)  # same IMG_ID, new bytes (and another size)
    (data.images / data.records[9].img_id).write_bytes(other)  # row 9: shard 2
    result = ingest(data.csv, data.images, out, config=CONFIG)
    assert built(result) == ["shard-000002"]
    assert changed(before, file_ids(out)) == {"shard-000002.tar", "shard-000002.parquet"}
    manifest = pq.read_table(folder(out) / "shard-000002.parquet").to_pydict()
    assert manifest["width"][manifest["row"].index(9)] == 51  # 64x40 scaled to a shorter side of 32
    assert outputs(out) == fresh_outputs(tmp_path, data.csv, data.images)


def test_a_touched_image_rebuilds_its_shard_to_the_same_bytes(tmp_path):
    data = simple_dataset(tmp_path / "in", 12)
    out = tmp_path / "out"
    ingest(data.csv, data.images, out, config=CONFIG)
    tar, manifest = folder(out) / "shard-000000.tar", folder(out) / "shard-000000.parquet"
    old_tar, old_rows, old_fingerprint = (
        tar.read_bytes(),
        pq.read_table(manifest),
        shards.recorded_fingerprint(manifest),
    )
    before = file_ids(out)

    image = data.images / data.records[2].img_id
    later = image.stat().st_mtime_ns + 10**9
    os.utime(image, ns=(later, later))
    result = ingest(data.csv, data.images, out, config=CONFIG)
    assert built(result) == ["shard-000000"]
    assert changed(before, file_ids(out)) == {"shard-000000.tar", "shard-000000.parquet"}
    assert tar.read_bytes() == old_tar
    # The manifest's rows are the same; only the fingerprint it records (which holds the mtime) moved on.
    assert pq.read_table(manifest).equals(old_rows)
    assert shards.recorded_fingerprint(manifest) not in (None, old_fingerprint)
    assert built(ingest(data.csv, data.images, out, config=CONFIG)) == []


def test_appended_rows_build_new_shards_and_skip_the_old(tmp_path):
    data = simple_dataset(tmp_path / "in", 18)
    rewrite(data, data.records[:12])
    out = tmp_path / "out"
    ingest(data.csv, data.images, out, config=CONFIG)
    before = file_ids(out)

    rewrite(data, data.records)
    result = ingest(data.csv, data.images, out, config=CONFIG)
    assert built(result) == ["shard-000003", "shard-000004"]
    after = file_ids(out)
    assert changed(before, after) == {f"shard-00000{i}.{ext}" for i in (3, 4) for ext in ("tar", "parquet")}
    assert result.summary.sources["train"].samples_in_shards == 18
    assert outputs(out) == fresh_outputs(tmp_path, data.csv, data.images)


def test_a_shrunken_table_removes_the_shards_beyond_its_end(tmp_path, capsys):
    data = simple_dataset(tmp_path / "in", 18)
    out = tmp_path / "out"
    ingest(data.csv, data.images, out, config=CONFIG)
    before = file_ids(out)

    # As the Dagster assets run it: stage, then one partition.
    rewrite(data, data.records[:9])
    stage_source(data.csv, "sample", "train", out, CONFIG)
    stats = ingest_partition(out, "sample", "train", 0, data.images, CONFIG)
    assert stats.removed_shards == ("shard-000003", "shard-000004")
    assert [s.built for s in stats.shards] == [False, False]
    ingest_partition(out, "sample", "train", 1, data.images, CONFIG)  # shard 2 now holds row 8 alone
    write_summary(out, "sample")
    assert changed(before, file_ids(out)) == {f"shard-00000{i}.{ext}" for i in (2, 3, 4) for ext in ("tar", "parquet")}
    assert outputs(out) == fresh_outputs(tmp_path, data.csv, data.images)

    # The CLI says so.
    rewrite(data, data.records[:3])
    args = ["--csv", str(data.csv), "--images", str(data.images), "--out", str(out), "--no-progress"]
    assert main(["ingest", *args, "--samples-per-shard", "4", "--shards-per-partition", "2", "--image-size", "32"]) == 0
    assert "removed 2 shard(s) beyond the table's last row: shard-000001, shard-000002" in capsys.readouterr().out
    assert sorted(p.name for p in folder(out).glob("shard-*")) == ["shard-000000.parquet", "shard-000000.tar"]
    assert outputs(out) == fresh_outputs(tmp_path / "again", data.csv, data.images)


def test_a_changed_layout_without_redo_all_is_refused_and_changes_nothing(tmp_path):
    data = simple_dataset(tmp_path / "in", 12)
    out = tmp_path / "out"
    ingest(data.csv, data.images, out, config=CONFIG)
    before = snapshot(out / "shards")
    other = IngestConfig(samples_per_shard=6, shards_per_partition=2, image_size=32)
    with pytest.raises(ConfigError, match=r"changed: samples_per_shard 4 -> 6\).*redo='all'"):
        ingest(data.csv, data.images, out, config=other)
    with pytest.raises(ConfigError, match=r"changed: samples_per_shard 4 -> 6\)"):
        ingest_partition(out, "sample", "train", 0, data.images, other)
    with pytest.raises(ConfigError, match=r"samples_per_shard 4 -> 6"):  # all partitions are needed
        ingest(data.csv, data.images, out, config=other, redo="all", partitions=[0])
    assert snapshot(out / "shards") == before


def test_a_changed_image_setting_rebuilds_every_shard(tmp_path):
    data = simple_dataset(tmp_path / "in", 12)
    out = tmp_path / "out"
    ingest(data.csv, data.images, out, config=CONFIG)
    smaller = IngestConfig(samples_per_shard=4, shards_per_partition=2, image_size=24)
    result = ingest(data.csv, data.images, out, config=smaller)
    assert built(result) == ["shard-000000", "shard-000001", "shard-000002"]
    assert outputs(out) == fresh_outputs(tmp_path, data.csv, data.images, smaller)


def test_a_manifest_without_a_fingerprint_is_not_done(tmp_path):
    data = simple_dataset(tmp_path / "in", 12)
    out = tmp_path / "out"
    ingest(data.csv, data.images, out, config=CONFIG)
    reference = outputs(out)
    manifest = folder(out) / "shard-000001.parquet"
    pq.write_table(pq.read_table(manifest).replace_schema_metadata(None), manifest)  # as an older version wrote it
    assert shards.recorded_fingerprint(manifest) is None
    assert built(ingest(data.csv, data.images, out, config=CONFIG)) == ["shard-000001"]
    assert outputs(out) == reference


def test_tar_images_replaced_or_arriving_rebuild_only_their_shards(tmp_path):
    records = [Record(f"im/{i}.jpg", f"{10 + i}", f"{20 + i}", "ok", noise_jpeg(40, 30, seed=i)) for i in range(10)]
    csv = write_table(tmp_path / "in" / "train.csv", records)
    tars = tmp_path / "in" / "tars"
    tars.mkdir()
    write_image_tar(tars / "a.tar", {r.img_id: r.image for r in records[:4]})  # shard 0
    write_image_tar(tars / "b.tar", {r.img_id: r.image for r in records[4:7]})  # shard 1 but im/7.jpg
    write_image_tar(tars / "c.tar", {r.img_id: r.image for r in records[8:]})  # shard 2
    out = tmp_path / "out"
    first = ingest(csv, tars, out, config=CONFIG)
    assert first.summary.status_counts == {"missing_image": 1, "ok": 9}
    before = file_ids(out)

    # b.tar rewritten under the same name with a new im/5.jpg: shard 1 only.
    records[5].image = noise_jpeg(40, 30, seed=55)
    write_image_tar(tars / "b.tar", {r.img_id: r.image for r in records[4:7]})
    assert built(ingest(csv, tars, out, config=CONFIG)) == ["shard-000001"]
    assert changed(before, file_ids(out)) == {"shard-000001.tar", "shard-000001.parquet"}
    before = file_ids(out)

    # A new tar brings the missing im/7.jpg (shard 1): picked up without --retry-failed.
    write_image_tar(tars / "d.tar", {records[7].img_id: records[7].image})
    result = ingest(csv, tars, out, config=CONFIG)
    assert built(result) == ["shard-000001"] and result.summary.status_counts == {"ok": 10}
    assert changed(before, file_ids(out)) == {"shard-000001.tar", "shard-000001.parquet"}
    assert outputs(out) == fresh_outputs(tmp_path, csv, tars)
