"""The SQLite sink passes starload's shared sink behaviour suite: all a sink plugin needs to test."""

from __future__ import annotations

import pytest
from starload_sqlite import SQLiteSink

from starload.testing import SinkBehaviour


class TestSQLiteSink(SinkBehaviour):
    keeps_history = False  # it refuses a history star at prepare

    @pytest.fixture
    def make_sink(self, tmp_path):
        """Each call opens the same database file: what one sink committed, the next one sees."""
        return lambda: SQLiteSink(tmp_path / "star.sqlite")

    def query(self, sink, sql):
        return sink.connection.execute(sql).fetchall()
