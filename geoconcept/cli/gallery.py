"""Build the FAISS GPS gallery for one checkpoint.

Coordinates: GeoCLIP's 100K MP16 points (default), a CSV/Parquet of lat/lon (--coords FILE), or
--sample N / --kmeans N points drawn from the coordinates of cached feature files (--from-features
DIR, repeatable). Writes index.faiss, rows.parquet and gallery.json into --out; an identical
rebuild is skipped.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from geoconcept.validate import check_output_folder, int_at_least


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--checkpoint", type=Path, required=True, help="run folder (its final.safetensors) or model file"
    )
    parser.add_argument("--out", type=Path, required=True, help="gallery folder to write")
    parser.add_argument("--coords", type=Path, help="CSV/Parquet with lat, lon columns (default: GeoCLIP's 100K)")
    parser.add_argument(
        "--from-features", type=Path, action="append", metavar="DIR", help="feature folder whose coordinates to use"
    )
    pick = parser.add_mutually_exclusive_group()
    pick.add_argument("--sample", type=int, metavar="N", help="N random coordinates of --from-features")
    pick.add_argument("--kmeans", type=int, metavar="N", help="N spherical k-means centres of --from-features")
    parser.add_argument("--seed", type=int, default=0, help="seed for --sample / --kmeans (default 0)")
    parser.add_argument("--index", default="flat", help="flat (exact, default), hnsw, or a FAISS factory string")
    parser.add_argument("--gpu", choices=["auto", "yes", "no"], default="auto", help="FAISS on GPU (default auto)")


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from geoconcept import gallery
    from geoconcept.errors import ConfigError, InputError
    from geoconcept.features import feature_files, read_feature_shard
    from geoconcept.model.checkpoint import load_model

    for flag, value in (("--sample", args.sample), ("--kmeans", args.kmeans)):
        if value is not None:
            int_at_least(value, flag, 1)
            if not args.from_features:
                raise ConfigError(f"{flag} needs --from-features DIR")
    if args.from_features and args.coords:
        raise ConfigError("give either --coords or --from-features, not both")
    check_output_folder(args.out, "--out")
    model = load_model(args.checkpoint)  # a model file or a run folder, as predict and evaluate take
    if args.from_features:
        files = [f for d in args.from_features for f in feature_files(d)]
        if not files:
            raise InputError(f"no feature files (shard-*.safetensors) in {', '.join(map(str, args.from_features))}")
        coords = np.concatenate([read_feature_shard(f).latlon.numpy() for f in files])
        if args.kmeans is not None:
            coords, source = gallery.kmeans_coordinates(coords, args.kmeans, args.seed), f"kmeans{args.kmeans}"
        elif args.sample is not None:
            coords, source = gallery.sample_coordinates(coords, args.sample, args.seed), f"sample{args.sample}"
        else:
            source = "features"
    elif args.coords:
        coords, source = gallery.read_coordinates(args.coords), str(args.coords)
    else:
        coords, source = gallery.geoclip_coordinates(), "geoclip_100k"
    use_gpu = {"auto": "auto", "yes": True, "no": False}[args.gpu]
    info = gallery.build_gallery(coords, model, args.out, args.index, use_gpu, source=source)
    print(f"gallery: {info['count']} locations, {info['factory']} index, {info['dim']}-d -> {args.out}")
    return 0
