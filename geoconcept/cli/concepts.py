"""The concept bank: list and validate it, or embed it with an open_clip text tower.

  geoconcept concepts list  [--bank YAML] [--layers YAML] [--json]
  geoconcept concepts embed [--bank YAML] [--layers YAML] [--model NAME] [--pretrained TAG|FILE] [--out FILE]

`build`, `score`, `select` and `diff` make and compare banks: see geoconcept.cli.bank_tools.

`list` validates the bank against the layers (built-in + --layers) and prints its concepts; an
invalid bank exits 2 with every problem listed. `embed` writes the k×d concept embeddings
(safetensors; default DATA_ROOT/concepts/embeddings.safetensors). Without --pretrained the text
tower is randomly initialised (fixed seed) and the command says so on stderr.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from geoconcept.cli import bank_tools
from geoconcept.validate import check_output_file


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    listing = sub.add_parser("list", help="validate the bank and list its concepts")
    embed = sub.add_parser("embed", help="embed the bank's prompts with an open_clip text tower")
    bank_tools.add_actions(sub)  # build | score | select | diff
    for p in (listing, embed):
        p.add_argument("--bank", type=Path, help="concept bank YAML (default: the packaged bank)")
        p.add_argument("--layers", type=Path, help="layers config YAML (for rules on user layers)")
    listing.add_argument("--json", action="store_true", help="print the concepts as JSON")
    embed.add_argument("--model", default="ViT-B-32", help="open_clip model name (default ViT-B-32)")
    embed.add_argument("--pretrained", help="open_clip pretrained tag or local checkpoint file (default: none)")
    embed.add_argument("--out", type=Path, help="output file (default: DATA_ROOT/concepts/embeddings.safetensors)")
    embed.add_argument(
        "--data-root", type=Path, help="data root for the default --out (default: $GEOCONCEPT_DATA_ROOT)"
    )


def run(args: argparse.Namespace) -> int:
    if args.action in bank_tools.ACTIONS:
        return bank_tools.run(args)
    from geoconcept.concepts.bank import load_bank
    from geoconcept.layers.registry import Registry

    bank = load_bank(args.bank, registry=Registry.from_config(args.layers))
    if args.action == "embed":
        return _embed(args, bank)
    if args.json:
        print(bank.table().to_json(orient="records", indent=2, force_ascii=False))
        return 0
    counts = ", ".join(f"{cat} {n}" for cat, n in bank.category_counts().items())
    print(f"bank {bank.path} version {bank.version} sha256 {bank.sha256[:12]}")
    print(f"{len(bank)} concepts, {len(bank.measured)} measured by a layer ({counts})")
    width = max(len(c.id) for c in bank)
    for concept in bank:
        rule = str(concept.rule) if concept.rule else "text-only"
        print(f"  {concept.id:<{width}}  {concept.category:<16} {rule}")
    return 0


def _embed(args: argparse.Namespace, bank) -> int:
    from geoconcept.concepts.embeddings import default_embeddings_path, embed_concepts

    out = check_output_file(args.out if args.out is not None else default_embeddings_path(args.data_root), "--out")
    info = embed_concepts(bank, model_name=args.model, pretrained=args.pretrained, out_path=out)
    if info.warning:
        print(f"geoconcept concepts embed: warning: {info.warning}", file=sys.stderr)
    print(
        f"concepts embed: {len(info.concept_ids)} concepts x {info.dim} ({info.model}, pretrained {info.pretrained}) "
        f"-> {info.path}"
    )
    return 0
