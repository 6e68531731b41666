"""Shared fixtures: the local broker, topics and sinks come from starload.testing (a pytest plugin)."""

from __future__ import annotations

import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator

import orjson
import pytest

from starload.broker import free_port

from starload.generators.orders import ORDERS_GENERATOR


@pytest.fixture
def orders() -> list[dict]:
    """200 reproducible generated orders."""
    stream = ORDERS_GENERATOR.stream(7)
    return [next(stream).value for _ in range(200)]


def encode(order: dict) -> bytes:
    return orjson.dumps(order)


@pytest.fixture(scope="session")
def fakesnow_port() -> Iterator[int]:
    """A local Snowflake endpoint (fakesnow over DuckDB) for the whole session."""
    port = free_port()
    log = tempfile.TemporaryFile()
    proc = subprocess.Popen([sys.executable, "-m", "fakesnow", "-s", "-p", str(port)], stdout=log, stderr=log)
    deadline = time.monotonic() + 60
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                log.seek(0)
                pytest.fail(f"fakesnow did not start: {log.read().decode(errors='replace')[-2000:]}")
            time.sleep(0.1)
    yield port
    proc.terminate()
    proc.wait(10)


@pytest.fixture
def snowflake_settings(fakesnow_port: int) -> dict:
    """Connector settings for a fresh schema on the local endpoint (all connections share one database)."""
    import snowflake.connector

    schema = f"S_{uuid.uuid4().hex[:10].upper()}"
    settings = {
        "account": "fakesnow", "user": "starload", "password": "not-a-real-secret-42",
        "host": "localhost", "port": fakesnow_port, "protocol": "http",
        "database": "E_COMMERCE", "schema": schema,
    }
    with snowflake.connector.connect(**{k: v for k, v in settings.items() if k != "schema"}, network_timeout=10) as con:
        con.cursor().execute("CREATE DATABASE IF NOT EXISTS E_COMMERCE")
        con.cursor().execute(f"CREATE SCHEMA IF NOT EXISTS E_COMMERCE.{schema}")
    return settings


@pytest.fixture
def snowflake_environment(snowflake_settings: dict, monkeypatch: pytest.MonkeyPatch) -> dict:
    """The same settings as ``SNOWFLAKE_*`` environment variables (for the CLI)."""
    names = {"account": "ACCOUNT", "user": "USER", "password": "PASSWORD", "host": "HOST", "port": "PORT",
             "protocol": "PROTOCOL", "database": "DATABASE", "schema": "SCHEMA"}
    env = {f"SNOWFLAKE_{names[k]}": str(v) for k, v in snowflake_settings.items()}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env
