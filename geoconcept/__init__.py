"""geoconcept: data pipeline and concept-bank toolkit for interpretable image geo-localization."""

__version__ = "0.1.0"

# Torch-heavy names load on first use, so that `import geoconcept` stays cheap.
_LAZY = {
    "LocationEncoder": "geoconcept.model.location_encoder",
    "GeoConceptModel": "geoconcept.model.geoconcept_model",
    "load_model": "geoconcept.model.checkpoint",
    "haversine_km": "geoconcept.evaluation.metrics",  # numpy only, no torch
    "accuracy_within": "geoconcept.evaluation.metrics",
}


def __getattr__(name: str) -> object:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'geoconcept' has no attribute {name!r}")
