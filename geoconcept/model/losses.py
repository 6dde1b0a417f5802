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

Several processes (DDP) train the model one global batch at a time, each holding a slice of B/W
rows (`Ranks`). DDP averages the W processes' gradients, so the W per-process losses ℓ_r must sum
to W·L for the average to be the gradient of the single-process loss L over the global batch
(the all_gather below passes each gathered row's gradients, summed over processes, back to its owner):

* InfoNCE: ℓ_r = mean over the r-th slice's rows, each scored against every process's batch
  locations (gathered) and the shared queue: Σ_r ℓ_r = W·mean over all B rows.
* concept divergence: the same value on every process, computed over the gathered z_img / z_loc:
  Σ_r ℓ_r = W·L as it stands.
* supervised BCE: ℓ_r = W · (sum over the slice's measured labels) / (measured labels in the global
  batch): Σ_r ℓ_r = W · the global masked mean.

Each term's mean over the processes is then its value over the global batch, which is what the
trainer logs.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_nn
import torch.nn.functional as F

from geoconcept.model.geoconcept_model import ModelOutput

CONCEPT_LOSSES = ("cauchy_schwarz", "paper_eq6")


@dataclass(frozen=True)
class Ranks:
    """This process's place in a global batch split into `world` equal slices (module docstring)."""

    rank: int = 0
    world: int = 1

    def gather(self, x: torch.Tensor) -> torch.Tensor:
        """Every process's `x` stacked in rank order, with gradients flowing back to their owners."""
        if self.world == 1:
            return x
        with warnings.catch_warnings():
            # Deprecated in favour of a private module (torch 2.14); still the public autograd-aware gather.
            warnings.simplefilter("ignore", FutureWarning)
            return torch.cat(dist_nn.all_gather(x))

    def total(self, x: torch.Tensor) -> torch.Tensor:
        """Sum of a (detached) tensor over the processes."""
        x = x.detach().clone()
        if self.world > 1:
            dist.all_reduce(x)
        return x


SINGLE = Ranks()


def info_nce(logits: torch.Tensor, first_target: int = 0) -> torch.Tensor:
    """Image→GPS InfoNCE: row i's positive is column first_target + i; the other columns are negatives."""
    targets = torch.arange(logits.shape[0], device=logits.device) + first_target
    return F.cross_entropy(logits, targets)


def contrastive_loss(out: ModelOutput, ranks: Ranks = SINGLE) -> torch.Tensor:
    """InfoNCE of this slice's images against the global batch's locations, then the queue's."""
    b = out.queries.shape[0]
    keys = torch.cat([ranks.gather(out.keys[:b]), out.keys[b:]])
    return info_nce(out.scale * out.queries @ keys.T, first_target=ranks.rank * b)


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


def masked_bce(logits: torch.Tensor, labels: torch.Tensor, ranks: Ranks = SINGLE) -> torch.Tensor:
    """Binary cross-entropy against soft labels in [0, 1]; NaN labels (not measured) are left out.

    Over several processes: this slice's share, scaled so that the processes' mean is the masked
    mean over the global batch (module docstring).
    """
    known = ~torch.isnan(labels)
    count = ranks.total(known.sum())
    if not bool(count > 0):
        return logits.sum() * 0.0  # keeps the graph (DDP expects every parameter to get a gradient)
    total = F.binary_cross_entropy_with_logits(logits[known], labels[known], reduction="sum")
    return total * ranks.world / count


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
    ranks: Ranks = SINGLE,
) -> LossTerms:
    """InfoNCE + λ·concept divergence (concept variants) + w·supervised BCE (supervised variant).

    The supervised term averages the image side's and the location side's BCE: the labels
    describe the place, and both sides should predict them. With several processes (`ranks`),
    each term's mean over the processes is its value over the global batch.
    """
    contrastive = contrastive_loss(out, ranks)
    terms = LossTerms(total=contrastive, contrastive=contrastive)
    if out.z_img is not None and out.z_loc is not None:
        terms.concept = concept_divergence(ranks.gather(out.z_img), ranks.gather(out.z_loc), sigma, concept_loss)
        terms.total = terms.total + lambda_concept * terms.concept
    if out.label_logits_img is not None and out.label_logits_loc is not None and labels is not None:
        img, loc = masked_bce(out.label_logits_img, labels, ranks), masked_bce(out.label_logits_loc, labels, ranks)
        terms.supervised = (img + loc) / 2
        terms.total = terms.total + supervised_weight * terms.supervised
    return terms
