"""Predictions: the gallery location that best matches each image, and the predictions GeoParquet.

Prediction is GeoCLIP's: the top-1 gallery location by image↔location similarity in the model's
contrastive space. Optional refinement over the top k (`refine_k`): the probability-weighted
spherical mean of the top-k candidates that lie within `REFINE_RADIUS_KM` of the top-1, the
probabilities being GeoCLIP's softmax of logit_scale × cosine over the candidates. It moves a
prediction towards where nearby high-scoring candidates agree, and never averages across
distant modes (a mean of Paris and Tokyo would be in Siberia). GeoCLIP's own evaluation reports
top-1; the refinement is ours and off by default.

The predictions GeoParquet (geopandas, EPSG:4326, opens in QGIS) has one row per (run, image):
`key`, `variant`, `seed`, `true_lat`, `true_lon`, `pred_lat`, `pred_lon`, `error_km`, `score`
(cosine of the top-1 candidate), `top_concepts` (text, `id:+0.123; ...`, the concepts that
contributed most to the predicted location's score; empty for the geoclip variant), `geometry`
(the true point, the primary geometry) and `prediction` (the predicted point, a second geometry
column).
"""

from __future__ import annotations

import glob
import os
import sys
import tempfile
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import torch
from PIL import Image, UnidentifiedImageError
from shapely import points
from shapely.geometry import Point
from torch.utils.data import DataLoader
from torch.utils.data import Dataset as TorchDataset
from tqdm import tqdm

from geoconcept import atomic
from geoconcept import gallery as gallery_module
from geoconcept.errors import ConfigError, InputError
from geoconcept.evaluation.metrics import haversine_km
from geoconcept.evaluation.testset import read_image_table
from geoconcept.features import (
    ShardJob,
    default_batch_size,
    default_workers,
    extract_shards,
    manifest_ok_count,
    read_feature_shard,
    split_preprocess,
)
from geoconcept.gallery import Gallery
from geoconcept.ingest.reasons import CORRUPT_IMAGE, MISSING_IMAGE, OK, TOO_LARGE, UNREADABLE_IMAGE, Rejected
from geoconcept.ingest.records import parse_gps, relative_image_path
from geoconcept.model.backbone import Backbone
from geoconcept.model.checkpoint import load_model, resolve_checkpoint
from geoconcept.model.geoconcept_model import GeoConceptModel

REFINE_RADIUS_KM = 200.0
CRS = "EPSG:4326"
COLUMNS = [
    "key",
    "variant",
    "seed",
    "true_lat",
    "true_lon",
    "pred_lat",
    "pred_lon",
    "error_km",
    "score",
    "top_concepts",
]


def open_rgb(path: str | os.PathLike[str]) -> Image.Image:
    """One image file as RGB, or Rejected with its ingest status (missing_image, unreadable_image,
    too_large: more pixels than Pillow's MAX_IMAGE_PIXELS, corrupt_image) and a message naming it."""
    try:
        # Pillow only warns between MAX_IMAGE_PIXELS and twice that and would decode anyway:
        # here both are refusals, and only for this read (the process-wide limit stays as it is).
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                return image.convert("RGB")
    except FileNotFoundError:
        raise Rejected(MISSING_IMAGE, f"image {path} not found") from None
    except IsADirectoryError:
        raise Rejected(MISSING_IMAGE, f"image {path} is a directory, not an image file") from None
    except PermissionError as exc:
        raise Rejected(UNREADABLE_IMAGE, f"image {path} is not readable ({exc.strerror})") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise Rejected(TOO_LARGE, f"image {path} is too large to decode safely ({exc})") from None
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise Rejected(CORRUPT_IMAGE, f"image {path} is not a readable image ({exc})") from None


