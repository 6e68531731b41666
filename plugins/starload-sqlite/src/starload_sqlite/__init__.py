"""starload-sqlite: an example third-party sink that loads the star into a SQLite file.

Everything a sink plugin needs is in this one module:

* a :class:`~starload.sinks.base.Sink` (``prepare``, ``ddl``, ``stored_offsets``,
  ``write``, ``close``) that applies each staged batch in one transaction, and tells
  starload what the file holds of a star (``inspect``, ``expected_columns``: the drift
  check; this sink does not migrate);
* one ``@hookimpl`` that registers it under a name (``starload load --sink sqlite``);
* and, in ``pyproject.toml``, the ``starload`` entry point that points at this module.

How the contract maps onto SQLite:

* One :meth:`SQLiteSink.write` is one ``BEGIN IMMEDIATE`` … ``COMMIT``. ``IMMEDIATE``
  takes the database's write lock up front, so several loaders writing one file take
  turns (each waits up to ``timeout`` seconds) instead of failing half-way through.
* SQLite cannot read Arrow, so each staged Arrow table is copied into a TEMP table with
  one ``executemany`` (after Arrow has cast decimals, dates and timestamps to text).
  Fine for an example and for thousands of rows per second; a warehouse sink should
  bulk-load instead (the DuckDB sink registers the Arrow tables directly).
* SQLite has neither MERGE nor sequences: a dimension is an ``UPDATE … FROM`` of the
  members already known plus an ``INSERT … WHERE NOT EXISTS`` of the new ones, and the
  surrogate key is an ``INTEGER PRIMARY KEY`` (the rowid), assigned by SQLite.
* Facts are inserted joined to the dimensions on their natural keys: the first row of
  each grain value in Kafka order (``row_number()``), ``WHERE NOT EXISTS`` in the fact
  table (a redelivered message loads once, the first version stays); dates and rejects are
  ``ON CONFLICT DO NOTHING``; offsets are ``ON CONFLICT DO UPDATE`` with ``max()``,
  so they never move backwards. A fenced batch (``batch.expected_offsets``) first
  compares the stored offsets with the expected ones, under the write lock, and raises
  ``OffsetsMovedError`` when they differ.

History (SCD type 2, ``history: true``) is not kept: :meth:`SQLiteSink.prepare` and
``ddl`` refuse such a star with one line, before the file is created.

Types: SQLite has no DECIMAL and no TIMESTAMP. Money is stored as TEXT (``'2500.00'``)
so it stays exact: read it with ``decimal.Decimal(value)`` (``SUM()`` in SQL would go
through floating point). Timestamps are ISO-8601 TEXT in UTC
(``'2024-06-01T12:00:00.000000Z'``), which sorts and compares correctly as text; dates
are ``'YYYY-MM-DD'``; booleans are 0 and 1; doubles are REAL.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import sqlite3
import threading
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from starload import (
    Boolean,
    Dimension,
    Double,
    Integer,
    OffsetsMovedError,
    Sink,
    SinkError,
    SinkType,
    StagedBatch,
    StarSchema,
    TerminalSinkError,
    TransientSinkError,
    WriteResult,
    hookimpl,
)
from starload.drift import Column, WarehouseStar, check, fingerprint, spec_json
from starload.sinks.base import OFFSETS_TABLE, REJECTS_TABLE, STARS_TABLE, natural_key_column
from starload.spec import DATE_ATTRIBUTES, FACT_METADATA, ColumnType, position_column

__version__ = "0.1.0"

#: How every timestamp is stored: ISO-8601 in UTC, microseconds, fixed width.
TIMESTAMP_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"
_ARROW_TIMESTAMP_FORMAT = "%Y-%m-%dT%H:%M:%SZ"  # Arrow's %S includes the fraction
#: Types of the load metadata starload adds to every fact (FACT_METADATA); any other is TEXT.
_METADATA_TYPES = {
    "GRAIN_HASH": "INTEGER NOT NULL",
    "MESSAGE_HASH": "INTEGER",
    "KAFKA_TOPIC": "TEXT NOT NULL",
    "KAFKA_PARTITION": "INTEGER NOT NULL",
    "KAFKA_OFFSET": "INTEGER NOT NULL",
    "LOADED_AT": "TEXT NOT NULL",
}


def quote(identifier: str) -> str:
    """A double-quoted identifier (the spec has already validated it)."""
    return '"' + identifier.replace('"', '""') + '"'


def column_type(spec_type: ColumnType) -> str:
    """Integers and booleans (0, 1) are INTEGER, doubles REAL; strings, money (exact), dates and timestamps (ISO-8601, UTC) are TEXT."""
    if isinstance(spec_type, (Integer, Boolean)):
        return "INTEGER"
    return "REAL" if isinstance(spec_type, Double) else "TEXT"


def refuse_unsupported(schema: StarSchema) -> None:
    """Raise :class:`TerminalSinkError` when ``schema`` keeps history, reads several topics or arrays, has several facts or one that changes: this sink does none of these."""
    changing = [f.table for f in schema.all_facts if f.changing]
    if changing:
        msg = f"the sqlite sink loads insert-only facts; {', '.join(changing)} has changes: latest: load it with --sink duckdb or --sink snowflake"
        raise TerminalSinkError(msg)
    arrays = sorted({".".join(a) for feed in schema.feeds() for a in feed.arrays})
    if arrays:
        msg = f"the sqlite sink loads a row per message; star {schema.name!r} reads the elements of {', '.join(arrays)}: load it with --sink duckdb or --sink snowflake"
        raise TerminalSinkError(msg)
    if schema.several_topics or len(schema.all_facts) > 1:
        msg = (
            f"the sqlite sink loads a star of one topic into one fact; star {schema.name!r} reads "
            f"{len(schema.feeds())} topics into {len(schema.all_facts)} facts: load it with --sink duckdb or --sink snowflake"
        )
        raise TerminalSinkError(msg)
    kept = [f"{d.table}.{f.column}" for d in schema.dimensions for f in d.history_attributes]
    if kept:
        msg = (
            f"the sqlite sink cannot keep history (SCD type 2), which star {schema.name!r} declares for "
            f"{', '.join(kept)}: load it with --sink duckdb or --sink snowflake, or drop 'history: true'"
        )
        raise TerminalSinkError(msg)


def ddl(schema: StarSchema) -> list[str]:
    """CREATE statements for the star, the offsets and the rejects."""
    refuse_unsupported(schema)
    statements = []
    for dim in schema.dimensions:
        columns = [f"{quote(dim.key)} INTEGER PRIMARY KEY"]  # the rowid: SQLite assigns it
        columns += [f"{quote(f.column)} {column_type(f.type)} NOT NULL" for f in dim.natural_key]
        columns += [f"{quote(f.column)} {column_type(f.type)}" for f in dim.attributes]
        columns += [f"{quote(position_column(f.column))} TEXT" for f in dim.attributes]
        columns += ['"LAST_EVENT_AT" TEXT', '"UPDATED_AT" TEXT', _unique(f.column for f in dim.natural_key)]
        statements.append(_create(dim.table, columns))
    if schema.date_dimension:
        dd = schema.date_dimension
        text = {"FULL_DATE", "MONTH_NAME", "DAY_NAME"}
        columns = [f"{quote(dd.key)} INTEGER PRIMARY KEY"]
        columns += [f"{quote(c)} {'TEXT' if c in text else 'INTEGER'}" for c in DATE_ATTRIBUTES]
        statements.append(_create(dd.table, columns))
    fact = schema.all_facts[0]
    columns = [
        f"{quote(f.column)} {column_type(f.type)}{' NOT NULL' if f.required or f in fact.grain else ''}"
        for f in fact.fields
    ]
    columns += [f"{quote(dim.key)} INTEGER NOT NULL" for dim in schema.referenced_dimensions(fact)]
    if schema.date_dimension:
        columns.append(f"{quote(schema.date_dimension.key)} INTEGER NOT NULL")
    columns += [f"{quote(m.column)} {column_type(m.type)}" for m in fact.measures]
    columns += [f"{quote(c)} {_METADATA_TYPES.get(c, 'TEXT')}" for c in FACT_METADATA]
    columns.append(_unique(g.column for g in fact.grain))  # the index the WHERE NOT EXISTS uses
    statements.append(_create(fact.table, columns))
    statements.append(
        _create(
            OFFSETS_TABLE,
            [
                '"GROUP_ID" TEXT NOT NULL, "TOPIC" TEXT NOT NULL, "KAFKA_PARTITION" INTEGER NOT NULL',
                '"NEXT_OFFSET" INTEGER NOT NULL, "UPDATED_AT" TEXT NOT NULL, "TOPIC_ID" TEXT',
                'PRIMARY KEY ("GROUP_ID", "TOPIC", "KAFKA_PARTITION")',
            ],
        )
    )
    statements.append(
        _create(
            REJECTS_TABLE,
            [
                '"KAFKA_TOPIC" TEXT NOT NULL, "KAFKA_PARTITION" INTEGER NOT NULL, "KAFKA_OFFSET" INTEGER NOT NULL',
                '"MESSAGE_KEY" BLOB, "MESSAGE_VALUE" BLOB, "REASON" TEXT NOT NULL, "REJECTED_AT" TEXT NOT NULL',
                'PRIMARY KEY ("KAFKA_TOPIC", "KAFKA_PARTITION", "KAFKA_OFFSET")',
            ],
        )
    )
    statements.append(
        _create(
            STARS_TABLE,
            ['"STAR" TEXT PRIMARY KEY, "FINGERPRINT" TEXT NOT NULL, "SPEC" TEXT NOT NULL', '"STARLOAD_VERSION" TEXT, "RECORDED_AT" TEXT NOT NULL'],
        )
    )
    return statements


def table_columns(con: sqlite3.Connection, tables: Iterable[str]) -> dict[str, dict[str, Column]]:
    """Of ``tables``, those that exist, with their columns (an INTEGER PRIMARY KEY, the rowid, is never NULL)."""
    found = {}
    for table in tables:
        rows = con.execute(f"PRAGMA table_info({quote(table)})").fetchall()
        if rows:
            found[table] = {name: Column(kind, nullable=not (notnull or pk)) for _, name, kind, notnull, _, pk in rows}
    return found


def expected_columns(schema: StarSchema) -> dict[str, dict[str, Column]]:
    """The star's tables as :func:`ddl` makes them: made in an empty in-memory database and read back."""
    con = sqlite3.connect(":memory:")
    try:
        for statement in ddl(schema):
            con.execute(statement)
        return table_columns(con, schema.tables)
    finally:
        con.close()


