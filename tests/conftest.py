"""Shared fixtures: the local broker, topics and sinks come from starload.testing (a pytest plugin)."""

from __future__ import annotations

import orjson
import pytest

from starload.generators.orders import ORDERS_GENERATOR


@pytest.fixture
def orders() -> list[dict]:
    """200 reproducible generated orders."""
    stream = ORDERS_GENERATOR.stream(7)
    return [next(stream).value for _ in range(200)]


def encode(order: dict) -> bytes:
    return orjson.dumps(order)
