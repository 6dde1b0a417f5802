"""Checks of single settings and paths, shared by every door a setting comes through.

The command line, the Dagster resources and the config files call the same check with the same
name (the config key, e.g. `samples_per_shard`; a flag that exists only on the command line is
named as a flag, e.g. `--kmeans`), so a bad value reads the same wherever it was given.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from geoconcept.errors import ConfigError, InputError


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def int_at_least(value: Any, name: str, minimum: int = 1) -> int:
    """`value` if it is an integer >= `minimum` (sizes, counts: minimum 1), else a ConfigError."""
    if not _is_int(value) or value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def int_between(value: Any, name: str, low: int, high: int) -> int:
    """`value` if it is an integer in [low, high], else a ConfigError."""
    if not _is_int(value) or not low <= value <= high:
        raise ConfigError(f"{name} must be an integer in {low}..{high}, got {value!r}")
    return value


def number_between(value: Any, name: str, low: float, high: float) -> float:
    """`value` as a float if it is a finite number in [low, high] (NaN and ±inf refused), else a ConfigError."""
    is_number = isinstance(value, int | float) and not isinstance(value, bool)
    if not (is_number and math.isfinite(value) and low <= value <= high):
        raise ConfigError(f"{name} must be a finite number in [{low:g}, {high:g}], got {value!r}")
    return float(value)


def check_input_file(path: Path, what: str) -> Path:
    """`path` if it is an existing file; else an InputError that says whether it is missing or a directory."""
    if path.is_dir():
        raise InputError(f"{what} {path} is a directory, expected a file")
    if not path.exists():
        raise InputError(f"{what} {path} not found")
    return path


def _file_above(path: Path) -> Path | None:
    """The nearest existing ancestor of `path` if it is not a directory (the output could not be created)."""
    for parent in path.parents:
        if parent.exists():
            return None if parent.is_dir() else parent
    return None


def check_output_file(path: Path, what: str) -> Path:
    """`path` if a file can be written there: not an existing directory, no file in the way above it.

    Checked before any work, so that a run does not compute for minutes and then fail on its output.
    """
    if path.is_dir():
        raise InputError(f"{what} {path} is an existing directory, expected a file name")
    blocker = _file_above(path)
    if blocker is not None:
        raise InputError(f"{what} {path}: {blocker} is a file, not a directory")
    return path


def check_output_folder(path: Path, what: str) -> Path:
    """`path` if a folder can be written there: not an existing file, no file in the way above it."""
    if path.exists() and not path.is_dir():
        raise InputError(f"{what} {path} is an existing file, expected a directory")
    blocker = _file_above(path)
    if blocker is not None:
        raise InputError(f"{what} {path}: {blocker} is a file, not a directory")
    return path
