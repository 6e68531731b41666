"""Shared fixtures: the local broker, topics and sinks come from starload.testing (a pytest plugin)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from starload.generators.orders import ORDERS_GENERATOR
from starload.testing import LocalSchemaRegistry, LocalSnowflake, RemoteSchemaRegistry
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


#: A real Confluent-compatible Schema Registry to run the registry and format tests against too (opt-in).
REGISTRY_URL = os.environ.get("STARLOAD_SCHEMA_REGISTRY_TEST_URL", "").strip()


@pytest.fixture(scope="session")
def local_schema_registry() -> Iterator[LocalSchemaRegistry | RemoteSchemaRegistry]:
    """A local Schema Registry (Confluent's API, in memory) for the whole session: give each test its own subjects.

    With ``STARLOAD_SCHEMA_REGISTRY_TEST_URL`` set, the real registry there instead (tests
    that inject faults or count requests are skipped on it).
    """
    if REGISTRY_URL:
        yield RemoteSchemaRegistry(REGISTRY_URL)
        return
    with LocalSchemaRegistry() as registry:
        yield registry


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


#: A connection of connections.toml naming a real Snowflake account to test on too (opt-in).
LIVE_CONNECTION = os.environ.get("STARLOAD_SNOWFLAKE_TEST_CONNECTION", "").strip()
live = pytest.mark.skipif(
    not LIVE_CONNECTION,
    reason="STARLOAD_SNOWFLAKE_TEST_CONNECTION is not set (name a connection of connections.toml to run this on a real account)",
)


@pytest.fixture
def live_settings() -> Iterator[dict[str, Any]]:
    """Sink settings for a new schema on the account of STARLOAD_SNOWFLAKE_TEST_CONNECTION; dropped afterwards."""
    import snowflake.connector

    schema = f"STARLOAD_TEST_{uuid.uuid4().hex[:8].upper()}"
    with snowflake.connector.connect(connection_name=LIVE_CONNECTION) as con:
        con.cursor().execute(f'CREATE SCHEMA "{schema}"')
        try:
            yield {"connection_name": LIVE_CONNECTION, "schema": schema}
        finally:
            con.cursor().execute(f'DROP SCHEMA IF EXISTS "{schema}"')


@pytest.fixture(params=["local", pytest.param("live", marks=live)])
def warehouse(request: pytest.FixtureRequest) -> dict[str, Any]:
    """Snowflake sink settings: a fresh schema on the local endpoint, and (opt-in) one on a real account."""
    return request.getfixturevalue("snowflake_settings" if request.param == "local" else "live_settings")


def snowflake_reader(settings: dict[str, Any]) -> Any:
    """A second connection to the warehouse a Snowflake sink writes to: it sees only what was committed."""
    import snowflake.connector

    return snowflake.connector.connect(**settings, session_parameters={"TIMEZONE": "UTC"}, network_timeout=60)