def _create(table: str, columns: list[str]) -> str:
    return f"CREATE TABLE IF NOT EXISTS {quote(table)} (\n    " + ",\n    ".join(columns) + "\n)"


def _unique(columns: Iterable[str]) -> str:
    return f"UNIQUE ({', '.join(map(quote, columns))})"


# ---- the statements of one batch (each takes one parameter: the load time) ----------


def update_dimension(dim: Dimension, staged: str) -> str:
    """SCD type 1 for members already known: a staged value wins when its event position is later (a NULL has none)."""
    sets = {}
    for f in dim.attributes:
        at = quote(position_column(f.column))
        for column in (quote(f.column), at):
            sets[column] = f"CASE WHEN s.{at} > coalesce(t.{at}, '') THEN s.{column} ELSE t.{column} END"
    sets['"LAST_EVENT_AT"'] = 'coalesce(max(t."LAST_EVENT_AT", s."LAST_EVENT_AT"), s."LAST_EVENT_AT")'
    changed = " OR ".join(f"{value} IS NOT t.{column}" for column, value in sets.items())
    on = " AND ".join(f"t.{quote(f.column)} = s.{quote(f.column)}" for f in dim.natural_key)
    assignments = ", ".join(f"{column} = {value}" for column, value in sets.items())
    return (
        f'UPDATE {quote(dim.table)} AS t SET {assignments}, "UPDATED_AT" = ?\n'
        f"FROM {staged} AS s WHERE {on} AND ({changed})"
    )


