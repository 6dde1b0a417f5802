"""The Kubernetes recipe in deploy/k8s against the pinned dagster-k8s, offline (no cluster).

dagster-k8s's own validators and builders read the files: the instance config, the run config of
every job with GEOCONCEPT_EXECUTOR=k8s, the Kubernetes Job of a step, the Pipes trainer pod and
the shared volume; a typo in a field name or a value of the wrong kind fails here.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest
import yaml
from conftest import REPO

dagster_k8s = pytest.importorskip("dagster_k8s", reason="the optional extra geoconcept[k8s] is not installed")

K8S = REPO / "deploy" / "k8s"


def _load(name: str) -> dict:
    return yaml.safe_load((K8S / name).read_text())


def _launcher_config() -> dict:
    return _load("dagster.yaml")["run_launcher"]["config"]


def _env(launcher: dict) -> dict[str, str]:
    return dict(item.split("=", 1) for item in launcher["env_vars"])


def _gpus(container) -> int:
    return int((container.resources.limits or {}).get("nvidia.com/gpu", 0))


def test_executor_from_env_gives_the_k8s_job_executor(monkeypatch: pytest.MonkeyPatch) -> None:
    from pipelines.executors import executor_from_env

    monkeypatch.setenv("GEOCONCEPT_EXECUTOR", "k8s")
    assert executor_from_env() is dagster_k8s.k8s_job_executor


def test_instance_config_is_valid_with_k8s_run_launcher_and_postgres() -> None:
    from dagster._config import validate_config
    from dagster._core.instance.config import dagster_instance_config

    config, _ = dagster_instance_config(str(K8S))  # the whole file against Dagster's instance schema
    assert set(config["storage"]) == {"postgres"}
    launcher = config["run_launcher"]
    launcher_class = getattr(importlib.import_module(launcher["module"]), launcher["class"])
    assert launcher_class is dagster_k8s.K8sRunLauncher
    checked = validate_config(launcher_class.config_type(), launcher["config"])
    assert checked.success, [error.message for error in checked.errors]

    env = _env(launcher["config"])
    assert env["GEOCONCEPT_EXECUTOR"] == "k8s"
    mounts = {m["mountPath"] for m in launcher["config"]["volume_mounts"]}
    # Every pod sees the data root, the raw input and the raster cache on the shared volume.
    for name in ("GEOCONCEPT_DATA_ROOT", "GEOCONCEPT_RAW_DIR", "GEOCONCEPT_CACHE"):
        assert any(Path(env[name]).is_relative_to(mount) for mount in mounts), name


@pytest.mark.slow
def test_run_config_fits_every_job_with_the_k8s_executor() -> None:
    # The executor is chosen when the code location is imported, so import it afresh with the env set.
    code = (
        "import json, sys, yaml, dagster as dg\n"
        "from pipelines.definitions import defs\n"
        "config = yaml.safe_load(open(sys.argv[1]))\n"
        "jobs = [j for j in defs.resolve_all_job_defs() if not j.name.startswith('__')]\n"
        "for job in jobs:\n"
        "    dg.validate_run_config(job, config)\n"
        "print(json.dumps({job.name: job.executor_def.name for job in jobs}))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(K8S / "run_config.yaml")],
        cwd=REPO,
        env={**os.environ, "GEOCONCEPT_EXECUTOR": "k8s"},
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    executors = json.loads(proc.stdout.strip().splitlines()[-1])
    assert {"stage_job", "chunks_job", "dataset_job", "train_job", "evaluate_job"} <= set(executors)
    assert set(executors.values()) == {"k8s"}


def test_step_jobs_get_their_resources() -> None:
    from dagster_k8s.job import DagsterK8sJobConfig, UserDefinedDagsterK8sConfig, construct_dagster_k8s_job

    execution = _load("run_config.yaml")["execution"]["config"]
    launcher = _launcher_config()
    job_config = DagsterK8sJobConfig(
        job_image=launcher["job_image"],
        dagster_home="/opt/dagster/dagster_home",
        instance_config_map=launcher["instance_config_map"],
        env_vars=launcher["env_vars"],
        volumes=launcher["volumes"],
        volume_mounts=launcher["volume_mounts"],
    )

    def step_pod(op: str):
        step_config = execution["per_step_k8s_config"].get(op, execution["step_k8s_config"])
        job = construct_dagster_k8s_job(
            job_config,
            args=["dagster", "api", "execute_step"],
            job_name=f"dagster-step-{op.replace('_', '-')}",
            user_defined_k8s_config=UserDefinedDagsterK8sConfig.from_dict(step_config),
        )
        return job.spec.template.spec

    for op in ("shards", "concept_labels", "gallery_index"):
        (container,) = step_pod(op).containers
        assert _gpus(container) == 0 and container.resources.requests["cpu"]
        assert {m.mount_path for m in container.volume_mounts} == {_env(launcher)["GEOCONCEPT_DATA_ROOT"]}
    trainer = step_pod("checkpoint")
    assert _gpus(trainer.containers[0]) == _load("run_config.yaml")["resources"]["training"]["config"]["nproc_per_node"]
    assert trainer.tolerations[0].key == "nvidia.com/gpu"
    assert _gpus(step_pod("image_features").containers[0]) == 1


def test_trainer_pod_for_pipes_k8s_client() -> None:
    from dagster_k8s.pipes import build_pod_body

    from geoconcept.train.params import TrainConfig

    settings = _load("train_gpu.yaml")
    assert set(settings) <= {f.name for f in fields(TrainConfig)} and settings["device"] == "cuda"
    nproc = _load("run_config.yaml")["resources"]["training"]["config"]["nproc_per_node"]
    command = ["torchrun", f"--nproc_per_node={nproc}", "-m", "pipelines.train_pipes", "/data/geoconcept/x.yaml"]
    pod = build_pod_body(
        pod_name="dagster-pipes-trainer",
        image=_launcher_config()["job_image"],
        command=command,
        env_vars={"DAGSTER_PIPES_CONTEXT": "e30=", "DAGSTER_PIPES_MESSAGES": "e30="},
        base_pod_meta=None,
        base_pod_spec=_load("trainer_pod.yaml"),
    )
    (container,) = pod.spec.containers
    assert container.command == command and pod.spec.restart_policy == "Never"
    assert _gpus(container) == nproc
    assert "/data/geoconcept" in {m.mount_path for m in container.volume_mounts}


def test_shared_volume_claim() -> None:
    from dagster_k8s.models import k8s_model_from_dict, k8s_snake_case_dict
    from kubernetes.client import V1PersistentVolumeClaim

    manifest = _load("data-volume.yaml")
    claim = k8s_model_from_dict(V1PersistentVolumeClaim, k8s_snake_case_dict(V1PersistentVolumeClaim, manifest))
    assert claim.kind == "PersistentVolumeClaim" and claim.spec.access_modes == ["ReadWriteMany"]
    claims = {v["persistentVolumeClaim"]["claimName"] for v in _launcher_config()["volumes"]}
    assert claims == {claim.metadata.name}
