"""The DuckDB sink: the embedded warehouse for local work and tests.

Each batch is registered with DuckDB as Arrow tables (no copy, no row loop) and
applied with the shared set-based plan of :class:`starload.sinks.sql.SQLSink` in
one transaction. Surrogate keys come from sequences (``<TABLE>_SEQ``). A DuckDB file
is opened by one process at a time; ``path=":memory:"`` gives an in-memory warehouse.
A second process opening the same file (another loader) stops at once with a
one-line error naming the process that holds it. ``memory_limit`` caps DuckDB's
buffer cache (default 512MB; ``--sink-option memory_limit=2GB``), which otherwise
grows with the database, up to 80 % of RAM.

``checkpoint_threshold`` is how much write-ahead log DuckDB gathers before it
checkpoints into the file (default here 64MB; DuckDB's own is 16MB). A checkpoint
rewrites the last, partly filled row group (122,880 rows): with batches
of 50,000 rows that happened every two or three batches, and cost about as much as
the inserts. Durability is unchanged: every batch is in the log at COMMIT, and the
log is replayed when the file is opened again.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import duckdb

from starload.exceptions import SinkError, TerminalSinkError
from starload.hookspecs import hookimpl
from starload.sinks.base import SinkType, StagedBatch
from starload.sinks.sql import DUCKDB, SQLSink, batch_parts


class DuckDBSink(SQLSink):
    """Loads the star into a DuckDB database file (or ``:memory:``)."""

    dialect = DUCKDB

    def __init__(
        self, path: str | Path = "starload.duckdb", memory_limit: str = "512MB", checkpoint_threshold: str = "64MB"
    ) -> None:
        super().__init__()
        self.path = str(path)
        self.memory_limit = memory_limit
        self.checkpoint_threshold = checkpoint_threshold
        self._connection: duckdb.DuckDBPyConnection | None = None

    @property
    def connection(self) -> duckdb.DuckDBPyConnection:
        """The open connection (opened by :meth:`prepare`)."""
        if self._connection is None:
            msg = "DuckDBSink.prepare(schema) must be called before use"
            raise SinkError(msg)
        return self._connection

    def close(self) -> None:
        self._disconnect()

    def _disconnect(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.close()

    def _connect(self) -> None:
        if self._connection is None:
            config = {"memory_limit": self.memory_limit, "checkpoint_threshold": self.checkpoint_threshold}
            try:
                self._connection = duckdb.connect(self.path, config=config)
            except duckdb.IOException as exc:
                held = re.search(r"Conflicting lock is held in (.*?) \(PID (\d+)\)", str(exc))
                if held is None:
                    raise
                msg = (
                    f"DuckDB file {self.path!r} is open in another process ({held[1]}, PID {held[2]}): DuckDB allows "
                    f"one writer per file, so loaders cannot share it. Stop that process, or give this loader "
                    f"another --duckdb-path"
                )
                raise TerminalSinkError(msg) from None
            self._connection.execute("SET TimeZone = 'UTC'")

    def _run(self, statement: str, params: Sequence[Any] | None = None) -> list[tuple[Any, ...]]:
        return self.connection.execute(statement, params).fetchall()

    def _rowcount(self, rows: list[tuple[Any, ...]]) -> int:
        return int(rows[0][0]) if rows else 0

    def _stage_batch(self, batch: StagedBatch) -> dict[str, str]:
        """Register each part as a view of its Arrow table (no copy)."""
        staged = {}
        for name, table in batch_parts(batch).items():
            staged[name] = f"_sl_{name.lower()}"
            self.connection.register(staged[name], table)
        return staged

    def _release_batch(self, staged: dict[str, str]) -> None:
        for view in staged.values():
            self.connection.unregister(view)

    def _transaction(self, action: str) -> None:
        self._execute(action.upper())

    def _describe_error(self, exc: BaseException) -> SinkError | None:
        if isinstance(exc, duckdb.Error):
            msg = f"DuckDB sink {self.path!r}: {exc}"
            return TerminalSinkError(msg)
        return None


DUCKDB_SINK = SinkType(
    name="duckdb",
    factory=DuckDBSink,
    description="embedded DuckDB database file (default starload.duckdb)",
    options={
        "path": "database file, or :memory: (CLI: --duckdb-path)",
        "memory_limit": "DuckDB buffer cache cap (default 512MB)",
        "checkpoint_threshold": "write-ahead log gathered before a checkpoint (default 64MB)",
    },
)


@hookimpl
def register_sinks(register: Callable[[SinkType], None]) -> None:
    """Built-in plugin: the DuckDB sink."""
    register(DUCKDB_SINK)