def read_images(paths: Sequence[str | os.PathLike[str]]) -> list[Image.Image]:
    """The user's image files as RGB images; a file that cannot be read (see `open_rgb`) is an
    InputError naming it."""
    images = []
    for path in paths:
        try:
            images.append(open_rgb(path))
        except Rejected as rejected:
            raise InputError(rejected.detail) from None
    return images


@dataclass
class GalleryPredictions:
    latlon: np.ndarray  # (N, 2) the prediction: top-1, or refined
    candidates: np.ndarray  # (N, k, 2) top-k gallery locations, best first
    scores: np.ndarray  # (N, k) their cosines
    rows: np.ndarray  # (N, k) their gallery row ids


def _unit(latlon: np.ndarray) -> np.ndarray:
    lat, lon = np.radians(latlon[..., 0]), np.radians(latlon[..., 1])
    return np.stack([np.cos(lat) * np.cos(lon), np.cos(lat) * np.sin(lon), np.sin(lat)], axis=-1)


def refine_top_k(
    candidates: np.ndarray, scores: np.ndarray, logit_scale: float, radius_km: float = REFINE_RADIUS_KM
) -> np.ndarray:
    """(N, k, 2) candidates + (N, k) cosines → (N, 2) refined locations (see the module docstring)."""
    n, k, _ = candidates.shape
    logits = logit_scale * scores
    weights = np.exp(logits - logits.max(axis=1, keepdims=True))
    near = haversine_km(candidates.reshape(-1, 2), np.repeat(candidates[:, 0], k, axis=0)).reshape(n, k)
    weights = np.where(near <= radius_km, weights, 0.0)  # the top-1 itself is always kept
    mean = (weights[..., None] * _unit(candidates)).sum(axis=1)
    mean /= np.linalg.norm(mean, axis=1, keepdims=True)
    lat = np.degrees(np.arctan2(mean[:, 2], np.hypot(mean[:, 0], mean[:, 1])))
    lon = np.degrees(np.arctan2(mean[:, 1], mean[:, 0]))
    return np.stack([lat, lon], axis=1)


def predict_locations(
    model: GeoConceptModel,
    gallery: Gallery,
    features: np.ndarray,
    *,
    top_k: int = 1,
    refine_k: int | None = None,
    refine_radius_km: float = REFINE_RADIUS_KM,
) -> GalleryPredictions:
    """Gallery search for cached image features (N, D): top-k candidates and the prediction."""
    if refine_k is not None and refine_k < 2:
        raise ValueError(f"refine_k must be at least 2 (or None for top-1), got {refine_k}")
    k = max(top_k, refine_k or 1)
    candidates, scores, rows = gallery.predict(model, features, k=k)
    if refine_k is None:
        latlon = candidates[:, 0].copy()
    else:
        scale = 1.0 / model.temperature  # the logit scale, detached
        latlon = refine_top_k(candidates[:, :refine_k], scores[:, :refine_k], scale, refine_radius_km)
    return GalleryPredictions(latlon, candidates[:, :top_k], scores[:, :top_k], rows[:, :top_k])


def predictions_frame(
    keys: Sequence[str],
    true: np.ndarray,
    pred: np.ndarray,
    score: np.ndarray,
    *,
    variant: str,
    seed: int,
    top_concepts: Sequence[str] | None = None,
) -> gpd.GeoDataFrame:
    """One run's predictions as a GeoDataFrame in the GeoParquet layout of the module docstring."""
    frame = pd.DataFrame(
        {
            "key": list(keys),
            "variant": variant,
            "seed": int(seed),
            "true_lat": true[:, 0],
            "true_lon": true[:, 1],
            "pred_lat": pred[:, 0],
            "pred_lon": pred[:, 1],
            "error_km": haversine_km(pred, true),
            "score": np.asarray(score, dtype=np.float64),
            "top_concepts": list(top_concepts) if top_concepts is not None else "",
        }
    )
    frame["prediction"] = gpd.GeoSeries(points(pred[:, 1], pred[:, 0]), crs=CRS)
    return gpd.GeoDataFrame(frame, geometry=gpd.GeoSeries(points(true[:, 1], true[:, 0]), crs=CRS))


