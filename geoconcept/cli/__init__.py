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
from typing import NoReturn

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
    "query": ("geoconcept.cli.query", "text -> world map: where a model places a description or a concept"),
}


class _Parser(argparse.ArgumentParser):
    """argparse with the CLI's error shape: one line `geoconcept <cmd>: error: ...` and exit 2.

    argparse prints the whole usage block before its error line; the rest of the CLI promises one
    line per problem (`--help` still shows the usage). Subparsers inherit this class.
    """

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {one_line(message)}\n")


def one_line(message: str) -> str:
    """`message` on one line: the lines of a multi-line problem list joined with "; " (after a
    heading that ends with ":", a space)."""
    text = ""
    for part in (p.strip() for p in str(message).splitlines()):
        if part:
            text += ("" if not text else " " if text.endswith(":") else "; ") + part
    return text


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
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
    try:
        args, extra = parser.parse_known_args(argv)
        if extra:  # reported here, not by the top parser, so that the line names the command
            parser.exit(2, f"geoconcept {args.command}: error: unrecognized arguments: {' '.join(extra)}\n")
    except SystemExit as exc:  # usage errors and --help: a return code, also when called in-process
        return exc.code if isinstance(exc.code, int) else 2
    try:
        return int(args._run(args) or 0)
    except GeoconceptError as exc:
        print(f"geoconcept {args.command}: error: {one_line(str(exc))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"geoconcept {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
