"""Cached image features: the frozen backbone runs once per shard, training reads the cache.

One file per shard, `DataRoot.features(dataset, backbone_tag, source)/shard-NNNNNN.safetensors`:

* tensor `features`: (N, D), the backbone's projected image embedding, **not** normalised
  (GeoCLIP's image MLP consumes CLIP's unnormalised projection; `normalized` = "false"). Stored
  as float32 when the backbone computed in fp32, as float16 when it computed in bf16/fp16: a bf16
  value within fp16's range is exactly representable in fp16 (fp16 has 3 more mantissa bits), so
  nothing computed is lost while disk and RAM halve, and fp16 (unlike bf16) reads into numpy. A
  shard whose values overflow fp16 (|x| > 65504) is stored as float32. Readers convert with
  `.float()` (`read_feature_shard` returns float32); `features_dtype` records which;
* tensor `latlon`: (N, 2) float64, each sample's (lat, lon) from its `.json`, so that training
  needs no other file for coordinates;
* metadata (strings): `format` = "geoconcept-image-features", `keys` (JSON list, row order),
  `model`, `pretrained` ("none" when random), `pretrained_weights_loaded` ("true"/"false"),
  `backbone_tag`, `backbone_seed`, `image_size`, `dim`, `precision` (fp32/bf16/fp16, the
  compute precision), `features_dtype` (float32/float16), `compiled` ("true"/"false",
  torch.compile), `normalized`, `count`, `source` (tar name), `source_sha256` (of the tar),
  `warning` (empty, or the random-backbone warning).

A shard is skipped when its file exists and records the same backbone, the same precision and
the same tar bytes (`compiled` is recorded but not part of the identity: compilation changes
rounding, not what is computed, and a toggle should not redo hours of extraction). A file
written before `precision` was recorded counts as fp32, which is what those runs computed.

Extraction streams (`extract_shards`): DataLoader workers read the shard tars (one shard per
worker at a time, so several shards are in flight), decode and resize the images to uint8
pixels; the device normalises them, runs the backbone, and each shard's file is written
atomically as soon as its last batch is done. A batch never spans two shards, so a shard's
features do not depend on which other shards ran beside it (1 or N processes give the same
bytes). The count read is checked against the shard's manifest: a truncated tar is an error,
never a short file.
"""

from __future__ import annotations

import io
import json
import multiprocessing
import os
import tarfile
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch
import webdataset
from PIL import Image, UnidentifiedImageError
from torch.utils.data import DataLoader, IterableDataset, get_worker_info
from torchvision import transforms

from geoconcept import atomic
from geoconcept.errors import ConfigError, InputError
from geoconcept.hashing import file_sha256
from geoconcept.model.backbone import Backbone
from geoconcept.model.tensor_files import json_metadata, read_metadata, read_tensors, require_metadata, save_tensors

FORMAT = "geoconcept-image-features"
FEATURES = "features"
LATLON = "latlon"
SUFFIX = ".safetensors"
FP16_MAX = torch.finfo(torch.float16).max
T = TypeVar("T")
DEFAULT_BATCH = {"cpu": 32, "cuda": 256}  # CPU: small batches keep latency and RAM low; GPU: fill the device


@dataclass
class FeatureShard:
    path: Path
    keys: list[str]
    features: torch.Tensor  # (N, D) float32
    latlon: torch.Tensor  # (N, 2) float64
    metadata: dict[str, str]


@dataclass
class ExtractResult:
    path: Path
    count: int
    skipped: bool  # already up to date
    seconds: float  # wall time since the previous shard of the same run finished (sums to the run's time)
    warning: str | None


@dataclass(frozen=True)
class ShardJob:
    """One shard to extract: its tar, its feature file, and the sample count its manifest promises."""

    tar: Path
    out: Path
    expected: int | None = None  # None: no manifest to check against

    @classmethod
    def beside_manifest(cls, tar: str | os.PathLike[str], out: str | os.PathLike[str]) -> ShardJob:
        """The job for `tar`, expecting the `ok` rows of `shard-NNNNNN.parquet` beside it (if there is one)."""
        tar = Path(tar)
        manifest = tar.with_suffix(".parquet")
        return cls(tar, Path(out), manifest_ok_count(manifest) if manifest.is_file() else None)