def insert_dimension(dim: Dimension, staged: str) -> str:
    """New members, with their values' positions; SQLite assigns their surrogate keys."""
    columns = [f.column for f in dim.columns] + [position_column(f.column) for f in dim.attributes]
    on = " AND ".join(f"t.{quote(f.column)} = s.{quote(f.column)}" for f in dim.natural_key)
    return (
        f'INSERT INTO {quote(dim.table)} ({", ".join(map(quote, columns))}, "LAST_EVENT_AT", "UPDATED_AT")\n'
        f'SELECT {", ".join(f"s.{quote(c)}" for c in columns)}, s."LAST_EVENT_AT", ? FROM {staged} AS s\n'
        f"WHERE NOT EXISTS (SELECT 1 FROM {quote(dim.table)} AS t WHERE {on})"
    )


def insert_dates(schema: StarSchema, staged: str) -> str:
    """Dates the date dimension does not have yet (``WHERE true`` lets SQLite parse ON CONFLICT)."""
    assert schema.date_dimension is not None
    columns = ", ".join(map(quote, [schema.date_dimension.key, *DATE_ATTRIBUTES]))
    return (
        f"INSERT INTO {quote(schema.date_dimension.table)} ({columns}) "
        f"SELECT {columns} FROM {staged} WHERE true ON CONFLICT DO NOTHING"
    )


