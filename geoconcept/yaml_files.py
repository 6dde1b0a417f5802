"""Reading the user's YAML files (safe_load only: a config file must never run code)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from geoconcept.errors import ConfigError


def read_yaml(path: str | os.PathLike[str], what: str) -> Any:
    """The parsed document; a missing file or invalid YAML is a ConfigError naming `what` and the path."""
    path = Path(path)
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{what} {path} not found") from None
    except IsADirectoryError:
        raise ConfigError(f"{what} {path} is a directory, expected a YAML file") from None
    except OSError as exc:  # no permission, a FIFO's error, ...: the reason, named
        raise ConfigError(f"{what} {path} cannot be read ({exc.strerror or exc})") from None
    except (UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"{what} {path} is not valid YAML ({exc})") from None