def manifest_ok_count(manifest: Path) -> int:
    """Rows with status `ok` in an ingest manifest: exactly the samples its tar holds."""
    try:
        status = pq.read_table(manifest, columns=["status"]).column("status")
    except (OSError, KeyError, ValueError) as exc:
        raise InputError(f"manifest {manifest} is unreadable ({exc})") from None
    return int(pc.sum(pc.equal(status, "ok")).as_py() or 0)


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity where the OS has one: Linux; else all)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def default_workers() -> int:
    """Decode workers: every available core but one (the main process feeds the device)."""
    return max(available_cores() - 1, 0)


def default_batch_size(device: str | torch.device) -> int:
    return DEFAULT_BATCH["cuda" if torch.device(device).type == "cuda" else "cpu"]


def _identity(backbone: Backbone) -> dict[str, str]:
    """The metadata that decides whether an existing feature file came from this backbone."""
    return {
        "format": FORMAT,
        "model": backbone.model_name,
        "pretrained": backbone.pretrained,
        "pretrained_weights_loaded": "true" if backbone.weights_loaded else "false",
        "backbone_seed": str(backbone.seed),
        "image_size": str(backbone.image_size),
        "dim": str(backbone.dim),
        "precision": backbone.precision,
    }


def is_up_to_date(out_path: Path, backbone: Backbone, source_sha256: str) -> bool:
    if not out_path.exists():
        return False
    try:
        meta = read_metadata(out_path, "feature file")
    except InputError:
        return False  # unreadable: extract again
    meta = {"precision": "fp32"} | meta  # files from before precision was recorded were fp32
    wanted = _identity(backbone) | {"source_sha256": source_sha256}
    return all(meta.get(k) == v for k, v in wanted.items())


def _samples(tar_path: Path) -> Iterator[tuple[str, Image.Image, dict]]:
    """(key, RGB image, json) per sample, in tar order, with errors naming the tar and key."""
    # We split shards over workers and processes ourselves: webdataset's splitters would give a
    # DataLoader worker other than the first no sample of a one-tar dataset (and refuse torchrun's env).
    dataset = webdataset.WebDataset(
        str(tar_path), shardshuffle=False, empty_check=False, nodesplitter=None, workersplitter=None
    )
    try:
        for sample in dataset:
            key = sample["__key__"]
            if "jpg" not in sample or "json" not in sample:
                raise InputError(f"{tar_path}: sample {key!r} lacks its .jpg or .json member")
            try:
                meta = json.loads(sample["json"])
                image = Image.open(io.BytesIO(sample["jpg"])).convert("RGB")
            except (json.JSONDecodeError, UnidentifiedImageError, OSError) as exc:
                raise InputError(f"{tar_path}: sample {key!r} is unreadable ({exc})") from None
            yield key, image, meta
    except (OSError, ValueError, tarfile.TarError) as exc:  # truncated or corrupt tar
        reason = exc.args[0] if exc.args else exc
        raise InputError(f"{tar_path}: not a readable WebDataset shard ({reason})") from None


def _latlon(tar_path: Path, key: str, meta: dict) -> tuple[float, float]:
    try:
        lat, lon = float(meta["lat"]), float(meta["lon"])
    except (KeyError, TypeError, ValueError):
        raise InputError(f"{tar_path}: sample {key!r} has no numeric lat/lon in its .json") from None
    if not (np.isfinite(lat) and np.isfinite(lon) and abs(lat) <= 90 and abs(lon) <= 180):
        raise InputError(f"{tar_path}: sample {key!r} has coordinates out of range ({lat}, {lon})")
    return lat, lon


def _uint8_pixels(image: Image.Image) -> torch.Tensor:
    """What torchvision's to_tensor does before its division by 255: (3, H, W) uint8."""
    return torch.from_numpy(np.array(image, dtype=np.uint8, copy=True)).permute(2, 0, 1).contiguous()


