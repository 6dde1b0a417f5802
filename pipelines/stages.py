"""The whole graph as a sequence of Dagster job runs, in dependency order.

Dagster runs one partitioning per run, so a full build is: stage_job → chunks_job (every chunk,
one run) → dataset_job → train_job (one run per variant) → evaluate_job. Each is a real
`dagster job execute` against the project's code location in a persistent DAGSTER_HOME, so the
runs, their logs, metadata and data versions are in the UI afterwards (`make ui`).
Used by `make demo` (the embedded sample) and `make rebuild` (any raw folder, fresh data root).

Settings reach the jobs through ONE channel per kind. Where things are (data root, raw folder,
images) and which executor a deployment uses are environment variables, which the code location
binds with `dg.EnvVar` (pipelines/definitions.py) and reads in every process the same way — sensors
and schedules in the daemon included, which run config from here would never reach. Per-run
choices stay run config, stored with each run: the user's `--run-config` and whether steps run in
one process. So a run re-executed from the UI has the same config and matches its job's snapshot.
"""

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import dagster as dg

from assets.partitions import VARIANTS
from geoconcept.provenance import write_build_manifest

REPO = Path(__file__).resolve().parent.parent
BUILD_MANIFEST = "build-manifest.json"
DATA_VERSION_TAG = "dagster/data_version"


@dataclass(frozen=True)
class Settings:
    """What a build needs beyond the code: where the inputs are, where outputs go, and run config."""

    data_root: Path
    raw_dir: Path
    images: str = ""  # default: <raw_dir>/images; or a tar, a folder of tars, a glob
    run_config: dict[str, dict] = field(default_factory=dict)  # job name → run config (resources)
    executor: str = "local"  # GEOCONCEPT_EXECUTOR of the whole deployment: local, dask, k8s
    # With the local executor: each run in one process. On a 2-core laptop a process per step only
    # adds start-up time; set False for a process per step.
    in_process: bool = True


def dagster_env(settings: Settings) -> dict[str, str]:
    home = settings.data_root / "dagster_home"
    home.mkdir(parents=True, exist_ok=True)
    if not (home / "dagster.yaml").exists():
        (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    env = dict(os.environ)
    env.update(
        {
            "DAGSTER_HOME": str(home),
            "GEOCONCEPT_DATA_ROOT": str(settings.data_root),
            "GEOCONCEPT_RAW_DIR": str(settings.raw_dir),
            "GEOCONCEPT_IMAGES": settings.images,
            "GEOCONCEPT_EXECUTOR": settings.executor,
        }
    )
    return env


def job_config(settings: Settings, job: str) -> dict:
    """The run config of one job: the user's, and the local executor's mode unless the user set one."""
    config = dict(settings.run_config.get(job) or {})
    if settings.executor == "local" and settings.in_process:
        config.setdefault("execution", {"config": {"in_process": {}}})
    return config


def run_job(job: str, env: dict[str, str], *, tags: dict | None = None, config: dict | None = None) -> float:
    """Execute one job run; raise SystemExit with Dagster's log tail if it fails. Returns seconds."""
    cmd = ["dagster", "job", "execute", "-m", "pipelines.definitions", "-j", job]
    if tags:
        cmd += ["--tags", json.dumps(tags)]
    if config:
        # `dagster job execute` reads run config from files only; JSON is valid YAML.
        config_file = Path(env["DAGSTER_HOME"]) / f"{job}.run_config.json"
        config_file.write_text(json.dumps(config, indent=2))
        cmd += ["-c", str(config_file)]
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", *cmd], cwd=REPO, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0 or "RUN_SUCCESS" not in proc.stdout + proc.stderr:
        sys.stderr.write(proc.stdout[-6000:] + proc.stderr[-6000:])
        raise SystemExit(f"`{' '.join(cmd)}` failed (exit {proc.returncode}); Dagster's log is above")
    return time.perf_counter() - started


def chunk_keys(data_root: Path) -> list[str]:
    """The chunk partitions `raw_dataset` registered, from its stored value."""
    return json.loads((data_root / "dagster_io" / "raw_dataset.json").read_text())["partitions"]


def build_all(settings: Settings, log: Callable[[str], None] = print) -> dict[str, float]:
    """Run every stage, then write `<data_root>/build-manifest.json`; returns seconds per stage."""
    env = dagster_env(settings)
    timings: dict[str, float] = {}

    def stage(title: str, job: str, **kwargs) -> None:
        log(f"[{job}] {title}")
        timings[f"{job}: {title}"] = seconds = run_job(job, env, config=job_config(settings, job), **kwargs)
        log(f"    done in {seconds:.0f} s")

    stage("stage the raw tables, register one partition per chunk", "stage_job")
    # One run per chunk, as a backfill would launch them: each chunk gets its own data version.
    for key in chunk_keys(settings.data_root):
        stage(f"chunk {key}: shards, concept labels, image features", "chunks_job", tags={"dagster/partition": key})
    stage("manifest, splits, layers, concept bank and embeddings", "dataset_job")
    for variant in VARIANTS:
        stage(
            f"train {variant} (every seed, through Dagster Pipes) and build its gallery",
            "train_job",
            tags={"dagster/partition": variant},
        )
    stage("evaluate every variant and seed on the test split, write the report", "evaluate_job")
    write_build_manifest(
        settings.data_root / BUILD_MANIFEST,
        raw_dir=settings.raw_dir,
        settings={k: str(v) if isinstance(v, Path) else v for k, v in asdict(settings).items()},
        extra={"stages_seconds": timings, "data_versions": data_versions(Path(env["DAGSTER_HOME"]))},
    )
    return timings


def data_versions(dagster_home: Path) -> dict[str, str]:
    """The latest data version of every asset (and partition) in this build's Dagster instance."""
    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        versions: dict[str, str] = {}
        for key in sorted(instance.get_asset_keys(), key=lambda k: k.to_user_string()):
            records = instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=key), limit=10_000).records
            for record in sorted(records, key=lambda r: r.storage_id):  # later ones win
                event = record.asset_materialization
                name = key.to_user_string() + (f"[{event.partition}]" if event.partition else "")
                versions[name] = event.tags.get(DATA_VERSION_TAG, "")
    return dict(sorted(versions.items()))
