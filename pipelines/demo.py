"""`make demo`: render the embedded sample, then build every asset through Dagster (pipelines.stages)."""

import argparse
import json
import sys
import time
from pathlib import Path

import pandas as pd

from geoconcept.sample import SampleConfig, build_sample
from pipelines.stages import Settings, build_all

# The embedded sample's gallery: a seeded 20K subset of GeoCLIP's 100K MP16 coordinates keeps the
# demo's nine galleries small and quick (real runs use all 100K: the resource's default).
SUMMARY_TABLES = (
    ("Geo-localization accuracy (% within d km, mean ± std over 3 seeds)", "accuracy"),
    ("Concept faithfulness (AUROC of concept scores vs raster labels, held-out test points)", "faithfulness_summary"),
    ("Downstream probes on location embeddings", "downstream"),
)
DEMO_RUN_CONFIG = {"train_job": {"resources": {"gallery": {"config": {"max_points": 20000}}}}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipelines.demo", description=__doc__)
    parser.add_argument("--data-root", type=Path, default=Path("data"))
    parser.add_argument("--n-train", type=int, default=2000)
    parser.add_argument("--n-test", type=int, default=500)
    args = parser.parse_args(argv)
    data_root = args.data_root.resolve()
    started = time.perf_counter()

    raw = data_root / "input" / "sample"
    print(f"[demo] rendering the embedded sample into {raw} (rendered map patches, not photos)", flush=True)
    build_sample(raw, SampleConfig(n_train=args.n_train, n_test=args.n_test))
    settings = Settings(data_root=data_root, raw_dir=raw, run_config=DEMO_RUN_CONFIG)
    build_all(settings, log=lambda line: print(f"[demo] {line}", flush=True))

    summary = json.loads((data_root / "shards" / "sample" / "summary.json").read_text())
    report = data_root / "evaluation" / "sample"
    print(f"\n[demo] done in {time.perf_counter() - started:.0f} s. Outputs under {data_root}:")
    print(f"  shards:      {data_root / 'shards' / 'sample'}  (status counts: {summary['status_counts']})")
    print(f"  labels:      {data_root / 'labels' / 'sample'}")
    print(f"  concepts:    {data_root / 'concepts'}   layer maps: {data_root / 'layers'}")
    print(f"  checkpoints: {data_root / 'runs' / 'sample'}   galleries: {data_root / 'gallery' / 'sample'}")
    print(f"  Dagster:     DAGSTER_HOME={data_root / 'dagster_home'} make ui   (this demo's runs and metadata)")
    for title, table in SUMMARY_TABLES:
        print(f"\n{title}\n")
        print(pd.read_csv(report / "tables" / f"{table}.csv").to_markdown(index=False))
    print(f"\nReport: {report / 'report.md'} (and report.html)")
    print("These are rendered map patches and a randomly initialised backbone: the numbers test the pipeline,")
    print("not the method (see README, 'The embedded sample').")
    return 0


if __name__ == "__main__":
    sys.exit(main())