def split_preprocess(preprocess: Callable) -> tuple[Callable[[Image.Image], torch.Tensor], transforms.Normalize | None]:
    """open_clip's preprocessing cut in two: resize/crop to uint8 pixels (workers), normalise (device).

    Shipping uint8 instead of float32 pixels from the workers to the device moves 4x fewer bytes
    through shared and pinned memory; `to_tensor`'s division by 255 and `Normalize` are exact
    elementwise float32 ops, so the device gives the same pixels bit for bit. A preprocessing that is
    not [..., ToTensor, Normalize] runs whole in the workers (second item None).
    """
    steps = list(getattr(preprocess, "transforms", []))
    if len(steps) >= 2 and isinstance(steps[-2], transforms.ToTensor) and isinstance(steps[-1], transforms.Normalize):
        head = transforms.Compose([*steps[:-2], _uint8_pixels])
        return head, steps[-1]
    return preprocess, None


def _on_device(pixels: torch.Tensor, normalize: transforms.Normalize | None, backbone: Backbone) -> torch.Tensor:
    pixels = pixels.to(backbone.device, non_blocking=True)
    if normalize is None:
        return pixels
    return normalize(pixels.float().div(255))


class _ShardBatches(IterableDataset):
    """Batches of one shard at a time, each DataLoader worker taking every n-th shard.

    Yields dicts (DataLoader pins dicts of tensors): `shard` (index into `tars`), `keys`, `latlon`,
    `pixels`, `last` (the shard's final batch), or `error` (a message; raising in a worker would
    reach the caller wrapped in a multi-line traceback).
    """

    def __init__(self, tars: Sequence[Path], transform: Callable, batch_size: int) -> None:
        self.tars, self.transform, self.batch_size = list(tars), transform, batch_size

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        mine = range(len(self.tars)) if info is None else range(info.id, len(self.tars), info.num_workers)
        for index in mine:
            try:
                yield from self._shard(index)
            except InputError as exc:
                yield {"shard": index, "error": str(exc)}
                return

    def _shard(self, index: int) -> Iterator[dict[str, Any]]:
        tar = self.tars[index]
        keys: list[str] = []
        coords: list[tuple[float, float]] = []
        pixels: list[torch.Tensor] = []
        for key, image, meta in _samples(tar):
            if len(keys) == self.batch_size:
                yield self._batch(index, keys, coords, pixels, last=False)
                keys, coords, pixels = [], [], []
            keys.append(key)
            coords.append(_latlon(tar, key, meta))
            pixels.append(self.transform(image))
        yield self._batch(index, keys, coords, pixels, last=True)  # possibly empty: marks the shard's end

    @staticmethod
    def _batch(index: int, keys: list, coords: list, pixels: list, last: bool) -> dict[str, Any]:
        return {
            "shard": index,
            "keys": keys,
            "latlon": torch.tensor(coords, dtype=torch.float64).reshape(-1, 2),
            "pixels": torch.stack(pixels) if pixels else torch.empty(0),
            "last": last,
        }


def _pad(pixels: torch.Tensor, size: int) -> torch.Tensor:
    """A compiled backbone sees one batch shape only (no recompilation at each shard's short tail)."""
    missing = size - pixels.shape[0]
    return pixels if missing <= 0 else torch.cat([pixels, pixels.new_zeros(missing, *pixels.shape[1:])])


class _Pending:
    """One shard's rows as they arrive (features stay on the device until the shard is complete)."""

    def __init__(self) -> None:
        self.keys: list[str] = []
        self.latlon: list[torch.Tensor] = []
        self.features: list[torch.Tensor] = []


def extract_shards(
    jobs: Sequence[ShardJob],
    backbone: Backbone,
    batch_size: int | None = None,
    workers: int | None = None,
    on_batch: Callable[[int], None] | None = None,
) -> list[ExtractResult]:
    """Extract every job's features in one streaming pass; results in the order of `jobs`.

    Up-to-date shards are skipped without decoding. `batch_size` None: per device
    (`default_batch_size`); `workers` None: `default_workers()`; 0 decodes in this process.
    `on_batch(n)` is called after each batch of n images (progress bars).
    """
    batch_size = default_batch_size(backbone.device) if batch_size is None else batch_size
    workers = default_workers() if workers is None else workers
    if batch_size < 1 or workers < 0:
        raise ConfigError(f"batch_size must be >= 1 and workers >= 0, got {batch_size} and {workers}")
    results: dict[int, ExtractResult] = {}
    todo: list[tuple[int, ShardJob, str]] = []
    for i, job in enumerate(jobs):
        start = time.perf_counter()
        if not job.tar.is_file():
            raise InputError(f"shard {job.tar} not found")
        atomic.remove_stale_temps(job.out.parent, [job.out.name])
        sha = file_sha256(job.tar)
        if is_up_to_date(job.out, backbone, sha):
            count = int(read_metadata(job.out, "feature file").get("count", 0))
            results[i] = ExtractResult(job.out, count, True, time.perf_counter() - start, backbone.warning)
        else:
            todo.append((i, job, sha))
    if todo:
        results |= _stream(todo, backbone, batch_size, workers, on_batch)
    return [results[i] for i in range(len(jobs))]


