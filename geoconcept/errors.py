"""Errors that mean "the tool could not do its job", with a message meant for the user.

The CLI prints them as one line and exits non-zero; Dagster shows them as the step's failure.
Anything else escaping the library is a bug.
"""


class GeoconceptError(Exception):
    """A user-facing failure: missing input, malformed file, inconsistent configuration."""


class InputError(GeoconceptError):
    """An input file or folder is missing, unreadable, or not in the expected format."""


class ConfigError(GeoconceptError):
    """A configuration value or file is invalid."""
