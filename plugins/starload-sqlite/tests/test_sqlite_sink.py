"""The SQLite sink passes starload's shared sink behaviour suite: all a sink plugin needs to test."""

from __future__ import annotations

import pytest
from starload_sqlite import SQLiteSink

from starload.testing import SinkBehaviour


class TestSQLiteSink(SinkBehaviour):
    # What it does not do, and refuses at prepare (the suite checks the refusal instead):
    keeps_history = False  # a history star (SCD type 2)
    reads_several_topics = False  # a star of several topics
    loads_arrays = False  # a fact per element of an array
    loads_changing_facts = False  # a fact with changes: latest

    @pytest.fixture
    def make_sink(self, tmp_path):
        """Each call opens the same database file: what one sink committed, the next one sees."""
        return lambda: SQLiteSink(tmp_path / "star.sqlite")

    def query(self, sink, sql):
        return sink.connection.execute(sql).fetchall()