def _stream(
    todo: list[tuple[int, ShardJob, str]],
    backbone: Backbone,
    batch_size: int,
    workers: int,
    on_batch: Callable[[int], None] | None,
) -> dict[int, ExtractResult]:
    transform, normalize = split_preprocess(backbone.preprocess)
    on_cuda = backbone.device.type == "cuda"
    loader = DataLoader(
        _ShardBatches([job.tar for _, job, _ in todo], transform, batch_size),
        batch_size=None,  # the dataset batches within each shard
        num_workers=workers,
        pin_memory=on_cuda,
        prefetch_factor=4 if workers else None,  # enough queued batches to cover a shard switch
        persistent_workers=False,
    )
    pending: dict[int, _Pending] = {}
    results: dict[int, ExtractResult] = {}
    last_done = time.perf_counter()
    for batch in loader:
        index = batch["shard"]
        i, job, sha = todo[index]
        if "error" in batch:
            raise InputError(batch["error"])
        shard = pending.setdefault(index, _Pending())
        n = len(batch["keys"])
        if n:
            pixels = _pad(batch["pixels"], batch_size) if backbone.compiled else batch["pixels"]
            shard.features.append(backbone.embed(_on_device(pixels, normalize, backbone))[:n])
            shard.keys += batch["keys"]
            shard.latlon.append(batch["latlon"])
            if on_batch is not None:
                on_batch(n)
        if batch["last"]:
            count = _write_shard(job, sha, pending.pop(index), backbone)
            now = time.perf_counter()
            results[i] = ExtractResult(job.out, count, False, now - last_done, backbone.warning)
            last_done = now
    return results


def _write_shard(job: ShardJob, source_sha: str, shard: _Pending, backbone: Backbone) -> int:
    if job.expected is not None and len(shard.keys) != job.expected:
        raise InputError(
            f"{job.tar}: read {len(shard.keys)} samples but its manifest lists {job.expected} "
            "(truncated or replaced tar?); no feature file written"
        )
    if len(set(shard.keys)) != len(shard.keys):
        raise InputError(f"{job.tar}: duplicate sample keys")
    features = torch.cat(shard.features).cpu() if shard.features else torch.empty(0, backbone.dim)
    metadata = _identity(backbone) | {
        "backbone_tag": backbone.tag,
        "compiled": "true" if backbone.compiled else "false",
        "normalized": "false",
        "source": job.tar.name,
        "source_sha256": source_sha,
        "warning": backbone.warning or "",
    }
    latlon = torch.cat(shard.latlon) if shard.latlon else torch.empty(0, 2, dtype=torch.float64)
    write_feature_shard(job.out, shard.keys, features, latlon, metadata)
    return len(shard.keys)


def extract_shard_features(
    tar_path: str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    backbone: Backbone,
    batch_size: int | None = None,
    on_batch: Callable[[int], None] | None = None,
    workers: int | None = 0,
) -> ExtractResult:
    """One shard's features (see `extract_shards`), checked against the manifest beside the tar if any.

    `workers` defaults to 0 here (decoding in this process): one small shard does not repay
    starting worker processes; many shards go through `extract_shards`.
    """
    return extract_shards([ShardJob.beside_manifest(tar_path, out_path)], backbone, batch_size, workers, on_batch)[0]


@dataclass(frozen=True)
class BackboneSpec:
    """What `Backbone.create` needs, so that each device's process builds its own backbone."""

    model: str
    pretrained: str | None = None
    seed: int = 0
    precision: str | None = None  # None: the device's default
    compile: bool = False

    def create(self, device: str) -> Backbone:
        return Backbone.create(
            self.model, self.pretrained, device=device, seed=self.seed, precision=self.precision, compile=self.compile
        )


