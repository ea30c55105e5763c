"""Errors a user can act on: the CLI prints their message and exits with status 2.

Subclasses live beside the code that raises them: `leukoflow.data.images.BadImageError`,
`leukoflow.data.ingest.BadDatasetError`, `leukoflow.stain.macenko.DegenerateStainError` (also
exported by `leukoflow.stain.normalize`).
"""


class LeukoflowError(Exception):
    """A user-facing error whose message names the file or key and what to do."""


class ConfigError(LeukoflowError):
    """A configuration value is missing, unknown or out of range."""


def check_names(where: str, given, allowed, required=()) -> None:
    """Refuse names (of files, keys, members) that are not `allowed`, or that leave out one
    that is `required`.

    Args:
        where: what the names belong to, for the message (an option, a manifest key).
        given: the names given.
        allowed: every name accepted, in the order the message lists them.
        required: the names that must be given.

    Raises:
        LeukoflowError: naming the missing and the unknown names and the allowed ones.
    """
    missing = [name for name in required if name not in given]
    unknown = [name for name in given if name not in allowed]
    if missing or unknown:
        raise LeukoflowError(
            f"{where}: missing {', '.join(missing) or 'none'}, unknown "
            f"{', '.join(unknown) or 'none'}; expected {', '.join(allowed)}"
            + (f" (required: {', '.join(required)})" if list(required) != list(allowed) else "")
        )
