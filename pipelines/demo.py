"""`make demo`: build the embedded sample, then materialize every asset through Dagster.

Each stage is one `dagster asset materialize` run against the project's definitions (the same
code location `dagster dev -w workspace.yaml` shows), in a persistent DAGSTER_HOME under the data
root, so the runs and their metadata are visible in the UI afterwards (`make ui`).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from geoconcept.layers.registry import Registry
from geoconcept.sample import SampleConfig, build_sample
from pipelines.partitions import VARIANTS

REPO = Path(__file__).resolve().parent.parent


# The embedded sample's gallery: a seeded 20K subset of GeoCLIP's 100K MP16 coordinates keeps the
# demo's nine galleries small and quick (real runs use all 100K: the resource's default).
DEMO_RUN_CONFIG = {"resources": {"gallery": {"config": {"max_points": 20000}}}}


def later_stages(chunk_keys: list[str]) -> list[tuple[str, str, str | None]]:
    """After `raw_dataset`: (title, asset selection, partition range) in dependency order."""
    chunk_range = f"{chunk_keys[0]}...{chunk_keys[-1]}"
    layers = ",".join(f"layer_{name}" for name in Registry.builtin().names)
    return [
        ("shards, labels and image features per chunk", "shards,concept_labels,image_features", chunk_range),
        ("dataset-wide assets", f"manifest,splits,{layers},concept_bank,concept_embeddings", None),
        *[
            (
                f"train {variant} (trainer through Dagster Pipes, one run per seed) and its gallery",
                "checkpoint,gallery_index",
                variant,
            )
            for variant in VARIANTS
        ],
    ]


def dagster_env(data_root: Path) -> dict[str, str]:
    home = data_root / "dagster_home"
    home.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    # Steps run in the CLI's own process: on a 2-core laptop a process per step only adds start-up time.
    env.update({"DAGSTER_HOME": str(home), "GEOCONCEPT_DATA_ROOT": str(data_root), "GEOCONCEPT_EXECUTOR": "in_process"})
    return env


def run_stage(title: str, selection: str, partition_range: str | None, env: dict[str, str]) -> None:
    cmd = ["dagster", "asset", "materialize", "-m", "pipelines.definitions", "--select", selection]
    if "gallery_index" in selection:
        cmd += ["--config-json", json.dumps(DEMO_RUN_CONFIG)]
    if partition_range:
        cmd += ["--partition-range" if "..." in partition_range else "--partition", partition_range]
    print(f"[demo] {title}:\n       {' '.join(cmd)}", flush=True)
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", *cmd], cwd=REPO, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0 or "RUN_SUCCESS" not in proc.stdout + proc.stderr:
        sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-4000:])
        raise SystemExit(f"demo: `{' '.join(cmd)}` failed (exit {proc.returncode}); Dagster's log is above")
    print(f"       done in {time.perf_counter() - started:.0f} s", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipelines.demo", description=__doc__)
    parser.add_argument("--data-root", type=Path, default=Path("data"))
    parser.add_argument("--n-train", type=int, default=2000)
    parser.add_argument("--n-test", type=int, default=500)
    args = parser.parse_args(argv)
    data_root = args.data_root.resolve()
    started = time.perf_counter()

    raw = data_root / "input" / "sample"
    print(f"[demo] rendering the embedded sample into {raw} (map patches, not photos)", flush=True)
    build_sample(raw, SampleConfig(n_train=args.n_train, n_test=args.n_test))

    env = dagster_env(data_root)
    run_stage("stage the raw tables", "raw_dataset", None, env)
    chunk_keys = json.loads((data_root / "dagster_io" / "raw_dataset.json").read_text())["partitions"]
    for title, selection, partition_range in later_stages(chunk_keys):
        run_stage(title, selection, partition_range, env)

    summary = json.loads((data_root / "shards" / "sample" / "summary.json").read_text())
    print(f"\n[demo] done in {time.perf_counter() - started:.0f} s. Outputs under {data_root}:")
    print(f"  shards:     {data_root / 'shards' / 'sample'}  (status counts: {summary['status_counts']})")
    print(f"  labels:     {data_root / 'labels' / 'sample'}")
    print(f"  concepts:   {data_root / 'concepts'}")
    print(f"  layer maps: {data_root / 'layers'}")
    print(f"  Dagster:    DAGSTER_HOME={env['DAGSTER_HOME']} make ui   (runs and metadata of this demo)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