def split_shards(items: Sequence[T], parts: int) -> list[list[T]]:
    """Round robin: item i goes to part i % parts (counts differ by at most one, and a source's
    neighbouring shards, often of similar size, land on different devices)."""
    return [list(items[p::parts]) for p in range(parts)]


def _extract_part(
    spec: BackboneSpec, device: str, jobs: list[ShardJob], batch_size: int | None, workers: int | None
) -> list[ExtractResult]:
    return extract_shards(jobs, spec.create(device), batch_size, workers)


def extract_on_devices(
    jobs: Sequence[ShardJob],
    spec: BackboneSpec,
    devices: Sequence[str],
    batch_size: int | None = None,
    workers: int | None = None,
) -> list[ExtractResult]:
    """One process per device over disjoint shards (`split_shards`); results in the order of `jobs`.

    `workers` is per device; None shares the cores: (available cores - devices) / devices each.
    Processes are spawned (CUDA cannot be forked); no process group is needed, the shards are
    independent. An error in any process is raised here as the same InputError/ConfigError.
    """
    if workers is None:
        workers = max((available_cores() - len(devices)) // len(devices), 0)
    parts = split_shards(list(range(len(jobs))), len(devices))
    results: dict[int, ExtractResult] = {}
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(len(devices), mp_context=context) as pool:
        futures = [
            pool.submit(_extract_part, spec, device, [jobs[i] for i in part], batch_size, workers)
            for device, part in zip(devices, parts, strict=True)
        ]
        for part, future in zip(parts, futures, strict=True):
            results |= dict(zip(part, future.result(), strict=True))
    return [results[i] for i in range(len(jobs))]


def write_feature_shard(
    out_path: str | os.PathLike[str],
    keys: list[str],
    features: torch.Tensor,
    latlon: torch.Tensor,
    metadata: dict[str, str],
) -> None:
    """Write one feature file atomically; `metadata` gives the backbone facts (see module doc)."""
    if features.shape[0] != len(keys) or latlon.shape[0] != len(keys):
        raise ValueError(f"{len(keys)} keys but {features.shape[0]} feature rows and {latlon.shape[0]} coordinates")
    stored = _stored(features, metadata.get("precision", "fp32"))
    meta = {"format": FORMAT, "dim": str(features.shape[1])} | metadata
    dtype = str(stored.dtype).removeprefix("torch.")
    meta |= {"keys": json.dumps(keys), "count": str(len(keys)), "features_dtype": dtype}
    tensors = {FEATURES: stored, LATLON: latlon.to(torch.float64).reshape(-1, 2)}
    save_tensors(out_path, tensors, meta)


def _stored(features: torch.Tensor, precision: str) -> torch.Tensor:
    """float16 for low-precision features unless they overflow it, float32 otherwise (see module doc)."""
    if precision != "fp32" and (features.numel() == 0 or features.float().abs().max() <= FP16_MAX):
        return features.to(torch.float16)
    return features.float()


def read_feature_shard(path: str | os.PathLike[str]) -> FeatureShard:
    """One feature file, checked for consistency (keys vs rows, tensor shapes)."""
    path = Path(path)
    tensors, meta = read_tensors(path, "feature file")
    if meta.get("format") != FORMAT:
        raise InputError(f"feature file {path} is not a geoconcept feature file (format {meta.get('format')!r})")
    require_metadata(meta, ["keys", "model", "pretrained", "backbone_tag", "normalized", "dim"], path, "feature file")
    keys = json_metadata(meta, "keys", path, "feature file")
    features, latlon = tensors.get(FEATURES), tensors.get(LATLON)
    if features is None or latlon is None:
        raise InputError(f"feature file {path} lacks the {FEATURES!r} or {LATLON!r} tensor")
    if (
        not isinstance(keys, list)
        or features.ndim != 2
        or features.shape[0] != len(keys)
        or latlon.shape != (len(keys), 2)
    ):
        raise InputError(
            f"feature file {path}: {len(keys) if isinstance(keys, list) else '?'} keys but features "
            f"{tuple(features.shape)} and latlon {tuple(latlon.shape)}"
        )
    return FeatureShard(path, [str(k) for k in keys], features.float(), latlon.double(), meta)


def feature_files(folder: str | os.PathLike[str]) -> list[Path]:
    return sorted(Path(folder).glob(f"shard-*{SUFFIX}"))
