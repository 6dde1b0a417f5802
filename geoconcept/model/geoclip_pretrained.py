"""GeoCLIP's published model as a ready geoconcept checkpoint (`--checkpoint geoclip-pretrained`).

Assembled from the files the `geoclip` package ships (found with `importlib.util.find_spec`, never
imported: see geoconcept.bundled): the image MLP on ViT-L-14/openai CLIP features (768-d), the
location encoder and the logit scale. The result is a `geoclip`-variant model file whose metadata
records the backbone as ViT-L-14 `openai`; GeoCLIP's 100K MP16 gallery is the default gallery of
`predict`/`gallery` already. Offline the backbone weights are not at hand: commands that need the
backbone say so (see `Backbone.create`), commands that work on cached 768-d features do not need it.
"""

from __future__ import annotations

import importlib.metadata
import os
from pathlib import Path

import torch

from geoconcept import bundled
from geoconcept.layout import default_data_root
from geoconcept.model.backbone import DEFAULT_MODEL, DEFAULT_PRETRAINED, backbone_tag
from geoconcept.model.checkpoint import save_model
from geoconcept.model.geoconcept_model import GeoConceptModel
from geoconcept.model.location_encoder import LocationEncoder

GEOCLIP_PRETRAINED = "geoclip-pretrained"
MODEL_FILE = "final.safetensors"  # the name a run folder gives its model file
GEOCLIP_FEATURE_DIM = 768  # ViT-L-14's image embedding, what GeoCLIP's image MLP was trained on


def default_cache_dir() -> Path:
    return default_data_root() / "models" / GEOCLIP_PRETRAINED


def geoclip_pretrained_model() -> GeoConceptModel:
    """GeoCLIP's published weights in a `geoclip`-variant model (eval mode, CPU)."""
    model = GeoConceptModel(variant="geoclip", feature_dim=GEOCLIP_FEATURE_DIM)
    model.image_head.load_geoclip()
    model.location_encoder.load_state_dict(LocationEncoder.from_geoclip().state_dict())
    # A plain tensor file: weights_only=True refuses anything else.
    scale = torch.load(bundled.GEOCLIP_LOGIT_SCALE.path(), map_location="cpu", weights_only=True)
    with torch.no_grad():
        model.logit_scale.copy_(torch.as_tensor(scale, dtype=torch.float32).reshape(()))
    return model.eval()


def geoclip_pretrained_checkpoint(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """The model file, written once (atomically) into `cache_dir` (default <data root>/models/geoclip-pretrained)."""
    path = Path(cache_dir if cache_dir is not None else default_cache_dir()) / MODEL_FILE
    if path.is_file():
        return path
    save_model(
        geoclip_pretrained_model(),
        path,
        # One published run: seed 0 names it where evaluations group runs by seed.
        config={"source": "geoclip package", "geoclip_version": importlib.metadata.version("geoclip"), "seed": 0},
        backbone=backbone_tag(DEFAULT_MODEL, DEFAULT_PRETRAINED),
        backbone_spec={"model": DEFAULT_MODEL, "pretrained": DEFAULT_PRETRAINED, "seed": "0"},
    )
    return path
