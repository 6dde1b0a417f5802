"""`make rebuild`: rebuild everything from a raw folder into a fresh data root, through Dagster.

    python -m pipelines.rebuild --raw-dir RAW --data-root NEW [--images PATH] [--run-config FILE]

RAW holds the input tables (`train.csv`, `test.csv`, ...) and the images (`RAW/images`, or
`--images` for tars). NEW must not exist or be empty: a rebuild never mixes with older outputs.
`--run-config` is a YAML mapping of job name → Dagster run config (resource settings per job).
The build manifest (`NEW/build-manifest.json`) records package versions, settings, input hashes,
seconds per stage and the data version of every asset; two rebuilds of the same inputs give the
same bytes (CPU, fixed seeds) — `tests/test_rebuild.py` checks it.
"""

import argparse
import sys
from pathlib import Path

import yaml

from pipelines.stages import BUILD_MANIFEST, Settings, build_all


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipelines.rebuild", description=__doc__.split("\n\n")[0])
    parser.add_argument("--raw-dir", type=Path, required=True, help="folder of input tables and images")
    parser.add_argument("--data-root", type=Path, required=True, help="fresh output folder")
    parser.add_argument("--images", default="", help="images: a folder tree, a tar, a folder of tars or a glob")
    parser.add_argument("--run-config", type=Path, help="YAML: job name -> Dagster run config")
    args = parser.parse_args(argv)

    data_root = args.data_root.resolve()
    if data_root.exists() and any(data_root.iterdir()):
        parser.error(f"{data_root} is not empty: a rebuild goes into a fresh data root")
    if not args.raw_dir.is_dir():
        parser.error(f"--raw-dir {args.raw_dir} is not a folder")
    run_config = yaml.safe_load(args.run_config.read_text()) if args.run_config else {}
    if not isinstance(run_config, dict):
        parser.error(f"--run-config {args.run_config}: expected a mapping of job name to run config")
    data_root.mkdir(parents=True, exist_ok=True)
    settings = Settings(data_root=data_root, raw_dir=args.raw_dir.resolve(), images=args.images, run_config=run_config)
    build_all(settings, log=lambda line: print(f"[rebuild] {line}", flush=True))
    print(f"[rebuild] done: {data_root} (manifest: {data_root / BUILD_MANIFEST})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
