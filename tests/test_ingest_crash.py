"""Crash safety: SIGKILL the ingest CLI at several points and re-run it. The final shards and
manifests are byte-identical to an uninterrupted run, and while it runs no partial tar or
manifest is ever visible under a final name."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from conftest import REPO
from hostile_corpus import simple_dataset

from geoconcept.ingest import IngestConfig, ingest
from geoconcept.layout import DataRoot

pytestmark = pytest.mark.slow

SAMPLES_PER_SHARD = 4
RECORD_SIZE = tarfile.RECORDSIZE


def shard_outputs(root: Path) -> dict[str, bytes]:
    folder = DataRoot(root).shards("sample", "train")
    files = {p.name: p.read_bytes() for p in sorted(folder.glob("shard-*"))}
    for path in (folder / "sizes.json", folder / "plan.json", folder.parent / "summary.json"):
        files[path.name] = path.read_bytes()
    return files


def check_complete(path: Path, seen: dict[str, int]) -> None:
    """A file under a final name is complete (checked once per inode: a rebuild replaces it)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return  # replaced or removed between listing and opening
    with os.fdopen(fd, "rb") as fh:
        inode = os.fstat(fd).st_ino
        if seen.get(path.name) == inode:
            return
        data = fh.read()
    if path.suffix == ".tar":
        # TarWriter pads to whole records and ends with two zero blocks; a cut tar does neither.
        assert len(data) % RECORD_SIZE == 0 and data[-1024:] == bytes(1024), f"partial tar {path}"
        with tarfile.open(fileobj=io.BytesIO(data)) as tf:
            names = tf.getnames()
        keys = {n.rsplit(".", 1)[0] for n in names}
        assert sorted(names) == sorted(f"{k}.{ext}" for k in keys for ext in ("jpg", "json")), path
    else:
        pq.read_metadata(io.BytesIO(data))
    seen[path.name] = inode


def run_until(args: list[str], folder: Path, when: Callable[[Path], bool], seen: dict[str, int]) -> int:
    """Start the CLI, poll its outputs, SIGKILL it as soon as `when(folder)`; return its exit code."""
    process = subprocess.Popen(args, cwd=REPO, start_new_session=True, stdout=subprocess.DEVNULL)
    killed = False
    try:
        while process.poll() is None:
            if folder.is_dir():
                for path in sorted(folder.glob("shard-*")):
                    if path.suffix in (".tar", ".parquet"):
                        check_complete(path, seen)
            if not killed and when(folder):
                process.send_signal(signal.SIGKILL)
                killed = True
        return process.wait()
    finally:
        # Only the main process was killed; pool workers it left finish their shard and exit.
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                os.killpg(process.pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.05)
        else:
            os.killpg(process.pid, signal.SIGKILL)


def manifests(n: int) -> Callable[[Path], bool]:
    return lambda folder: len(list(folder.glob("shard-*.parquet"))) >= n


def test_killed_runs_resume_to_the_same_bytes(tmp_path):
    data = simple_dataset(tmp_path / "in", 96, size=(400, 300))
    config = IngestConfig(samples_per_shard=SAMPLES_PER_SHARD, image_size=32)
    reference = tmp_path / "reference"
    ingest(data.csv, data.images, reference, config=config)
    expected = shard_outputs(reference)

    out = tmp_path / "out"
    folder = DataRoot(out).shards("sample", "train")
    staged = DataRoot(out).staged_table("sample", "train")
    cli = [sys.executable, "-m", "geoconcept", "ingest", "--csv", str(data.csv), "--images", str(data.images)]
    cli += ["--out", str(out), "--samples-per-shard", str(SAMPLES_PER_SHARD), "--image-size", "32", "--no-progress"]
    seen: dict[str, int] = {}
    kill_points = [
        (cli, lambda _: staged.exists()),  # right after staging
        (cli, lambda f: (f / "shard-000000.tar").exists()),  # the first tar, before or after its manifest
        (cli, manifests(6)),  # mid-run
        ([*cli, "--workers", "2"], manifests(14)),  # mid-run with a worker pool
    ]
    for args, when in kill_points:
        assert run_until(args, folder, when, seen) == -signal.SIGKILL
        assert not (folder.parent / "summary.json").exists()  # killed before it finished
    assert 0 < len(list(folder.glob("shard-*.parquet"))) < 24

    assert run_until(cli, folder, lambda _: False, seen) == 0
    assert shard_outputs(out) == expected
    assert not list(out.rglob("*.tmp-*"))
