"""Text → world map: where on Earth does a model place a description ("a tropical beach with palm trees")?

As in the GeoCLIP paper, the text is embedded with the CLIP text tower of the checkpoint's
backbone and then treated as an image: CLIP's text and image projections share one space, so the
text feature (unnormalised, like the image features the head was trained on) goes through the same
image head as image features. A global grid of cell centres
(`resolution` degrees, north-up rows) is scored against it with the location encoder, in the
model's retrieval space (cosine). A concept id of the bank is a query too: its prompts are
embedded, L2-normalised, averaged and re-normalised like the concept embeddings (see `text_vector`).

Outputs: a heat map PNG (equirectangular), a GeoTIFF of the scores (EPSG:4326, one band, float32)
and the top places (grid cells, best first, with the nearest GeoNames place) as CSV and JSON. With
a randomly initialised backbone the map means nothing, and every output says so.
"""

from __future__ import annotations

import difflib
import io
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from geoconcept import atomic
from geoconcept.concepts.bank import ConceptBank
from geoconcept.errors import ConfigError, InputError
from geoconcept.evaluation.explain import nearest_places
from geoconcept.model.backbone import Backbone
from geoconcept.model.geoconcept_model import GeoConceptModel

DEFAULT_RESOLUTION = 1.0
DEFAULT_TOP = 10
MEANINGLESS = "random backbone weights: this map carries no learned meaning"
CONCEPT_ID = re.compile(r"[a-z0-9]+(?:_[a-z0-9]+)+")
OUTPUT_FILES = {"png": "map.png", "tif": "scores.tif", "csv": "top_places.csv", "json": "top_places.json"}


@dataclass
class QueryMap:
    query: str
    prompts: list[str]
    scores: np.ndarray  # (rows, cols) float32 cosine, row 0 = northernmost
    lat: np.ndarray  # (rows,) cell-centre latitudes, descending
    lon: np.ndarray  # (cols,) cell-centre longitudes, ascending
    resolution: float
    top: pd.DataFrame  # rank, lat, lon, score, place, admin1, country_code, distance_km
    warning: str | None


