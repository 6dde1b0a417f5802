"""The trainer on cached features: streaming shard by shard vs the whole training split in RAM.

* samples/s of the trainer (geoclip variant, batch 512, 768-d features) with a shuffle
  buffer of an eighth of the split (so it reads shards while it trains) against the same trainer
  with a buffer that holds the whole split: one window, read once, then batches are slices of
  memory, as the loop before streaming did (goal: >= 0.8 of it);
* the data path alone: one epoch of `TrainSplit.batches` against indexing one in-RAM tensor with
  the epoch's order (the loop before streaming);
* peak RSS of `python -m geoconcept.train` (a child process) on 2M synthetic 768-d samples written
  with the real writer (`geoconcept.features.write_feature_shard`); the goal is 2 GB. The baseline
  is the size of those features alone (N × 768 × 4 bytes), what the in-RAM loader had to hold at
  the least (it concatenated them, so twice that for a moment).

On a CPU the model's activations live in the process's RSS too (on a GPU they are device memory),
and the location encoder at GeoCLIP's queue of 4096 needs ~1 GB of them: the trainer runs here
with one location branch (sigmas [1]) and a queue of 1024, so that the figures are about the data
path, which is what grows with the dataset.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from benchmarks.harness import Result, best_rate, memory_result
from geoconcept.features import write_feature_shard
from geoconcept.train.data import epoch_order, load_training_data
from geoconcept.train.main import train
from geoconcept.train.params import parse_args

DIM = 768
SHARD = 10_000  # samples per feature file (MP16's shards hold a few thousand to tens of thousands)
RSS_GOAL_MB = 2048


def write_features(root: Path, n: int, shard: int = SHARD) -> dict[str, str]:
    """n synthetic 768-d samples in feature shards + an all-train split; the trainer settings for them."""
    rng = np.random.default_rng(0)
    keys_all: list[str] = []
    for s, start in enumerate(range(0, n, shard)):
        count = min(shard, n - start)
        keys = [f"k{i:08d}" for i in range(start, start + count)]
        latlon = np.stack([rng.uniform(-90, 90, count), rng.uniform(-180, 180, count)], 1)
        write_feature_shard(
            root / "features" / f"shard-{s:06d}.safetensors",
            keys,
            torch.from_numpy(rng.standard_normal((count, DIM), dtype=np.float32)),
            torch.from_numpy(latlon),
            {"model": "ViT-L-14", "pretrained": "none", "backbone_tag": "ViT-L-14__none", "normalized": "false"},
        )
        keys_all += keys
    pq.write_table(pa.table({"key": keys_all, "split": ["train"] * n}), root / "split.parquet")
    return {
        "features": str(root / "features"), "split": str(root / "split.parquet"), "variant": "geoclip",
        "location_init": "random", "sigmas": "[1]", "batch_size": "512", "queue_size": "1024", "lr": "3e-5",
        "log_interval": "10", "checkpoint_interval": "100000", "progress": "false",
    }  # fmt: skip


def _args(settings: dict[str, str]) -> list[str]:
    return [a for k, v in settings.items() for a in ("--set", f"{k}={v}")]


def trainer_rate(settings: dict[str, str]) -> float:
    """Samples/s over all log windows but the first (warm-up; it also holds the first read)."""
    lines: list[dict] = []
    train(parse_args(_args(settings)), on_event=lambda kind, payload: lines.append(payload) if kind == "log" else None)
    seconds = sum(10 * 512 / line["samples_per_s"] for line in lines[1:])
    return 10 * 512 * (len(lines) - 1) / seconds


def bench_trainer(root: Path, n: int, steps: int) -> Result:
    settings = write_features(root, n, shard=n // 32) | {"steps": str(steps), "num_threads": "2"}
    streaming = trainer_rate(settings | {"output": str(root / "a"), "shuffle_buffer": str(n // 8)})
    in_ram = trainer_rate(settings | {"output": str(root / "b"), "shuffle_buffer": str(n)})
    return Result(
        benchmark=f"trainer, {n:,} samples x 768-d, batch 512 (CPU)",
        unit="samples/s",
        ours=streaming,
        baseline=in_ram,
        baseline_name="whole split in RAM",
        goal=0.8,
        note="streaming: shuffle windows of 1/8 of the split, read while training",
    )


def bench_data_path(root: Path, n: int) -> Result:
    settings = write_features(root, n, shard=n // 32) | {"output": str(root / "run")}
    split = load_training_data(parse_args(_args(settings))).train
    buffer, batch = n // 8, 512

    def streaming() -> int:
        return sum(len(b.ids) for b in split.batches(seed=0, epoch=0, batch_size=batch, buffer=buffer))

    every = torch.cat([b.features for b in split.batches(seed=0, epoch=0, batch_size=batch, buffer=n)])
    order, _ = epoch_order(0, 0, tuple(np.diff(split.offsets).tolist()), n)

    def in_ram() -> int:
        steps = len(order) // batch
        return sum(len(every[order[p * batch : (p + 1) * batch]]) for p in range(steps))

    return Result(
        benchmark=f"training batches, {n:,} samples x 768-d, batch 512",
        unit="samples/s",
        ours=best_rate(streaming),
        baseline=best_rate(in_ram),
        baseline_name="indexing one in-RAM tensor",
        note="the data path alone: shard reads + shuffle windows of 1/8 of the split vs features[index]",
    )


def peak_rss_mb(args: list[str]) -> float:
    """Peak resident memory (MB) of one trainer process (its own rusage, from wait4)."""
    child = subprocess.Popen([sys.executable, "-m", "geoconcept.train", *args], stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(child.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"the trainer exited with {os.waitstatus_to_exitcode(status)}")
    return usage.ru_maxrss / 1024  # kB on Linux


def bench_memory(root: Path, n: int, steps: int) -> Result:
    settings = write_features(root, n) | {"output": str(root / "run"), "steps": str(steps), "num_threads": "2"}
    ours = peak_rss_mb(_args(settings))
    held = n * DIM * 4 / 2**20
    return memory_result(
        f"trainer peak RSS, {n:,} samples x 768-d: 1 / peak RSS",
        ours,
        held,
        "the features alone, held in RAM",
        RSS_GOAL_MB,
        f"peak RSS {ours:,.0f} MB (goal: under {RSS_GOAL_MB} MB); features {held:,.0f} MB; {steps} steps",
    )


def run(quick: bool) -> list[Result]:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        return [
            bench_trainer(root / "trainer", 32_768 if quick else 131_072, 40 if quick else 120),
            bench_data_path(root / "data", 65_536 if quick else 262_144),
            bench_memory(root / "memory", 200_000 if quick else 2_000_000, 30 if quick else 300),
        ]
