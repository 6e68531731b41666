"""What a generator plugin provides: named, seeded event streams with their star schema."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from typing import Any

import attrs

from starload.spec import StarSchema


@attrs.frozen
class Event:
    """One message to produce: its Kafka key and its JSON-serialisable value."""

    key: bytes | None
    value: dict[str, Any]


@attrs.frozen
class Generator:
    """A named event generator and the star schema its events load into.

    ``events(rng, **options)`` yields events forever; all randomness must come from
    ``rng`` so that a seed reproduces the stream. ``options`` are generator-specific
    (``starload produce --option name=value``; integers are converted).
    """

    name: str
    description: str
    schema: StarSchema
    events: Callable[..., Iterator[Event]]

    def stream(self, seed: int | None = None, **options: Any) -> Iterator[Event]:
        """The generator's events for ``seed`` (a random seed when ``None``)."""
        return self.events(random.Random(seed), **options)
