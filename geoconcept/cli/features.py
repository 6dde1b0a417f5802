"""Compute the frozen image backbone's features for every finished shard of a dataset source.

Reads <data-root>/shards/<dataset>/<source>/shard-NNNNNN.tar (shards whose manifest exists) and
writes <data-root>/features/<dataset>/<backbone tag>/<source>/shard-NNNNNN.safetensors. Shards
whose features are up to date (same backbone and precision, same tar bytes) are skipped; a shard
whose tar holds fewer samples than its manifest lists is an error. Without --pretrained the
backbone is randomly initialised (offline demo): the features are reproducible but carry no
learned image semantics. For real runs: --model ViT-L-14 --pretrained openai (or a local file)
--device cuda; several GPUs: --devices cuda:0,cuda:1,... (one process per GPU over disjoint
shards), or `torchrun --nproc_per_node N -m geoconcept features ... --device cuda` (RANK and
WORLD_SIZE pick each process's shards, LOCAL_RANK its GPU).
"""

from __future__ import annotations

import argparse
import os
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
    parser.add_argument(
        "--batch-size", type=int, default=None, help="images per forward pass (default: 32 on CPU, 256 on CUDA)"
    )
    parser.add_argument("--device", default="cpu", help="torch device (default cpu)")
    parser.add_argument(
        "--devices", default=None, help="comma-separated devices, one process each over disjoint shards (cuda:0,cuda:1)"
    )
    parser.add_argument(
        "--precision", default=None, help="fp32, bf16 or fp16 (default: bf16 on CUDA, fp32 on CPU); part of the cache"
    )
    parser.add_argument(
        "--workers", type=int, default=None, help="decode processes per device (default: available cores - 1)"
    )
    parser.add_argument("--compile", action="store_true", help="torch.compile the backbone (long runs on a GPU)")
    parser.add_argument(
        "--shard", action="append", metavar="NAME", help="only this shard, e.g. shard-000003 (repeatable)"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _check(args: argparse.Namespace) -> list[str]:
    """The settings' errors before any work; the devices to run on."""
    from geoconcept.errors import ConfigError
    from geoconcept.model.backbone import check_precision
    from geoconcept.validate import int_at_least

    if args.batch_size is not None:
        int_at_least(args.batch_size, "--batch-size")
    if args.workers is not None:
        int_at_least(args.workers, "--workers", minimum=0)
    if args.precision is not None:
        check_precision(args.precision)
    devices = [d.strip() for d in (args.devices or args.device).split(",")]
    if not all(devices):
        raise ConfigError(f"--devices: empty device name in {args.devices!r}")
    return devices


def _rank_subset(manifests: list[Path], devices: list[str]) -> tuple[list[Path], list[str], str]:
    """Under torchrun: this rank's shards and GPU (no process group: the shards are independent)."""
    from geoconcept.features import split_shards

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return manifests, devices, ""
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if devices == ["cuda"]:
        devices = [f"cuda:{local}"]
    return split_shards(manifests, world)[rank], devices, f"rank {rank}/{world}: "


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from geoconcept.errors import InputError
    from geoconcept.features import BackboneSpec, ShardJob, extract_on_devices, extract_shards
    from geoconcept.layout import DataRoot
    from geoconcept.model.backbone import RANDOM_WEIGHTS_WARNING, backbone_tag

    devices = _check(args)
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
    manifests, devices, who = _rank_subset(manifests, devices)
    spec = BackboneSpec(args.model, args.pretrained, args.seed, args.precision, args.compile)
    tag = backbone_tag(args.model, args.pretrained, args.seed)
    out_dir = root.features(args.dataset, tag, args.source)
    jobs = [ShardJob.beside_manifest(m.with_suffix(".tar"), out_dir / f"{m.stem}.safetensors") for m in manifests]
    if len(devices) > 1:
        if args.pretrained in (None, "none"):
            print(f"warning: {RANDOM_WEIGHTS_WARNING}", file=sys.stderr)
        results = extract_on_devices(jobs, spec, devices, args.batch_size, args.workers)
    else:
        backbone = spec.create(devices[0])
        if backbone.warning:
            print(f"warning: {backbone.warning}", file=sys.stderr)
        bar = tqdm(desc=f"{who}features {tag}", unit="img", disable=args.no_progress, file=sys.stderr)
        with bar:
            results = extract_shards(jobs, backbone, args.batch_size, args.workers, on_batch=bar.update)
    done = sum(not r.skipped for r in results)
    images = sum(r.count for r in results)
    print(f"{who}features: {done} shard(s) computed, {len(results) - done} up to date, {images} images -> {out_dir}")
    return 0
