"""Compute the frozen image backbone's features for every finished shard of a dataset source.

Reads <data-root>/shards/<dataset>/<source>/shard-NNNNNN.tar (shards whose manifest exists) and
writes <data-root>/features/<dataset>/<backbone tag>/<source>/shard-NNNNNN.safetensors. Shards
whose features are up to date (same backbone, same tar bytes) are skipped. Without --pretrained
the backbone is randomly initialised (offline demo): the features are reproducible but carry no
learned image semantics. For real runs: --model ViT-L-14 --pretrained openai (or a local file).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from geoconcept.layout import default_data_root

    parser.add_argument(
        "--data-root",
        type=Path,
        default=default_data_root(),
        help="data root (default: $GEOCONCEPT_DATA_ROOT or ./data)",
    )
    parser.add_argument("--dataset", default="sample", help="dataset name (default: sample)")
    parser.add_argument("--source", required=True, help="source name, e.g. train")
    parser.add_argument("--model", default="ViT-S-32-alt", help="open_clip model name (default: ViT-S-32-alt)")
    parser.add_argument(
        "--pretrained", default=None, help="open_clip tag or local checkpoint file (default: none, random)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of a random backbone (default 0)")
    parser.add_argument("--batch-size", type=int, default=32, help="images per forward pass (default 32)")
    parser.add_argument("--device", default="cpu", help="torch device (default cpu)")
    parser.add_argument(
        "--shard", action="append", metavar="NAME", help="only this shard, e.g. shard-000003 (repeatable)"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from geoconcept.errors import InputError
    from geoconcept.features import extract_shard_features
    from geoconcept.layout import DataRoot
    from geoconcept.model.backbone import Backbone

    root = DataRoot(args.data_root)
    shard_dir = root.shards(args.dataset, args.source)
    manifests = sorted(shard_dir.glob("shard-*.parquet"))
    if args.shard:
        manifests = [m for m in manifests if m.stem in set(args.shard)]
        missing = sorted(set(args.shard) - {m.stem for m in manifests})
        if missing:
            raise InputError(f"no finished shard {', '.join(missing)} in {shard_dir}")
    if not manifests:
        raise InputError(f"no finished shards (shard-*.parquet manifests) in {shard_dir}")
    backbone = Backbone.create(args.model, args.pretrained, device=args.device, seed=args.seed)
    if backbone.warning:
        print(f"warning: {backbone.warning}", file=sys.stderr)
    out_dir = root.features(args.dataset, backbone.tag, args.source)
    done = skipped = images = 0
    with tqdm(desc=f"features {backbone.tag}", unit="img", disable=args.no_progress, file=sys.stderr) as bar:
        for manifest in manifests:
            tar = manifest.with_suffix(".tar")
            result = extract_shard_features(
                tar, out_dir / f"{manifest.stem}.safetensors", backbone, args.batch_size, on_batch=bar.update
            )
            skipped += result.skipped
            done += not result.skipped
            images += result.count
    print(f"features: {done} shard(s) computed, {skipped} up to date, {images} images -> {out_dir}")
    return 0
