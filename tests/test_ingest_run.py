"""Ingest runs: determinism, resume, partitions, retry of failures, settings changes, locks,
parallel processes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO
from hostile_corpus import simple_dataset, snapshot

from geoconcept.cli import main
from geoconcept.errors import ConfigError, InputError
from geoconcept.ingest import (
    Busy,
    IngestConfig,
    discover_sources,
    ingest,
    ingest_partition,
    locks,
    parse_partition_key,
    partition_key,
    partition_manifests,
    plan,
    stage_source,
    write_summary,
)
from geoconcept.layout import DataRoot

CONFIG = IngestConfig(samples_per_shard=4, shards_per_partition=2, image_size=32)


def shard_files(root: Path, source: str = "train") -> dict[str, bytes | None]:
    """The shards, manifests, sizes.json and plan.json of a source, and the dataset summary."""
    folder = DataRoot(root).shards("sample", source)
    files = {p.name: p.read_bytes() for p in sorted(folder.glob("shard-*"))}
    files |= {name: (folder / name).read_bytes() for name in ("sizes.json", "plan.json")}
    files["summary.json"] = (folder.parent / "summary.json").read_bytes()
    return files


def mtimes(root: Path) -> dict[str, int]:
    folder = DataRoot(root).shards("sample", "train")
    return {p.name: p.stat().st_mtime_ns for p in sorted(folder.glob("shard-*"))}


def test_partition_keys():
    assert partition_key("train", 3) == "train-00003"
    assert parse_partition_key("train-00003") == ("train", 3)
    assert parse_partition_key("my_set-123456") == ("my_set", 123456)
    with pytest.raises(ConfigError):
        parse_partition_key("train-3")


def test_shard_layout_and_partitions(tmp_path):
    data = simple_dataset(tmp_path / "in", 18)
    result = ingest(data.csv, data.images, tmp_path / "out", config=CONFIG)
    assert result.staged.shards == 5 and result.staged.partitions == 3
    assert [p.key for p in result.partitions] == ["train-00000", "train-00001", "train-00002"]
    assert [[s.shard for s in p.shards] for p in result.partitions] == [
        ["shard-000000", "shard-000001"],
        ["shard-000002", "shard-000003"],
        ["shard-000004"],
    ]
    assert [s.records for p in result.partitions for s in p.shards] == [4, 4, 4, 4, 2]
    assert result.summary.sources["train"].samples_in_shards == 18


def test_two_runs_give_identical_bytes_with_one_or_two_workers(tmp_path):
    data = simple_dataset(tmp_path / "in", 18)
    ingest(data.csv, data.images, tmp_path / "a", config=CONFIG)
    two = IngestConfig(samples_per_shard=4, shards_per_partition=2, image_size=32, workers=2)
    ingest(data.csv, data.images, tmp_path / "b", config=two)
    assert shard_files(tmp_path / "a") == shard_files(tmp_path / "b")


def test_rerun_skips_done_shards_and_rebuilds_only_missing_ones(tmp_path):
    data = simple_dataset(tmp_path / "in", 18)
    out = tmp_path / "out"
    ingest(data.csv, data.images, out, config=CONFIG)
    reference, before = shard_files(out), mtimes(out)

    again = ingest(data.csv, data.images, out, config=CONFIG)
    assert sum(p.built for p in again.partitions) == 0
    assert mtimes(out) == before

    (DataRoot(out).shards("sample", "train") / "shard-000003.parquet").unlink()  # shard 3 "not done"
    rerun = ingest(data.csv, data.images, out, config=CONFIG)
    assert [(s.shard, s.built) for p in rerun.partitions for s in p.shards if s.built] == [("shard-000003", True)]
    after = mtimes(out)
    assert {k for k in after if after[k] != before[k]} == {"shard-000003.tar", "shard-000003.parquet"}
    assert shard_files(out) == reference


def test_only_chosen_partitions_are_built(tmp_path):
    data = simple_dataset(tmp_path / "in", 18)
    out = tmp_path / "out"
    result = ingest(data.csv, data.images, out, config=CONFIG, partitions=[1])
    assert [p.key for p in result.partitions] == ["train-00001"]
    assert sorted(p.name for p in DataRoot(out).shards("sample", "train").glob("shard-*")) == [
        "shard-000002.parquet",
        "shard-000002.tar",
        "shard-000003.parquet",
        "shard-000003.tar",
    ]
    summary = result.summary.sources["train"]
    assert (summary.shards_done, summary.shards_planned, summary.complete) == (2, 5, False)
    with pytest.raises(ConfigError, match=r"0\.\.2"):
        ingest(data.csv, data.images, out, config=CONFIG, partitions=[3])


def test_partition_manifests(tmp_path):
    data = simple_dataset(tmp_path / "in", 18)
    out = tmp_path / "out"
    assert partition_manifests(out, "sample", "train-00001") == []
    ingest(data.csv, data.images, out, config=CONFIG)
    folder = DataRoot(out).shards("sample", "train")
    assert partition_manifests(out, "sample", "train-00001") == [
        folder / "shard-000002.parquet",
        folder / "shard-000003.parquet",
    ]
    assert partition_manifests(out, "sample", "train-00002") == [folder / "shard-000004.parquet"]
    assert partition_manifests(out, "sample", "train-00003") == []
    assert partition_manifests(out, "sample", "test-00000") == []


def test_discover_sources(tmp_path):
    for name in ("train.csv", "test.parquet", "notes.txt"):
        (tmp_path / name).write_text("")
    (tmp_path / "images").mkdir()
    assert discover_sources(tmp_path) == {"test": tmp_path / "test.parquet", "train": tmp_path / "train.csv"}
    (tmp_path / "train.parquet").write_text("")
    with pytest.raises(InputError, match="both source 'train'"):
        discover_sources(tmp_path)
    with pytest.raises(InputError, match="no input tables"):
        discover_sources(tmp_path / "images")
    with pytest.raises(InputError, match="does not exist"):
        discover_sources(tmp_path / "nope")


def test_library_partition_by_partition_equals_one_run(tmp_path):
    data = simple_dataset(tmp_path / "in", 18)
    ingest(data.csv, data.images, tmp_path / "a", config=CONFIG)
    staged = stage_source(data.csv, "sample", "train", tmp_path / "b", CONFIG)
    stats = [
        ingest_partition(tmp_path / "b", "sample", "train", i, data.images, CONFIG) for i in range(staged.partitions)
    ]
    assert [s.key for s in stats] == staged.partition_keys
    assert sum(s.ok for s in stats) == 18
    write_summary(tmp_path / "b", "sample")
    assert shard_files(tmp_path / "a") == shard_files(tmp_path / "b")


def test_images_that_appear_are_picked_up_and_retry_failed_rebuilds_failing_shards(tmp_path):
    data = simple_dataset(tmp_path / "in", 12)
    late = [data.records[5], data.records[6]]  # both in shard 1
    for record in late:
        (data.images / record.img_id).unlink()
    out = tmp_path / "out"
    first = ingest(data.csv, data.images, out, config=CONFIG)
    assert first.summary.status_counts == {"missing_image": 2, "ok": 10}
    before = mtimes(out)

    unchanged = ingest(data.csv, data.images, out, config=CONFIG)
    assert sum(p.built for p in unchanged.partitions) == 0
    # redo="failed" rebuilds the shards holding a retryable failure even when their inputs look the
    # same (a permission fixed since leaves size and mtime alone), and only those.
    retried = ingest(data.csv, data.images, out, config=CONFIG, redo="failed")
    assert [s.shard for p in retried.partitions for s in p.shards if s.built] == ["shard-000001"]
    assert retried.summary.status_counts == {"missing_image": 2, "ok": 10}
    after = mtimes(out)
    assert {k for k in after if after[k] != before[k]} == {"shard-000001.tar", "shard-000001.parquet"}

    for record in late:
        (data.images / record.img_id).write_bytes(record.image)
    plain = ingest(data.csv, data.images, out, config=CONFIG)  # the lookup finds them now: shard 1 changed
    assert plain.summary.status_counts == {"ok": 12}
    assert [s.shard for p in plain.partitions for s in p.shards if s.built] == ["shard-000001"]
    fresh = tmp_path / "fresh"
    ingest(data.csv, data.images, fresh, config=CONFIG)
    assert shard_files(out) == shard_files(fresh)


def test_changed_layout_is_refused_then_overwrite_rebuilds(tmp_path):
    data = simple_dataset(tmp_path / "in", 18)
    out = tmp_path / "out"
    ingest(data.csv, data.images, out, config=CONFIG)
    bigger = IngestConfig(samples_per_shard=10, image_size=24)
    with pytest.raises(
        ConfigError, match=r"changed: samples_per_shard 4 -> 10, shards_per_partition 2 -> 1\).*--overwrite"
    ):
        ingest(data.csv, data.images, out, config=bigger)
    result = ingest(data.csv, data.images, out, config=bigger, redo="all")
    assert result.staged.shards == 2
    assert result.removed_shards == ("shard-000002", "shard-000003", "shard-000004")
    fresh = tmp_path / "fresh"
    ingest(data.csv, data.images, fresh, config=bigger)
    assert shard_files(out) == shard_files(fresh)  # no shard of the old layout is left behind


def test_partition_being_built_elsewhere_is_a_clear_error(tmp_path, capsys):
    data = simple_dataset(tmp_path / "in", 10)
    out = tmp_path / "out"
    stage_source(data.csv, "sample", "train", out, CONFIG)
    # Hold partition 1's lock as a concurrent ingest of it would (flock is per open file).
    fd = locks.acquire(plan.lock_path(DataRoot(out), "sample", "train", "train-00001"), wait=False, what="test")
    try:
        with pytest.raises(Busy, match="partition train-00001 is being ingested by another process"):
            ingest_partition(out, "sample", "train", 1, data.images, CONFIG)
        ingest_partition(out, "sample", "train", 0, data.images, CONFIG)  # another partition is fine
        args = ["--csv", str(data.csv), "--images", str(data.images), "--out", str(out), "--no-progress"]
        code = main(["ingest", *args, "--samples-per-shard", "4", "--shards-per-partition", "2", "--image-size", "32"])
        assert code == 2
        assert "partition train-00001 is being ingested by another process" in capsys.readouterr().err
    finally:
        locks.release(fd)
    assert main(["ingest", *args, "--samples-per-shard", "4", "--shards-per-partition", "2", "--image-size", "32"]) == 0


@pytest.mark.slow
def test_two_processes_ingest_different_partitions_of_one_source(tmp_path):
    data = simple_dataset(tmp_path / "in", 40, size=(120, 90))
    reference = tmp_path / "reference"
    config = IngestConfig(samples_per_shard=4, shards_per_partition=1, image_size=32)
    ingest(data.csv, data.images, reference, config=config)
    out = tmp_path / "out"
    base = [sys.executable, "-m", "geoconcept", "ingest", "--csv", str(data.csv), "--images", str(data.images)]
    base += ["--out", str(out), "--samples-per-shard", "4", "--image-size", "32", "--no-progress"]
    halves = [[f"--partition={i}" for i in range(0, 10, 2)], [f"--partition={i}" for i in range(1, 10, 2)]]
    runs = [
        subprocess.Popen([*base, *half], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE) for half in halves
    ]
    for run in runs:
        _, stderr = run.communicate(timeout=120)
        assert run.returncode == 0, stderr.decode()
    assert shard_files(out) == shard_files(reference)
    assert not list(out.rglob("*.tmp-*"))
    assert snapshot(out / "raw").keys() == snapshot(reference / "raw").keys()
