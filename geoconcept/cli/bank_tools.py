"""`geoconcept concepts build | score | select | diff`: make, measure, choose and compare banks.

  concepts build  [--layers YAML] [--vocabulary FILE]... [--extend BANK] [--templates YAML] --out CANDIDATES
  concepts score  --candidates YAML [--layers YAML] [--points N | --points-table CSV] [--seed S]
                  [--no-text] [--model NAME] [--pretrained TAG|FILE] --out SCORES.parquet
  concepts select --candidates YAML [--scores PARQUET] --k K [--pin ID]... [--alpha A] [--per-category N]
                  [--duplicate-cosine C] [--version V] [--layers YAML] --out BANK
  concepts diff   A.yaml B.yaml [--layers YAML] [--json]

See geoconcept.concepts.candidates / scores / select / diff for what each does.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ACTIONS = ("build", "score", "select", "diff")


def add_actions(sub: argparse._SubParsersAction) -> None:
    build = sub.add_parser("build", help="candidate concepts from layers, vocabulary files and an existing bank")
    build.add_argument("--vocabulary", type=Path, action="append", default=[], help="plain list or CSV (repeatable)")
    build.add_argument("--extend", type=Path, help="start from this bank's concepts")
    build.add_argument("--templates", type=Path, help="prompt templates or build spec YAML (default: packaged)")
    score = sub.add_parser("score", help="measure each candidate: coverage, spread, MI, redundancy, duplicates")
    score.add_argument("--points", type=int, default=None, help="uniform-on-sphere sample size (default 10000)")
    score.add_argument("--points-table", type=Path, help="CSV/Parquet with LAT, LON columns instead of a sample")
    score.add_argument("--seed", type=int, default=0)
    score.add_argument("--no-text", action="store_true", help="skip the text tower (no near-duplicate scores)")
    score.add_argument("--model", default="ViT-B-32", help="open_clip text tower (default ViT-B-32)")
    score.add_argument("--pretrained", help="open_clip tag or local checkpoint (default: random init, fixed seed)")
    select = sub.add_parser("select", help="choose k concepts (greedy: MI minus redundancy, categories covered)")
    select.add_argument("--scores", type=Path, help="scores Parquet from `concepts score` (default: no scores)")
    select.add_argument("--k", type=int, required=True, help="number of concepts")
    select.add_argument("--pin", action="append", default=[], help="concept id that must stay (repeatable)")
    select.add_argument("--alpha", type=float, default=1.0, help="redundancy penalty weight (default 1)")
    select.add_argument("--per-category", type=int, default=1, help="concepts per category first (default 1)")
    select.add_argument("--duplicate-cosine", type=float, default=0.99, help="merge at this prompt cosine")
    select.add_argument("--version", help="version of the new bank (default: the candidates')")
    for p in (score, select):
        p.add_argument("--candidates", type=Path, required=True, help="candidates YAML from `concepts build`")
    for p in (build, score, select):
        p.add_argument("--out", type=Path, required=True, help="output file")
    diff = sub.add_parser("diff", help="compare two banks: added, removed, changed concepts")
    diff.add_argument("a", type=Path)
    diff.add_argument("b", type=Path)
    diff.add_argument("--json", action="store_true", help="print the difference as JSON")
    for p in (build, score, select, diff):
        p.add_argument("--layers", type=Path, help="layers config YAML (user layers)")


def run(args: argparse.Namespace) -> int:
    from geoconcept.layers.registry import Registry

    registry = Registry.from_config(args.layers)
    return {"build": _build, "score": _score, "select": _select, "diff": _diff}[args.action](args, registry)


def _build(args: argparse.Namespace, registry) -> int:
    from geoconcept.concepts import candidates

    templates = candidates.load_templates(args.templates)
    found = candidates.build_candidates(registry, templates, args.vocabulary, args.extend)
    bank = candidates.write_candidates(found, args.out, registry)
    sources = {}
    for concept in bank:
        sources[concept.provenance.get("source")] = sources.get(concept.provenance.get("source"), 0) + 1
    by_source = ", ".join(f"{n} from {s}" for s, n in sources.items())
    print(f"concepts build: {len(bank)} candidates ({by_source}) -> {args.out}")
    if found.repeated:
        print(f"  {len(found.repeated)} repeated id(s) kept from the first source: {found.repeated[:5]}")
    return 0


def _score(args: argparse.Namespace, registry) -> int:
    from geoconcept.concepts import scores
    from geoconcept.concepts.bank import load_bank
    from geoconcept.errors import ConfigError
    from geoconcept.point_tables import read_point_table

    if args.points is not None and args.points < 1:
        raise ConfigError(f"--points must be at least 1, got {args.points}")
    bank = load_bank(args.candidates, registry)
    if args.points_table is not None:
        _, latlon = read_point_table(args.points_table, "points table")
        lat, lon = latlon[:, 0], latlon[:, 1]
    else:
        lat, lon = scores.sphere_points(args.points or scores.DEFAULT_POINTS, args.seed)
    embed = None
    if not args.no_text:
        embed = scores.text_tower_embedder(args.model, args.pretrained)
        if args.pretrained is None:
            print("geoconcept concepts score: warning: near-duplicate cosines come from a randomly initialised "
                  "text tower (no --pretrained)", file=sys.stderr)  # fmt: skip
    table = scores.score_concepts(bank, registry, lat, lon, embed)
    scores.write_scores(table, args.out)
    print(f"concepts score: {len(table)} concepts on {lat.size} points -> {args.out}")
    print(scores.display_table(table).head(15).to_string(index=False))
    return 0


def _select(args: argparse.Namespace, registry) -> int:
    from geoconcept.concepts import scores, select
    from geoconcept.concepts.bank import load_bank
    from geoconcept.concepts.candidates import write_bank_yaml

    candidates = load_bank(args.candidates, registry)
    table = scores.read_scores(args.scores) if args.scores is not None else None
    result = select.select_bank(
        candidates, table, args.k, args.pin, args.alpha, args.per_category, args.duplicate_cosine, args.version
    )
    header = f"# Concept bank selected by `geoconcept concepts select --k {args.k}` from {args.candidates}.\n"
    bank = write_bank_yaml(result.document, args.out, registry, header)
    merged = sum(len(m) for m in result.merged.values())
    print(f"concepts select: {len(bank)} concepts ({len(result.pinned)} pinned, {merged} merged as near-duplicates), "
          f"version {bank.version} -> {args.out}")  # fmt: skip
    return 0


def _diff(args: argparse.Namespace, registry) -> int:
    from geoconcept.concepts.bank import load_bank
    from geoconcept.concepts.diff import diff_banks

    result = diff_banks(load_bank(args.a, registry), load_bank(args.b, registry))
    print(json.dumps(result.as_dict(), indent=2, ensure_ascii=False) if args.json else "\n".join(result.lines()))
    return 0
