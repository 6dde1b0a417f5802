"""Compose the config of one training run (a variant and a seed) from base settings and input paths.

The orchestrator (Dagster's `checkpoint` asset) and scripts use this so that a run folder is fully
described by its `train.yaml`: the trainer can be re-run by hand from it (`geoconcept train --config`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from geoconcept import atomic
from geoconcept.errors import ConfigError

SAMPLE_SETTINGS = Path(__file__).with_name("sample.yaml")


def read_settings(path: str | os.PathLike[str] | None) -> dict[str, Any]:
    """Trainer settings from a YAML file (default: the embedded sample's)."""
    path = Path(path) if path else SAMPLE_SETTINGS
    try:
        settings = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"trainer settings {path}: {exc}") from None
    if not isinstance(settings, dict):
        raise ConfigError(f"trainer settings {path}: expected a mapping of keys to values")
    return settings


def write_run_config(
    out_dir: str | os.PathLike[str],
    *,
    settings: dict[str, Any],
    variant: str,
    seed: int,
    features: list[str],
    labels: list[str],
    split: str,
    concept_embeddings: str,
    concept_bank: str | None = None,
) -> Path:
    """Write `out_dir/train.yaml` for one run (its output is `out_dir/`) and return its path."""
    out_dir = Path(out_dir)
    config = dict(settings) | {
        "variant": variant,
        "seed": seed,
        "features": [str(p) for p in features],
        "labels": [str(p) for p in labels],
        "split": str(split),
        "concept_embeddings": str(concept_embeddings),
        "output": str(out_dir),
        # A rebuild over changed inputs retrains instead of refusing; unchanged inputs reuse the run.
        "restart_if_changed": True,
    }
    if concept_bank:
        config["concept_bank"] = str(concept_bank)
    path = out_dir / "train.yaml"
    atomic.write_text(path, yaml.safe_dump(config, sort_keys=True))
    return path
