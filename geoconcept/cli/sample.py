"""Render the embedded MP16-style sample (rendered map patches around real MP16 GPS points).

Writes train.csv / test.csv (IMG_ID,LAT,LON), images/<IMG_ID>, and with --tar also tars/*.tar.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from geoconcept.validate import check_output_folder


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--n-train", type=int, default=2000, help="training images (default 2000)")
    parser.add_argument("--n-test", type=int, default=500, help="test images (default 500)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--image-size", type=int, default=112, help="patch size in pixels (default 112)")
    parser.add_argument("--tar", action="store_true", help="also pack the images as tars, as MP16 is distributed")


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from geoconcept.errors import InputError
    from geoconcept.sample import SampleConfig, build_sample

    if args.n_train < 0 or args.n_test < 0 or args.n_train + args.n_test == 0:
        raise InputError("--n-train and --n-test must be >= 0 and not both 0")
    if not 32 <= args.image_size <= 1024:
        raise InputError("--image-size must be between 32 and 1024")
    check_output_folder(args.out, "--out")
    config = SampleConfig(
        n_train=args.n_train, n_test=args.n_test, seed=args.seed, image_size=args.image_size, tar=args.tar
    )
    with tqdm(total=args.n_train + args.n_test, desc="rendering", unit="img") as bar:
        result = build_sample(args.out, config, progress=bar.update)
    print(f"sample: {result.n_train} train + {result.n_test} test rendered map patches in {result.out}")
    print(f"  {result.train_csv}\n  {result.test_csv}\n  images: {result.images}")
    for tar in result.tars:
        print(f"  tar: {tar}")
    return 0