def insert_facts(schema: StarSchema, staged: str) -> str:
    """Facts with their surrogate keys: the first row of each grain value in Kafka order,
    unless that grain value is loaded already.
    """
    fact = schema.all_facts[0]
    values = [f"s.{quote(f.column)}" for f in fact.fields]
    joins = []
    for i, dim in enumerate(schema.referenced_dimensions(fact)):
        values.append(f"d{i}.{quote(dim.key)}")
        on = " AND ".join(
            f"d{i}.{quote(f.column)} = s.{quote(natural_key_column(dim.table, f.column))}" for f in dim.natural_key
        )
        joins.append(f"JOIN {quote(dim.table)} AS d{i} ON {on}")
    if schema.date_dimension:
        values.append(f"s.{quote(schema.date_dimension.key)}")
    values += [f"s.{quote(m.column)}" for m in fact.measures]
    values += ["?" if c == "LOADED_AT" else f"s.{quote(c)}" for c in FACT_METADATA]  # the rest is staged
    grain = " AND ".join(f"f.{quote(g.column)} = s.{quote(g.column)}" for g in fact.grain)
    first = (
        f"SELECT *, row_number() OVER (PARTITION BY {', '.join(quote(g.column) for g in fact.grain)} "
        f'ORDER BY "KAFKA_PARTITION", "KAFKA_OFFSET") AS "_SL_FIRST" FROM {staged}'
    )
    return (
        f"INSERT INTO {quote(fact.table)} ({', '.join(map(quote, schema.fact_columns(fact)))})\n"
        f"SELECT {', '.join(values)}\nFROM ({first}) AS s\n" + "\n".join(joins) + "\n"
        f'WHERE s."_SL_FIRST" = 1 AND NOT EXISTS (SELECT 1 FROM {quote(fact.table)} AS f WHERE {grain})'
    )


def insert_rejects(staged: str) -> str:
    """Rejected messages, once per topic, partition and offset."""
    columns = '"KAFKA_TOPIC", "KAFKA_PARTITION", "KAFKA_OFFSET", "MESSAGE_KEY", "MESSAGE_VALUE", "REASON"'
    return (
        f'INSERT INTO {quote(REJECTS_TABLE)} ({columns}, "REJECTED_AT") '
        f"SELECT {columns}, ? FROM {staged} WHERE true ON CONFLICT DO NOTHING"
    )


