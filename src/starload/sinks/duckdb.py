"""The DuckDB sink: the embedded warehouse for local work and tests.

Each batch is registered with DuckDB as Arrow tables and applied with the shared
set-based statements of :mod:`starload.sinks.sql` inside one transaction. A DuckDB
file is opened by one process at a time; ``path=":memory:"`` gives an in-memory
warehouse (what :mod:`starload.testing` uses).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import duckdb

from starload.exceptions import SinkError
from starload.hookspecs import hookimpl
from starload.sinks.base import Sink, SinkType, StagedBatch, WriteResult
from starload.sinks.sql import DUCKDB, StarSQL
from starload.spec import StarSchema


class DuckDBSink(Sink):
    """Loads the star into a DuckDB database file (or ``:memory:``)."""

    def __init__(self, path: str | Path = "starload.duckdb") -> None:
        self.path = str(path)
        self._connection: duckdb.DuckDBPyConnection | None = None
        self._sql: StarSQL | None = None

    @property
    def connection(self) -> duckdb.DuckDBPyConnection:
        """The open connection (opened by :meth:`prepare`)."""
        if self._connection is None:
            msg = "DuckDBSink.prepare(schema) must be called before use"
            raise SinkError(msg)
        return self._connection

    def ddl(self, schema: StarSchema) -> list[str]:
        return StarSQL(schema, DUCKDB).ddl()

    def prepare(self, schema: StarSchema) -> None:
        self._sql = StarSQL(schema, DUCKDB)
        if self._connection is None:
            self._connection = duckdb.connect(self.path)
            self._connection.execute("SET TimeZone = 'UTC'")
        con = self._connection
        con.begin()
        try:
            for statement in self._sql.ddl():
                con.execute(statement)
            con.commit()
        except BaseException:
            con.rollback()
            raise

    def stored_offsets(self, group: str, topic: str) -> dict[int, int]:
        sql = self._require_prepared()
        return dict(self.connection.execute(sql.select_offsets(), [group, topic]).fetchall())

    def write(self, batch: StagedBatch) -> WriteResult:
        sql = self._require_prepared()
        con = self.connection
        staged = {f"_sl_dim_{name}": table for name, table in batch.dimensions.items()}
        staged |= {"_sl_facts": batch.facts, "_sl_rejects": batch.rejects, "_sl_offsets": batch.offsets_table()}
        if batch.dates is not None:
            staged["_sl_dates"] = batch.dates
        for name, table in staged.items():
            con.register(name, table)
        statements = 0
        inserted = updated = 0
        try:
            con.begin()
            for dim in batch.schema.dimensions:
                actions = con.execute(sql.merge_dimension(dim, f"_sl_dim_{dim.name}") + " RETURNING merge_action").fetchall()
                inserted += sum(1 for (a,) in actions if a == "INSERT")
                updated += sum(1 for (a,) in actions if a == "UPDATE")
                statements += 1
            if batch.dates is not None:
                (dates_added,), = con.execute(sql.insert_dates("_sl_dates")).fetchall()
                inserted += dates_added
                statements += 1
            (facts,), = con.execute(sql.insert_facts("_sl_facts")).fetchall()
            con.execute(sql.insert_rejects("_sl_rejects")).fetchall()
            con.execute(sql.merge_offsets("_sl_offsets")).fetchall()
            con.commit()
            statements += 3
        except duckdb.Error as exc:
            con.rollback()
            msg = f"DuckDB sink {self.path!r}: batch not written: {exc}"
            raise SinkError(msg) from exc
        except BaseException:
            con.rollback()
            raise
        finally:
            for name in staged:
                con.unregister(name)
        return WriteResult(
            facts_inserted=facts,
            duplicates=batch.duplicates_in_batch + batch.facts.num_rows - facts,
            rejects=batch.rejects.num_rows,
            dimension_rows_inserted=inserted,
            dimension_rows_updated=updated,
            statements=statements,
        )

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def _require_prepared(self) -> StarSQL:
        if self._sql is None:
            msg = "DuckDBSink.prepare(schema) must be called before use"
            raise SinkError(msg)
        return self._sql


DUCKDB_SINK = SinkType(
    name="duckdb",
    factory=DuckDBSink,
    description="embedded DuckDB database file (default starload.duckdb)",
    options={"path": "database file, or :memory: (CLI: --duckdb-path)"},
)


@hookimpl
def register_sinks(register: Callable[[SinkType], None]) -> None:
    """Built-in plugin: the DuckDB sink."""
    register(DUCKDB_SINK)
