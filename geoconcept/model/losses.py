"""Training losses: image→GPS InfoNCE, the concept divergence (two forms), the supervised concept term.

Concept divergence, with the Gaussian kernel K(x, y) = exp(−‖x − y‖² / (2σ²)) between concept
vectors (a = z_img, b = z_loc; rows are samples):

* `cauchy_schwarz` (default) — the Cauchy–Schwarz divergence the paper cites, logs *outside* the
  kernel means:  log mean K(a, a) + log mean K(b, b) − 2 log mean K(a, b).
  It is ≥ 0 (Cauchy–Schwarz in the kernel's feature space) and 0 when the two sets are the same,
  and compares the whole distributions (all moments, at scale σ).
* `paper_eq6` — eq. 6 of arXiv 2509.01910 as printed, logs *inside* the double sum:
  (1/N²) Σᵢ Σⱼ [log K(aᵢ, aⱼ) + log K(bᵢ, bⱼ) − 2 log K(aᵢ, bⱼ)].
  Since log K is −‖·‖²/(2σ²), expanding the squares leaves only the cross terms of the sums:
  Σᵢⱼ ‖aᵢ − aⱼ‖² = 2N Σ‖aᵢ‖² − 2‖Σa‖², likewise for b, and Σᵢⱼ ‖aᵢ − bⱼ‖² = N Σ‖aᵢ‖² + N Σ‖bⱼ‖² − 2 Σa·Σb,
  so the bracket sums to −2 ‖Σa − Σb‖² and the loss is exactly ‖Σa − Σb‖² / (σ² N²) =
  ‖mean(a) − mean(b)‖² / σ²: it only matches the two means (`mean_matching` computes that form;
  a test checks the identity). It is implemented literally so that the identity is checked, not assumed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from geoconcept.model.geoconcept_model import ModelOutput

CONCEPT_LOSSES = ("cauchy_schwarz", "paper_eq6")


def info_nce(logits: torch.Tensor) -> torch.Tensor:
    """Image→GPS InfoNCE: row i's positive is column i; later columns (queue) are negatives only."""
    targets = torch.arange(logits.shape[0], device=logits.device)
    return F.cross_entropy(logits, targets)


def squared_distances(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(N, M) matrix of ‖aᵢ − bⱼ‖², by expansion so that memory stays O(N·M) for any width."""
    sq = (a * a).sum(1, keepdim=True) + (b * b).sum(1) - 2 * (a @ b.T)
    return sq.clamp_min(0.0)


def log_mean_kernel(a: torch.Tensor, b: torch.Tensor, sigma: float) -> torch.Tensor:
    """log of the mean Gaussian kernel value over all pairs, computed stably with logsumexp."""
    log_k = -squared_distances(a, b) / (2 * sigma**2)
    return torch.logsumexp(log_k.flatten(), dim=0) - math.log(log_k.numel())


def cauchy_schwarz_divergence(a: torch.Tensor, b: torch.Tensor, sigma: float) -> torch.Tensor:
    return log_mean_kernel(a, a, sigma) + log_mean_kernel(b, b, sigma) - 2 * log_mean_kernel(a, b, sigma)


def paper_eq6_divergence(a: torch.Tensor, b: torch.Tensor, sigma: float) -> torch.Tensor:
    def mean_log_kernel(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return (-squared_distances(x, y) / (2 * sigma**2)).mean()

    return mean_log_kernel(a, a) + mean_log_kernel(b, b) - 2 * mean_log_kernel(a, b)


def mean_matching(a: torch.Tensor, b: torch.Tensor, sigma: float) -> torch.Tensor:
    """‖Σa − Σb‖² / (σ² N²): what `paper_eq6_divergence` reduces to (module docstring)."""
    n = a.shape[0]
    return ((a.sum(0) - b.sum(0)) ** 2).sum() / (sigma**2 * n * n)


def concept_divergence(a: torch.Tensor, b: torch.Tensor, sigma: float, form: str) -> torch.Tensor:
    if form == "cauchy_schwarz":
        return cauchy_schwarz_divergence(a, b, sigma)
    if form == "paper_eq6":
        return paper_eq6_divergence(a, b, sigma)
    raise ValueError(f"unknown concept loss {form!r} (choose from {', '.join(CONCEPT_LOSSES)})")


def masked_bce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy against soft labels in [0, 1]; NaN labels (not measured) are left out."""
    known = ~torch.isnan(labels)
    if not bool(known.any()):
        return logits.sum() * 0.0  # keeps the graph (DDP expects every parameter to get a gradient)
    return F.binary_cross_entropy_with_logits(logits[known], labels[known])


@dataclass
class LossTerms:
    total: torch.Tensor
    contrastive: torch.Tensor
    concept: torch.Tensor | None = None
    supervised: torch.Tensor | None = None

    def as_floats(self) -> dict[str, float]:
        out = {"loss": self.total.item(), "loss_contrastive": self.contrastive.item()}
        if self.concept is not None:
            out["loss_concept"] = self.concept.item()
        if self.supervised is not None:
            out["loss_supervised"] = self.supervised.item()
        return out


def training_losses(
    out: ModelOutput,
    labels: torch.Tensor | None,
    *,
    lambda_concept: float,
    sigma: float,
    concept_loss: str,
    supervised_weight: float,
) -> LossTerms:
    """InfoNCE + λ·concept divergence (concept variants) + w·supervised BCE (supervised variant).

    The supervised term averages the image side's and the location side's BCE: the labels
    describe the place, and both sides should predict them.
    """
    contrastive = info_nce(out.logits)
    terms = LossTerms(total=contrastive, contrastive=contrastive)
    if out.z_img is not None and out.z_loc is not None:
        terms.concept = concept_divergence(out.z_img, out.z_loc, sigma, concept_loss)
        terms.total = terms.total + lambda_concept * terms.concept
    if out.label_logits_img is not None and out.label_logits_loc is not None and labels is not None:
        terms.supervised = (masked_bce(out.label_logits_img, labels) + masked_bce(out.label_logits_loc, labels)) / 2
        terms.total = terms.total + supervised_weight * terms.supervised
    return terms