def write_predictions(frames: Sequence[gpd.GeoDataFrame], path: str | os.PathLike[str]) -> Path:
    """Write the runs' predictions as one GeoParquet file, atomically."""
    table = gpd.GeoDataFrame(pd.concat(frames, ignore_index=True), geometry="geometry", crs=CRS)
    with atomic.atomic_path(path) as tmp:
        table.to_parquet(tmp, index=False)
    return Path(path)


def read_predictions(path: str | os.PathLike[str]) -> gpd.GeoDataFrame:
    try:
        return gpd.read_parquet(path)
    except (OSError, ValueError) as exc:
        raise InputError(f"predictions file {path} is not a readable GeoParquet ({exc})") from None


# Batch prediction -------------------------------------------------------------------------------
# `predict_batch` locates every image of folders (recursive), image tables (CSV/Parquet: IMG_ID and
# optionally LAT, LON, any alias of geoconcept.ingest.staging.COLUMN_ALIASES) or WebDataset shards,
# batched through the backbone, and returns one GeoDataFrame row per image (see BATCH_COLUMNS).
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"})
TABLE_SUFFIXES = frozenset({".csv", ".parquet", ".pq"})
BATCH_COLUMNS = [
    "key",  # file path as given, path relative to its folder, IMG_ID, or shard sample key
    "source",  # the file read (image path or shard tar)
    "status",  # ok, or the ingest status of why the image gave no prediction (missing_image, ...)
    "error",  # what went wrong: the image's problem, or why its LAT/LON gave no distance
    "variant",
    "true_lat",
    "true_lon",
    "pred_lat",  # the top-1 guess (also the point geometry)
    "pred_lon",
    "score",
    "place",  # nearest GeoNames town of the top-1 guess
    "error_km",  # great-circle km from the truth to the top-1 guess (NaN: no truth)
    "concepts",  # the top-1 guess's concept terms, `id:+0.123; ...` ("" for the geoclip variant)
    "top_lat",  # lists over the top-k guesses, best first
    "top_lon",
    "top_score",
    "top_place",
    "top_error_km",
    "top_concepts",
]


@dataclass(frozen=True)
class ImageItem:
    """One image to locate: a file, or a row that already failed (bad IMG_ID) with its status."""

    key: str
    path: Path | None
    true_latlon: tuple[float, float] | None = None
    status: str = OK
    error: str = ""


@dataclass
class BatchInputs:
    items: list[ImageItem]  # image files, from paths, folders and tables
    tars: list[Path]  # WebDataset shards (ingest's layout: .jpg + .json with lat, lon)


def _table_items(table: Path, images_root: Path | None) -> list[ImageItem]:
    frame = read_image_table(table)
    root = images_root if images_root is not None else table.parent
    has_truth = "LAT" in frame.columns
    items = []
    for row in frame.itertuples(index=False):
        img_id = str(row.IMG_ID)
        truth, note = None, ""
        if has_truth:
            lat, lon, problem = parse_gps(row.LAT, row.LON)
            truth, note = (None, f"no distance: {problem}") if problem else ((lat, lon), "")
        try:
            path = root / relative_image_path(img_id)
        except Rejected as rejected:
            items.append(ImageItem(img_id, None, truth, rejected.status, rejected.detail))
            continue
        if not path.suffix and not path.exists() and path.with_suffix(".jpg").exists():
            path = path.with_suffix(".jpg")  # YFCC4k copies list photo ids without the extension
        items.append(ImageItem(img_id, path, truth, error=note))
    return items


def _folder_images(folder: Path) -> list[ImageItem]:
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    return [ImageItem(p.relative_to(folder).as_posix(), p) for p in files]


