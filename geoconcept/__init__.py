"""geoconcept: data pipeline and concept-bank toolkit for interpretable image geo-localization."""

__version__ = "0.1.0"
