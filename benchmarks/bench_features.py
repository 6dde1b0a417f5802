"""Feature extraction: the streaming pipeline against today's loop, and on a GPU against the device.

(a) CPU, always: `geoconcept.features.extract_shards` (2 decode workers) vs the loop extraction
    used to be (decode, preprocess and encode in the main thread, one shard after another),
    same backbone, batch, shards and machine, measured in the same run.
(b) CUDA, when available: end-to-end images/s of the pipeline vs the backbone's forward alone on
    random tensors on the same device (goal >= 0.9), fp32 and bf16, and bf16 with torch.compile vs
    the roofline: 790 TFLOP/s (H200 dense bf16) / FLOPs per image, counted with torch's
    FlopCounterMode (goal >= 0.5). benchmarks/gpu_check.sh runs (b) with ViT-L-14.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from PIL import Image
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.harness import Result, best_rate
from geoconcept.features import ShardJob, default_workers, extract_shards
from geoconcept.model.backbone import Backbone

H200_BF16_FLOPS = 790e12  # dense bf16 tensor-core peak of one H200, FLOP/s


def write_shards(folder: Path, shards: int, per_shard: int, size: int = 256) -> list[ShardJob]:
    """Tars of random-ish JPEGs (smooth noise, so they compress like photos) + `ok` manifests."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    jobs = []
    for s in range(shards):
        tar_path = folder / f"shard-{s:06d}.tar"
        keys = [f"{s:04d}{i:06d}" for i in range(per_shard)]
        with tarfile.open(tar_path, "w") as tar:
            for key in keys:
                coarse = rng.integers(0, 255, (size // 16, size // 16, 3), dtype=np.uint8)
                pixels = np.kron(coarse, np.ones((16, 16, 1), dtype=np.uint8))
                pixels = np.clip(pixels + rng.normal(0, 12, pixels.shape), 0, 255).astype(np.uint8)
                buffer = io.BytesIO()
                Image.fromarray(pixels).save(buffer, format="JPEG", quality=90)
                meta = {"img_id": key, "lat": float(rng.uniform(-80, 80)), "lon": float(rng.uniform(-180, 180))}
                for suffix, data in (("jpg", buffer.getvalue()), ("json", json.dumps(meta).encode())):
                    info = tarfile.TarInfo(f"{key}.{suffix}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
        pq.write_table(pa.table({"key": keys, "status": ["ok"] * per_shard}), tar_path.with_suffix(".parquet"))
        jobs.append(ShardJob.beside_manifest(tar_path, folder / "out" / f"shard-{s:06d}.safetensors"))
    return jobs


def old_loop(jobs: list[ShardJob], backbone: Backbone, batch: int) -> int:
    """Today's extraction before the pipeline: everything in the main thread, shard after shard."""
    n = 0
    for job in jobs:
        pending: list[torch.Tensor] = []
        with tarfile.open(job.tar) as tar:
            for member in tar:
                if member.name.endswith(".jpg"):
                    image = Image.open(io.BytesIO(tar.extractfile(member).read())).convert("RGB")
                    pending.append(backbone.preprocess(image))
                if len(pending) == batch:
                    backbone.encode(torch.stack(pending))
                    n, pending = n + len(pending), []
        if pending:
            backbone.encode(torch.stack(pending))
            n += len(pending)
    return n


def pipeline(jobs: list[ShardJob], backbone: Backbone, batch: int, workers: int, folder: Path) -> int:
    """The pipeline end to end, into a fresh output folder each call (up-to-date files are skipped)."""
    out = Path(tempfile.mkdtemp(dir=folder))
    fresh = [ShardJob(j.tar, out / j.out.name, j.expected) for j in jobs]
    return sum(r.count for r in extract_shards(fresh, backbone, batch, workers))


def forward_alone(backbone: Backbone, batch: int, steps: int) -> int:
    """The backbone's forward on random device tensors, synchronised at the end."""
    x = torch.randn(batch, 3, backbone.image_size, backbone.image_size, device=backbone.device)
    for _ in range(steps):
        backbone.embed(x)
    if backbone.device.type == "cuda":
        torch.cuda.synchronize()
    return batch * steps


def flops_per_image(backbone: Backbone) -> float:
    x = torch.zeros(1, 3, backbone.image_size, backbone.image_size, device=backbone.device, dtype=backbone.dtype)
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        backbone.network.visual(x)
    return float(counter.get_total_flops())


def cpu_rows(quick: bool) -> list[Result]:
    backbone = Backbone.create("ViT-S-32-alt", None, device="cpu", precision="fp32")
    shards, per_shard, batch = (2, 48, 16) if quick else (4, 96, 32)
    with tempfile.TemporaryDirectory() as tmp:
        jobs = write_shards(Path(tmp), shards, per_shard)
        baseline = best_rate(lambda: old_loop(jobs, backbone, batch), repeats=1 if quick else 2)
        ours = best_rate(lambda: pipeline(jobs, backbone, batch, 2, Path(tmp)), repeats=1 if quick else 2)
    return [
        Result(
            benchmark=f"features CPU: {shards}x{per_shard} JPEGs 256 px, ViT-S-32-alt fp32, batch {batch}, 2 workers",
            unit="images/s",
            ours=ours,
            baseline=baseline,
            baseline_name="main-thread loop",
            note="on 2 cores the forward and the decode workers share the CPU",
        )
    ]


def device_rows(
    model: str, device: str, jobs: list[ShardJob], batch: int, workers: int, folder: Path, compile: bool = True
) -> list[Result]:
    """End-to-end vs forward alone (fp32, bf16) and bf16 + compile vs the roofline, on `device`.

    `compile=False` (CPU smoke runs: compiling takes minutes) measures the last row eagerly.
    """
    label = f"features {model} {len(jobs)}x{jobs[0].expected} JPEGs, batch {batch}, {workers} workers"
    rows = []
    flops = 0.0
    for precision in ("fp32", "bf16"):
        backbone = Backbone.create(model, None, device=device, precision=precision)
        flops = flops or flops_per_image(backbone)
        forward_alone(backbone, batch, 2)  # warm-up: cuDNN/cuBLAS plans
        alone = best_rate(lambda b=backbone: forward_alone(b, batch, 10), repeats=2)
        e2e = best_rate(lambda b=backbone: pipeline(jobs, b, batch, workers, folder), repeats=2)
        rows.append(Result(f"{label}, {precision}", "images/s", e2e, alone, "forward alone", goal=0.9))
        if precision == "fp32":
            old = best_rate(lambda b=backbone: old_loop(jobs[:1], b, batch), repeats=1)
            rows.append(Result(f"{label}, fp32 vs today's loop", "images/s", e2e, old, "main-thread loop"))
        del backbone
        if device.startswith("cuda"):
            torch.cuda.empty_cache()
    compiled = Backbone.create(model, None, device=device, precision="bf16", compile=compile)
    pipeline(jobs[:1], compiled, batch, workers, folder)  # compiles (minutes), not measured
    e2e = best_rate(lambda: pipeline(jobs, compiled, batch, workers, folder), repeats=2)
    rows.append(
        Result(
            f"{label}, bf16 weights" + (" + compile" if compile else " (compile skipped)"),
            "images/s",
            e2e,
            H200_BF16_FLOPS / flops,
            f"roofline 790 TFLOP/s / {flops / 1e9:.1f} GFLOP per image",
            goal=0.5,
            note=f"{flops / 1e9:.1f} GFLOP per image (FlopCounterMode: matmuls and convs)",
        )
    )
    return rows


def run(quick: bool) -> list[Result]:
    results = cpu_rows(quick)
    if torch.cuda.is_available():
        workers = int(os.environ.get("GEOCONCEPT_BENCH_WORKERS", default_workers()))
        model, shards, per_shard = ("ViT-B-32", 2, 256) if quick else ("ViT-L-14", 4, 512)
        started = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:
            jobs = write_shards(Path(tmp), shards, per_shard)
            results += device_rows(model, "cuda", jobs, 256, workers, Path(tmp))
        print(f"GPU rows took {time.perf_counter() - started:.0f} s")
    return results
