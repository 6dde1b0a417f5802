"""Locate images: top-k GPS guesses with the nearest GeoNames place and the concepts behind each guess.

Runs the backbone the checkpoint records (a randomly initialised one if so recorded: the output
then says so) on the image files, searches the gallery and prints, per image, the top-k guesses
(lat, lon, score, nearest town of >= 1,000 people with its region and country code) and, for each
guess, the concepts that contributed most to its score with their signed contributions (+: image
and place agree on the concept). `--json` prints the same as one JSON document.

Without --gallery, a gallery of GeoCLIP's 100K MP16 coordinates is built for the checkpoint once
(about 10-30 s) and kept in the cache folder (GEOCONCEPT_CACHE, default ~/.cache/geoconcept) under
galleries/geoclip100k-<checkpoint sha256 prefix>; later calls reuse it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from geoconcept.validate import int_at_least

DEFAULT_TOP_K = 5
DEFAULT_CONCEPTS = 3


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("images", nargs="+", type=Path, metavar="IMAGE", help="image files (JPEG, PNG, ...)")
    parser.add_argument(
        "--checkpoint", type=Path, required=True, help="run folder (its final.safetensors) or model file"
    )
    parser.add_argument("--gallery", type=Path, help="gallery folder built with this checkpoint (default: see above)")
    parser.add_argument("--top-k", type=int, default=DEFAULT_TOP_K, help=f"guesses per image (default {DEFAULT_TOP_K})")
    parser.add_argument(
        "--concepts", type=int, default=DEFAULT_CONCEPTS, help=f"concepts per guess (default {DEFAULT_CONCEPTS})"
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")


def default_gallery_dir(checkpoint_sha256: str) -> Path:
    from geoconcept.layers.builtin import cache_dir

    return cache_dir() / "galleries" / f"geoclip100k-{checkpoint_sha256[:16]}"


def run(args: argparse.Namespace) -> int:
    import json
    import sys

    import torch

    from geoconcept import gallery
    from geoconcept.errors import ConfigError, InputError
    from geoconcept.evaluation.explain import explain_features, format_explanation
    from geoconcept.evaluation.predict import read_images
    from geoconcept.model.backbone import Backbone
    from geoconcept.model.checkpoint import load_model, resolve_checkpoint

    int_at_least(args.top_k, "--top-k", 1)
    int_at_least(args.concepts, "--concepts", 0)
    images = read_images(args.images)  # first: a bad path fails before the backbone is built
    if args.gallery is not None and not args.gallery.is_dir():
        problem = "is a file, not a gallery folder" if args.gallery.exists() else "not found"
        raise InputError(f"gallery {args.gallery} {problem}")
    checkpoint = resolve_checkpoint(args.checkpoint)
    model = load_model(checkpoint)
    backbone = Backbone.from_metadata(model.checkpoint_metadata)
    if backbone.dim != model.feature_dim:
        raise InputError(
            f"checkpoint {checkpoint} expects {model.feature_dim}-d features, its recorded backbone "
            f"{backbone.model_name} gives {backbone.dim}-d"
        )
    features = backbone.encode(torch.stack([backbone.preprocess(image) for image in images])).numpy()

    if args.gallery is not None:
        folder = args.gallery
    else:
        folder = default_gallery_dir(model.checkpoint_sha256 or "unknown")
        if not (folder / gallery.INFO_FILE).exists():
            print(f"building the default gallery (GeoCLIP's 100K coordinates) in {folder} ...", file=sys.stderr)
        gallery.build_gallery(gallery.geoclip_coordinates(), model, folder, source="geoclip_100k")
    found = gallery.Gallery.load(folder)
    if args.top_k > len(found):
        raise ConfigError(f"--top-k {args.top_k} exceeds the gallery's {len(found)} locations")
    explanations = explain_features(
        model, found, features, [str(p) for p in args.images], top_k=args.top_k, concepts=args.concepts
    )
    if args.json:
        document = {
            "checkpoint": str(checkpoint),
            "checkpoint_sha256": model.checkpoint_sha256,
            "variant": model.variant,
            "backbone": backbone.tag,
            "warning": backbone.warning,
            "gallery": str(folder),
            "gallery_locations": len(found),
            "images": [e.to_dict() for e in explanations],
        }
        print(json.dumps(document, indent=2, ensure_ascii=False))
        return 0
    if backbone.warning:
        print(
            f"warning: {backbone.warning} ({backbone.tag}): the guesses carry no learned image semantics",
            file=sys.stderr,
        )
    print(f"{model.variant} checkpoint {checkpoint}, gallery {folder} ({len(found):,} locations)")
    for explanation in explanations:
        print()
        print(format_explanation(explanation))
    return 0
