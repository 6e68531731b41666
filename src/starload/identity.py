"""Two small facts every layer needs, kept apart so that a sink imports nothing of Kafka or of the mapping.

:data:`VERSION`: starload's version (bytes, as it goes into a dead letter's header and
the recorded spec). :func:`quote`: a SQL identifier as every sink and the mapping write
it (identifiers come validated by the spec).
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version


def _starload_version() -> str:
    try:
        return version("starload")
    except PackageNotFoundError:
        return "unknown"


VERSION = _starload_version().encode()


def quote(identifier: str) -> str:
    """A double-quoted SQL identifier (identifiers are validated by the spec)."""
    return '"' + identifier.replace('"', '""') + '"'
