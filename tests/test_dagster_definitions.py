"""The one code location loads, validates, and every asset carries what the UI shows a person."""

from __future__ import annotations

import os
import subprocess
import sys

import dagster as dg
from conftest import REPO

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
        "evaluate_after_training_sensor",
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
