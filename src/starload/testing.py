"""Test helpers for starload and its plugin authors (a pytest plugin, loaded automatically).

Fixtures:

* ``local_broker`` (session): a running :class:`~starload.broker.LocalBroker`.
* ``topic``: a fresh topic name with 1 partition on ``local_broker``.
* ``memory_sink``: a prepared-on-use in-memory :class:`~starload.sinks.duckdb.DuckDBSink`.

Helpers: :func:`load_until_idle` runs a :class:`~starload.engine.StarLoader` until
the topic is drained, with settings that are fast on the local broker.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from starload.broker import LocalBroker
from starload.engine import LoadStats, StarLoader
from starload.kafka import ensure_topic
from starload.sinks.base import Sink
from starload.sinks.duckdb import DuckDBSink
from starload.spec import StarSchema


@pytest.fixture(scope="session")
def local_broker() -> Iterator[LocalBroker]:
    """A local Tansu broker for the whole test session."""
    with LocalBroker() as broker:
        yield broker


@pytest.fixture
def topic(local_broker: LocalBroker) -> str:
    """A new, empty, single-partition topic."""
    name = f"t-{uuid.uuid4().hex[:12]}"
    ensure_topic(local_broker.bootstrap_servers, name, partitions=1)
    return name


@pytest.fixture
def memory_sink() -> Iterator[DuckDBSink]:
    """An in-memory DuckDB sink."""
    sink = DuckDBSink(":memory:")
    yield sink
    sink.close()


def load_until_idle(
    schema: StarSchema,
    sink: Sink,
    broker: LocalBroker,
    topic: str,
    *,
    group: str = "test",
    idle: float = 1.5,
    **options: Any,
) -> LoadStats:
    """Load ``topic`` into ``sink`` until it has been idle for ``idle`` seconds."""
    loader = StarLoader(schema, sink, bootstrap_servers=broker.bootstrap_servers, topic=topic, group=group, **options)
    return loader.run(until_idle=idle)
