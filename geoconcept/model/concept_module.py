"""The Concept-Aware Alignment Module (arXiv 2509.01910).

Both sides are projected onto a bank of k geographic concepts:

* location side: z_loc = x_locᵀ B with the concept basis B = E + Δ (dim × k), where E holds the
  text embeddings of the concept prompts (frozen) and Δ is learned (initialised to zero, so
  training starts from the text geometry);
* image side: z_img = MLP(x_img) ∈ R^k.

x_img and x_loc are the L2-normalised 512-d embeddings, so z_loc[c] starts as the cosine between
the location and concept c's text embedding (centred over the bank by default: see
`concept_text_basis`).

The text tower's width need not be 512 (ViT-L-14's is 768). `concept_text_basis` maps the k text
embeddings into the 512-d space by an isometry of their span: with E = U S Vᵀ (thin SVD) the rows
U S keep every inner product between concepts (the Gram matrix E Eᵀ) exactly when k ≤ 512; for
k > 512 it keeps the best rank-512 approximation (Eckart–Young) and re-normalises the rows. The
location space has no built-in alignment with any text space (it is learned, or GeoCLIP's), so
the concepts' mutual geometry is the information worth keeping; Δ learns the rest. A 512-d bank is
used as is.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from geoconcept.model.location_encoder import EMBED_DIM

CONCEPT_HIDDEN = 512
# Supervised concept logits start at 10 × score: unit-range scores can then reach confident labels.
CALIBRATION_SCALE_INIT = 10.0


def concept_text_basis(embeddings: torch.Tensor, dim: int = EMBED_DIM, center: bool = True) -> torch.Tensor:
    """(k, d_text) concept text embeddings → (k, dim), preserving their inner products (see module doc).

    With `center`, the mean over the concepts is removed first and the rows re-normalised. CLIP
    text embeddings of prompts share a large common direction ("a photo of ..."): pairwise cosines
    of ~0.8 are typical, and a randomly initialised tower is worse still. Left in, that direction
    makes B = E + Δ nearly rank one at the start, so every concept score of a location is almost
    the same number and the concept space cannot tell places apart until Δ has undone it. On the
    embedded sample, centering raised the concept variant's validation top-1 from 0.32 to 0.52.
    """
    e = embeddings.to(torch.float64)
    if center and len(e) > 1:
        e = torch.nn.functional.normalize(e - e.mean(dim=0, keepdim=True), dim=1)
    k, d_text = e.shape
    if d_text == dim:
        return e.to(torch.float32)
    u, s, vh = torch.linalg.svd(e, full_matrices=False)
    # SVD signs are arbitrary: make each component's largest text-space loading positive, so the
    # same bank always gives the same basis.
    flip = torch.sign(vh[torch.arange(vh.shape[0]), vh.abs().argmax(dim=1)])
    flip[flip == 0] = 1
    coords = (u * s) * flip
    rank = min(coords.shape[1], dim)
    out = torch.zeros(k, dim, dtype=torch.float64)
    out[:, :rank] = coords[:, :rank]
    if rank < coords.shape[1]:
        norms = e.norm(dim=1, keepdim=True)
        out = out / out.norm(dim=1, keepdim=True).clamp_min(1e-12) * norms
    return out.to(torch.float32)


class ConceptModule(nn.Module):
    def __init__(self, num_concepts: int, dim: int = EMBED_DIM, hidden: int = CONCEPT_HIDDEN) -> None:
        super().__init__()
        if num_concepts < 1:
            raise ValueError("the concept module needs at least one concept")
        self.num_concepts = num_concepts
        self.register_buffer("text_basis", torch.zeros(dim, num_concepts))  # E, frozen
        self.delta = nn.Parameter(torch.zeros(dim, num_concepts))  # Δ, learned
        self.image_mlp = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, num_concepts))

    @classmethod
    def from_text_embeddings(cls, embeddings: torch.Tensor, dim: int = EMBED_DIM, center: bool = True) -> ConceptModule:
        module = cls(embeddings.shape[0], dim)
        module.text_basis.copy_(concept_text_basis(embeddings, dim, center=center).T)
        return module

    def basis(self) -> torch.Tensor:
        """B = E + Δ, (dim, k)."""
        return self.text_basis + self.delta

    def image_scores(self, image_embeddings: torch.Tensor) -> torch.Tensor:
        """z_img = MLP(x_img), (N, k)."""
        return self.image_mlp(image_embeddings)

    def location_scores(self, location_embeddings: torch.Tensor) -> torch.Tensor:
        """z_loc = x_locᵀ B, (N, k)."""
        return location_embeddings @ self.basis()


class ConceptCalibration(nn.Module):
    """Per-concept affine map from a concept score z to the logit of P(label = 1).

    Monotone (positive scale), so the ranking of points by a concept's score, and so its AUROC,
    is the score's own; only the supervised variant has it.
    """

    def __init__(self, num_concepts: int) -> None:
        super().__init__()
        self.log_scale = nn.Parameter(torch.full((num_concepts,), math.log(CALIBRATION_SCALE_INIT)))
        self.bias = nn.Parameter(torch.zeros(num_concepts))

    def forward(self, scores: torch.Tensor) -> torch.Tensor:
        return scores * self.log_scale.exp() + self.bias