def query_prompts(query: str, bank: ConceptBank) -> list[str]:
    """The texts a query stands for: a concept id's prompts, else the query itself (a description)."""
    text = query.strip()
    if not text:
        raise InputError("the query is empty: give a description or a concept id of the bank")
    ids = {c.id: c for c in bank.concepts}
    if text in ids:
        return list(ids[text].prompts)
    if CONCEPT_ID.fullmatch(text):  # looks like an id (snake_case, no spaces): a typo, not a description
        close = difflib.get_close_matches(text, list(ids), n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise InputError(f"unknown concept id {text!r}{hint}; a description needs spaces")
    return [text]


def text_vector(backbone: Backbone, prompts: list[str]) -> torch.Tensor:
    """(D,) the text as the image head expects it: CLIP's unnormalised text feature, as GeoCLIP feeds its MLP.

    Several prompts (a concept id): their L2-normalised features are averaged and re-normalised (as
    the concept embeddings are), then scaled to the prompts' mean feature norm, because the image
    head is not scale-invariant. One prompt gives its raw feature unchanged.
    """
    import open_clip

    try:
        tokenizer = open_clip.get_tokenizer(backbone.model_name)
    except Exception as exc:  # tokenizers fetched from a hub fail offline; open_clip raises many types
        raise ConfigError(f"could not load the tokenizer of {backbone.model_name} (offline?): {exc}") from None
    with torch.inference_mode():
        raw = backbone.network.encode_text(tokenizer(prompts).to(backbone.device)).float().cpu()
    if len(prompts) == 1:
        return raw[0]
    return F.normalize(F.normalize(raw, dim=1).mean(0), dim=0) * raw.norm(dim=1).mean()


def grid(resolution: float) -> tuple[np.ndarray, np.ndarray]:
    """Cell-centre latitudes (north to south) and longitudes (west to east) of a global grid."""
    if not (0 < resolution <= 90) or not float(180 / resolution).is_integer():
        raise ConfigError(f"--resolution must divide 180 degrees (e.g. 0.5, 1, 2), got {resolution:g}")
    rows, cols = round(180 / resolution), round(360 / resolution)
    lat = 90 - (np.arange(rows) + 0.5) * resolution
    lon = -180 + (np.arange(cols) + 0.5) * resolution
    return lat, lon


def score_grid(model: GeoConceptModel, text: torch.Tensor, resolution: float, batch_size: int = 8192) -> np.ndarray:
    """(rows, cols) cosine of the text, mapped as an image, against each cell centre's location vector."""
    if text.shape[-1] != model.feature_dim:
        raise InputError(f"the text tower gives {text.shape[-1]}-d vectors, the model takes {model.feature_dim}-d")
    lat, lon = grid(resolution)
    lat2d, lon2d = np.meshgrid(lat, lon, indexing="ij")
    query = model.retrieval_image_vectors(text.reshape(1, -1))[0]
    keys = model.retrieval_location_vectors(np.stack([lat2d.ravel(), lon2d.ravel()], 1), batch_size)
    return (keys @ query).cpu().numpy().astype(np.float32).reshape(lat2d.shape)


def top_places(scores: np.ndarray, lat: np.ndarray, lon: np.ndarray, n: int = DEFAULT_TOP) -> pd.DataFrame:
    """The `n` best cells, best first, with the nearest GeoNames place (>= 1,000 inhabitants)."""
    order = np.argsort(-scores, axis=None, kind="stable")[:n]
    rows, cols = np.unravel_index(order, scores.shape)
    points = np.stack([lat[rows], lon[cols]], 1)
    places = nearest_places(points)
    return pd.DataFrame(
        {
            "rank": np.arange(1, len(order) + 1),
            "lat": points[:, 0],
            "lon": points[:, 1],
            "score": scores[rows, cols].astype(np.float64),
            "place": [p.name for p in places],
            "admin1": [p.admin1 for p in places],
            "country_code": [p.country_code for p in places],
            "distance_km": [round(p.distance_km, 1) for p in places],
        }
    )


def query_map(
    model: GeoConceptModel,
    backbone: Backbone,
    bank: ConceptBank,
    query: str,
    resolution: float = DEFAULT_RESOLUTION,
    top: int = DEFAULT_TOP,
) -> QueryMap:
    prompts = query_prompts(query, bank)
    lat, lon = grid(resolution)
    if top < 1:
        raise ConfigError(f"--top must be >= 1, got {top}")
    scores = score_grid(model, text_vector(backbone, prompts), resolution)
    warning = MEANINGLESS if backbone.warning else None
    return QueryMap(query.strip(), prompts, scores, lat, lon, resolution, top_places(scores, lat, lon, top), warning)


def write_geotiff(result: QueryMap, path: str | os.PathLike[str]) -> Path:
    """The scores as a one-band float32 GeoTIFF in EPSG:4326 (north-up, pixel = one grid cell)."""
    import rasterio
    from affine import Affine

    profile = {
        "driver": "GTiff",
        "height": result.scores.shape[0],
        "width": result.scores.shape[1],
        "count": 1,
        "dtype": "float32",
        "crs": "EPSG:4326",
        # north-west corner at (-180, 90), square cells, rows going south (rasterio's from_origin)
        "transform": Affine(result.resolution, 0.0, -180.0, 0.0, -result.resolution, 90.0),
    }
    with atomic.atomic_path(path) as tmp, rasterio.open(tmp, "w", **profile) as dst:
        dst.write(result.scores, 1)
        dst.update_tags(query=result.query, warning=result.warning or "")
    return Path(path)


def heat_map_png(result: QueryMap) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 5.4), dpi=100)
    image = ax.imshow(result.scores, extent=(-180, 180, -90, 90), origin="upper", cmap="magma", aspect="auto")
    best = result.top.iloc[0]
    ax.plot(best["lon"], best["lat"], marker="*", color="cyan", markersize=12)
    title = f"“{result.query}”: model score per {result.resolution:g}° cell"
    ax.set_title(f"{title}\n({result.warning})" if result.warning else title, fontsize=10)
    ax.set_xlabel("longitude")
    ax.set_ylabel("latitude")
    fig.colorbar(image, ax=ax, label="cosine", shrink=0.8)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def write_outputs(result: QueryMap, out_dir: str | os.PathLike[str]) -> dict[str, Path]:
    """PNG, GeoTIFF, CSV and JSON of a query in `out_dir` (each written atomically)."""
    out = Path(out_dir)
    paths = {kind: out / name for kind, name in OUTPUT_FILES.items()}
    atomic.write_bytes(paths["png"], heat_map_png(result))
    write_geotiff(result, paths["tif"])
    atomic.write_text(paths["csv"], result.top.to_csv(index=False))
    document = {
        "query": result.query,
        "prompts": result.prompts,
        "resolution_deg": result.resolution,
        "warning": result.warning,
        "top_places": json.loads(result.top.to_json(orient="records")),
    }
    atomic.write_json(paths["json"], document)
    return paths
