"""Losses on inputs small enough to check by hand."""

from __future__ import annotations

import math

import pytest
import torch

from geoconcept.model.geoconcept_model import ModelOutput
from geoconcept.model.losses import (
    cauchy_schwarz_divergence,
    concept_divergence,
    info_nce,
    masked_bce,
    mean_matching,
    paper_eq6_divergence,
    training_losses,
)


def test_info_nce_by_hand():
    logits = torch.tensor([[2.0, 0.0, 1.0], [0.0, 3.0, 0.0]])  # 2 images, 2 batch GPS + 1 queue GPS
    expected = (
        -math.log(math.exp(2) / (math.exp(2) + 1 + math.exp(1))) - math.log(math.exp(3) / (1 + math.exp(3) + 1))
    ) / 2
    assert info_nce(logits).item() == pytest.approx(expected, rel=1e-6)


def test_cauchy_schwarz_by_hand_one_dimension():
    a, b, sigma = torch.tensor([[0.0]]), torch.tensor([[1.0]]), 1.0
    # one point each: log K(a,a) + log K(b,b) - 2 log K(a,b) = 0 + 0 - 2 * (-1/2)
    assert cauchy_schwarz_divergence(a, b, sigma).item() == pytest.approx(1.0)
    a2, b2 = torch.tensor([[0.0], [2.0]]), torch.tensor([[1.0], [1.0]])
    k = lambda d: math.exp(-(d**2) / 2)  # noqa: E731
    expected = math.log((2 * k(0) + 2 * k(2)) / 4) + math.log(4 * k(0) / 4) - 2 * math.log(4 * k(1) / 4)
    assert cauchy_schwarz_divergence(a2, b2, sigma).item() == pytest.approx(expected, rel=1e-6)


def test_identical_representations_give_the_minimum():
    torch.manual_seed(0)
    z = torch.randn(32, 6)
    assert cauchy_schwarz_divergence(z, z.clone(), 0.7).item() == 0.0
    assert paper_eq6_divergence(z, z.clone(), 0.7).item() == pytest.approx(0.0, abs=1e-5)
    for _ in range(5):
        other = z + 0.3 * torch.randn_like(z)
        assert cauchy_schwarz_divergence(z, other, 0.7).item() > 1e-4


def test_cauchy_schwarz_sees_spread_that_mean_matching_misses():
    a = torch.tensor([[-1.0], [1.0]])
    b = torch.tensor([[-3.0], [3.0]])  # same mean, different spread
    assert mean_matching(a, b, 1.0).item() == 0.0
    assert paper_eq6_divergence(a, b, 1.0).item() == pytest.approx(0.0, abs=1e-6)
    assert cauchy_schwarz_divergence(a, b, 1.0).item() > 0.1


@pytest.mark.parametrize("sigma", [0.5, 1.0, 3.0])
def test_paper_eq6_reduces_to_mean_matching(sigma):
    torch.manual_seed(1)
    a, b = torch.randn(20, 5, dtype=torch.float64), torch.randn(20, 5, dtype=torch.float64) + 0.5
    n = a.shape[0]
    closed = ((a.sum(0) - b.sum(0)) ** 2).sum() / (sigma**2 * n**2)
    assert paper_eq6_divergence(a, b, sigma).item() == pytest.approx(closed.item(), rel=1e-9)
    assert mean_matching(a, b, sigma).item() == pytest.approx(closed.item(), rel=1e-12)
    assert closed.item() == pytest.approx(((a.mean(0) - b.mean(0)) ** 2).sum().item() / sigma**2)


def test_divergences_have_gradients_and_reject_unknown_form():
    a = torch.randn(8, 3, requires_grad=True)
    b = torch.randn(8, 3)
    concept_divergence(a, b, 1.0, "cauchy_schwarz").backward()
    assert a.grad is not None and torch.isfinite(a.grad).all() and a.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="unknown concept loss"):
        concept_divergence(a, b, 1.0, "kl")


def test_masked_bce_ignores_missing_labels_instead_of_treating_them_as_zero():
    logits = torch.tensor([[2.0, -1.0], [0.5, 3.0]])
    labels = torch.tensor([[1.0, float("nan")], [0.0, float("nan")]])
    known = torch.nn.functional.binary_cross_entropy_with_logits(torch.tensor([2.0, 0.5]), torch.tensor([1.0, 0.0]))
    as_zero = torch.nn.functional.binary_cross_entropy_with_logits(logits, torch.nan_to_num(labels, nan=0.0))
    assert masked_bce(logits, labels).item() == pytest.approx(known.item())
    assert masked_bce(logits, labels).item() != pytest.approx(as_zero.item())


def test_masked_bce_with_nothing_measured_is_zero_and_keeps_the_graph():
    logits = torch.randn(3, 2, requires_grad=True)
    loss = masked_bce(logits, torch.full((3, 2), float("nan")))
    loss.backward()
    assert loss.item() == 0.0 and logits.grad is not None and logits.grad.abs().sum() == 0


def test_training_losses_combine_the_terms_with_their_weights():
    torch.manual_seed(2)
    out = ModelOutput(
        queries=torch.randn(4, 5),
        keys=torch.randn(6, 5),
        scale=torch.tensor(2.0),
        z_img=torch.randn(4, 3),
        z_loc=torch.randn(4, 3),
        label_logits_img=torch.randn(4, 3),
        label_logits_loc=torch.randn(4, 3),
    )
    labels = torch.tensor([[1.0, 0.0, float("nan")]] * 4)
    terms = training_losses(out, labels, lambda_concept=0.5, sigma=2.0, concept_loss="paper_eq6", supervised_weight=3.0)
    assert terms.concept.item() == pytest.approx(mean_matching(out.z_img, out.z_loc, 2.0).item(), rel=1e-5)
    expected = terms.contrastive + 0.5 * terms.concept + 3.0 * terms.supervised
    assert terms.total.item() == pytest.approx(expected.item())
    plain = training_losses(
        ModelOutput(out.queries, out.keys, out.scale),
        None,
        lambda_concept=1,
        sigma=1,
        concept_loss="cauchy_schwarz",
        supervised_weight=1,
    )
    assert (
        plain.concept is None
        and plain.supervised is None
        and plain.total.item() == pytest.approx(info_nce(out.logits).item())
    )
    assert set(terms.as_floats()) == {"loss", "loss_contrastive", "loss_concept", "loss_supervised"}
