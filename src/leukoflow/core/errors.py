"""Errors a user can act on: the CLI prints their message and exits with status 2.

Subclasses live beside the code that raises them: `leukoflow.data.images.BadImageError`,
`leukoflow.data.ingest.BadDatasetError`, `leukoflow.stain.macenko.DegenerateStainError` (also
exported by `leukoflow.stain.normalize`).
"""


class LeukoflowError(Exception):
    """A user-facing error whose message names the file or key and what to do."""


class ConfigError(LeukoflowError):
    """A configuration value is missing, unknown or out of range."""
