"""The geographic layers: list them (built-ins + a layers config), draw their maps, summarise them.

  geoconcept layers [--layers YAML] [--maps DIR] [--width PX] [--json]

--layers checks a layers config (exit 2 with every problem listed); --maps writes DIR/<layer>.png
for every layer; --json prints each layer's summary (source, CRS, resolution, version, area share
of each class or value quantiles).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from geoconcept.validate import check_output_folder, int_at_least


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--layers", type=Path, help="layers config YAML adding user layers")
    parser.add_argument("--maps", type=Path, metavar="DIR", help="write a map PNG of every layer into DIR")
    parser.add_argument("--width", type=int, default=1440, help="map width in pixels (default 1440)")
    parser.add_argument("--json", action="store_true", help="print every layer's summary as JSON")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from geoconcept.layers.maps import render_layer_map
    from geoconcept.layers.registry import Registry
    from geoconcept.layers.summary import layer_summary

    int_at_least(args.width, "--width", 16)
    if args.maps is not None:
        check_output_folder(args.maps, "--maps")
    registry = Registry.from_config(args.layers)
    if args.maps is not None:
        for layer in tqdm(list(registry), desc="maps", unit="layer", disable=args.no_progress):
            render_layer_map(layer, args.maps / f"{layer.name}.png", width=args.width)
    if args.json:
        print(json.dumps([layer_summary(layer) for layer in registry], indent=2, ensure_ascii=False))
        return 0
    for layer in registry:
        what = f"{len(layer.classes.symbols)} classes" if layer.classes else f"continuous {layer.units}".strip()
        print(f"{layer.name:<14} {layer.kind:<8} {what:<16} {layer.resolution}")
        print(f"{'':<14} {layer.source}")
    if args.maps is not None:
        print(f"maps -> {args.maps}/")
    return 0
