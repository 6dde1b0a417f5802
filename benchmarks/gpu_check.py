"""The GPU check of issue 10: feature extraction rates and the trainer's samples/s, one table.

Run through benchmarks/gpu_check.sh on a machine with one GPU. It builds its own shards of
synthetic 256 px JPEGs (4 x 512 by default), then measures with a random-init ViT-L-14: forward
alone on random tensors, the pipeline end to end in fp32 and bf16 (goal >= 0.9 of the forward),
today's main-thread loop, bf16 weights + torch.compile against the H200 roofline (goal >= 0.5),
and the trainer's samples/s on cached 768-d features (batch 512, queue 4096). `--cpu-smoke` runs
the same code on the CPU with a tiny model and tiny shards, to check the script end to end.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from benchmarks.bench_features import device_rows, write_shards
from benchmarks.harness import Result, format_table
from geoconcept.features import default_workers, write_feature_shard


def trainer_row(device: str, n: int, batch: int, queue: int, steps: int, folder: Path) -> Result:
    """The trainer's samples/s on random cached features (GeoCLIP's 768-d ViT-L-14 size)."""
    from geoconcept.train.main import train
    from geoconcept.train.params import parse_args

    rng = np.random.default_rng(0)
    keys = [f"k{i:07d}" for i in range(n)]
    latlon = np.stack([rng.uniform(-80, 80, n), rng.uniform(-180, 180, n)], 1)
    meta = {"model": "bench", "pretrained": "none", "backbone_tag": "bench__none", "normalized": "false"}
    features = torch.tensor(rng.standard_normal((n, 768)), dtype=torch.float32)
    write_feature_shard(folder / "features" / "shard-000000.safetensors", keys, features, torch.tensor(latlon), meta)
    pq.write_table(pa.table({"key": keys, "split": ["train"] * n}), folder / "split.parquet")
    settings = {
        "features": folder / "features", "split": folder / "split.parquet", "output": folder / "run",
        "variant": "geoclip", "location_init": "random", "batch_size": batch, "queue_size": queue,
        "steps": steps, "log_interval": max(steps // 5, 1), "checkpoint_interval": 10 * steps,
        "progress": False, "device": device,
    }  # fmt: skip
    events: list[dict] = []
    train(
        parse_args([a for k, v in settings.items() for a in ("--set", f"{k}={v}")]),
        on_event=lambda kind, payload: events.append(payload) if kind == "log" else None,
    )
    rate = max(e["samples_per_s"] for e in events[1:] or events)  # after the first window (warm-up)
    return Result(
        f"trainer geoclip, batch {batch}, queue {queue}, 768-d",
        "samples/s",
        rate,
        48_000,
        "issue's H200 figure, not this run",
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="benchmarks/gpu_check.sh", description=__doc__)
    parser.add_argument("--cpu-smoke", action="store_true", help="tiny model and shards on the CPU (dry run)")
    parser.add_argument("--model", default=None, help="open_clip model (default ViT-L-14; smoke: ViT-S-32-alt)")
    parser.add_argument("--shards", type=int, default=None, help="shards to build (default 4; smoke 2)")
    parser.add_argument("--per-shard", type=int, default=None, help="images per shard (default 512; smoke 8)")
    parser.add_argument("--batch-size", type=int, default=None, help="default 256; smoke 4")
    parser.add_argument("--workers", type=int, default=None, help="decode workers (default: cores - 1)")
    args = parser.parse_args(argv)
    smoke = args.cpu_smoke
    if not smoke and not torch.cuda.is_available():
        print("gpu_check: no CUDA device visible to torch (use --cpu-smoke for a dry run)", file=sys.stderr)
        return 2
    device = "cpu" if smoke else "cuda"
    model = args.model or ("ViT-S-32-alt" if smoke else "ViT-L-14")
    shards, per_shard = args.shards or (2 if smoke else 4), args.per_shard or (8 if smoke else 512)
    batch = args.batch_size or (4 if smoke else 256)
    workers = default_workers() if args.workers is None else args.workers
    started = time.perf_counter()
    rows: list[Result] = []
    with tempfile.TemporaryDirectory() as tmp:
        jobs = write_shards(Path(tmp) / "shards", shards, per_shard)
        rows += device_rows(model, device, jobs, batch, workers, Path(tmp), compile=not smoke)
        try:
            n, tbatch, queue, steps = (512, 64, 128, 6) if smoke else (262_144, 512, 4096, 300)
            rows.append(trainer_row(device, n, tbatch, queue, steps, Path(tmp) / "train"))
        except Exception as exc:  # the trainer is optional here: report why instead of losing the table
            print(f"gpu_check: trainer row skipped ({type(exc).__name__}: {exc})", file=sys.stderr)
    name = torch.cuda.get_device_name(0) if device == "cuda" else f"CPU ({os.cpu_count()} cores)"
    print(f"\n{name}, torch {torch.__version__}, {time.perf_counter() - started:.0f} s\n")
    print(format_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
