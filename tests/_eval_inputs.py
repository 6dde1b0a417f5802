"""Tiny checkpoints and galleries for the evaluation tests (tests/test_eval_*.py).

Checkpoints are untrained (seeded random weights, concept basis from the synthetic concept
embeddings of `_model_inputs.write_dataset`): the tests check what the evaluation computes from
any model, not how good a model is. Saved with the real `save_model`, so variant, seed (in the
training config) and backbone come from the checkpoint metadata as they do after training.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from _model_inputs import CONCEPTS

from geoconcept import gallery
from geoconcept.evaluation.config import RunSpec
from geoconcept.model.checkpoint import load_model, save_model
from geoconcept.model.concept_module import concept_text_basis
from geoconcept.model.geoconcept_model import GeoConceptModel

BACKBONE_TAG = "test-backbone__none"  # the tag write_dataset's feature files carry
# A bank whose rules measure two of write_dataset's concepts with built-in layers (for concept maps).
TEST_BANK = """version: "1"
concepts:
  - {id: tropical, name: Tropical, category: climate, prompts: [tropical], rule: {layer: koppen_group, classes: [A]}}
  - {id: northern, name: Northern, category: climate, prompts: [north]}
  - {id: polar, name: Polar, category: climate, prompts: [polar], rule: {layer: koppen_group, classes: [E]}}
  - {id: text_only, name: Text only, category: climate, prompts: [text]}
"""


def coords(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.stack([rng.uniform(-80, 80, n), rng.uniform(-180, 180, n)], axis=1)


def concept_vectors(k: int = len(CONCEPTS), dim: int = 512, seed: int = 0) -> torch.Tensor:
    vectors = torch.randn(k, dim, generator=torch.Generator().manual_seed(seed))
    return vectors / vectors.norm(dim=1, keepdim=True)


def tiny_model(variant: str, seed: int, feature_dim: int = 16, space: str | None = None) -> GeoConceptModel:
    torch.manual_seed(seed)
    ids = CONCEPTS if variant != "geoclip" else ()
    model = GeoConceptModel(
        variant=variant, feature_dim=feature_dim, concept_ids=ids, sigmas=[1.0], contrastive_space=space
    )
    if model.concepts is not None:
        with torch.no_grad():
            model.concepts.text_basis.copy_(concept_text_basis(concept_vectors(), model.dim).T)
    return model


def save_checkpoint(
    path: Path, variant: str, seed: int, feature_dim: int = 16, backbone_spec: dict[str, str] | None = None
) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tag = BACKBONE_TAG if backbone_spec is None else f"{backbone_spec['model']}__none"
    save_model(
        tiny_model(variant, seed, feature_dim),
        path,
        config={"seed": seed},
        backbone=tag,
        backbone_spec=backbone_spec,
    )
    return path


def make_runs(
    root: Path, variants: tuple[str, ...], seeds: tuple[int, ...], gallery_coords: np.ndarray
) -> list[RunSpec]:
    """A checkpoint (run folder with final.safetensors) and its exact gallery per (variant, seed)."""
    runs = []
    for variant in variants:
        for seed in seeds:
            name = f"{variant.replace('+', '_')}_s{seed}"
            checkpoint = save_checkpoint(root / "runs" / name / "final.safetensors", variant, seed)
            folder = root / "galleries" / name
            gallery.build_gallery(gallery_coords, load_model(checkpoint), folder, use_gpu=False, source="test")
            runs.append(RunSpec(checkpoint.parent, folder))
    return runs
