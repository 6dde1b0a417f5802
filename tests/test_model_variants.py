"""Concept-Aware Alignment Module and the three variants."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from geoconcept.model.concept_module import ConceptModule, concept_text_basis
from geoconcept.model.geoconcept_model import GeoConceptModel

IDS = ["a", "b", "c"]


def unit_rows(k: int, d: int, seed: int = 0) -> torch.Tensor:
    e = torch.randn(k, d, generator=torch.Generator().manual_seed(seed))
    return e / e.norm(dim=1, keepdim=True)


def test_text_basis_keeps_the_concepts_geometry_when_widths_differ():
    e = unit_rows(12, 768)
    mapped = concept_text_basis(e, 512, center=False)
    assert mapped.shape == (12, 512)
    assert torch.allclose(mapped @ mapped.T, e @ e.T, atol=1e-5)
    assert torch.equal(concept_text_basis(e, 512, center=False), mapped)  # deterministic (SVD signs fixed)
    same = unit_rows(5, 512)
    assert torch.equal(concept_text_basis(same, 512, center=False), same)


def test_centering_removes_the_direction_all_prompts_share():
    common = unit_rows(1, 512, seed=5)
    e = F.normalize(3 * common + unit_rows(20, 512, seed=6), dim=1)  # pairwise cosines ~0.9, as CLIP's
    off_diagonal = ~torch.eye(20, dtype=torch.bool)
    assert (e @ e.T)[off_diagonal].mean() > 0.85
    basis = concept_text_basis(e, 512)
    assert torch.allclose(basis.norm(dim=1), torch.ones(20), atol=1e-5)
    assert (basis @ basis.T)[off_diagonal].abs().mean() < 0.1
    # no single direction dominates any more: the basis is far from rank one
    singular = torch.linalg.svdvals(basis)
    assert singular[1] / singular[0] > 0.5 > torch.linalg.svdvals(e)[1] / torch.linalg.svdvals(e)[0]


def test_text_basis_with_more_concepts_than_dimensions_keeps_unit_rows():
    e = unit_rows(40, 64)
    mapped = concept_text_basis(e, 16, center=False)
    assert mapped.shape == (40, 16)
    assert torch.allclose(mapped.norm(dim=1), torch.ones(40), atol=1e-5)
    # the best rank-16 approximation of the Gram matrix is closer than a random projection
    random = F.normalize(e @ torch.randn(64, 16, generator=torch.Generator().manual_seed(3)), dim=1)
    assert (mapped @ mapped.T - e @ e.T).norm() < (random @ random.T - e @ e.T).norm()


def test_location_scores_start_as_cosines_with_the_concept_text():
    e = unit_rows(3, 512)
    module = ConceptModule.from_text_embeddings(e, center=False)
    x = F.normalize(torch.randn(4, 512), dim=1)
    assert torch.allclose(module.location_scores(x), x @ e.T, atol=1e-6)
    with torch.no_grad():
        module.delta.add_(0.1)
    assert torch.allclose(module.basis(), e.T + 0.1)
    assert module.image_scores(x).shape == (4, 3)


@pytest.mark.parametrize(
    ("variant", "space", "width"),
    [("geoclip", "embedding", 512), ("concept", "concept", 3), ("concept+supervised", "concept", 3)],
)
def test_variants_default_spaces_and_outputs(variant, space, width):
    torch.manual_seed(0)
    model = GeoConceptModel(variant=variant, feature_dim=8, concept_ids=IDS, sigmas=[1.0])
    assert model.contrastive_space == space and model.retrieval_dim == width
    out = model(torch.randn(5, 8), torch.tensor([[10.0, 20.0]] * 5 + [[0.0, 0.0]] * 2))
    assert out.logits.shape == (5, 7)
    assert (out.z_img is None) == (variant == "geoclip")
    assert (out.label_logits_img is None) == (variant != "concept+supervised")
    if out.z_loc is not None:
        assert out.z_loc.shape == (5, 3)


def test_retrieval_score_uses_the_trained_space():
    torch.manual_seed(1)
    feats, places = torch.randn(4, 8), torch.tensor([[10.0, 20.0], [-30.0, 100.0], [60.0, -5.0]])
    concept = GeoConceptModel(variant="concept", feature_dim=8, concept_ids=IDS, sigmas=[1.0])
    z_cos = F.normalize(concept.image_concepts(feats), dim=1) @ F.normalize(concept.location_concepts(places), dim=1).T
    assert torch.allclose(concept.similarity(feats, places), concept.logit_scale.exp() * z_cos, atol=1e-5)
    embedding = GeoConceptModel(
        variant="concept", feature_dim=8, concept_ids=IDS, contrastive_space="embedding", sigmas=[1.0]
    )
    x_cos = embedding.embed_images(feats) @ embedding.embed_locations(places).T
    assert torch.allclose(embedding.similarity(feats, places), embedding.logit_scale.exp() * x_cos, atol=1e-5)
    assert embedding.retrieval_location_vectors(places).shape == (3, 512)


def test_concept_contributions_sum_to_the_concept_cosine():
    torch.manual_seed(2)
    model = GeoConceptModel(variant="concept", feature_dim=8, concept_ids=IDS, sigmas=[1.0])
    feats, places = torch.randn(3, 8), torch.tensor([[10.0, 20.0], [-30.0, 100.0], [60.0, -5.0]])
    parts = model.concept_contributions(feats, places)
    cos = model.similarity(feats, places).diagonal() / model.logit_scale.exp().item()
    assert torch.allclose(parts.sum(1), cos, atol=1e-5)


def test_inference_helpers_are_normalised_and_checked():
    model = GeoConceptModel(variant="geoclip", feature_dim=8, sigmas=[1.0])
    emb = model.embed_images(torch.randn(3, 8))
    assert torch.allclose(emb.norm(dim=1), torch.ones(3), atol=1e-5)
    with pytest.raises(ValueError, match="image features"):
        model.embed_images(torch.randn(3, 9))
    with pytest.raises(ValueError, match="no concept module"):
        model.image_concepts(torch.randn(3, 8))
    with pytest.raises(ValueError, match="no concept space"):
        GeoConceptModel(variant="geoclip", feature_dim=8, contrastive_space="concept")
    with pytest.raises(ValueError, match="concept ids"):
        GeoConceptModel(variant="concept", feature_dim=8)


def test_supervised_probabilities_are_monotone_in_the_score():
    model = GeoConceptModel(variant="concept+supervised", feature_dim=8, concept_ids=IDS, sigmas=[1.0])
    scores = torch.linspace(-1, 1, 5)[:, None].repeat(1, 3)
    probs = model.concept_probabilities(scores)
    assert (probs.diff(dim=0) > 0).all() and probs[0, 0] < 0.01 and probs[-1, 0] > 0.99