def collect_inputs(
    inputs: Sequence[str | os.PathLike[str]], images_root: str | os.PathLike[str] | None = None
) -> BatchInputs:
    """What `inputs` name: image files, folders (recursive; a folder with `*.tar` directly inside is
    shards), image tables, `.tar` shards, or globs of any of these. Reads no image."""
    if images_root is not None and not Path(images_root).is_dir():
        raise InputError(f"image root {images_root} is not a folder")
    found = BatchInputs([], [])
    tables = 0
    for given in map(str, inputs):
        paths = [Path(given)]
        if any(c in given for c in "*?[") and not Path(given).exists():
            paths = [Path(p) for p in sorted(glob.glob(given))]
            if not paths:
                raise InputError(f"no files match {given}")
        for path in paths:
            if not path.exists():
                raise InputError(f"input {path} not found")
            if path.is_dir():
                tars = sorted(path.glob("*.tar"))
                images = [] if tars else _folder_images(path)
                if not tars and not images:
                    raise InputError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) or .tar shards in {path}")
                found.tars += tars
                found.items += images
            elif path.suffix.lower() == ".tar":
                found.tars.append(path)
            elif path.suffix.lower() in TABLE_SUFFIXES:
                found.items += _table_items(path, None if images_root is None else Path(images_root))
                tables += 1
            else:  # an image file; one that cannot be read becomes a row with its status
                found.items.append(ImageItem(str(path), path))
    if found.items and found.tars:
        raise InputError("give image files, folders and tables, or WebDataset shards, not both in one run")
    if images_root is not None and not tables:
        raise ConfigError("--images (the root of a table's relative IMG_ID paths) needs an image table input")
    if not found.items and not found.tars:
        raise InputError(f"no images in {', '.join(map(str, inputs))}")
    return found


class _ImageFiles(TorchDataset):
    """(index, uint8 pixels or None, status, error) per item: a worker never raises for one image."""

    def __init__(self, items: Sequence[ImageItem], transform: Callable) -> None:
        self.items, self.transform = list(items), transform

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[int, torch.Tensor | None, str, str]:
        item = self.items[i]
        if item.status != OK or item.path is None:
            return i, None, item.status, item.error
        try:
            return i, self.transform(open_rgb(item.path)), OK, item.error
        except Rejected as rejected:
            return i, None, rejected.status, rejected.detail


def _keep_rows(rows: list) -> list:
    return rows  # DataLoader's default collate would stack the None of a failed image


def _file_features(
    items: Sequence[ImageItem], backbone: Backbone, batch_size: int, workers: int, on_batch: Callable[[int], None]
) -> tuple[np.ndarray, list[str], list[str]]:
    """Features (N, D) of the items (NaN rows for images that failed), their statuses and errors."""
    transform, normalize = split_preprocess(backbone.preprocess)
    loader = DataLoader(
        _ImageFiles(items, transform),
        batch_size=batch_size,
        num_workers=workers,
        collate_fn=_keep_rows,
        pin_memory=backbone.device.type == "cuda",
    )
    features = np.full((len(items), backbone.dim), np.nan, dtype=np.float32)
    status, errors = [OK] * len(items), [""] * len(items)
    for rows in loader:
        for i, _, state, error in rows:
            status[i], errors[i] = state, error
        good = [(i, pixels) for i, pixels, _, _ in rows if pixels is not None]
        if good:
            pixels = torch.stack([p for _, p in good]).to(backbone.device, non_blocking=True)
            if normalize is not None:  # as the shard extractor does: uint8 from the workers, normalised here
                pixels = normalize(pixels.float().div(255))
            features[[i for i, _ in good]] = backbone.embed(pixels).float().cpu().numpy()
        on_batch(len(rows))
    return features, status, errors


