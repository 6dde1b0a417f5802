"""Locate images: top-k GPS guesses with the nearest GeoNames place and the concepts behind each guess.

Runs the backbone the checkpoint records (a randomly initialised one if so recorded: the output
then says so) on the images, searches the gallery and gives, per image, the top-k guesses
(lat, lon, score, nearest town of >= 1,000 people with its region and country code) and, for each
guess, the concepts that contributed most to its score with their signed contributions (+: image
and place agree on the concept).

Image files alone: printed as text (`--json`: one JSON document). With `--out FILE.parquet`
(batch prediction): INPUTs may also be folders (searched recursively; a folder with `*.tar`
directly inside is WebDataset shards), image tables (CSV or Parquet with IMG_ID and optionally
LAT, LON, as `geoconcept ingest` takes them, Im2GPS3k/YFCC4k layouts included; relative IMG_IDs
under --images, default the table's folder), `.tar` shards or globs; the images go through the
backbone in batches with a progress bar and the rows are written as GeoParquet (EPSG:4326, point
of the top-1 guess; columns in geoconcept.evaluation.predict.BATCH_COLUMNS, with the great-circle
error when the input gives LAT/LON). An image that cannot be read is a row with its `status` and
`error`.

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
    parser.add_argument(
        "inputs",
        nargs="+",
        metavar="INPUT",
        help="image files; with --out also folders, CSV/Parquet tables, .tar shards",
    )
    parser.add_argument(
        "--checkpoint", required=True, help="run folder (its final.safetensors), model file, or geoclip-pretrained"
    )
    parser.add_argument("--gallery", type=Path, help="gallery folder built with this checkpoint (default: see above)")
    parser.add_argument("--top-k", type=int, default=DEFAULT_TOP_K, help=f"guesses per image (default {DEFAULT_TOP_K})")
    parser.add_argument(
        "--concepts", type=int, default=DEFAULT_CONCEPTS, help=f"concepts per guess (default {DEFAULT_CONCEPTS})"
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of text (image files only)")
    parser.add_argument("--out", type=Path, help="batch prediction: write one GeoParquet row per image here")
    parser.add_argument("--images", type=Path, help="root of an image table's relative IMG_ID paths")
    parser.add_argument("--batch-size", type=int, default=None, help="images per forward pass (default: per device)")
    parser.add_argument("--workers", type=int, default=None, help="decode processes (default: available cores - 1)")
    parser.add_argument("--device", default="cpu", help="torch device (default cpu)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def _check_single(args: argparse.Namespace) -> None:
    """Options and inputs of batch prediction given without --out."""
    from geoconcept.errors import ConfigError, InputError
    from geoconcept.evaluation.predict import TABLE_SUFFIXES

    for flag, value in (("--images", args.images), ("--batch-size", args.batch_size), ("--workers", args.workers)):
        if value is not None:
            raise ConfigError(f"{flag} is for batch prediction: give --out FILE.parquet")
    for given in map(Path, args.inputs):
        kind = "is a directory" if given.is_dir() else ""
        kind = kind or ("is an image table" if given.suffix.lower() in TABLE_SUFFIXES else "")
        kind = kind or ("is a WebDataset shard" if given.suffix.lower() == ".tar" else "")
        if kind:
            raise InputError(f"{given} {kind}: folders, tables and shards are batch input, give --out FILE.parquet")


def run_batch(args: argparse.Namespace) -> int:
    import sys

    from geoconcept.errors import ConfigError
    from geoconcept.evaluation.predict import OK, predict_batch, write_predictions
    from geoconcept.validate import check_output_file

    if args.json:
        raise ConfigError("--json prints image files' guesses; with --out the rows go to the GeoParquet")
    for flag, value in (("--batch-size", args.batch_size), ("--workers", args.workers)):
        if value is not None:
            int_at_least(value, flag, 1 if flag == "--batch-size" else 0)
    check_output_file(args.out, "--out")
    frame = predict_batch(
        args.inputs,
        args.checkpoint,
        images_root=args.images,
        gallery=args.gallery,
        top_k=args.top_k,
        concepts=args.concepts,
        batch_size=args.batch_size,
        workers=args.workers,
        device=args.device,
        progress=not args.no_progress,
    )
    write_predictions([frame], args.out)
    failed = int((frame["status"] != OK).sum())
    located = len(frame) - failed
    print(f"{located:,} images located, {failed:,} unreadable (rows with status/error): {args.out}")
    if failed:
        print(f"warning: {failed} images could not be read; see the status and error columns", file=sys.stderr)
    return 0


def run(args: argparse.Namespace) -> int:
    import json
    import sys

    import torch

    from geoconcept.errors import ConfigError
    from geoconcept.evaluation.explain import explain_features, format_explanation
    from geoconcept.evaluation.predict import (
        check_gallery_folder,
        load_for_prediction,
        prediction_gallery,
        read_images,
    )

    int_at_least(args.top_k, "--top-k", 1)
    int_at_least(args.concepts, "--concepts", 0)
    if args.out is not None:
        return run_batch(args)
    _check_single(args)
    images = read_images(args.inputs)  # first: a bad path fails before the backbone is built
    if args.gallery is not None:
        check_gallery_folder(args.gallery)
    checkpoint, model, backbone = load_for_prediction(args.checkpoint, args.device)
    features = backbone.encode(torch.stack([backbone.preprocess(image) for image in images])).numpy()
    found = prediction_gallery(model, args.gallery, progress=not args.no_progress)
    if args.top_k > len(found):
        raise ConfigError(f"--top-k {args.top_k} exceeds the gallery's {len(found)} locations")
    explanations = explain_features(model, found, features, args.inputs, top_k=args.top_k, concepts=args.concepts)
    if args.json:
        document = {
            "checkpoint": str(checkpoint),
            "checkpoint_sha256": model.checkpoint_sha256,
            "variant": model.variant,
            "backbone": backbone.tag,
            "warning": backbone.warning,
            "gallery": str(found.folder),
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
    print(f"{model.variant} checkpoint {checkpoint}, gallery {found.folder} ({len(found):,} locations)")
    for explanation in explanations:
        print()
        print(format_explanation(explanation))
    return 0
