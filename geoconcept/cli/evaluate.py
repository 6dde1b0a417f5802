"""Evaluate checkpoints on a test set and write the report folder (Markdown + HTML, tables, figures,
predictions GeoParquet); prints the accuracy table, the findings, the accuracy in the layout of the
published tables (GeoCLIP Table 1: Method | Street 1 km | ... | Continent 2500 km) and the report's path.

Give a YAML config (--config; keys: see geoconcept/evaluation/config.py) or the inputs as flags:
each --checkpoint with its --gallery (in the same order; variant and seed are read from the
checkpoint), the test --features (files or folders), optionally --labels, --split/--split-name and
--shards (for the explanation thumbnails), and --out. Inputs are always explicit: nothing is
picked up from "the newest file on disk".
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="evaluation YAML (excludes the input flags below)")
    parser.add_argument(
        "--checkpoint", type=Path, action="append", default=[], help="run folder or model file (repeat)"
    )
    parser.add_argument(
        "--gallery", type=Path, action="append", default=[], help="its gallery folder (repeat, same order)"
    )
    parser.add_argument("--features", type=Path, action="append", default=[], help="test feature files/folders")
    parser.add_argument("--labels", type=Path, action="append", default=[], help="test label files/folders")
    parser.add_argument("--split", type=Path, help="split Parquet (key, split) to select the test samples")
    parser.add_argument("--split-name", default="test", help="split to keep (default test)")
    parser.add_argument("--shards", type=Path, action="append", default=[], help="WebDataset tars/folders (thumbnails)")
    parser.add_argument("--out", type=Path, help="report folder to write")
    parser.add_argument("--name", default="evaluation", help="report title")
    parser.add_argument("--bank", type=Path, help="concept bank YAML (default: the packaged bank)")
    parser.add_argument("--layers", type=Path, help="layers config (default: the built-in layers)")
    parser.add_argument("--refine-k", type=int, help="refine the prediction over the top K candidates (default: top-1)")
    parser.add_argument("--no-downstream", action="store_true", help="skip the downstream probes")
    parser.add_argument("--downstream-points", type=int, default=1500, help="random land points (default 1500)")
    parser.add_argument(
        "--downstream-seeds",
        choices=["all", "first"],
        default="all",
        help="probe every seed or the lowest (default all)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


INPUT_FLAGS = ("checkpoint", "gallery", "features", "labels", "split", "shards", "out", "bank", "layers", "refine_k")


def config_from_flags(args: argparse.Namespace):  # -> EvaluationConfig (imported lazily)
    from geoconcept.errors import ConfigError
    from geoconcept.evaluation.config import DownstreamSettings, EvaluationConfig, RunSpec, check_config

    if not args.checkpoint or len(args.checkpoint) != len(args.gallery):
        raise ConfigError(
            "give each --checkpoint with its --gallery "
            f"({len(args.checkpoint)} checkpoints, {len(args.gallery)} galleries)"
        )
    if not args.features or args.out is None:
        raise ConfigError("--features and --out are required (or use --config)")
    config = EvaluationConfig(
        runs=[RunSpec(c, g) for c, g in zip(args.checkpoint, args.gallery, strict=True)],
        features=args.features,
        out=args.out,
        name=args.name,
        labels=args.labels,
        split=args.split,
        split_name=args.split_name,
        shards=args.shards,
        bank=args.bank,
        layers=args.layers,
        refine_k=args.refine_k,
        downstream=DownstreamSettings(
            enabled=not args.no_downstream, points=args.downstream_points, seeds=args.downstream_seeds
        ),
    )
    check_config(config)
    return config


def run(args: argparse.Namespace) -> int:
    from geoconcept.errors import ConfigError
    from geoconcept.evaluation.config import load_config
    from geoconcept.evaluation.evaluate import evaluate
    from geoconcept.evaluation.report import markdown_table, published_layout

    if args.config is not None:
        given = [f"--{k.replace('_', '-')}" for k in INPUT_FLAGS if getattr(args, k) not in (None, [])]
        if given:
            raise ConfigError(f"--config excludes {', '.join(given)}: put them in the config file")
        config = load_config(args.config)
    else:
        config = config_from_flags(args)
    result = evaluate(config, progress=not args.no_progress)
    print(markdown_table(result.tables["accuracy"]))
    print()
    for finding in result.findings:
        print(f"- {finding}")
    for warning in result.warnings:
        print(f"warning: {warning}")
    print("\nIn the layout of the published tables (% within each distance; the published rows are on Im2GPS3k):")
    print(markdown_table(published_layout(result.tables["accuracy"], result.tables["published_im2gps3k"])))
    print(f"\nreport: {result.report_md}\n        {result.report_html}")
    return 0
