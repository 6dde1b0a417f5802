"""The one code location loads, validates, and every asset carries what the UI shows a person."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
from conftest import REPO

from assets.resources import IngestResource
from pipelines.definitions import defs

GROUPS = {"ingest", "concepts", "features", "training", "evaluation"}


def test_dagster_definitions_validate_passes_on_the_workspace(tmp_path):
    env = dict(os.environ, DAGSTER_HOME=str(tmp_path), GEOCONCEPT_DATA_ROOT=str(tmp_path / "data"))
    out = subprocess.run(
        [sys.executable, "-m", "dagster", "definitions", "validate", "-w", "workspace.yaml"],
        cwd=REPO, env=env, capture_output=True, text=True, check=False, timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "Validation successful" in out.stdout + out.stderr


def test_dg_check_defs_passes(tmp_path):
    """`dg check defs` loads the code location named in pyproject.toml's [tool.dg], offline."""
    env = dict(os.environ, DAGSTER_HOME=str(tmp_path), GEOCONCEPT_DATA_ROOT=str(tmp_path / "data"))
    env["VIRTUAL_ENV"] = str(Path(sys.executable).parent.parent)  # the project's venv, as `make ui` says
    out = subprocess.run(
        [str(Path(sys.executable).with_name("dg")), "check", "defs"],
        cwd=REPO, env=env, capture_output=True, text=True, check=False, timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "All definitions loaded successfully" in out.stdout + out.stderr


SNAPSHOT_IDS = """
from pipelines.definitions import defs
repo = defs.get_repository_def()
for job in sorted(repo.job_names):
    print(job, repo.get_job(job).get_job_snapshot().snapshot_id)
"""


def test_job_snapshots_do_not_depend_on_the_data_root_or_raw_folder(tmp_path):
    """A run launched with one data root and re-executed from a UI started with another must match
    its job's snapshot: the definitions hold the environment variables' names, not their values."""

    def snapshot_ids(name: str) -> dict[str, str]:
        env = dict(os.environ, DAGSTER_HOME=str(tmp_path), GEOCONCEPT_DATA_ROOT=str(tmp_path / name))
        env.update(GEOCONCEPT_RAW_DIR=str(tmp_path / name / "raw"), GEOCONCEPT_IMAGES=str(tmp_path / f"{name}.tar"))
        out = subprocess.run(
            [sys.executable, "-c", SNAPSHOT_IDS], cwd=REPO, env=env, capture_output=True, text=True, check=True,
            timeout=300,
        )  # fmt: skip
        return dict(line.split() for line in out.stdout.splitlines())

    first = snapshot_ids("one")
    assert "chunks_job" in first and "evaluate_job" in first
    assert snapshot_ids("two") == first


def test_resources_bind_the_locations_to_environment_variables():
    storage, ingest, io = (defs.resources[name] for name in ("storage", "ingest_settings", "io_manager"))
    values = {"data_root": storage.data_root, "raw_dir": ingest.raw_dir, "images": ingest.images, "io": io.base_dir}
    assert all(isinstance(value, dg.EnvVar) for value in values.values()), values
    assert values == {
        "data_root": "GEOCONCEPT_DATA_ROOT", "raw_dir": "GEOCONCEPT_RAW_DIR", "images": "GEOCONCEPT_IMAGES",
        "io": "GEOCONCEPT_DATA_ROOT",
    }  # fmt: skip


def test_a_partial_run_config_keeps_the_locations_from_the_environment(monkeypatch, tmp_path):
    """`make rebuild --run-config` sets a few settings of a resource; the rest keep their defaults."""
    monkeypatch.setenv("GEOCONCEPT_RAW_DIR", str(tmp_path / "raw"))
    monkeypatch.setenv("GEOCONCEPT_IMAGES", "")
    seen = {}

    @dg.asset
    def probe(ingest_settings: IngestResource) -> None:
        settings = ingest_settings
        seen.update(raw_dir=settings.raw_dir, images=settings.images_path(), shard=settings.samples_per_shard)

    config = {"resources": {"ingest_settings": {"config": {"samples_per_shard": 24}}}}
    dg.materialize([probe], resources={"ingest_settings": defs.resources["ingest_settings"]}, run_config=config)
    assert seen == {"raw_dir": str(tmp_path / "raw"), "images": str(tmp_path / "raw" / "images"), "shard": 24}


def test_every_asset_links_to_the_source_file_that_defines_it():
    graph = defs.resolve_asset_graph()
    for key in graph.get_all_asset_keys():
        references = graph.get(key).metadata["dagster/code_references"].code_references
        local = [ref for ref in references if isinstance(ref, dg.LocalFileCodeReference)]
        assert local, key.to_user_string()
        path = Path(local[0].file_path)
        assert path.is_file() and path.parent.name == "assets", path
        # The line of the decorated function (an asset factory's inner function for the layer assets).
        line = path.read_text().splitlines()[local[0].line_number - 1]
        assert line.lstrip().startswith(("def ", "@")), (key.to_user_string(), local[0], line)


def test_every_asset_has_a_group_description_owner_kind_and_code_version():
    graph = defs.resolve_asset_graph()
    nodes = [graph.get(key) for key in graph.get_all_asset_keys()]
    assert len(nodes) >= 17
    assert {node.group_name for node in nodes} == GROUPS
    for node in nodes:
        name = node.key.to_user_string()
        assert node.description and len(node.description) > 30, name
        assert node.owners, name
        assert any(tag.startswith("dagster/kind/") for tag in node.tags), name
        assert node.code_version, name


def test_jobs_sensors_schedules_and_checks_are_registered():
    repo = defs.get_repository_def()
    assert {"stage_job", "chunks_job", "relabel_job", "dataset_job", "train_job", "evaluate_job"} <= set(repo.job_names)
    assert {s.name for s in repo.sensor_defs} == {
        "raw_folder_sensor",
        "new_chunks_sensor",
        "automation_condition_sensor",
    }
    assert {s.name for s in repo.schedule_defs} == {"stale_chunks_schedule"}
    specs = {spec.key.name: spec for node in defs.resolve_asset_graph().assets_defs for spec in node.check_specs}
    assert set(specs) == {
        "shards_complete", "gps_in_range", "reject_rate", "labels_complete_and_in_range", "concept_coverage_nonzero"
    }  # fmt: skip
    # A broken input must stop what reads it: these checks block downstream steps when they fail.
    assert {name for name, spec in specs.items() if spec.blocking} == {
        "shards_complete", "reject_rate", "labels_complete_and_in_range"
    }  # fmt: skip


def test_chunk_jobs_are_partitioned_by_chunk_and_training_by_variant():
    repo = defs.get_repository_def()
    chunks = repo.get_job("chunks_job").partitions_def
    assert isinstance(chunks, dg.DynamicPartitionsDefinition) and chunks.name == "ingest_chunks"
    assert repo.get_job("train_job").partitions_def.get_partition_keys() == [
        "geoclip",
        "concept",
        "concept_supervised",
    ]


def test_local_runs_choose_in_process_or_a_process_per_step_by_run_config(monkeypatch, tmp_path):
    from pipelines.executors import executor_from_env
    from pipelines.stages import Settings, job_config

    for kind in ("local", "multiprocess"):
        monkeypatch.setenv("GEOCONCEPT_EXECUTOR", kind)
        assert executor_from_env() is dg.multi_or_in_process_executor  # one job definition for both modes
    monkeypatch.delenv("GEOCONCEPT_EXECUTOR")
    assert executor_from_env() is dg.multi_or_in_process_executor

    user = {"train_job": {"resources": {"gallery": {"config": {"max_points": 20}}}}}
    settings = Settings(data_root=tmp_path, raw_dir=tmp_path, run_config=user)
    assert job_config(settings, "train_job") == {**user["train_job"], "execution": {"config": {"in_process": {}}}}
    assert job_config(Settings(data_root=tmp_path, raw_dir=tmp_path, in_process=False), "train_job") == {}
    assert job_config(Settings(data_root=tmp_path, raw_dir=tmp_path, executor="dask"), "stage_job") == {}
    own = {"stage_job": {"execution": {"config": {"multiprocess": {"max_concurrent": 4}}}}}
    assert job_config(Settings(data_root=tmp_path, raw_dir=tmp_path, run_config=own), "stage_job") == own["stage_job"]
