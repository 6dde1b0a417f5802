"""The trainable image side: frozen-backbone features → the shared embedding space."""

from __future__ import annotations

import torch
from torch import nn

from geoconcept import bundled
from geoconcept.model.location_encoder import EMBED_DIM


class ImageHead(nn.Module):
    """GeoCLIP's image MLP: Linear(D, D) → ReLU → Linear(D, dim), D = backbone feature size."""

    def __init__(self, feature_dim: int, dim: int = EMBED_DIM) -> None:
        super().__init__()
        self.feature_dim = feature_dim
        self.mlp = nn.Sequential(nn.Linear(feature_dim, feature_dim), nn.ReLU(), nn.Linear(feature_dim, dim))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.mlp(features)

    def load_geoclip(self, path: str | None = None) -> None:
        """GeoCLIP's published image MLP (trained on ViT-L-14/openai features, so D must be 768)."""
        source = path or bundled.GEOCLIP_IMAGE_MLP_WEIGHTS.path()
        # A plain state dict of tensors: weights_only=True refuses anything else.
        state = torch.load(source, map_location="cpu", weights_only=True)
        expected = tuple(state["0.weight"].shape) if "0.weight" in state else None
        if expected != (self.feature_dim, self.feature_dim):
            raise ValueError(
                f"{source}: GeoCLIP's image MLP expects {expected} inputs (ViT-L-14 features), "
                f"this head takes {self.feature_dim}-d features"
            )
        self.mlp.load_state_dict(state)
