"""The streaming feature extraction: several shards in flight, precision in the cache identity,
corrupt shards, the command line's checks, and one process per device (issue 10)."""

from __future__ import annotations

import shutil
import tarfile

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from _model_inputs import write_tar

from geoconcept.cli import main as cli_main
from geoconcept.errors import InputError
from geoconcept.features import (
    ShardJob,
    extract_shard_features,
    extract_shards,
    is_up_to_date,
    read_feature_shard,
    split_shards,
)
from geoconcept.hashing import file_sha256
from geoconcept.layout import DataRoot
from geoconcept.model.backbone import Backbone

MODEL = "ViT-S-32-alt"


@pytest.fixture(scope="module")
def backbone() -> Backbone:
    return Backbone.create(MODEL, pretrained=None)


def finished_shard(folder, index: int, n: int, broken: int | None = None) -> ShardJob:
    """A tar and its manifest (every sample `ok`), as ingest leaves them."""
    folder.mkdir(parents=True, exist_ok=True)
    tar = folder / f"shard-{index:06d}.tar"
    keys = write_tar(tar, n=n, broken=broken)
    pq.write_table(pa.table({"key": keys, "status": ["ok"] * n}), tar.with_suffix(".parquet"))
    return ShardJob.beside_manifest(tar, folder / "out" / f"shard-{index:06d}.safetensors")


def test_streamed_shards_match_one_shard_at_a_time_byte_for_byte(backbone, tmp_path):
    jobs = [finished_shard(tmp_path, i, n) for i, n in enumerate([5, 3, 4])]
    assert [job.expected for job in jobs] == [5, 3, 4]
    results = extract_shards(jobs, backbone, batch_size=2, workers=2)  # batches of 3 shards interleave
    assert [(r.count, r.skipped) for r in results] == [(5, False), (3, False), (4, False)]
    for job in jobs:
        alone = tmp_path / "alone" / job.out.name
        extract_shard_features(job.tar, alone, backbone, batch_size=2, workers=0)
        assert job.out.read_bytes() == alone.read_bytes()  # every row in its own shard's file, in tar order
    assert read_feature_shard(jobs[1].out).metadata["precision"] == "fp32"


def test_precision_is_part_of_the_cache_identity_and_compile_is_not(backbone, tmp_path):
    job = finished_shard(tmp_path, 0, 3)
    extract_shards([job], backbone, workers=0)
    sha = file_sha256(job.tar)
    bf16 = Backbone.create(MODEL, pretrained=None, precision="bf16")
    assert not is_up_to_date(job.out, bf16, sha)
    [redone] = extract_shards([job], bf16, workers=0)
    assert not redone.skipped
    meta = read_feature_shard(job.out).metadata
    assert (meta["precision"], meta["features_dtype"], meta["compiled"]) == ("bf16", "float16", "false")
    assert not is_up_to_date(job.out, backbone, sha)  # an fp32 run does not take the bf16 file either
    compiled = Backbone.create(MODEL, pretrained=None, precision="bf16", compile=True)  # compiles lazily
    assert compiled.compiled and is_up_to_date(job.out, compiled, sha)


def test_a_failed_shard_leaves_the_finished_ones_and_the_rerun_does_only_the_rest(backbone, tmp_path):
    good, bad = finished_shard(tmp_path, 0, 3), finished_shard(tmp_path, 1, 3, broken=1)
    with pytest.raises(InputError, match=r"shard-000001\.tar: sample '0001abc' is unreadable"):
        extract_shards([good, bad], backbone, workers=0)
    assert good.out.exists()  # written as soon as its last row was done
    assert sorted(p.name for p in good.out.parent.iterdir()) == [good.out.name]  # no partial file
    finished_shard(tmp_path, 1, 3)  # the shard is ingested again
    results = extract_shards([good, bad], backbone, workers=1)
    assert [r.skipped for r in results] == [True, False]


def truncate_after(tar_path, samples: int) -> None:
    """Cut a tar cleanly after `samples` samples (2 members each): it reads as a shorter shard."""
    with tarfile.open(tar_path) as tar:
        cut = tar.getmembers()[2 * samples].offset
    tar_path.write_bytes(tar_path.read_bytes()[:cut])


def test_a_tar_shorter_than_its_manifest_is_an_error_never_a_short_file(backbone, tmp_path, capsys):
    job = finished_shard(tmp_path, 0, 6)
    truncate_after(job.tar, 3)
    with pytest.raises(InputError, match=r"shard-000000\.tar: read 3 samples but its manifest lists 6"):
        extract_shards([job], backbone, workers=1)
    assert not job.out.parent.exists() or not any(job.out.parent.iterdir())

    root = tmp_path / "data"
    shards = DataRoot(root).shards("sample", "train")
    finished_shard(shards, 0, 6)
    truncate_after(shards / "shard-000000.tar", 3)
    assert cli_main(["features", "--data-root", str(root), "--source", "train", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "no pretrained image weights" in err[0]  # the warning, then one error line
    assert err[1].startswith("geoconcept features: error: ") and "manifest lists 6" in err[1]
    assert not DataRoot(root).features("sample", "ViT-S-32-alt__none", "train").exists()


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--batch-size", "0"], "--batch-size must be an integer >= 1"),
        (["--batch-size", "-4"], "--batch-size must be an integer >= 1"),
        (["--workers", "-1"], "--workers must be an integer >= 0"),
        (["--precision", "xyz"], "precision must be one of fp32, bf16, fp16, got 'xyz'"),
    ],
)
def test_bad_settings_exit_2_with_one_line(tmp_path, capsys, flags, message):
    assert cli_main(["features", "--data-root", str(tmp_path), "--source", "train", *flags]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]


def test_a_pretrained_file_that_is_not_a_checkpoint_is_a_config_error(tmp_path, capsys):
    finished_shard(DataRoot(tmp_path).shards("sample", "train"), 0, 2)
    weights = tmp_path / "weights.pt"
    weights.write_bytes(bytes(range(256)) * 40)
    args = ["features", "--data-root", str(tmp_path), "--source", "train", "--pretrained", str(weights)]
    assert cli_main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"backbone checkpoint {weights} is not a readable open_clip checkpoint" in err[0]


def test_shards_split_round_robin_over_devices():
    parts = split_shards(list(range(7)), 3)
    assert parts == [[0, 3, 6], [1, 4], [2, 5]]
    assert split_shards([1, 2], 4) == [[1], [2], [], []]


@pytest.mark.slow
def test_two_device_processes_write_the_same_bytes_as_one(tmp_path, capsys):
    roots = {"one": tmp_path / "one", "two": tmp_path / "two"}
    for i, n in enumerate([4, 3, 5]):
        finished_shard(DataRoot(roots["one"]).shards("sample", "train"), i, n)
    shutil.copytree(roots["one"], roots["two"])  # the same tar bytes (a tar records its write time)
    for run, devices in (("one", "cpu"), ("two", "cpu,cpu")):
        args = ["features", "--data-root", str(roots[run]), "--source", "train", "--no-progress"]
        assert cli_main([*args, "--devices", devices, "--workers", "0", "--batch-size", "2"]) == 0
        assert "3 shard(s) computed, 0 up to date, 12 images" in capsys.readouterr().out
    folders = {run: DataRoot(root).features("sample", "ViT-S-32-alt__none", "train") for run, root in roots.items()}
    names = sorted(p.name for p in folders["one"].iterdir())
    assert names == [f"shard-00000{i}.safetensors" for i in range(3)]
    for name in names:
        assert (folders["one"] / name).read_bytes() == (folders["two"] / name).read_bytes()
