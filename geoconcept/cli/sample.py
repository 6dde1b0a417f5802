"""Render the embedded MP16-style sample (rendered map patches around real MP16 GPS points).

Writes train.csv / test.csv (IMG_ID,LAT,LON), images/<IMG_ID>, and with --tar also tars/*.tar.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from geoconcept.validate import check_output_folder, int_at_least, int_between


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--n-train", type=int, default=2000, help="training images (default 2000)")
    parser.add_argument("--n-test", type=int, default=500, help="test images (default 500)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--image-size", type=int, default=112, help="patch size in pixels (default 112)")
    parser.add_argument("--tar", action="store_true", help="also pack the images as tars, as MP16 is distributed")


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from geoconcept.errors import ConfigError
    from geoconcept.sample import SampleConfig, build_sample

    int_at_least(args.n_train, "--n-train", 0)
    int_at_least(args.n_test, "--n-test", 0)
    if args.n_train + args.n_test == 0:
        raise ConfigError("--n-train + --n-test must be >= 1 (nothing to render), got 0")
    int_between(args.image_size, "--image-size", 32, 1024)
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