def _shard_features(
    tars: Sequence[Path], backbone: Backbone, batch_size: int, workers: int, on_batch: Callable[[int], None]
) -> tuple[list[str], list[str], np.ndarray, np.ndarray]:
    """Keys, their tars, features and true (lat, lon) of every sample, by the streaming extractor."""
    keys, sources, features, latlon = [], [], [], []
    with tempfile.TemporaryDirectory(prefix="geoconcept-predict-") as tmp:
        jobs = [ShardJob.beside_manifest(tar, Path(tmp) / f"shard-{i:06d}.safetensors") for i, tar in enumerate(tars)]
        extract_shards(jobs, backbone, batch_size=batch_size, workers=workers, on_batch=on_batch)
        for job in jobs:
            shard = read_feature_shard(job.out)
            keys += shard.keys
            sources += [str(job.tar)] * len(shard.keys)
            features.append(shard.features.numpy())
            latlon.append(shard.latlon.numpy())
    return keys, sources, np.concatenate(features), np.concatenate(latlon)


def default_gallery_dir(checkpoint_sha256: str) -> Path:
    """Where predict keeps the gallery of GeoCLIP's 100K coordinates built for a checkpoint."""
    from geoconcept.layers.builtin import cache_dir

    return cache_dir() / "galleries" / f"geoclip100k-{checkpoint_sha256[:16]}"


def load_for_prediction(
    checkpoint: str | os.PathLike[str], device: str | torch.device = "cpu"
) -> tuple[Path, GeoConceptModel, Backbone]:
    """The checkpoint's file, its model and the backbone it records, checked to fit each other."""
    path = resolve_checkpoint(checkpoint)
    model = load_model(path, device)
    backbone = Backbone.from_metadata(model.checkpoint_metadata, device)
    if backbone.dim != model.feature_dim:
        raise InputError(
            f"checkpoint {path} expects {model.feature_dim}-d features, its recorded backbone "
            f"{backbone.model_name} gives {backbone.dim}-d"
        )
    return path, model, backbone


def check_gallery_folder(folder: str | os.PathLike[str]) -> Path:
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"gallery {folder} {'is a file, not a gallery folder' if folder.exists() else 'not found'}")
    return folder


def prediction_gallery(
    model: GeoConceptModel, folder: str | os.PathLike[str] | None, progress: bool = False
) -> Gallery:
    """The given gallery folder, or the default one (built once, with a progress bar when asked)."""
    if folder is not None:
        return Gallery.load(check_gallery_folder(folder))
    folder = default_gallery_dir(model.checkpoint_sha256 or "unknown")
    coords = gallery_module.geoclip_coordinates()
    show = progress and not (folder / gallery_module.INFO_FILE).exists()  # built before: nothing to show
    if show:
        print(f"building the default gallery (GeoCLIP's 100K coordinates) in {folder}", file=sys.stderr)
    with tqdm(total=len(coords), desc="gallery", unit="loc", disable=not show, file=sys.stderr) as bar:
        gallery_module.build_gallery(coords, model, folder, source="geoclip_100k", on_batch=bar.update)
    return Gallery.load(folder)


