"""The GPS gallery: candidate coordinates, their location vectors under one checkpoint, a FAISS index.

Prediction is GeoCLIP's: the gallery location whose vector scores highest against the image's.
The vectors live in the model's contrastive space (512-d embeddings, or k-d concept vectors for
concept-space models), L2-normalised, so inner product = cosine. A gallery folder holds:

* `index.faiss` — exact inner product (`IndexFlatIP`, default), `hnsw` (HNSW, M=32), or any FAISS
  factory string (metric inner product);
* `rows.parquet` — `row` (int64, the index id), `lat`, `lon` (float64 degrees);
* `gallery.json` — `format`, `checkpoint_sha256` (the weights the vectors came from), `variant`,
  `contrastive_space`, `dim`, `index` (as requested), `factory`, `count`, `coords_sha256`,
  `source`, `faiss_version`, `files` (sha256 of the other two files). Written last: a gallery is
  complete exactly when it exists, and a rebuild with the same inputs is skipped.

Coordinates: GeoCLIP's 100K MP16 points by default; or a sample, or spherical k-means centres,
of the training coordinates.

Searching (`Gallery.load(folder, device=..., backend=...)`): with a GPU (`device="auto"` finds one,
`"cuda"` requires one) the search runs on it — a FAISS GPU index when the installed faiss has GPU
support, otherwise, for an exact (flat) index, the gallery's vectors on the device and an exact
torch matmul + top-k over chunks of queries; other indexes (HNSW, ...) without faiss-gpu stay
on the CPU index. `backend="torch"` forces the torch search (on the CPU too: it is tested there
against `IndexFlatIP`), `backend="faiss"` forces FAISS. Without a GPU the default is FAISS on the CPU.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import faiss
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from geoconcept import atomic, bundled
from geoconcept.errors import ConfigError, InputError
from geoconcept.hashing import file_sha256
from geoconcept.layers import sphere
from geoconcept.model.geoconcept_model import GeoConceptModel
from geoconcept.point_tables import read_point_table

FORMAT = "geoconcept-gallery"
INDEX_FILE, ROWS_FILE, INFO_FILE = "index.faiss", "rows.parquet", "gallery.json"
HNSW_M = 32
HNSW_EF_CONSTRUCTION = 80
HNSW_EF_SEARCH = 128
UseGpu = bool | Literal["auto"]
Device = Literal["auto", "cpu", "cuda"]
Backend = Literal["auto", "faiss", "torch"]
# Scores of one chunk of queries against the whole gallery, in bytes: bounds the torch search's memory.
SCORE_CHUNK_BYTES = 256 << 20


def _gpus() -> int:
    return faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0


def _want_gpu(use_gpu: UseGpu) -> bool:
    if use_gpu == "auto":
        return _gpus() > 0
    if use_gpu and _gpus() == 0:
        raise ConfigError("use_gpu=True but FAISS sees no GPU (install faiss-gpu on a machine with a GPU)")
    return bool(use_gpu)


# coordinates ------------------------------------------------------------------------------
def geoclip_coordinates() -> np.ndarray:
    """GeoCLIP's gallery: 100,000 MP16 coordinates, (N, 2) float64 lat/lon."""
    table = pd.read_csv(bundled.GEOCLIP_GALLERY.path(), usecols=["LAT", "LON"])
    return table[["LAT", "LON"]].to_numpy(dtype=np.float64)


def read_coordinates(path: str | os.PathLike[str]) -> np.ndarray:
    """Coordinates from a CSV (LAT, LON or lat, lon columns) or a Parquet (lat, lon)."""
    return read_point_table(path, "coordinates file")[1]


