"""Scale-out on an existing engine: Dagster runs the ingest chunks on a real dask.distributed cluster.

A scheduler and two single-threaded worker processes are started on 127.0.0.1 (each in its own
session, stopped by id). `dagster job execute` runs stage_job, then one chunks_job run per chunk,
all at once as a backfill would launch them, with GEOCONCEPT_EXECUTOR=dask. The chunk runs select
the shards and concept labels (image features run the same way, but creating the backbone costs
each worker about 10 s more here). The test checks that every run succeeded, that every step of every run
started in a dask worker process (not in the run's own process), and that the shards and labels
are complete.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
from conftest import REPO

from geoconcept.ingest import partition_manifests
from geoconcept.sample import SampleConfig, build_sample
from pipelines.stages import Settings, chunk_keys, dagster_env

pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent
DATASET = "sample"
SAMPLES_PER_SHARD = 20  # 40 train + 10 test rows -> chunks train-00000, train-00001, test-00000
CHUNK_STEPS = ["shards", "concept_labels"]
RUN_TIMEOUT_S = 240


@dataclass(frozen=True)
class DaskCluster:
    address: str
    worker_pids: frozenset[int]
    logs: Path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _live_processes(sessions: list[int]) -> list[str]:
    """`ps` lines of the processes still alive (zombies are dead) in the given sessions."""
    out = subprocess.run(["ps", "-e", "-o", "pid=,sid=,stat=,args="], capture_output=True, text=True, check=True)
    lines = [line.split(None, 3) for line in out.stdout.splitlines()]
    return [" ".join(f) for f in lines if len(f) == 4 and int(f[1]) in sessions and not f[2].startswith("Z")]


def _log_tails(logs: Path) -> str:
    return "".join(f"\n--- {log.name} ---\n{log.read_text(errors='replace')[-3000:]}" for log in sorted(logs.glob("*")))


def _stop_session(proc: subprocess.Popen) -> None:
    """Stop a process started with start_new_session (its pid is its group's id): TERM, then KILL."""
    for sig, grace in ((signal.SIGTERM, 15), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            continue
        if not _live_processes([proc.pid]):
            return


@pytest.fixture
def deployment(tmp_path: Path, data_root: Path) -> dict[str, str]:
    """The environment every process of the deployment shares: data root, raw folder, executor."""
    settings = Settings(data_root=data_root, raw_dir=tmp_path / "raw", executor="dask")
    env = dagster_env(settings)
    env["GEOCONCEPT_DASK_ADDRESS"] = f"tcp://127.0.0.1:{_free_port()}"
    return env


@pytest.fixture
def dask_cluster(tmp_path: Path, deployment: dict[str, str]) -> Iterator[DaskCluster]:
    from distributed import Client

    address = deployment["GEOCONCEPT_DASK_ADDRESS"]
    logs = tmp_path / "dask-logs"
    logs.mkdir()
    dask = str(BIN / "dask")
    port = address.rsplit(":", 1)[1]
    commands = {
        "scheduler": [dask, "scheduler", "--host", "127.0.0.1", "--port", port, "--dashboard-address", "127.0.0.1:0"],
        "workers": [
            *(dask, "worker", address, "--nworkers", "2", "--nthreads", "1", "--host", "127.0.0.1"),
            *("--no-dashboard", "--local-directory", str(tmp_path / "dask-scratch")),
            # Import the code location when the worker starts, not when its first step arrives.
            *("--preload", "pipelines.definitions"),
        ],
    }
    procs: list[subprocess.Popen] = []
    try:
        for name, command in commands.items():
            with open(logs / f"{name}.log", "wb") as log:
                procs.append(
                    subprocess.Popen(
                        command,
                        cwd=tmp_path,
                        env=deployment,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                )
        try:
            with Client(address, timeout="60s") as client:
                client.wait_for_workers(2, timeout=90)
                worker_pids = frozenset(client.run(os.getpid).values())
        except (OSError, TimeoutError) as exc:
            pytest.fail(f"the dask cluster did not start: {exc}{_log_tails(logs)}")
        yield DaskCluster(address, worker_pids, logs)
    finally:
        for proc in reversed(procs):
            _stop_session(proc)
        sessions = [p.pid for p in procs]
        deadline = time.monotonic() + 10
        while (left := _live_processes(sessions)) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not left, f"dask processes survived the teardown: {left}"


def _dagster_execute(
    job: str, env: dict[str, str], config: Path, tags: dict | None = None, steps: list[str] | None = None
) -> subprocess.Popen:
    cmd = [str(BIN / "dagster"), "job", "execute", "-m", "pipelines.definitions", "-j", job, "-c", str(config)]
    if tags:
        cmd += ["--tags", json.dumps(tags)]
    if steps:
        cmd += ["--op-selection", ",".join(steps)]
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _wait(proc: subprocess.Popen, cluster: DaskCluster) -> None:
    try:
        out, _ = proc.communicate(timeout=RUN_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
    assert proc.returncode == 0, f"{proc.args} failed:\n{out[-5000:]}{_log_tails(cluster.logs)}"


def _event_pids(instance, run_id: str, event_type) -> dict[str | None, int]:
    """step key (None for run events) -> pid of the process that logged the `event_type` event."""
    return {
        e.dagster_event.step_key: e.dagster_event.pid
        for e in instance.all_logs(run_id, of_type=event_type)
        if e.dagster_event
    }


def test_ingest_chunks_run_on_dask_workers(
    tmp_path: Path, data_root: Path, deployment: dict[str, str], dask_cluster: DaskCluster
) -> None:
    import dagster as dg

    build_sample(tmp_path / "raw", SampleConfig(n_train=40, n_test=10, image_size=64))
    # Run config travels with the run to the workers: with the default 1,000 there would be 2 chunks, not 3.
    config = tmp_path / "run_config.json"
    config.write_text(
        json.dumps({"resources": {"ingest_settings": {"config": {"samples_per_shard": SAMPLES_PER_SHARD}}}})
    )

    _wait(_dagster_execute("stage_job", deployment, config), dask_cluster)
    keys = chunk_keys(data_root)
    assert sorted(keys) == ["test-00000", "train-00000", "train-00001"]
    # One run per chunk, all at once, on the same cluster (what a backfill launches).
    runs = [_dagster_execute("chunks_job", deployment, config, {"dagster/partition": key}, CHUNK_STEPS) for key in keys]
    try:
        for proc in runs:
            _wait(proc, dask_cluster)
    finally:
        for proc in runs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()

    with dg.DagsterInstance.from_config(deployment["DAGSTER_HOME"]) as instance:
        records = instance.get_runs()
        assert sorted(r.job_name for r in records) == ["chunks_job"] * 3 + ["stage_job"]
        assert sorted(r.tags.get("dagster/partition", "") for r in records) == ["", *sorted(keys)]
        for run in records:
            assert run.status == dg.DagsterRunStatus.SUCCESS, run.run_id
            started = _event_pids(instance, run.run_id, dg.DagsterEventType.STEP_START)
            succeeded = _event_pids(instance, run.run_id, dg.DagsterEventType.STEP_SUCCESS)
            wanted = set(CHUNK_STEPS) if run.job_name == "chunks_job" else {"raw_dataset"}
            # Every run ran its own steps (none borrowed another run's results) ...
            assert set(started) == set(succeeded) == wanted, (run.run_id, started, succeeded)
            # ... each in a dask worker process, not in the process that ran the run.
            assert set(started.values()) <= dask_cluster.worker_pids, (started, dask_cluster.worker_pids)
            run_pid = _event_pids(instance, run.run_id, dg.DagsterEventType.RUN_START)[None]
            assert run_pid not in dask_cluster.worker_pids

    rows = ok = 0
    for key in keys:
        manifests = partition_manifests(data_root, DATASET, key)
        assert len(manifests) == 1, key
        manifest = pd.read_parquet(manifests[0])
        ok_keys = manifest.loc[manifest["status"] == "ok", "key"].astype(str).tolist()
        rows, ok = rows + len(manifest), ok + len(ok_keys)
        assert len(manifest) == (10 if key.startswith("test") else SAMPLES_PER_SHARD)

        source = manifests[0].parent.name
        labels = pd.read_parquet(data_root / "labels" / DATASET / source / manifests[0].name)
        assert labels["key"].astype(str).tolist() == ok_keys
    # The embedded sample has no bad records: every input row is an ok sample.
    assert (rows, ok) == (50, 50)