def advance_offsets(staged: str) -> str:
    """Store the next offsets and their topic ID; ``max()`` keeps them from ever moving backwards."""
    return (
        f'INSERT INTO {quote(OFFSETS_TABLE)} ("GROUP_ID", "TOPIC", "KAFKA_PARTITION", "NEXT_OFFSET", "TOPIC_ID", "UPDATED_AT")\n'
        f'SELECT "GROUP_ID", "TOPIC", "KAFKA_PARTITION", "NEXT_OFFSET", "TOPIC_ID", ? FROM {staged} WHERE true\n'
        'ON CONFLICT ("GROUP_ID", "TOPIC", "KAFKA_PARTITION") DO UPDATE SET\n'
        '"NEXT_OFFSET" = max("NEXT_OFFSET", excluded."NEXT_OFFSET"), "UPDATED_AT" = excluded."UPDATED_AT",\n'
        '"TOPIC_ID" = coalesce(excluded."TOPIC_ID", "TOPIC_ID")'
    )


def sqlite_rows(table: pa.Table) -> Iterable[tuple[object, ...]]:
    """The rows of an Arrow table as values sqlite3 can bind (decimals, dates, timestamps as text)."""
    columns = []
    for column in table.columns:
        if pa.types.is_timestamp(column.type):
            column = pc.strftime(column, format=_ARROW_TIMESTAMP_FORMAT)
        elif pa.types.is_decimal(column.type) or pa.types.is_date(column.type):
            column = column.cast(pa.string())
        columns.append(column.to_pylist())
    return zip(*columns, strict=True)


