"""The GeoCLIP-style model with the Concept-Aware Alignment Module (imports torch)."""

from geoconcept.model.checkpoint import load_model, save_model
from geoconcept.model.geoconcept_model import CONTRASTIVE_SPACES, VARIANTS, GeoConceptModel
from geoconcept.model.location_encoder import LocationEncoder
from geoconcept.model.queue import GPSQueue

__all__ = [
    "CONTRASTIVE_SPACES",
    "VARIANTS",
    "GPSQueue",
    "GeoConceptModel",
    "LocationEncoder",
    "load_model",
    "save_model",
]
