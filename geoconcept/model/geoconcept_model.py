"""The three model variants: GeoCLIP, concept-aware (paper), concept-aware + supervised concepts.

| variant              | parts                                          | losses                                  |
|----------------------|------------------------------------------------|-----------------------------------------|
| `geoclip`            | image head, location encoder, logit scale      | InfoNCE on the 512-d embeddings         |
| `concept`            | + Concept-Aware Alignment Module (E + Δ, MLP)  | InfoNCE + λ · concept divergence        |
| `concept+supervised` | + per-concept calibration                      | + w · BCE of both sides' concept logits |
|                      |                                                | against the layer-measured labels       |

Contrastive space (`contrastive_space`): `embedding` compares the L2-normalised 512-d image and
location embeddings (GeoCLIP); `concept` compares the L2-normalised concept vectors z_img and
z_loc (the paper's eq. 4). By default `geoclip` uses `embedding` and both concept variants use
`concept`, as in the paper; a concept variant may be trained in `embedding` space by config.
Retrieval (gallery search) always uses the space the model was trained in: see
`retrieval_image_vectors` / `retrieval_location_vectors`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from geoconcept.model.concept_module import ConceptCalibration, ConceptModule
from geoconcept.model.image_head import ImageHead
from geoconcept.model.location_encoder import DEFAULT_SIGMAS, EMBED_DIM, LocationEncoder, as_latlon_tensor

VARIANTS = ("geoclip", "concept", "concept+supervised")
CONTRASTIVE_SPACES = ("embedding", "concept")
MAX_LOGIT_SCALE = math.log(100.0)  # CLIP's cap on 1/temperature


def default_contrastive_space(variant: str) -> str:
    return "embedding" if variant == "geoclip" else "concept"


@dataclass
class ModelOutput:
    """What one training forward pass returns (B images, M = B + queue locations).

    The similarities are left to the loss (`geoconcept.model.losses`): under DDP it gathers the
    other processes' batch locations between `queries` and `keys`.
    """

    queries: torch.Tensor  # (B, d) L2-normalised image vectors in the contrastive space
    keys: torch.Tensor  # (M, d) L2-normalised location vectors: the batch's own B first, then negatives
    scale: torch.Tensor  # () logit scale, exp(logit_scale)
    z_img: torch.Tensor | None = None  # (B, k)
    z_loc: torch.Tensor | None = None  # (B, k), the batch's own locations
    label_logits_img: torch.Tensor | None = None  # (B, k), supervised variant only
    label_logits_loc: torch.Tensor | None = None

    @property
    def logits(self) -> torch.Tensor:
        """(B, M) scaled similarities of this batch alone, positives on the diagonal."""
        return self.scale * self.queries @ self.keys.T


class GeoConceptModel(nn.Module):
    def __init__(
        self,
        *,
        variant: str,
        feature_dim: int,
        concept_ids: Sequence[str] = (),
        contrastive_space: str | None = None,
        sigmas: Sequence[float] = DEFAULT_SIGMAS,
        dim: int = EMBED_DIM,
        temperature_init: float = 0.07,
    ) -> None:
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"unknown variant {variant!r} (choose from {', '.join(VARIANTS)})")
        space = contrastive_space or default_contrastive_space(variant)
        if space not in CONTRASTIVE_SPACES:
            raise ValueError(f"unknown contrastive space {space!r} (choose from {', '.join(CONTRASTIVE_SPACES)})")
        if variant == "geoclip" and space == "concept":
            raise ValueError("the geoclip variant has no concept space to contrast in")
        if variant != "geoclip" and not concept_ids:
            raise ValueError(f"variant {variant!r} needs the concept ids of its concept bank")
        self.variant = variant
        self.contrastive_space = space
        self.feature_dim = feature_dim
        self.dim = dim
        self.concept_ids = list(concept_ids) if variant != "geoclip" else []
        self.image_head = ImageHead(feature_dim, dim)
        self.location_encoder = LocationEncoder(sigmas, dim)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / temperature_init)))  # log(1/temperature)
        self.concepts = ConceptModule(len(self.concept_ids), dim) if variant != "geoclip" else None
        self.calibration = ConceptCalibration(len(self.concept_ids)) if variant == "concept+supervised" else None
        # Set by `load_model`: identifies the weights a gallery or an evaluation was made with.
        self.checkpoint_sha256: str | None = None
        self.checkpoint_metadata: dict[str, str] = {}
        self.backbone: str | None = None

    # training ---------------------------------------------------------------------------
    def forward(self, features: torch.Tensor, latlon: torch.Tensor) -> ModelOutput:
        """features (B, D) of the batch; latlon (M, 2): the batch's own B locations first, then negatives."""
        batch = features.shape[0]
        x_img = F.normalize(self.image_head(features), dim=1)
        x_loc = F.normalize(self.location_encoder(latlon), dim=1)
        scale = self.logit_scale.exp()
        if self.concepts is None:
            return ModelOutput(queries=x_img, keys=x_loc, scale=scale)
        z_img = self.concepts.image_scores(x_img)
        if self.contrastive_space == "concept":
            z_loc_all = self.concepts.location_scores(x_loc)
            z_loc = z_loc_all[:batch]
            out = ModelOutput(F.normalize(z_img, dim=1), F.normalize(z_loc_all, dim=1), scale, z_img, z_loc)
        else:
            z_loc = self.concepts.location_scores(x_loc[:batch])
            out = ModelOutput(x_img, x_loc, scale, z_img, z_loc)
        if self.calibration is not None:
            out.label_logits_img = self.calibration(z_img)
            out.label_logits_loc = self.calibration(z_loc)
        return out

    @torch.no_grad()
    def clamp_logit_scale(self) -> None:
        self.logit_scale.clamp_(0.0, MAX_LOGIT_SCALE)

    # inference (no autograd, batched; inputs may be numpy arrays) --------------------------
    @property
    def device(self) -> torch.device:
        return self.logit_scale.device

    @property
    def temperature(self) -> float:
        return float(torch.exp(-self.logit_scale.detach()))

    @property
    def num_concepts(self) -> int:
        return len(self.concept_ids)

    def _features(self, features: torch.Tensor | np.ndarray) -> torch.Tensor:
        x = torch.as_tensor(features).to(device=self.device, dtype=torch.float32)
        if x.ndim != 2 or x.shape[1] != self.feature_dim:
            raise ValueError(f"expected (N, {self.feature_dim}) image features, got shape {tuple(x.shape)}")
        return x

    @staticmethod
    def _batched(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, batch_size: int) -> torch.Tensor:
        if x.shape[0] == 0:
            return fn(x)
        return torch.cat([fn(chunk) for chunk in x.split(batch_size)])

    def _require_concepts(self) -> ConceptModule:
        if self.concepts is None:
            raise ValueError(f"the {self.variant} variant has no concept module")
        return self.concepts

    @torch.inference_mode()
    def embed_images(self, features: torch.Tensor | np.ndarray, batch_size: int = 8192) -> torch.Tensor:
        """Cached backbone features (N, D) → L2-normalised image embeddings (N, 512)."""
        return self._batched(lambda f: F.normalize(self.image_head(f), dim=1), self._features(features), batch_size)

    @torch.inference_mode()
    def embed_locations(self, latlon: torch.Tensor | np.ndarray, batch_size: int = 8192) -> torch.Tensor:
        """(N, 2) lat/lon degrees → L2-normalised location embeddings (N, 512)."""
        points = as_latlon_tensor(latlon, self.device)
        return self._batched(lambda p: F.normalize(self.location_encoder(p), dim=1), points, batch_size)

    @torch.inference_mode()
    def image_concepts(self, features: torch.Tensor | np.ndarray, batch_size: int = 8192) -> torch.Tensor:
        """z_img (N, k): the image side's concept scores."""
        concepts = self._require_concepts()
        return concepts.image_scores(self.embed_images(features, batch_size))

    @torch.inference_mode()
    def location_concepts(self, latlon: torch.Tensor | np.ndarray, batch_size: int = 8192) -> torch.Tensor:
        """z_loc (N, k): the location side's concept scores."""
        concepts = self._require_concepts()
        return concepts.location_scores(self.embed_locations(latlon, batch_size))

    @torch.inference_mode()
    def concept_probabilities(self, scores: torch.Tensor) -> torch.Tensor:
        """P(label = 1) from concept scores (either side); supervised variant only."""
        if self.calibration is None:
            raise ValueError("only the concept+supervised variant has calibrated concept probabilities")
        return torch.sigmoid(self.calibration(scores.to(self.device)))

    @torch.inference_mode()
    def retrieval_image_vectors(self, features: torch.Tensor | np.ndarray, batch_size: int = 8192) -> torch.Tensor:
        """Image queries in the contrastive space, L2-normalised: (N, 512) or (N, k)."""
        if self.contrastive_space == "embedding":
            return self.embed_images(features, batch_size)
        return F.normalize(self.image_concepts(features, batch_size), dim=1)

    @torch.inference_mode()
    def retrieval_location_vectors(self, latlon: torch.Tensor | np.ndarray, batch_size: int = 8192) -> torch.Tensor:
        """Gallery keys in the contrastive space, L2-normalised: (N, 512) or (N, k)."""
        if self.contrastive_space == "embedding":
            return self.embed_locations(latlon, batch_size)
        return F.normalize(self.location_concepts(latlon, batch_size), dim=1)

    @property
    def retrieval_dim(self) -> int:
        return self.dim if self.contrastive_space == "embedding" else self.num_concepts

    @torch.inference_mode()
    def similarity(self, features: torch.Tensor | np.ndarray, latlon: torch.Tensor | np.ndarray) -> torch.Tensor:
        """Retrieval score of every image against every location, (N, M): logit scale × cosine."""
        q = self.retrieval_image_vectors(features)
        k = self.retrieval_location_vectors(latlon)
        return self.logit_scale.exp() * q @ k.T

    @torch.inference_mode()
    def concept_contributions(
        self, features: torch.Tensor | np.ndarray, latlon: torch.Tensor | np.ndarray
    ) -> torch.Tensor:
        """Per-concept terms of the concept-space cosine for paired rows (N, k); they sum to the cosine.

        Meaningful as an explanation of the retrieval score only for models trained in the
        concept space; for `embedding`-space models they explain the concept agreement instead.
        """
        self._require_concepts()
        q = F.normalize(self.image_concepts(features), dim=1)
        k = F.normalize(self.location_concepts(latlon), dim=1)
        if q.shape != k.shape:
            raise ValueError(f"features and locations must be paired row by row, got {q.shape[0]} and {k.shape[0]}")
        return q * k

    def describe(self) -> dict[str, object]:
        """Architecture facts recorded in checkpoint metadata (enough to rebuild the model)."""
        return {
            "variant": self.variant,
            "contrastive_space": self.contrastive_space,
            "feature_dim": self.feature_dim,
            "dim": self.dim,
            "sigmas": list(self.location_encoder.sigmas),
            "concept_ids": self.concept_ids,
        }
