"""The `geoconcept` command: data tools that work without Dagster.

Each subcommand lives in its own module with `add_arguments(parser)` and `run(args) -> int`.
Command modules import heavy libraries (torch, open_clip, ...) inside `run`, so that building
the parser for `--help` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from geoconcept.errors import GeoconceptError

# command name → (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "sample": ("geoconcept.cli.sample", "render the embedded MP16-style sample dataset"),
    "ingest": ("geoconcept.cli.ingest", "ingest an IMG_ID,LAT,LON table and its images into WebDataset shards"),
    "label": ("geoconcept.cli.label", "label a CSV of LAT,LON points with climate, land cover and concept labels"),
    "concepts": ("geoconcept.cli.concepts", "list/validate the concept bank, or embed it with a text tower"),
    "layers": ("geoconcept.cli.layers", "list the geographic layers, draw their maps, summarise them"),
    "features": ("geoconcept.cli.features", "compute frozen-backbone image features for every finished shard"),
    "train": ("geoconcept.cli.train", "train a model variant on cached features (also under torchrun)"),
    "gallery": ("geoconcept.cli.gallery", "build the FAISS GPS gallery of a checkpoint"),
    "predict": ("geoconcept.cli.predict", "locate images: top-k GPS guesses with places and the concepts behind them"),
    "evaluate": ("geoconcept.cli.evaluate", "evaluate checkpoints on a test set and write the report"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="geoconcept",
        description="Interpretable image geo-localization toolkit: sample data, ingest, label, train, evaluate.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module_name, help_text) in COMMANDS.items():
        module = importlib.import_module(module_name)
        cmd = sub.add_parser(name, help=help_text, description=(module.__doc__ or help_text).strip())
        module.add_arguments(cmd)
        cmd.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except GeoconceptError as exc:
        print(f"geoconcept {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"geoconcept {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
