"""Shared fixtures: the local broker, topics and sinks come from starload.testing (a pytest plugin)."""

from __future__ import annotations

from collections.abc import Iterator

import orjson
import pytest

from starload.generators.orders import ORDERS_GENERATOR
from starload.testing import LocalSnowflake
from starload.testing import snowflake_environment as snowflake_environment_for


@pytest.fixture
def orders() -> list[dict]:
    """200 reproducible generated orders."""
    stream = ORDERS_GENERATOR.stream(7)
    return [next(stream).value for _ in range(200)]


def encode(order: dict) -> bytes:
    return orjson.dumps(order)


@pytest.fixture(scope="session")
def local_snowflake() -> Iterator[LocalSnowflake]:
    """A local Snowflake endpoint (fakesnow over DuckDB) for the whole session."""
    with LocalSnowflake() as endpoint:
        yield endpoint


@pytest.fixture
def snowflake_settings(local_snowflake: LocalSnowflake) -> dict:
    """Connector settings for a fresh schema on the local endpoint (all connections share one database)."""
    return local_snowflake.fresh_schema("test")


@pytest.fixture
def snowflake_environment(snowflake_settings: dict, monkeypatch: pytest.MonkeyPatch) -> dict:
    """The same settings as ``SNOWFLAKE_*`` environment variables (for the CLI), set in this process too."""
    env = snowflake_environment_for(snowflake_settings)
    for key, value in env.items():
        if key.startswith("SNOWFLAKE_"):
            monkeypatch.setenv(key, value)
    return {k: v for k, v in env.items() if k.startswith("SNOWFLAKE_")}
