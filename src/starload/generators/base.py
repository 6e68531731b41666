"""What a generator plugin provides: named, seeded event streams with their star schema."""

from __future__ import annotations

import inspect
import random
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import attrs

from starload.spec import StarSchema


@attrs.frozen
class Event:
    """One message to produce: its Kafka key, its JSON-serialisable value (None: a tombstone, a null value) and its topic.

    ``topic`` None: the topic :func:`~starload.producing.produce` is given; a generator
    whose star names its topics (``shop``) names each event's.
    """

    key: bytes | None
    value: dict[str, Any] | None
    topic: str | None = None


#: The clock of a seeded stream (see :meth:`Generator.stream`).
SEEDED_NOW = datetime(2026, 1, 1, tzinfo=UTC)


@attrs.frozen
class Generator:
    """A named event generator and the star schema its events load into.

    ``events(rng, **options)`` yields events forever; all randomness must come from
    ``rng`` so that a seed reproduces the stream. ``options`` are generator-specific
    (``starload produce --option name=value``; integers are converted). A generator
    whose events depend on the clock takes it as a ``now`` option.
    """

    name: str
    description: str
    schema: StarSchema
    events: Callable[..., Iterator[Event]]

    def stream(self, seed: int | None = None, **options: Any) -> Iterator[Event]:
        """The generator's events for ``seed`` (a random seed when ``None``).

        A seed reproduces the stream exactly, on any day: a generator that takes a
        ``now`` option and is given none gets :data:`SEEDED_NOW`, not the current time.
        So producing with the same seed twice gives the same events, which load once
        (duplicates), instead of the same ids with new times (conflicts).
        """
        if seed is not None and "now" not in options and "now" in inspect.signature(self.events).parameters:
            options = {**options, "now": SEEDED_NOW}
        return self.events(random.Random(seed), **options)