def sample_coordinates(latlon: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """`n` distinct rows of `latlon` chosen at random (all of them if there are fewer)."""
    rng = np.random.default_rng(seed)
    if n >= len(latlon):
        return np.asarray(latlon, dtype=np.float64).copy()
    return np.asarray(latlon, dtype=np.float64)[np.sort(rng.choice(len(latlon), n, replace=False))]


def kmeans_coordinates(latlon: np.ndarray, n: int, seed: int = 0, iterations: int = 25) -> np.ndarray:
    """`n` spherical k-means centres of `latlon` (clustered as unit vectors, so no seam at the
    dateline and no stretching near the poles), as (n, 2) lat/lon."""
    latlon = np.asarray(latlon, dtype=np.float64)
    points = np.ascontiguousarray(sphere.unit_vectors(latlon[:, 0], latlon[:, 1]), dtype=np.float32)
    if n >= len(points):
        return np.asarray(latlon, dtype=np.float64).copy()
    kmeans = faiss.Kmeans(3, n, niter=iterations, seed=seed, spherical=True, verbose=False)
    kmeans.train(points)
    c = kmeans.centroids.astype(np.float64)
    c /= np.linalg.norm(c, axis=1, keepdims=True)
    lat = np.rad2deg(np.arcsin(np.clip(c[:, 2], -1, 1)))
    lon = np.rad2deg(np.arctan2(c[:, 1], c[:, 0]))
    return np.stack([lat, lon], axis=1)


def exclude_near(coords: np.ndarray, points: np.ndarray, km: float) -> np.ndarray:
    """`coords` without the rows within `km` of any of `points` (great-circle)."""
    if km <= 0 or len(points) == 0 or len(coords) == 0:
        return coords
    tree = sphere.point_tree(points[:, 0], points[:, 1])
    near = tree.query_ball_point(sphere.unit_vectors(coords[:, 0], coords[:, 1]), sphere.km_to_chord(km))
    keep = np.fromiter((not hits for hits in near), dtype=bool, count=len(coords))
    return coords[keep]


def gallery_coordinates(
    spec: str,
    *,
    max_points: int = 0,
    seed: int = 0,
    exclude: np.ndarray | None = None,
    exclude_km: float = 0.0,
) -> tuple[np.ndarray, str]:
    """The gallery's coordinates and a description of where they come from.

    `spec`: "geoclip" (GeoCLIP's 100K MP16 coordinates) or a CSV/Parquet of lat/lon. With
    `max_points`, a seeded random subset. Points within `exclude_km` of `exclude` (the test
    coordinates) are removed, so that a test image's own location is never a gallery entry —
    with the embedded sample, whose points are drawn from the same 100K list, it would be.
    """
    coords = geoclip_coordinates() if spec == "geoclip" else read_coordinates(spec)
    described = "GeoCLIP 100K MP16" if spec == "geoclip" else str(spec)
    if max_points and len(coords) > max_points:
        coords = sample_coordinates(coords, max_points, seed)
        described += f", {max_points:,} sampled (seed {seed})"
    if exclude is not None and exclude_km > 0:
        before = len(coords)
        coords = exclude_near(coords, np.asarray(exclude, dtype=np.float64), exclude_km)
        described += f", {before - len(coords):,} within {exclude_km:g} km of a test point removed"
    return coords, described


# building -------------------------------------------------------------------------------
def _factory(index: str) -> str:
    if index == "flat":
        return "Flat"
    if index == "hnsw":
        return f"HNSW{HNSW_M}"
    return index


def _make_index(spec: str, vectors: np.ndarray, gpu: bool) -> faiss.Index:
    try:
        index = faiss.index_factory(vectors.shape[1], _factory(spec), faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as exc:
        raise ConfigError(f"FAISS cannot build index {spec!r} ({str(exc).splitlines()[0]})") from None
    if isinstance(index, faiss.IndexHNSW):
        index.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
        # HNSW inserts in parallel in a thread-dependent order; one thread gives the same graph,
        # and so the same file, every time.
        threads = faiss.omp_get_max_threads()
        faiss.omp_set_num_threads(1)
        try:
            index.add(vectors)
        finally:
            faiss.omp_set_num_threads(threads)
        return index
    if gpu:
        resources = faiss.StandardGpuResources()
        on_gpu = faiss.index_cpu_to_gpu(resources, 0, index)
        if not on_gpu.is_trained:
            on_gpu.train(vectors)
        on_gpu.add(vectors)
        return faiss.index_gpu_to_cpu(on_gpu)
    if not index.is_trained:
        index.train(vectors)
    index.add(vectors)
    return index


def _coords_sha(coords: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(coords, dtype=np.float64).tobytes()).hexdigest()


def _up_to_date(folder: Path, wanted: dict[str, Any]) -> bool:
    try:
        info = json.loads((folder / INFO_FILE).read_text(encoding="utf-8"))
        if any(info.get(k) != v for k, v in wanted.items()):
            return False
        return all(file_sha256(folder / name) == sha for name, sha in info["files"].items())
    except (OSError, ValueError, KeyError, TypeError):
        return False


def build_gallery(
    coords: np.ndarray,
    model: GeoConceptModel,
    out_dir: str | os.PathLike[str],
    index: str = "flat",
    use_gpu: UseGpu = "auto",
    *,
    source: str = "custom",
    checkpoint_sha256: str | None = None,
    batch_size: int = 8192,
    on_batch: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Embed `coords` (N, 2) with `model`, index them and write the gallery folder; returns gallery.json.

    Skips the work when the folder already holds a gallery of the same coordinates, checkpoint
    and index type. `checkpoint_sha256` defaults to the model's (set by `load_model`).
    `on_batch(n)` is called after each batch of n embedded locations (progress bars).
    """
    out = Path(out_dir)
    coords = np.asarray(coords, dtype=np.float64)
    if coords.ndim != 2 or coords.shape[1] != 2 or len(coords) == 0:
        raise InputError(f"gallery coordinates must be a non-empty (N, 2) array, got shape {coords.shape}")
    wanted = {
        "format": FORMAT,
        "checkpoint_sha256": checkpoint_sha256 or model.checkpoint_sha256,
        "index": index,
        "count": len(coords),
        "coords_sha256": _coords_sha(coords),
    }
    if _up_to_date(out, wanted):
        return json.loads((out / INFO_FILE).read_text(encoding="utf-8"))
    atomic.remove_stale_temps(out, [INDEX_FILE, ROWS_FILE, INFO_FILE])
    parts = []
    for start in range(0, len(coords), batch_size):  # the model batches the same way: same vectors
        parts.append(model.retrieval_location_vectors(coords[start : start + batch_size], batch_size).cpu().numpy())
        if on_batch is not None:
            on_batch(len(parts[-1]))
    vectors = np.concatenate(parts)
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    built = _make_index(index, vectors, _want_gpu(use_gpu))
    (out / INFO_FILE).unlink(missing_ok=True)  # the folder is incomplete until gallery.json is back
    with atomic.atomic_path(out / INDEX_FILE) as tmp:
        faiss.write_index(built, str(tmp))
    rows = pa.table({"row": np.arange(len(coords), dtype=np.int64), "lat": coords[:, 0], "lon": coords[:, 1]})
    with atomic.atomic_path(out / ROWS_FILE) as tmp:
        pq.write_table(rows, tmp)
    info = wanted | {
        "variant": model.variant,
        "contrastive_space": model.contrastive_space,
        "dim": int(vectors.shape[1]),
        "factory": _factory(index),
        "metric": "inner_product",
        "source": source,
        "faiss_version": faiss.__version__,
        "files": {INDEX_FILE: file_sha256(out / INDEX_FILE), ROWS_FILE: file_sha256(out / ROWS_FILE)},
    }
    atomic.write_json(out / INFO_FILE, info)
    return info


# searching ------------------------------------------------------------------------------
class TorchFlatIndex:
    """Exact inner-product search with torch: the gallery's vectors on `device`, scores of a chunk of
    queries against all of them (`SCORE_CHUNK_BYTES` at most) and `torch.topk`. Same `d`, `ntotal`
    and `search(queries, k) -> (scores, ids)` as a FAISS index; for GPUs without faiss-gpu."""

    def __init__(self, vectors: np.ndarray, device: str | torch.device) -> None:
        self.vectors = torch.from_numpy(np.ascontiguousarray(vectors, dtype=np.float32)).to(device)
        self.ntotal, self.d = self.vectors.shape

    @classmethod
    def from_faiss(cls, index: faiss.Index, device: str | torch.device) -> TorchFlatIndex:
        return cls(index.reconstruct_n(0, index.ntotal), device)

    @torch.inference_mode()
    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        chunk = max(1, SCORE_CHUNK_BYTES // (4 * max(1, self.ntotal)))
        scores = np.empty((len(queries), k), dtype=np.float32)
        ids = np.empty((len(queries), k), dtype=np.int64)
        # Full float32 products like IndexFlatIP: TF32 (if some code enabled it) rounds inputs to 10 bits.
        precision = torch.get_float32_matmul_precision()
        torch.set_float32_matmul_precision("highest")
        try:
            for start in range(0, len(queries), chunk):
                q = torch.from_numpy(queries[start : start + chunk]).to(self.vectors.device)
                top = torch.topk(q @ self.vectors.T, k, dim=1)  # sorted, best first, like FAISS
                scores[start : start + len(q)] = top.values.cpu().numpy()
                ids[start : start + len(q)] = top.indices.cpu().numpy()
        finally:
            torch.set_float32_matmul_precision(precision)
        return scores, ids


def _is_exact(index: faiss.Index) -> bool:
    return isinstance(index, faiss.IndexFlat) and index.metric_type == faiss.METRIC_INNER_PRODUCT


def _resolve_device(device: Device) -> str:
    if device not in ("auto", "cpu", "cuda"):
        raise ConfigError(f"device must be auto, cpu or cuda, got {device!r}")
    has_gpu = _gpus() > 0 or torch.cuda.is_available()
    if device == "cuda" and not has_gpu:
        raise ConfigError("device cuda asked for, but neither FAISS nor torch sees a GPU")
    return "cuda" if device == "cuda" or (device == "auto" and has_gpu) else "cpu"


def _searcher(index: faiss.Index, device: Device, backend: Backend) -> tuple[Any, str, str, Any]:
    """(what searches, backend, device, GPU resources to keep alive) for a CPU index read from disk."""
    if backend not in ("auto", "faiss", "torch"):
        raise ConfigError(f"backend must be auto, faiss or torch, got {backend!r}")
    where = _resolve_device(device)
    if backend == "torch" or (backend == "auto" and where == "cuda" and _gpus() == 0 and _is_exact(index)):
        if not _is_exact(index):
            raise ConfigError("the torch backend searches exact (flat inner-product) galleries only")
        where = "cuda" if torch.cuda.is_available() and device != "cpu" else "cpu"
        if device == "cuda" and where != "cuda":
            raise ConfigError("the torch backend on cuda needs a CUDA build of torch that sees a GPU")
        return TorchFlatIndex.from_faiss(index, where), "torch", where, None
    if where == "cuda" and not isinstance(index, faiss.IndexHNSW):
        if _gpus() > 0:
            resources = faiss.StandardGpuResources()  # must outlive the GPU index
            return faiss.index_cpu_to_gpu(resources, 0, index), "faiss", "cuda", resources
        if backend == "faiss" and device == "cuda":
            raise ConfigError("backend faiss on cuda needs faiss-gpu (FAISS sees no GPU)")
    return index, "faiss", "cpu", None  # HNSW has no FAISS GPU version: it stays on the CPU


@dataclass
class Gallery:
    folder: Path
    index: Any  # a FAISS index (CPU or GPU) or a TorchFlatIndex: `d`, `ntotal`, `search(q, k)`
    latlon: np.ndarray  # (N, 2) float64, row i = index id i
    info: dict[str, Any]
    backend: str = "faiss"
    device: str = "cpu"
    _gpu_resources: Any = None

    def __len__(self) -> int:
        return len(self.latlon)

    @classmethod
    def load(
        cls,
        folder: str | os.PathLike[str],
        use_gpu: UseGpu = "auto",
        ef_search: int = HNSW_EF_SEARCH,
        *,
        device: Device | None = None,
        backend: Backend = "auto",
    ) -> Gallery:
        """Open a gallery folder for searching on `device` with `backend` (see the module docstring).

        `use_gpu` is the older spelling of `device` (True = cuda, False = cpu), used when `device` is None.
        """
        if device is None:
            device = "auto" if use_gpu == "auto" else ("cuda" if use_gpu else "cpu")
        folder = Path(folder)
        info_path = folder / INFO_FILE
        try:
            info = json.loads(info_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise InputError(
                f"no gallery in {folder}: {INFO_FILE} is missing (not built, or the build did not finish)"
            ) from None
        except json.JSONDecodeError as exc:
            raise InputError(f"gallery {info_path} is not valid JSON ({exc})") from None
        if info.get("format") != FORMAT:
            raise InputError(f"{info_path} is not a geoconcept gallery (format {info.get('format')!r})")
        try:
            index = faiss.read_index(str(folder / INDEX_FILE))
        except RuntimeError as exc:
            raise InputError(
                f"gallery index {folder / INDEX_FILE} is unreadable ({str(exc).splitlines()[0]})"
            ) from None
        try:
            rows = pq.read_table(folder / ROWS_FILE, columns=["row", "lat", "lon"])
        except (OSError, ValueError, KeyError) as exc:
            raise InputError(f"gallery rows {folder / ROWS_FILE} are unreadable ({exc})") from None
        ids = rows.column("row").to_numpy()
        if index.ntotal != len(ids) or not np.array_equal(ids, np.arange(len(ids))) or len(ids) != info.get("count"):
            raise InputError(
                f"gallery {folder} is inconsistent: index holds {index.ntotal} vectors, rows.parquet {len(ids)} rows, "
                f"gallery.json says {info.get('count')}"
            )
        if isinstance(index, faiss.IndexHNSW):
            index.hnsw.efSearch = ef_search
        searcher, backend, device, resources = _searcher(index, device, backend)
        latlon = np.stack([rows.column("lat").to_numpy(), rows.column("lon").to_numpy()], axis=1)
        return cls(folder, searcher, latlon, info, backend, device, resources)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Top-k gallery rows per query vector (already in the gallery's space and L2-normalised).

        Returns lat/lon (N, k, 2), scores (N, k) (cosine; the model's logit scale is a constant
        factor and does not change the ranking) and row ids (N, k); best first.
        """
        q = np.ascontiguousarray(np.asarray(queries, dtype=np.float32))
        if q.ndim != 2 or q.shape[1] != self.index.d:
            raise ValueError(
                f"gallery vectors are {self.index.d}-d ({self.info.get('contrastive_space')} space), "
                f"queries have shape {q.shape}"
            )
        if not 1 <= k <= len(self):
            raise ValueError(f"k must be between 1 and the gallery size {len(self)}, got {k}")
        scores, ids = self.index.search(q, k)
        latlon = np.where(ids[..., None] >= 0, self.latlon[np.clip(ids, 0, None)], np.nan)
        return latlon, scores, ids.astype(np.int64)

    def predict(
        self, model: GeoConceptModel, features: np.ndarray, k: int = 1
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Search with a model's image vectors; refuses a model other than the one the gallery was built with."""
        built_with = self.info.get("checkpoint_sha256")
        if built_with and model.checkpoint_sha256 and built_with != model.checkpoint_sha256:
            raise InputError(
                f"gallery {self.folder} was built with checkpoint {built_with[:12]}…, "
                f"the model comes from {model.checkpoint_sha256[:12]}…: rebuild the gallery"
            )
        return self.search(model.retrieval_image_vectors(features).cpu().numpy(), k)
