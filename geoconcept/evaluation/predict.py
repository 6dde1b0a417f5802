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

import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
from PIL import Image, UnidentifiedImageError
from shapely import points

from geoconcept import atomic
from geoconcept.errors import InputError
from geoconcept.evaluation.metrics import haversine_km
from geoconcept.gallery import Gallery
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


def read_images(paths: Sequence[str | os.PathLike[str]]) -> list[Image.Image]:
    """The user's image files as RGB images; a file that is missing, a directory, not an image, or
    a decompression bomb (more pixels than Pillow's MAX_IMAGE_PIXELS) is an InputError naming it."""
    images = []
    for path in paths:
        try:
            # Pillow only warns between MAX_IMAGE_PIXELS and twice that and would decode anyway:
            # here both are refusals, and only for this read (the process-wide limit stays as it is).
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                with Image.open(path) as image:
                    images.append(image.convert("RGB"))
        except FileNotFoundError:
            raise InputError(f"image {path} not found") from None
        except IsADirectoryError:
            raise InputError(f"image {path} is a directory, not an image file") from None
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise InputError(f"image {path} is too large to decode safely ({exc})") from None
        except (UnidentifiedImageError, OSError, ValueError) as exc:
            raise InputError(f"image {path} is not a readable image ({exc})") from None
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