def predict_batch(
    inputs: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    checkpoint: str | os.PathLike[str],
    *,
    images_root: str | os.PathLike[str] | None = None,
    gallery: str | os.PathLike[str] | None = None,
    top_k: int = 5,
    concepts: int = 3,
    batch_size: int | None = None,
    workers: int | None = None,
    device: str | torch.device = "cpu",
    progress: bool = False,
) -> gpd.GeoDataFrame:
    """Locate every image of `inputs` (see `collect_inputs`): one row per image (BATCH_COLUMNS),
    point geometry of the top-1 guess (EPSG:4326), failed images as rows with their status.

    `checkpoint`: a model file, a run folder or `geoclip-pretrained`; `gallery`: a gallery folder
    built with it (default: GeoCLIP's 100K coordinates, built once and cached).
    """
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    if top_k < 1 or concepts < 0:
        raise ConfigError(f"top_k must be >= 1 and concepts >= 0, got {top_k} and {concepts}")
    found = collect_inputs(inputs, images_root)  # first: a bad path fails before the backbone is built
    if gallery is not None:
        check_gallery_folder(gallery)
    _, model, backbone = load_for_prediction(checkpoint, device)
    searched = prediction_gallery(model, gallery, progress)
    if top_k > len(searched):
        raise ConfigError(f"--top-k {top_k} exceeds the gallery's {len(searched)} locations")
    batch_size = default_batch_size(backbone.device) if batch_size is None else batch_size
    workers = default_workers() if workers is None else workers
    manifests = [tar.with_suffix(".parquet") for tar in found.tars]  # ingest's, beside its tars: the counts
    shard_total = sum(map(manifest_ok_count, manifests)) if all(m.is_file() for m in manifests) else None
    total = len(found.items) or shard_total
    with tqdm(total=total, desc="images", unit="img", disable=not progress, file=sys.stderr) as bar:
        if found.items:
            features, status, errors = _file_features(found.items, backbone, batch_size, workers, bar.update)
            keys, sources = [i.key for i in found.items], [str(i.path or "") for i in found.items]
            truth = np.array([i.true_latlon or (np.nan, np.nan) for i in found.items], dtype=np.float64)
        else:
            keys, sources, features, truth = _shard_features(found.tars, backbone, batch_size, workers, bar.update)
            status, errors = [OK] * len(keys), [""] * len(keys)
    return batch_frame(model, searched, features, keys, sources, status, errors, truth, top_k, concepts)


def batch_frame(
    model: GeoConceptModel,
    searched: Gallery,
    features: np.ndarray,
    keys: Sequence[str],
    sources: Sequence[str],
    status: Sequence[str],
    errors: Sequence[str],
    truth: np.ndarray,
    top_k: int,
    concepts: int,
) -> gpd.GeoDataFrame:
    """The rows of `predict_batch` from features (N, D) (rows whose status is not ok are not searched)."""
    from geoconcept.evaluation.explain import explain_features, format_terms  # explain imports this module

    ok = np.array([s == OK for s in status], dtype=bool)
    good_keys = [k for k, good in zip(keys, ok, strict=True) if good]
    explained = iter(
        explain_features(model, searched, features[ok], good_keys, top_k=top_k, concepts=concepts) if ok.any() else []
    )
    has_truth = np.isfinite(truth).all(axis=1)
    rows = []
    for i in range(len(keys)):
        row: dict[str, object] = {"key": keys[i], "source": sources[i], "status": status[i], "error": errors[i]}
        row |= {"variant": model.variant, "true_lat": truth[i, 0], "true_lon": truth[i, 1]}
        guesses = next(explained).guesses if ok[i] else []
        tops = np.array([[g.lat, g.lon] for g in guesses], dtype=np.float64).reshape(-1, 2)
        km = haversine_km(tops, truth[i : i + 1]) if has_truth[i] and len(tops) else np.full(len(tops), np.nan)
        row |= {
            "top_lat": tops[:, 0].tolist(),
            "top_lon": tops[:, 1].tolist(),
            "top_score": [g.score for g in guesses],
            "top_place": [g.place.label() for g in guesses],
            "top_error_km": km.tolist(),
            "top_concepts": [format_terms(g.concepts) for g in guesses],
        }
        first = {"pred_lat": "top_lat", "pred_lon": "top_lon", "score": "top_score", "error_km": "top_error_km"}
        row |= {name: row[top][0] if guesses else np.nan for name, top in first.items()}
        row |= {"place": row["top_place"][0] if guesses else "", "concepts": row["top_concepts"][0] if guesses else ""}
        rows.append(row)
    frame = pd.DataFrame(rows, columns=BATCH_COLUMNS)
    geometry = [Point(r.pred_lon, r.pred_lat) if r.status == OK else None for r in frame.itertuples()]
    return gpd.GeoDataFrame(frame, geometry=gpd.GeoSeries(geometry, crs=CRS), crs=CRS)
