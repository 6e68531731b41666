"""The shared sink behaviour suite (starload.testing.SinkBehaviour), run on every sink.

Each sink gets a ``Test…Behaviour`` class here that says how to open it and how to
query its warehouse; the tests themselves all come from ``SinkBehaviour``. The example
SQLite plugin is installed into this interpreter on first use (see
``example_plugins`` in test_plugins.py).

The Snowflake sink runs against the local Snowflake endpoint (fakesnow; the
``snowflake_settings`` fixture of conftest.py gives each test a fresh schema), and also
against a real account when ``STARLOAD_SNOWFLAKE_TEST_CONNECTION`` names a connection of
``connections.toml`` (else those runs are skipped, with that reason). It is read
through a second connection, which sees only what the sink committed.
"""

from __future__ import annotations

import sys
from typing import Any

import pytest
from conftest import snowflake_reader
from test_plugins import example_plugins  # noqa: F401 - the session fixture that installs the example plugins

from starload import plugins
from starload.testing import SinkBehaviour


class TestDuckDBBehaviour(SinkBehaviour):
    sink_name = "duckdb"

    @pytest.fixture
    def make_sink(self, tmp_path):
        sink_type = plugins.get_sink_type("duckdb")
        return lambda: sink_type.create(path=str(tmp_path / "star.duckdb"))

    def query(self, sink: Any, sql: str) -> list[tuple]:
        return sink.connection.execute(sql).fetchall()


class TestSQLiteBehaviour(SinkBehaviour):
    sink_name = "sqlite"
    keeps_history = False  # it refuses a history star at prepare
    reads_several_topics = False  # it refuses a star of several topics at prepare
    loads_arrays = False  # it refuses a star that reads arrays at prepare
    loads_changing_facts = False  # it refuses a fact with changes: latest at prepare

    @pytest.fixture
    def make_sink(self, tmp_path, example_plugins):  # noqa: F811
        sink_type = plugins.get_sink_type("sqlite")  # found through its entry point
        return lambda: sink_type.create(path=str(tmp_path / "star.sqlite"))

    def query(self, sink: Any, sql: str) -> list[tuple]:
        return sink.connection.execute(sql).fetchall()


class TestSnowflakeBehaviour(SinkBehaviour):
    """On the local endpoint, and on a real account when STARLOAD_SNOWFLAKE_TEST_CONNECTION names one."""

    sink_name = "snowflake"

    @pytest.fixture
    def make_sink(self, warehouse):
        sink_type = plugins.get_sink_type("snowflake")
        self.reader = snowflake_reader(warehouse)
        yield lambda: sink_type.create(**warehouse)
        self.reader.close()

    @pytest.fixture(params=[7, 10_000], ids=lambda n: f"batch{n}")
    def batch_size(self, request):
        """Fewer, larger batches than the default: each write is a dozen round trips to the endpoint."""
        return request.param

    def query(self, sink: Any, sql: str) -> list[tuple]:
        return self.reader.cursor().execute(sql).fetchall()


def test_every_registered_sink_runs_the_suite(example_plugins):  # noqa: F811
    ours = {r.name for r in plugins.registrations() if r.kind == "sink" and r.distribution.startswith("starload")}
    suites = [
        cls for cls in vars(sys.modules[__name__]).values() if isinstance(cls, type) and issubclass(cls, SinkBehaviour)
    ]
    assert ours <= {getattr(cls, "sink_name", None) for cls in suites}
