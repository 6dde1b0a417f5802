"""Text → world map: score a global grid of locations against a description or a concept id.

The text is embedded with the text tower of the backbone the checkpoint records and mapped into
the image space by the model's image head (as GeoCLIP does for text queries); each grid cell's
location vector is scored against it. Writes map.png (heat map), scores.tif (GeoTIFF, EPSG:4326),
top_places.csv and top_places.json into --out (default query-<slug>), and prints the top places.
A concept id of the bank (e.g. tropical_rainforest_climate) uses its prompts, averaged. With a
randomly initialised backbone the map means nothing: the output and the PNG title say so.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from geoconcept.validate import check_output_folder, int_at_least


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("query", help='a description ("a tropical beach with palm trees") or a concept id')
    parser.add_argument("--checkpoint", type=Path, required=True, help="run folder, model file, or geoclip-pretrained")
    parser.add_argument("--out", type=Path, help="output folder (default: query-<slug of the query>)")
    parser.add_argument("--resolution", type=float, default=1.0, help="grid cell size in degrees (default 1)")
    parser.add_argument("--top", type=int, default=10, help="top places to list (default 10)")
    parser.add_argument("--bank", type=Path, help="concept bank YAML (default: the packaged bank)")


def run(args: argparse.Namespace) -> int:
    import sys

    from geoconcept import query
    from geoconcept.concepts.bank import load_bank
    from geoconcept.model.backbone import Backbone
    from geoconcept.model.checkpoint import load_model, resolve_checkpoint

    int_at_least(args.top, "--top", 1)
    if args.out is not None:
        check_output_folder(args.out, "--out")
    bank = load_bank(args.bank)
    query.query_prompts(args.query, bank)  # a bad query fails before the backbone is built
    query.grid(args.resolution)
    model = load_model(resolve_checkpoint(args.checkpoint))
    backbone = Backbone.from_metadata(model.checkpoint_metadata)
    result = query.query_map(model, backbone, bank, args.query, args.resolution, args.top)
    out = args.out or Path("query-" + (re.sub(r"[^a-z0-9]+", "-", result.query.lower()).strip("-")[:60] or "text"))
    paths = query.write_outputs(result, out)
    if result.warning:
        print(f"warning: {result.warning} ({backbone.tag})", file=sys.stderr)
    print(f"query {result.query!r} ({len(result.prompts)} prompt(s)), {result.resolution:g}° grid -> {out}")
    for row in result.top.itertuples():
        where = ", ".join(p for p in (row.place, row.admin1, row.country_code) if p)
        print(f"  {row.rank:2d}. {row.lat:7.2f}, {row.lon:8.2f}  score {row.score:+.4f}  near {where}")
    print("files: " + ", ".join(str(p) for p in paths.values()))
    return 0