class SQLiteSink(Sink):
    """Loads the star into a SQLite database file.

    ``timeout`` is how long a write waits for another writer's lock, in seconds. The
    engine calls :meth:`stored_offsets` and :meth:`write` from different threads, so
    the one connection is shared under a lock.
    """

    def __init__(self, path: str | Path = "starload.sqlite", timeout: float | str = 30.0) -> None:
        self.path = str(path)
        self.timeout = float(timeout)
        self._connection: sqlite3.Connection | None = None
        self._lock = threading.Lock()

    @property
    def connection(self) -> sqlite3.Connection:
        """The open connection (opened by :meth:`inspect` or :meth:`prepare`)."""
        if self._connection is None:
            msg = "SQLiteSink.prepare(schema) must be called before use"
            raise SinkError(msg)
        return self._connection

    def location(self) -> str:
        return f"SQLite file {self.path!r}"

    def rejects_location(self) -> str:
        return f"table {REJECTS_TABLE} of {self.location()}"

    def ddl(self, schema: StarSchema) -> list[str]:
        return ddl(schema)

    def expected_columns(self, schema: StarSchema) -> dict[str, dict[str, Column]]:
        return expected_columns(schema)

    def inspect(self, schema: StarSchema) -> WarehouseStar:
        """What the file holds of the star; nothing, without creating the file, when there is none."""
        with self._lock:
            if not self._open(create=False):
                return WarehouseStar(None, {})
            return self._inspect(schema)

    def _inspect(self, schema: StarSchema) -> WarehouseStar:
        tables = table_columns(self.connection, [*schema.tables, STARS_TABLE])
        recorded = None
        if tables.pop(STARS_TABLE, None):
            row = self.connection.execute(f'SELECT "SPEC" FROM {quote(STARS_TABLE)} WHERE "STAR" = ?', [schema.name]).fetchone()
            recorded = json.loads(row[0]) if row else None
        return WarehouseStar(recorded, tables)

    def _open(self, *, create: bool) -> bool:
        """Open the connection if it is not open; without ``create``, only when the file exists."""
        if self._connection is None:
            if not create and not os.path.exists(self.path):
                return False
            # isolation_level=None: no implicit transactions; this class says BEGIN and COMMIT.
            self._connection = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None, check_same_thread=False)
            self._use_wal(self._connection)
        return True

    def prepare(self, schema: StarSchema) -> None:
        refuse_unsupported(schema)
        with self._lock:
            self._open(create=True)
            found, expected = self._inspect(schema), expected_columns(schema)
            check(schema, found, expected, sink=self.location())
            new = not any(t in found.tables for t in schema.tables)

            def create(run: Callable[..., int]) -> None:
                for statement in ddl(schema):
                    run(statement)
                columns = [row[1] for row in self.connection.execute(f"PRAGMA table_info({quote(OFFSETS_TABLE)})")]
                if "TOPIC_ID" not in columns:  # made before topic IDs were stored
                    run(f'ALTER TABLE {quote(OFFSETS_TABLE)} ADD COLUMN "TOPIC_ID" TEXT')
                # Under the write lock: another loader may have made the star meanwhile.
                now = self._inspect(schema)
                check(schema, now, expected, sink=self.location(), new=new)
                if new or now.recorded is None:
                    recorded_at = datetime.now(UTC).strftime(TIMESTAMP_FORMAT)
                    row = [schema.name, fingerprint(schema), spec_json(schema), importlib.metadata.version("starload"), recorded_at]
                    run(f"INSERT OR REPLACE INTO {quote(STARS_TABLE)} VALUES (?, ?, ?, ?, ?)", row)

            self._transaction("prepare failed", create)

    @staticmethod
    def _use_wal(con: sqlite3.Connection) -> None:
        """Write-ahead logging, so that readers never block the loader (an optimisation only).

        The mode is stored in the file; switching needs the file to itself, so when another
        connection is busy switching it (or using it), leave it to that one.
        """
        try:
            if con.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                con.execute("PRAGMA journal_mode = WAL")
        except sqlite3.OperationalError:
            pass

    def stored_offsets(self, group: str, topic: str) -> dict[int, int]:
        with self._lock:
            return self._stored(group, topic)

    def _stored(self, group: str, topic: str, column: str = "NEXT_OFFSET") -> dict[int, Any]:
        """Before :meth:`prepare`, none when the file or the offsets table does not exist (nothing is created)."""
        if not self._open(create=False) or not table_columns(self.connection, [OFFSETS_TABLE]):
            return {}
        sql = (
            f'SELECT "KAFKA_PARTITION", {quote(column)} FROM {quote(OFFSETS_TABLE)} '
            f'WHERE "GROUP_ID" = ? AND "TOPIC" = ? AND {quote(column)} IS NOT NULL'
        )
        return dict(self.connection.execute(sql, [group, topic]).fetchall())

    def stored_topic_ids(self, group: str, topic: str) -> dict[int, str]:
        with self._lock:
            return self._stored(group, topic, "TOPIC_ID")

    def reset_offsets(self, group: str, topic: str, offsets: Mapping[int, int], topic_id: str | None) -> None:
        now = datetime.now(UTC).strftime(TIMESTAMP_FORMAT)
        rows = [(group, topic, p, o, topic_id, now) for p, o in offsets.items()]
        sql = (
            f'INSERT OR REPLACE INTO {quote(OFFSETS_TABLE)} ("GROUP_ID", "TOPIC", "KAFKA_PARTITION", '
            '"NEXT_OFFSET", "TOPIC_ID", "UPDATED_AT") VALUES (?, ?, ?, ?, ?, ?)'
        )
        with self._lock:
            self._transaction("offsets not reset", lambda run: run(sql, rows, many=True))

    def write(self, batch: StagedBatch) -> WriteResult:
        schema = batch.schema
        staged = {f"_sl_dim_{name}": table for name, table in batch.dimensions.items()}
        staged |= {"_sl_facts": batch.facts[schema.all_facts[0].table], "_sl_rejects": batch.rejects, "_sl_offsets": batch.offsets_table()}
        if batch.dates is not None:
            staged["_sl_dates"] = batch.dates
        now = [datetime.now(UTC).strftime(TIMESTAMP_FORMAT)]
        counts = {"inserted": 0, "updated": 0, "facts": 0}

        def apply(run: Callable[..., int]) -> None:
            for name, table in staged.items():
                run(f"CREATE TEMP TABLE {quote(name)} ({', '.join(map(quote, table.column_names))})")
                run(
                    f"INSERT INTO {quote(name)} VALUES ({', '.join('?' * table.num_columns)})",
                    sqlite_rows(table),
                    many=True,
                )
            for dim in schema.dimensions:
                counts["updated"] += run(update_dimension(dim, quote(f"_sl_dim_{dim.name}")), now)
                counts["inserted"] += run(insert_dimension(dim, quote(f"_sl_dim_{dim.name}")), now)
            if batch.dates is not None:
                counts["inserted"] += run(insert_dates(schema, '"_sl_dates"'), [])
            counts["facts"] = run(insert_facts(schema, '"_sl_facts"'), now)
            run(insert_rejects('"_sl_rejects"'), now)
            if batch.expected_offsets is not None:
                # The fence (see starload.sinks.base): BEGIN IMMEDIATE holds the write lock already.
                for topic, parts in batch.next_offsets.items():
                    stored = self._stored(batch.group, topic)
                    if {p: stored.get(p) for p in parts} != dict(batch.expected_offsets.get(topic, {})):
                        msg = f"the offsets stored for {topic!r} are not where this loader left them"
                        raise OffsetsMovedError(msg)
            run(advance_offsets('"_sl_offsets"'), now)
            for name in staged:
                run(f"DROP TABLE temp.{quote(name)}")

        with self._lock:
            statements = self._transaction("batch not written", apply)
        return WriteResult(
            facts_inserted=counts["facts"],
            duplicates=batch.messages - counts["facts"] - batch.rejects.num_rows,  # every message is one of three
            rejects=batch.rejects.num_rows,
            dimension_rows_inserted=counts["inserted"],
            dimension_rows_updated=counts["updated"],
            statements=statements,
        )

    def _transaction(self, failure: str, body: Callable[[Callable[..., int]], object]) -> int:
        """Run ``body(run)`` between BEGIN IMMEDIATE and COMMIT; on any error roll back and raise.

        ``run(sql, params, many=False)`` executes one statement and returns its row count;
        the return value is the number of statements run.
        """
        con = self.connection
        statements = 0

        def run(sql: str, params: Iterable[object] = (), *, many: bool = False) -> int:
            nonlocal statements
            statements += 1
            return (con.executemany if many else con.execute)(sql, params).rowcount

        try:
            con.execute("BEGIN IMMEDIATE")
            body(run)
            con.execute("COMMIT")
        except sqlite3.Error as exc:
            if con.in_transaction:
                con.execute("ROLLBACK")
            msg = f"SQLite sink {self.path!r}: {failure} (rolled back): {exc}"
            # Another writer held the lock past `timeout`: the engine retries the batch.
            busy = getattr(exc, "sqlite_errorcode", None) in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
            raise (TransientSinkError if busy else TerminalSinkError)(msg) from exc
        except BaseException:
            if con.in_transaction:
                con.execute("ROLLBACK")
            raise
        return statements

    def close(self) -> None:
        with self._lock:
            if self._connection is not None:
                self._connection.close()
                self._connection = None


SQLITE_SINK = SinkType(
    name="sqlite",
    factory=SQLiteSink,
    description="SQLite database file (example plugin; money as exact TEXT)",
    options={
        "path": "database file (default starload.sqlite)",
        "timeout": "seconds to wait for another writer (default 30)",
    },
)


@hookimpl
def register_sinks(register: Callable[[SinkType], None]) -> None:
    """Make the sink known to starload as ``sqlite``."""
    register(SQLITE_SINK)
