"""What every SQL warehouse sink shares: the statements of a batch and the write itself.

A :class:`Dialect` holds what differs between warehouses (type names, how a
surrogate key gets its value); :class:`StarSQL` builds every statement from the
spec; :class:`SQLSink` runs one batch as one transaction, so the DuckDB and
Snowflake sinks execute the same set-based plan and differ only in how a staged
Arrow table reaches the warehouse, and in how the transaction is sent: DuckDB a
statement at a time, Snowflake in one request (:meth:`SQLSink._apply_batch` makes the
statements for both). Identifiers are validated by the spec and always quoted; values
only ever arrive as staged tables or bound parameters, but for the transaction's own
lock token (:func:`lock_token`, checked against :data:`TOKEN`), which is written into
the text because a multi-statement request binds nothing.

Upserts are an UPDATE … FROM followed by an INSERT of the members not there yet
rather than a MERGE: the same semantics, the counts of updated and inserted rows for free, and
both work inside a transaction on every engine we test with (the local Snowflake
emulator cannot run MERGE inside an explicit transaction).

**Several loaders on one star.** Every write transaction (and the one of
:meth:`SQLSink.prepare` that adds unknown members) starts with an UPDATE of the one
row of ``STARLOAD_LOCK``: on Snowflake an UPDATE holds its table's lock until the
transaction ends, so writers to one star run one after the other, and each statement
sees what the writers before it committed (Snowflake: "Transactions", resource
locking and READ COMMITTED isolation). Nothing relies on INSERTs or UPDATEs that
match no row taking a lock, nor on UNIQUE or PRIMARY KEY (Snowflake enforces
neither). Every write of the batch is guarded by the transaction's own lock token
(:meth:`StarSQL.holding`); the offsets are fenced right after the lock
(:meth:`StarSQL.fence`, which voids the token when they moved) and advanced last (see
:mod:`starload.sinks.base`). The fact insert takes one member per natural key even if
a dimension held two.
"""

from __future__ import annotations

import abc
import contextlib
import json
import logging
import os
import re
import socket
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import attrs
import pyarrow as pa

from starload import drift
from starload.identity import VERSION, quote
from starload.drift import Change, Column, Difference, WarehouseStar
from starload.exceptions import OffsetsMovedError, SinkError, SpecDriftError, TerminalSinkError, TransientSinkError
from starload.sinks.base import (
    ELEMENT_COLUMN,
    LOCK_TABLE,
    OFFSETS_TABLE,
    REJECTS_TABLE,
    STARS_TABLE,
    Sink,
    StagedBatch,
    WriteResult,
    conflict_table,
    natural_key_column,
)
from starload.spec import (
    DATE_ATTRIBUTES,
    DELETES_POSITION,
    TOPIC_DIMENSION_METADATA,
    UNKNOWN_KEY,
    Boolean,
    ColumnType,
    Date,
    Decimal,
    Double,
    Dimension,
    Fact,
    Integer,
    StarSchema,
    String,
    Timestamp,
    position_column,
)


@attrs.frozen
class Dialect:
    """What one warehouse spells differently."""

    name: str
    string: str = "VARCHAR"
    integer: str = "BIGINT"
    small_integer: str = "INTEGER"
    decimal: str = "DECIMAL({p}, {s})"
    timestamp: str = "TIMESTAMPTZ"
    date: str = "DATE"
    boolean: str = "BOOLEAN"
    double: str = "DOUBLE"
    binary: str = "BLOB"
    #: Whether ``String(max_length=n)`` becomes ``VARCHAR(n)`` (else plain VARCHAR).
    sized_strings: bool = False
    #: Whether DDL runs inside a transaction (and rolls back with it).
    transactional_ddl: bool = True
    #: DDL giving a surrogate key column its value, given the quoted sequence name;
    #: ``uses_sequence`` says whether that sequence must be created first.
    key_default: Callable[[str], str] = attrs.field(default=lambda seq: f"DEFAULT nextval('{seq}')")
    uses_sequence: bool = True
    placeholder: str = "?"
    #: The function giving the largest non-NULL argument. Snowflake's ``GREATEST`` returns
    #: NULL when any argument is NULL (``GREATEST_IGNORE_NULLS`` does not); DuckDB's ignores NULLs.
    greatest: str = "greatest"
    #: The window function giving the last non-NULL value of ``{}`` so far (``OVER`` follows).
    last_known: str = "last_value({} IGNORE NULLS)"

    def type_name(self, column_type: ColumnType) -> str:
        """The warehouse type of a spec type."""
        if isinstance(column_type, Decimal):
            return self.decimal.format(p=column_type.precision, s=column_type.scale)
        if isinstance(column_type, Integer):
            return self.integer
        if isinstance(column_type, Timestamp):
            return self.timestamp
        if isinstance(column_type, Double):
            return self.double
        if isinstance(column_type, Boolean):
            return self.boolean
        if isinstance(column_type, Date):
            return self.date
        if isinstance(column_type, String) and column_type.max_length and self.sized_strings:
            return f"{self.string}({column_type.max_length})"
        return self.string


DUCKDB = Dialect(name="duckdb")
log = logging.getLogger(__name__)
T = TypeVar("T")


def _topic_metadata(dim: Dimension) -> tuple[str, ...]:
    """The columns of a dimension with a topic of its own (IS_INFERRED; none otherwise)."""
    return TOPIC_DIMENSION_METADATA if dim.topic is not None else ()


def _unmatched(table: str, on: str, column: str) -> tuple[str, str]:
    """A join and a condition that keep the staged rows ``s`` with no match in ``table`` (alias ``t``).

    An outer join rather than ``NOT EXISTS``: DuckDB builds the hash table of a NOT
    EXISTS on the target table, all of it, every batch; this form lets it build on
    the batch. ``column`` is one of the target columns compared in ``on``: it is never
    NULL in a matched row.
    """
    return f"LEFT JOIN {quote(table)} AS t ON {on}", f"t.{quote(column)} IS NULL"


@attrs.frozen
class ColumnDef:
    """One column of a table the sink creates: its name, its type in the dialect, NOT NULL, and a DEFAULT clause."""

    name: str
    type: str
    not_null: bool = False
    default: str = ""

    def sql(self) -> str:
        return " ".join(filter(None, (quote(self.name), self.type, self.default, "NOT NULL" if self.not_null else "")))


@attrs.frozen
class TableDef:
    """A table the sink creates: its columns, primary key and unique natural key."""

    name: str
    columns: tuple[ColumnDef, ...]
    primary: tuple[str, ...] = ()
    unique: tuple[str, ...] = ()

    def create(self) -> str:
        parts = [c.sql() for c in self.columns]
        parts += [f"PRIMARY KEY ({', '.join(map(quote, self.primary))})"] if self.primary else []
        parts += [f"UNIQUE ({', '.join(map(quote, self.unique))})"] if self.unique else []
        body = ",\n    ".join(parts)
        return f"CREATE TABLE IF NOT EXISTS {quote(self.name)} (\n    {body}\n)"


@attrs.frozen
class Step:
    """One step of a rebuild (:meth:`SQLSink.rebuilding`): what it does, said for a person, and its SQL and parameters."""

    what: str
    sql: str
    params: tuple[Any, ...] = ()


#: What a lock token is made of (:func:`lock_token`): it is written into SQL text, so nothing else may be in it.
TOKEN = re.compile(r"[A-Za-z0-9._:-]{1,200}")
#: Appended to the token by :meth:`StarSQL.fence` when the offsets moved.
MOVED = "/moved"


#: What :meth:`SQLSink._apply_batch` counts: dimension rows updated and inserted, fact rows, rows that each stand
#: for a message (:meth:`StagedBatch.counted_rows`; fact rows too), rows of latest facts updated, the fence's
#: mark (1: the offsets moved) and stored offsets advanced.
COUNTERS = ("updated", "inserted", "facts", "messages", "changed", "moved", "advanced")


def lock_token(holder: str) -> str:
    """A new write transaction's token: the holder (host:pid, other characters as ``_``) and 12 random hex digits."""
    return f"{re.sub(r'[^A-Za-z0-9._:-]', '_', holder)[:180]}:{uuid.uuid4().hex[:12]}"


@attrs.frozen
class StarSQL:
    """Every statement a SQL sink runs for one schema in one dialect, in one transaction (its ``token``, see :meth:`lock`)."""

    schema: StarSchema
    dialect: Dialect
    #: The write transaction's own lock token (:func:`lock_token`); the one value written into SQL text.
    token: str = ""

    # ---- DDL -----------------------------------------------------------------
    def star_tables(self) -> list[TableDef]:
        """The star's own tables (dimensions, date dimension, fact), as :meth:`ddl` creates them."""
        d, s = self.dialect, self.schema
        tables = []
        for dim in s.dimensions:
            optional = s.is_optional(dim)
            natural = [ColumnDef(f.column, d.type_name(f.type), not_null=not optional) for f in dim.natural_key]
            cols = [ColumnDef(dim.key, d.integer, not_null=True, default=d.key_default(quote(dim.sequence))), *natural]
            cols += [ColumnDef(f.column, d.type_name(f.type)) for f in dim.current_attributes]
            cols += [ColumnDef(position_column(f.column), d.string) for f in dim.current_attributes]
            history = [ColumnDef(f.column, d.type_name(f.type)) for f in dim.history_attributes]
            if dim.keeps_history:
                cols += [*history, ColumnDef("VALID_FROM", d.timestamp), ColumnDef("VALID_TO", d.timestamp), ColumnDef("IS_CURRENT", d.boolean)]
            cols += [ColumnDef("LAST_EVENT_AT", d.timestamp), ColumnDef("UPDATED_AT", d.timestamp)]
            cols += [ColumnDef(c, d.boolean) for c in _topic_metadata(dim)]
            # A member holds one row per version, so the natural key is unique only without history.
            unique = () if dim.keeps_history else tuple(f.column for f in dim.natural_key)
            tables.append(TableDef(dim.table, tuple(cols), (dim.key,), unique))
            if dim.keeps_history:
                seen = [ColumnDef("_SL_EVENT_AT", d.timestamp, not_null=True), ColumnDef("_SL_AT", d.string, not_null=True)]
                logged = [attrs.evolve(c, not_null=True) for c in natural]
                tables.append(TableDef(dim.history_table, (*logged, *seen, *history)))
        if s.date_dimension:
            dd = s.date_dimension
            small = {c: d.small_integer for c in ("DAY", "MONTH", "QUARTER", "YEAR", "DAY_OF_WEEK", "WEEK_OF_YEAR")}
            types = small | {"FULL_DATE": d.date, "MONTH_NAME": d.string, "DAY_NAME": d.string, "IS_WEEKEND": d.boolean}
            cols = [ColumnDef(dd.key, d.small_integer, not_null=True)]
            cols += [ColumnDef(c, types[c], not_null=c == "FULL_DATE") for c in DATE_ATTRIBUTES]
            tables.append(TableDef(dd.table, tuple(cols), (dd.key,)))
        for fact in s.all_facts:
            waits = fact.rows_may_wait
            cols = [ColumnDef(f.column, d.type_name(f.type), not_null=f in fact.grain or (f.required and not waits)) for f in fact.fields]
            cols += [ColumnDef(f.column, d.type_name(f.type)) for f in fact.table_fields[len(fact.fields) :]]
            cols += [ColumnDef(dim.key, d.integer, not_null=True) for dim in s.referenced_dimensions(fact)]
            if s.date_dimension:
                cols.append(ColumnDef(s.date_dimension.key, d.small_integer, not_null=not waits))
            cols += [ColumnDef(m.column, d.type_name(m.type)) for m in fact.measures]
            for m in fact.all_milestones:
                cols.append(ColumnDef(m.column, d.timestamp))
                cols += [ColumnDef(m.date_key_column, d.small_integer)] if s.date_dimension else []
            cols += [ColumnDef(f.column, d.type_name(f.type)) for f in fact.deletes]
            cols += [
                ColumnDef("GRAIN_HASH", d.integer, not_null=True),
                ColumnDef("MESSAGE_HASH", d.integer),
                ColumnDef("KAFKA_TOPIC", d.string, not_null=True),
                ColumnDef("KAFKA_PARTITION", d.small_integer, not_null=True),
                ColumnDef("KAFKA_OFFSET", d.integer, not_null=True),
                ColumnDef("LOADED_AT", d.timestamp, not_null=True),
            ]
            cols += [ColumnDef(c, d.string, not_null=not waits) for c in fact.position_columns]
            # No key on the fact: idempotency comes from the outer join in insert_facts,
            # never from a constraint (Snowflake does not enforce them), and a unique
            # index would cost DuckDB about as much as the insert itself.
            tables.append(TableDef(fact.table, tuple(cols)))
        return tables

    def expected_columns(self) -> dict[str, dict[str, Column]]:
        """Per star table, its columns as the warehouse will report them (:meth:`SQLSink.inspect`)."""
        return {t.name: {c.name: Column(c.type, nullable=not c.not_null) for c in t.columns} for t in self.star_tables()}

    def ddl(self) -> list[str]:
        """CREATE statements for sequences, dimensions, dates, fact, offsets, rejects, the lock and the recorded stars."""
        d, s = self.dialect, self.schema
        statements = [self._sequence(dim) for dim in s.dimensions if d.uses_sequence]
        statements += [t.create() for t in self.star_tables()]
        c = ColumnDef
        offsets = (
            c("GROUP_ID", d.string, not_null=True),
            c("TOPIC", d.string, not_null=True),
            c("KAFKA_PARTITION", d.small_integer, not_null=True),
            c("NEXT_OFFSET", d.integer, not_null=True),
            c("UPDATED_AT", d.timestamp, not_null=True),
            c("TOPIC_ID", d.string),
        )
        statements.append(TableDef(OFFSETS_TABLE, offsets, ("GROUP_ID", "TOPIC", "KAFKA_PARTITION")).create())
        # Made by a version before topic IDs were stored: add the column, keep the offsets.
        statements.append(f"ALTER TABLE {quote(OFFSETS_TABLE)} ADD COLUMN IF NOT EXISTS TOPIC_ID {d.string}")
        rejects = (
            c("KAFKA_TOPIC", d.string, not_null=True),
            c("KAFKA_PARTITION", d.small_integer, not_null=True),
            c("KAFKA_OFFSET", d.integer, not_null=True),
            c("MESSAGE_KEY", d.binary),
            c("MESSAGE_VALUE", d.binary),
            c("REASON", d.string, not_null=True),
            c("REJECTED_AT", d.timestamp, not_null=True),
        )
        statements.append(TableDef(REJECTS_TABLE, rejects, ("KAFKA_TOPIC", "KAFKA_PARTITION", "KAFKA_OFFSET")).create())
        # Made with its one row, atomically: an INSERT by each of two loaders preparing at
        # once could add two.
        statements.append(
            f"CREATE TABLE IF NOT EXISTS {quote(LOCK_TABLE)} AS "
            f"SELECT CAST('' AS {d.string}) AS LOCKED_BY, CAST(NULL AS {d.timestamp}) AS LOCKED_AT"
        )
        stars = (
            c("STAR", d.string, not_null=True),
            c("FINGERPRINT", d.string, not_null=True),
            c("SPEC", d.string, not_null=True),
            c("STARLOAD_VERSION", d.string),
            c("RECORDED_AT", d.timestamp, not_null=True),
        )
        statements.append(TableDef(STARS_TABLE, stars, ("STAR",)).create())
        return statements

    def migration(self, change: Change) -> list[str]:
        """The DDL that applies one additive change (:mod:`starload.drift`); idempotent, so a rerun finishes a partial one."""
        table, column = quote(change.table), quote(change.column)
        if change.kind == "create_table":
            [dim] = [d for d in self.schema.dimensions if d.table == change.table]
            [made] = [t for t in self.star_tables() if t.name == change.table]
            return [*([self._sequence(dim)] if self.dialect.uses_sequence else []), made.create()]
        if change.kind == "add_column":
            if change.fill is None:
                add = [f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {column} {change.type}"]
                attributes = {f.column for d in self.schema.dimensions if d.table == change.table for f in d.current_attributes}
                if change.column in attributes:  # and the position of its values
                    add.append(f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {quote(position_column(change.column))} {self.dialect.string}")
                return add
            return [
                f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {column} {change.type} DEFAULT {int(change.fill)}",
                f"ALTER TABLE {table} ALTER COLUMN {column} SET NOT NULL",
            ]
        if change.kind == "widen":
            return [f"ALTER TABLE {table} ALTER COLUMN {column} SET DATA TYPE {change.type}"]
        return []  # "record": only the recorded spec changes

    def select_recorded(self) -> str:
        """The spec recorded for one star (one bound parameter: its name)."""
        return f"SELECT SPEC FROM {quote(STARS_TABLE)} WHERE STAR = {self.dialect.placeholder}"

    def record(self) -> list[str]:
        """Forget the star's recorded spec, then record this one (parameters: the name, then the row)."""
        p = self.dialect.placeholder
        return [
            f"DELETE FROM {quote(STARS_TABLE)} WHERE STAR = {p} AND {self.holding()}",
            f"INSERT INTO {quote(STARS_TABLE)} (STAR, FINGERPRINT, SPEC, STARLOAD_VERSION, RECORDED_AT) "
            f"SELECT {p}, {p}, {p}, {p}, CURRENT_TIMESTAMP WHERE {self.holding()}",
        ]

    @staticmethod
    def _sequence(dim: Dimension) -> str:
        return f"CREATE SEQUENCE IF NOT EXISTS {quote(dim.sequence)} START 1"

    def unknown_members(self) -> list[str]:
        """The INSERTs of each optional dimension's unknown member (run under the lock by :meth:`SQLSink.prepare`)."""
        return [self._unknown_member(dim) for dim in self.schema.dimensions if self.schema.is_optional(dim)]

    def _token(self, suffix: str = "") -> str:
        """The token as an SQL literal (checked against :data:`TOKEN`), with ``suffix`` (:data:`MOVED`) after it."""
        if not TOKEN.fullmatch(self.token):
            msg = f"not a lock token: {self.token!r}"
            raise ValueError(msg)
        return f"'{self.token}{suffix}'"

    def lock(self) -> str:
        """The first statement of every write transaction: it serialises the writers of the star, and sets :attr:`token`."""
        return f"UPDATE {quote(LOCK_TABLE)} SET LOCKED_BY = {self._token()}, LOCKED_AT = CURRENT_TIMESTAMP"

    def holding(self) -> str:
        """A condition true only in the transaction whose :meth:`lock` set :attr:`token`, and that :meth:`fence` let on.

        Every write of a batch carries it. If Snowflake aborts a loader's transaction
        while the loader is frozen (another loader found it stale), the loader's next
        statements run outside it, in autocommit: with this condition they change nothing.
        """
        return f"EXISTS (SELECT 1 FROM {quote(LOCK_TABLE)} WHERE LOCKED_BY = {self._token()})"

    def fence(self, staged: str) -> str:
        """Right after :meth:`lock`: unless every staged partition's stored offset is its EXPECTED_OFFSET, mark the token moved.

        Its row count is 1 when the offsets moved (another loader wrote them): every
        write after it, :meth:`holding` no more, then changes nothing, so the batch
        commits nothing even when its COMMIT is in the same request.
        """
        table, offsets = quote(LOCK_TABLE), quote(OFFSETS_TABLE)
        on = " AND ".join(f"o.{c} = s.{c}" for c in ("GROUP_ID", "TOPIC", "KAFKA_PARTITION"))
        moved = (
            "CASE WHEN s.EXPECTED_OFFSET IS NULL THEN o.GROUP_ID IS NOT NULL "
            "ELSE o.NEXT_OFFSET IS NULL OR o.NEXT_OFFSET <> s.EXPECTED_OFFSET END"
        )
        return (
            f"UPDATE {table} SET LOCKED_BY = {self._token(MOVED)} WHERE LOCKED_BY = {self._token()} "
            f"AND EXISTS (SELECT 1 FROM {staged} AS s LEFT JOIN {offsets} AS o ON {on} WHERE {moved})"
        )

    @staticmethod
    def _unknown_member(dim: Dimension) -> str:
        """The row facts without a natural key point at: key UNKNOWN_KEY, natural key NULL."""
        return (
            f"INSERT INTO {quote(dim.table)} ({quote(dim.key)}) SELECT {UNKNOWN_KEY} "
            f"WHERE NOT EXISTS (SELECT 1 FROM {quote(dim.table)} WHERE {quote(dim.key)} = {UNKNOWN_KEY})"
        )

    # ---- one batch -----------------------------------------------------------
    def update_dimension(self, dim: Dimension, staged: str) -> str:
        """SCD type 1 update of the members in ``staged`` (one row per natural key), by event time.

        Each attribute takes the staged value only when the staged position
        (:func:`~starload.spec.position_column`) is later than the stored one,
        so a late batch never overwrites a newer value, whatever order batches come
        in; a NULL is staged without a position, so it never erases a known value.
        LAST_EVENT_AT keeps the latest event time seen. Only members that change are touched.
        """
        table = quote(dim.table)
        on = self._same_member(dim, table, "s")
        updates = self._current_updates(dim, table)
        changed = " OR ".join(f"({expr}) IS DISTINCT FROM {table}.{col}" for col, expr in updates.items())
        sets = ", ".join(f"{col} = {expr}" for col, expr in updates.items())
        return (
            f"UPDATE {table} SET {sets}, UPDATED_AT = CURRENT_TIMESTAMP FROM {staged} AS s "
            f"WHERE {on} AND ({changed}) AND {self.holding()}"
        )

    def _current_updates(self, dim: Dimension, table: str) -> dict[str, str]:
        """Per column of ``table``: its new value from the staged ``s``, for the type-1 attributes (and their positions) and LAST_EVENT_AT."""
        updates = {}
        for f in dim.current_attributes:
            at = quote(position_column(f.column))
            newer = f"s.{at} > coalesce({table}.{at}, '')"
            for col in (quote(f.column), at):
                updates[col] = f"CASE WHEN {newer} THEN s.{col} ELSE {table}.{col} END"
        updates["LAST_EVENT_AT"] = f"{self.dialect.greatest}({table}.LAST_EVENT_AT, s.LAST_EVENT_AT)"
        for col in _topic_metadata(dim):  # inferred until a record of its own topic is seen
            updates[col] = f"{table}.{col} AND s.{col}"
        return updates

    def insert_dimension(self, dim: Dimension, staged: str) -> str:
        """Insert the members in ``staged`` that are new, with their positions; the key comes from the column default."""
        on = " AND ".join(f"t.{quote(f.column)} = s.{quote(f.column)}" for f in dim.natural_key)
        join, new = _unmatched(dim.table, on, dim.natural_key[0].column)
        attributes = dim.tracked_attributes
        columns = [quote(f.column) for f in (*dim.natural_key, *attributes)] + [quote(position_column(f.column)) for f in attributes]
        columns += list(_topic_metadata(dim))
        return (
            f"INSERT INTO {quote(dim.table)} ({', '.join(columns)}, LAST_EVENT_AT, UPDATED_AT) "
            f"SELECT {', '.join('s.' + c for c in columns)}, s.LAST_EVENT_AT, CURRENT_TIMESTAMP FROM {staged} AS s "
            f"{join} WHERE {new} AND {self.holding()}"
        )

    # ---- history (SCD type 2) ------------------------------------------------
    # A dimension that keeps history logs every observation of its history attributes
    # (history_table); a batch replays, for each member it touches, the log from an
    # anchor on and lands the versions that come out. The anchor keeps the work in
    # proportion to the batch: for an in-order batch it is the batch's own first event,
    # seeded with the current version; for a late one, the start of the version the
    # batch's first event falls in, seeded with the version before it. No WITH clauses
    # and no named windows: each warehouse reads these the same way.
    def _same_member(self, dim: Dimension, a: str, b: str) -> str:
        return " AND ".join(f"{a}.{quote(f.column)} = {b}.{quote(f.column)}" for f in dim.natural_key)

    @staticmethod
    def _lasting(alias: str) -> str:
        """A version row of ``alias`` that a replay has not collapsed (VALID_TO = VALID_FROM marks one to drop)."""
        return f"({alias}.VALID_TO IS NULL OR {alias}.VALID_TO > {alias}.VALID_FROM)"

    def _versions(self, dim: Dimension, anchors: str) -> str:
        """The versions of the members in ``anchors``, replayed from the log.

        ``anchors``: one row per member with its natural key, ``_SL_ANCHOR`` (replay
        the log's events from this instant on; NULL: all of them) and the seed
        (``_SL_FROM``, the VALID_FROM of the version the replay continues, and its
        history values; NULL: none). One row per version comes out: the natural key,
        VALID_FROM, VALID_TO (NULL on the last) and the history values, by
        :class:`~starload.spec.Dimension`'s rules: the state after each instant (every
        event of it, by position, a NULL keeping the value before), a version starting
        where a known value changes.
        """
        nk = [quote(f.column) for f in dim.natural_key]
        hs = [quote(f.column) for f in dim.history_attributes]
        members = ", ".join(nk)
        carried = [f"_sl_k{i}" for i in range(len(hs))]

        def cols(alias: str, names: list[str]) -> str:
            return ", ".join(f"{alias}.{n}" for n in names)

        observed = (
            f"SELECT {cols('l', nk)}, l._SL_EVENT_AT, l._SL_AT, {cols('l', hs)} FROM {quote(dim.history_table)} AS l "
            f"JOIN {anchors} AS a ON {self._same_member(dim, 'l', 'a')} "
            "WHERE a._SL_ANCHOR IS NULL OR l._SL_EVENT_AT >= a._SL_ANCHOR "
            f"UNION ALL SELECT {cols('a', nk)}, a._SL_FROM, '', {cols('a', hs)} FROM {anchors} AS a WHERE a._SL_FROM IS NOT NULL"
        )
        so_far = "ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW"
        known = [
            f"{self.dialect.last_known.format(h)} OVER (PARTITION BY {members} ORDER BY _SL_AT {so_far}) AS {k}"
            for h, k in zip(hs, carried)
        ]
        instants = (
            f"SELECT {members}, _SL_EVENT_AT, {', '.join(known)} FROM ({observed}) AS o "
            f"QUALIFY row_number() OVER (PARTITION BY {members}, _SL_EVENT_AT ORDER BY _SL_AT DESC) = 1"
        )
        before = f"OVER (PARTITION BY {members} ORDER BY _SL_EVENT_AT)"
        changed = " OR ".join(f"{k} <> lag({k}) {before}" for k in carried)
        starts = f"SELECT *, CASE WHEN {changed} THEN 1 ELSE 0 END AS _sl_start FROM ({instants}) AS i"
        numbered = f"SELECT *, sum(_sl_start) OVER (PARTITION BY {members} ORDER BY _SL_EVENT_AT {so_far}) AS _sl_version FROM ({starts}) AS c"
        version = f"PARTITION BY {members}, _sl_version ORDER BY _SL_EVENT_AT"
        whole = "ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING"
        segments = (
            f"SELECT {members}, _SL_EVENT_AT AS VALID_FROM, "
            + ", ".join(f"last_value({k}) OVER ({version} {whole}) AS {h}" for k, h in zip(carried, hs))
            + f" FROM ({numbered}) AS n QUALIFY row_number() OVER ({version}) = 1"
        )
        return f"(SELECT *, lead(VALID_FROM) OVER (PARTITION BY {members} ORDER BY VALID_FROM) AS VALID_TO FROM ({segments}) AS g)"

    def _anchors_before(self, dim: Dimension, staged: str) -> str:
        """Where to replay each staged member from, on the versions as the batch found them.

        In order (the batch's first event after every event loaded): from that event,
        seeded with the current version. Late: from the start of the version in force
        at the batch's first event, seeded with the version before it. A new member, or
        one whose batch starts before its first version: all its log, no seed.
        """
        nk = [quote(f.column) for f in dim.natural_key]
        hs = [quote(f.column) for f in dim.history_attributes]
        table, key = quote(dim.table), quote(dim.key)
        seed = "(d.VALID_TO IS NULL AND d.LAST_EVENT_AT < s.FIRST_EVENT_AT) OR d.VALID_TO < s.FIRST_EVENT_AT"
        return (
            f"(SELECT {', '.join('s.' + c for c in nk)}, d.VALID_FROM AS _SL_FROM, "
            f"CASE WHEN d.{key} IS NULL THEN NULL ELSE coalesce(d.VALID_TO, s.FIRST_EVENT_AT) END AS _SL_ANCHOR, "
            f"{', '.join('d.' + h for h in hs)} FROM {staged} AS s "
            f"LEFT JOIN {table} AS d ON {self._same_member(dim, 'd', 's')} AND ({seed}) "
            f"QUALIFY row_number() OVER (PARTITION BY {', '.join('s.' + c for c in nk)} ORDER BY d.VALID_TO DESC NULLS FIRST) = 1)"
        )

    def _anchors_after(self, dim: Dimension, staged: str) -> str:
        """Where to replay each staged member from once :meth:`update_versions` ran, to find the versions still to insert.

        From the first gap in the member's lasting versions (a VALID_TO at which no
        version starts), seeded with the version that ends there. From the start, with
        no seed, for a member with no lasting row, or whose batch begins before its
        first lasting version. A member with neither is left out.
        """
        nk = [quote(f.column) for f in dim.natural_key]
        hs = [quote(f.column) for f in dim.history_attributes]
        table, key = quote(dim.table), quote(dim.key)
        members = ", ".join("d." + c for c in nk)
        gap = f"CASE WHEN d.VALID_TO IS NOT NULL AND n.{key} IS NULL THEN 1 ELSE 0 END"
        ends = (
            f"SELECT {members}, d.VALID_FROM, d.VALID_TO, {', '.join('d.' + h for h in hs)}, {gap} AS _sl_gap, "
            f"min(d.VALID_FROM) OVER (PARTITION BY {members}) AS _sl_first "
            f"FROM {table} AS d JOIN {staged} AS m ON {self._same_member(dim, 'd', 'm')} "
            f"LEFT JOIN {table} AS n ON {self._same_member(dim, 'n', 'd')} AND n.VALID_FROM = d.VALID_TO AND {self._lasting('n')} "
            f"WHERE {self._lasting('d')} "
            f"QUALIFY row_number() OVER (PARTITION BY {members} ORDER BY {gap} DESC, d.VALID_TO) = 1"
        )
        whole = f"g.{nk[0]} IS NULL OR s.FIRST_EVENT_AT < g._sl_first"
        seed = [f"CASE WHEN {whole} THEN NULL ELSE g.{c} END AS {c}" for c in ("VALID_FROM", "VALID_TO", *hs)]
        seed[0], seed[1] = seed[0].replace(" AS VALID_FROM", " AS _SL_FROM"), seed[1].replace(" AS VALID_TO", " AS _SL_ANCHOR")
        return (
            f"(SELECT {', '.join('s.' + c for c in nk)}, {', '.join(seed)} "
            f"FROM {staged} AS s LEFT JOIN ({ends}) AS g ON {self._same_member(dim, 'g', 's')} "
            f"WHERE {whole} OR g._sl_gap = 1)"
        )

    def insert_observations(self, dim: Dimension, staged: str, *, loaded: bool = True) -> str:
        """Log the staged observations of ``dim``'s history attributes, each event once.

        ``loaded=False`` (:meth:`any_loaded` found none of the batch's facts) logs without looking.
        """
        names = [quote(f.column) for f in (*dim.natural_key,)] + ["_SL_EVENT_AT", "_SL_AT"]
        names += [quote(f.column) for f in dim.history_attributes]
        where = self.holding()
        joins = ""
        if loaded:
            on = f"{self._same_member(dim, 't', 's')} AND t._SL_AT = s._SL_AT"
            joins, new = _unmatched(dim.history_table, on, "_SL_AT")
            where += f" AND {new}"
        return (
            f"INSERT INTO {quote(dim.history_table)} ({', '.join(names)}) "
            f"SELECT {', '.join('s.' + n for n in names)} FROM {staged} AS s {joins} WHERE {where}"
        )

    def late_members(self, dim: Dimension, staged: str) -> str:
        """One row, one value: how many staged members have an event no later than one loaded already (the batch is late for them)."""
        return (
            f"SELECT count(*) FROM {staged} AS s JOIN {quote(dim.table)} AS d ON {self._same_member(dim, 'd', 's')} "
            "WHERE s.FIRST_EVENT_AT <= d.LAST_EVENT_AT"
        )

    def update_versions(self, dim: Dimension, staged: str) -> str:
        """Update every version of the staged members: type-1 attributes and LAST_EVENT_AT by event time, and the replayed versions.

        A replayed version whose VALID_FROM comes out of the replay again takes its
        VALID_TO, IS_CURRENT and values; one that does not is collapsed (VALID_TO =
        VALID_FROM), to be dropped once its facts are re-pointed. VALID_FROM never changes.
        """
        table, key = quote(dim.table), quote(dim.key)
        hs = [quote(f.column) for f in dim.history_attributes]
        current = [quote(c) for f in dim.current_attributes for c in (f.column, position_column(f.column))]
        current += list(_topic_metadata(dim))
        targets = self._versions(dim, self._anchors_before(dim, staged))
        rows = (
            f"(SELECT d.{key} AS _sl_key, {', '.join(['m.' + c for c in current] + ['m.LAST_EVENT_AT'])}, "
            "CASE WHEN a._SL_FROM IS NULL OR d.VALID_FROM >= a._SL_FROM THEN 1 ELSE 0 END AS _sl_replayed, "
            f"t.VALID_FROM AS _sl_from, t.VALID_TO AS _sl_to, {', '.join('t.' + h + ' AS _sl_' + str(i) for i, h in enumerate(hs))} "
            f"FROM {staged} AS m JOIN {table} AS d ON {self._same_member(dim, 'd', 'm')} "
            f"JOIN {self._anchors_before(dim, staged)} AS a ON {self._same_member(dim, 'a', 'm')} "
            f"LEFT JOIN {targets} AS t ON {self._same_member(dim, 't', 'm')} AND t.VALID_FROM = d.VALID_FROM)"
        )
        updates = self._current_updates(dim, table)
        kept = "s._sl_replayed = 0"
        updates["VALID_TO"] = f"CASE WHEN {kept} THEN {table}.VALID_TO WHEN s._sl_from IS NULL THEN {table}.VALID_FROM ELSE s._sl_to END"
        updates["IS_CURRENT"] = f"CASE WHEN {kept} THEN {table}.IS_CURRENT ELSE s._sl_from IS NOT NULL AND s._sl_to IS NULL END"
        for i, h in enumerate(hs):
            updates[h] = f"CASE WHEN {kept} OR s._sl_from IS NULL THEN {table}.{h} ELSE s._sl_{i} END"
        changed = " OR ".join(f"({expr}) IS DISTINCT FROM {table}.{col}" for col, expr in updates.items())
        sets = ", ".join(f"{col} = {expr}" for col, expr in updates.items())
        return (
            f"UPDATE {table} SET {sets}, UPDATED_AT = CURRENT_TIMESTAMP FROM {rows} AS s "
            f"WHERE {table}.{key} = s._sl_key AND ({changed}) AND {self.holding()}"
        )

    def insert_versions(self, dim: Dimension, staged: str) -> str:
        """Insert the versions the replay found that no lasting row holds (run after :meth:`update_versions`).

        Type-1 attributes come from the member's rows when it has any (updated already), else from the batch.
        """
        table, key = quote(dim.table), quote(dim.key)
        nk = [quote(f.column) for f in dim.natural_key]
        hs = [quote(f.column) for f in dim.history_attributes]
        current = [quote(c) for f in dim.current_attributes for c in (f.column, position_column(f.column))] + ["LAST_EVENT_AT"]
        current += list(_topic_metadata(dim))
        some_row = (
            f"(SELECT {', '.join('d.' + c for c in [*nk, *current])} FROM {table} AS d JOIN {staged} AS m "
            f"ON {self._same_member(dim, 'd', 'm')} QUALIFY row_number() OVER (PARTITION BY {', '.join('d.' + c for c in nk)} ORDER BY d.{key}) = 1)"
        )
        targets = self._versions(dim, self._anchors_after(dim, staged))
        selects = [f"t.{c}" for c in nk] + [f"CASE WHEN r.{nk[0]} IS NULL THEN s.{c} ELSE r.{c} END" for c in current]
        selects += [f"t.{h}" for h in hs] + ["t.VALID_FROM", "t.VALID_TO", "t.VALID_TO IS NULL", "CURRENT_TIMESTAMP"]
        columns = [*nk, *current, *hs, "VALID_FROM", "VALID_TO", "IS_CURRENT", "UPDATED_AT"]
        return (
            f"INSERT INTO {table} ({', '.join(columns)}) SELECT {', '.join(selects)} FROM {targets} AS t "
            f"JOIN {staged} AS s ON {self._same_member(dim, 's', 't')} "
            f"LEFT JOIN {some_row} AS r ON {self._same_member(dim, 'r', 't')} "
            f"LEFT JOIN {table} AS e ON {self._same_member(dim, 'e', 't')} AND e.VALID_FROM = t.VALID_FROM AND {self._lasting('e')} "
            f"WHERE e.{key} IS NULL AND {self.holding()}"
        )

    def repoint_facts(self, referring: Fact, dim: Dimension, staged: str) -> str:
        """Point each ``referring`` fact of a staged member from the batch's first event on at the version in force at its event time (after a late batch)."""
        fact, key = quote(referring.table), quote(dim.key)
        at = f"{fact}.{quote(referring.dating.column)}"
        return (
            f"UPDATE {fact} SET {key} = v.{key} FROM {quote(dim.table)} AS o, {quote(dim.table)} AS v, {staged} AS s "
            f"WHERE {fact}.{key} = o.{key} AND {self._same_member(dim, 'o', 's')} AND {at} >= s.FIRST_EVENT_AT "
            f"AND {self._same_member(dim, 'v', 'o')} AND v.VALID_FROM <= {at} AND (v.VALID_TO IS NULL OR {at} < v.VALID_TO) "
            f"AND v.{key} <> {fact}.{key} AND {self.holding()}"
        )

    def drop_collapsed(self, dim: Dimension) -> str:
        """Drop the versions a late batch collapsed (their facts point elsewhere by now)."""
        return f"DELETE FROM {quote(dim.table)} WHERE VALID_TO = VALID_FROM AND {self.holding()}"


    def insert_dates(self, staged: str) -> str:
        """Add the staged dates the date dimension does not have yet."""
        dd = self.schema.date_dimension
        assert dd is not None
        columns = [dd.key, *DATE_ATTRIBUTES]
        join, new = _unmatched(dd.table, f"t.{quote(dd.key)} = s.{quote(dd.key)}", dd.key)
        return (
            f"INSERT INTO {quote(dd.table)} ({', '.join(map(quote, columns))}) "
            f"SELECT {', '.join('s.' + quote(c) for c in columns)} FROM {staged} AS s {join} WHERE {new} AND {self.holding()}"
        )

    def any_loaded(self, fact: Fact, staged: str) -> str:
        """One row, one value: how many fact rows may share a grain value with ``staged`` (a GRAIN_HASH match).

        One integer column is scanned, where a join on the grain scans its strings: at
        a million facts, 10 ms instead of 40. When it is 0, the queries below leave
        the fact table out.
        """
        return f"SELECT count(*) FROM {quote(fact.table)} WHERE GRAIN_HASH IN (SELECT GRAIN_HASH FROM {staged})"

    def _fact_rows(self, fact: Fact, staged: str, elements: str | None = None) -> tuple[list[str], list[str], str, str]:
        """How ``fact``'s staged rows become table rows: (a select per column of :meth:`StarSchema.fact_columns`, the joins, the WHERE, the QUALIFY).

        The rows are the first (of a ``latest`` fact: the latest) of their grain value in
        the batch, with each dimension's surrogate key: the member of the row's natural key
        (of a dimension that keeps history, the version in force at its dating time).
        """
        s = self.schema
        selects = [f"s.{quote(f.column)}" for f in fact.table_fields]
        joins = []
        for i, dim in enumerate(s.referenced_dimensions(fact)):
            alias = f"d{i}"
            on = " AND ".join(
                f"{alias}.{quote(f.column)} = s.{quote(natural_key_column(dim.table, f.column))}" for f in dim.natural_key
            )
            if dim.keeps_history:  # the version in force at the fact's dating time
                at = f"s.{quote(fact.dating.column)}"
                on += f" AND {alias}.VALID_FROM <= {at} AND ({alias}.VALID_TO IS NULL OR {at} < {alias}.VALID_TO)"
            if fact.may_point_at_unknown(dim):
                selects.append(f"coalesce({alias}.{quote(dim.key)}, {UNKNOWN_KEY})")
                joins.append(f"LEFT JOIN {quote(dim.table)} AS {alias} ON {on}")
            else:
                selects.append(f"{alias}.{quote(dim.key)}")
                joins.append(f"JOIN {quote(dim.table)} AS {alias} ON {on}")
        selects += [f"s.{quote(c)}" for c in s.fact_columns(fact)[len(selects) :] if c != "LOADED_AT"]
        selects.insert(s.fact_columns(fact).index("LOADED_AT"), "CURRENT_TIMESTAMP")
        where = "s._SL_RANK = 1"
        if elements is not None:
            where += f" AND s.{ELEMENT_COLUMN} {'=' if elements == 'first' else '>'} 0"
        qualify = ""
        if fact.dimensions:
            # One row per staged fact even if a dimension holds a natural key twice (nothing
            # enforces UNIQUE on Snowflake): the member with the smallest key wins.
            keys = ", ".join(f"d{i}.{quote(dim.key)}" for i, dim in enumerate(s.referenced_dimensions(fact)))
            row = f"s.KAFKA_TOPIC, s.KAFKA_PARTITION, s.KAFKA_OFFSET{f', s.{ELEMENT_COLUMN}' if s.feed_of(fact).array_of(fact) else ''}"
            qualify = f"QUALIFY row_number() OVER (PARTITION BY {row} ORDER BY {keys}) = 1"
        return selects, joins, where, qualify

    def insert_facts(self, fact: Fact, staged: str, *, loaded: bool = True, elements: str | None = None) -> str:
        """Insert staged facts of ``fact`` with their surrogate keys, skipping grain values already loaded.

        ``loaded=False`` (:meth:`any_loaded` found none) inserts without looking.
        ``elements``: of a fact with a row per element of an array, ``"first"`` inserts the
        first element's rows only, ``"rest"`` the others (so the first statement counts messages).
        """
        selects, joins, where, qualify = self._fact_rows(fact, staged, elements)
        where += f" AND {self.holding()}"
        if loaded:
            grain = " AND ".join(f"t.{quote(g.column)} = s.{quote(g.column)}" for g in fact.grain)
            join, new = _unmatched(fact.table, grain, fact.grain[0].column)
            joins.append(join)
            where += f" AND {new}"
        columns = ", ".join(map(quote, self.schema.fact_columns(fact)))
        return (
            f"INSERT INTO {quote(fact.table)} ({columns})\n"
            f"SELECT {', '.join(selects)}\nFROM {staged} AS s\n" + "\n".join(joins) + f"\nWHERE {where}\n{qualify}"
        )

    def update_facts(self, fact: Fact, staged: str) -> str:
        """Of a ``latest`` fact, update the rows of staged grain values that are loaded already, by event position.

        A column takes the staged value when the staged event of the topic that fills it
        (the fact's own, or one of its updates: :meth:`~starload.spec.Fact.owners`) is
        later than the one the row holds (that topic's position column); a milestone takes
        the staged time when it is earlier than the row's (or the row has none); LOADED_AT
        says when the row last changed. Rows that would not change are not touched. Run
        before :meth:`insert_facts`, so it sees only rows loaded before the batch.
        """
        table, columns = quote(fact.table), self.schema.fact_columns(fact)
        selects, joins, where, qualify = self._fact_rows(fact, staged)
        rows = f"(SELECT {', '.join(f'{x} AS {quote(c)}' for x, c in zip(selects, columns))} FROM {staged} AS s {' '.join(joins)} WHERE {where} {qualify})"

        def newer(at: str) -> str:
            later = f"s.{quote(at)} > coalesce({table}.{quote(at)}, '')"
            if at == fact.position_column and fact.deletes:
                # A delete holds no position of its values: a row only ever deleted holds its latest delete's.
                d, own = quote(DELETES_POSITION), quote(at)
                later += f" OR ({table}.{own} IS NULL AND s.{own} IS NULL AND s.{d} > {table}.{d})"
            return f"({later})"

        owners = fact.owners()
        milestone_of = {m.column: m.column for m in fact.all_milestones}
        if self.schema.date_dimension:
            milestone_of |= {m.date_key_column: m.column for m in fact.all_milestones}
        updates = {}
        for c in columns:
            if c in {g.column for g in fact.grain}:
                continue
            if c == "LOADED_AT":
                updates[c] = "CURRENT_TIMESTAMP"
            elif c in milestone_of:
                m = quote(milestone_of[c])
                updates[c] = f"CASE WHEN s.{m} < {table}.{m} OR {table}.{m} IS NULL THEN s.{quote(c)} ELSE {table}.{quote(c)} END"
            else:
                updates[c] = f"CASE WHEN {newer(owners.get(c, fact.position_column))} THEN s.{quote(c)} ELSE {table}.{quote(c)} END"
        earlier = [f"s.{quote(m.column)} < {table}.{quote(m.column)} OR ({table}.{quote(m.column)} IS NULL AND s.{quote(m.column)} IS NOT NULL)" for m in fact.all_milestones]
        changed = " OR ".join([*(newer(at) for at in fact.position_columns), *earlier])
        on = " AND ".join(f"{table}.{quote(g.column)} = s.{quote(g.column)}" for g in fact.grain)
        sets = ", ".join(f"{quote(c)} = {x}" for c, x in updates.items())
        return f"UPDATE {table} SET {sets} FROM {rows} AS s WHERE {on} AND ({changed}) AND {self.holding()}"

    def find_conflicts(self, fact: Fact, staged: str, *, loaded: bool = True) -> str:
        """Staged rows of ``fact`` whose content differs from the first version (see Sink.find_conflicts).

        ``loaded=False`` (:meth:`any_loaded` found none) compares within the batch only.
        """
        if not loaded:
            return (
                "SELECT s.KAFKA_TOPIC, s.KAFKA_PARTITION, s.KAFKA_OFFSET, s.FIRST_PARTITION, s.FIRST_OFFSET "
                f"FROM {staged} AS s WHERE s.MESSAGE_HASH <> s.FIRST_HASH"
            )
        grain = " AND ".join(f"f.{quote(g.column)} = s.{quote(g.column)}" for g in fact.grain)
        return (
            "SELECT s.KAFKA_TOPIC, s.KAFKA_PARTITION, s.KAFKA_OFFSET, coalesce(f.KAFKA_PARTITION, s.FIRST_PARTITION) AS FIRST_PARTITION, "
            "coalesce(f.KAFKA_OFFSET, s.FIRST_OFFSET) AS FIRST_OFFSET "
            f"FROM {staged} AS s LEFT JOIN {quote(fact.table)} AS f ON {grain} "
            "WHERE s.MESSAGE_HASH <> coalesce(f.MESSAGE_HASH, s.FIRST_HASH)"
        )

    def insert_rejects(self, staged: str) -> str:
        """Record staged rejects (once per topic/partition/offset)."""
        cols = ["KAFKA_TOPIC", "KAFKA_PARTITION", "KAFKA_OFFSET", "MESSAGE_KEY", "MESSAGE_VALUE", "REASON"]
        join, new = _unmatched(REJECTS_TABLE, " AND ".join(f"t.{c} = s.{c}" for c in cols[:3]), cols[0])
        return (
            f"INSERT INTO {quote(REJECTS_TABLE)} ({', '.join(cols)}, REJECTED_AT) "
            f"SELECT {', '.join('s.' + c for c in cols)}, CURRENT_TIMESTAMP FROM {staged} AS s {join} WHERE {new} AND {self.holding()}"
        )

    def update_offsets(self, staged: str, *, fenced: bool) -> str:
        """Advance stored offsets to the staged ones, never backwards, with the staged TOPIC_ID when there is one.

        ``fenced``: only where the stored offset is the staged EXPECTED_OFFSET.
        """
        table = quote(OFFSETS_TABLE)
        on = " AND ".join(f"{table}.{c} = s.{c}" for c in ("GROUP_ID", "TOPIC", "KAFKA_PARTITION"))
        if fenced:
            on += f" AND {table}.NEXT_OFFSET = s.EXPECTED_OFFSET"
        return (
            f"UPDATE {table} SET NEXT_OFFSET = {self.dialect.greatest}({table}.NEXT_OFFSET, s.NEXT_OFFSET), "
            f"TOPIC_ID = COALESCE(s.TOPIC_ID, {table}.TOPIC_ID), "
            f"UPDATED_AT = CURRENT_TIMESTAMP FROM {staged} AS s WHERE {on} AND {self.holding()}"
        )

    def insert_offsets(self, staged: str, *, fenced: bool) -> str:
        """Store offsets of partitions seen for the first time (``fenced``: only those expected to have none)."""
        on = " AND ".join(f"t.{c} = s.{c}" for c in ("GROUP_ID", "TOPIC", "KAFKA_PARTITION"))
        join, new = _unmatched(OFFSETS_TABLE, on, "GROUP_ID")
        if fenced:
            new += " AND s.EXPECTED_OFFSET IS NULL"
        return (
            f"INSERT INTO {quote(OFFSETS_TABLE)} (GROUP_ID, TOPIC, KAFKA_PARTITION, NEXT_OFFSET, TOPIC_ID, UPDATED_AT) "
            f"SELECT s.GROUP_ID, s.TOPIC, s.KAFKA_PARTITION, s.NEXT_OFFSET, s.TOPIC_ID, CURRENT_TIMESTAMP FROM {staged} AS s "
            f"{join} WHERE {new} AND {self.holding()}"
        )

    def select_offsets(self) -> str:
        """Stored offsets of one group and topic, with their TOPIC_ID (two bound parameters)."""
        p = self.dialect.placeholder
        return f"SELECT KAFKA_PARTITION, NEXT_OFFSET, TOPIC_ID FROM {quote(OFFSETS_TABLE)} WHERE GROUP_ID = {p} AND TOPIC = {p}"

    def delete_offsets(self, partitions: int) -> str:
        """Forget the stored offsets of ``partitions`` partitions of one group and topic (2 + ``partitions`` parameters)."""
        p = self.dialect.placeholder
        listed = ", ".join([p] * partitions)
        return f"DELETE FROM {quote(OFFSETS_TABLE)} WHERE GROUP_ID = {p} AND TOPIC = {p} AND KAFKA_PARTITION IN ({listed})"

    def invariants(self) -> list[tuple[str, str]]:
        """What :meth:`Sink.violations` checks: per invariant, what breaking it means and a query of one row (how often, an example)."""
        s = self.schema
        checks = []
        for dim in s.dimensions:
            table, key, nk = quote(dim.table), quote(dim.key), [quote(f.column) for f in dim.natural_key]
            members, known = ", ".join(nk), f"{key} <> {UNKNOWN_KEY}"
            if dim.keeps_history:
                following = f"lead(VALID_FROM) OVER (PARTITION BY {members} ORDER BY VALID_FROM)"
                checks.append((
                    f"{dim.table}: versions of a member that overlap, leave a gap or are empty",
                    f"SELECT count(*), min({nk[0]}) FROM (SELECT {members}, VALID_FROM, VALID_TO, {following} AS _sl_next "
                    f"FROM {table} WHERE {known}) AS v WHERE (_sl_next IS NOT NULL AND (VALID_TO IS NULL OR VALID_TO <> _sl_next)) "
                    "OR VALID_FROM IS NULL OR VALID_TO <= VALID_FROM",
                ))
                checks.append((
                    f"{dim.table}: members without exactly one current version (VALID_TO NULL and IS_CURRENT)",
                    f"SELECT count(*), min({nk[0]}) FROM (SELECT {members}, "
                    "sum(CASE WHEN VALID_TO IS NULL THEN 1 ELSE 0 END) AS _sl_open, sum(CASE WHEN IS_CURRENT THEN 1 ELSE 0 END) AS _sl_current, "
                    "sum(CASE WHEN IS_CURRENT <> (VALID_TO IS NULL) THEN 1 ELSE 0 END) AS _sl_mismatched "
                    f"FROM {table} WHERE {known} GROUP BY {members}) AS m WHERE _sl_open <> 1 OR _sl_current <> 1 OR _sl_mismatched > 0",
                ))
            else:
                checks.append((
                    f"{dim.table}: natural keys held by more than one member",
                    f"SELECT count(*), min({nk[0]}) FROM (SELECT {members} FROM {table} WHERE {known} GROUP BY {members} HAVING count(*) > 1) AS m",
                ))
        for f in s.all_facts:
            fact, grain = quote(f.table), [quote(g.column) for g in f.grain]

            def value(alias: str = "", grain: list[str] = grain) -> str:
                """A grain value as examples show it: its columns' texts joined by '/' (ORDER_ID/LINE_NO: B-1001/2)."""
                return f"concat_ws('/', {', '.join(f'CAST({alias}{g} AS VARCHAR)' for g in grain)})"

            for dim in s.referenced_dimensions(f):
                table, key = quote(dim.table), quote(dim.key)
                checks.append((
                    f"{f.table}.{dim.key}: facts whose key is no member of {dim.table}",
                    f"SELECT count(*), min({value('f.')}) FROM {fact} AS f LEFT JOIN {table} AS d ON d.{key} = f.{key} WHERE d.{key} IS NULL",
                ))
                if dim.keeps_history:
                    at = f"f.{quote(f.dating.column)}"
                    checks.append((
                        f"{f.table}.{dim.key}: facts pointing at a version not in force at their {'event' if f.dating is f.event_time else f.dating.column} time",
                        f"SELECT count(*), min({value('f.')}) FROM {fact} AS f JOIN {table} AS d ON d.{key} = f.{key} "
                        f"WHERE d.{key} <> {UNKNOWN_KEY} AND NOT (d.VALID_FROM <= {at} AND (d.VALID_TO IS NULL OR {at} < d.VALID_TO))",
                    ))
            checks.append((
                f"{f.table}: grain values loaded more than once",
                f"SELECT count(*), min({value()}) FROM (SELECT {', '.join(grain)} FROM {fact} GROUP BY {', '.join(grain)} HAVING count(*) > 1) AS g",
            ))
            checks.append((
                f"{f.table}: partitions with facts at or past the offset stored for them (no group's offsets cover them)",
                "SELECT count(*), min(f.KAFKA_TOPIC || '[' || CAST(f.KAFKA_PARTITION AS VARCHAR) || ']') FROM "
                f"(SELECT KAFKA_TOPIC, KAFKA_PARTITION, max(KAFKA_OFFSET) AS LAST_OFFSET FROM {fact} GROUP BY KAFKA_TOPIC, KAFKA_PARTITION) AS f "
                f"LEFT JOIN (SELECT TOPIC, KAFKA_PARTITION, max(NEXT_OFFSET) AS NEXT_OFFSET FROM {quote(OFFSETS_TABLE)} GROUP BY TOPIC, KAFKA_PARTITION) AS o "
                "ON o.TOPIC = f.KAFKA_TOPIC AND o.KAFKA_PARTITION = f.KAFKA_PARTITION WHERE o.NEXT_OFFSET IS NULL OR f.LAST_OFFSET >= o.NEXT_OFFSET",
            ))
        return checks

    def insert_offset_rows(self, rows: int) -> str:
        """Store ``rows`` offsets (GROUP_ID, TOPIC, KAFKA_PARTITION, NEXT_OFFSET, TOPIC_ID: 5 parameters a row)."""
        p = self.dialect.placeholder
        values = ", ".join([f"({p}, {p}, {p}, {p}, {p}, CURRENT_TIMESTAMP)"] * rows)
        return f"INSERT INTO {quote(OFFSETS_TABLE)} (GROUP_ID, TOPIC, KAFKA_PARTITION, NEXT_OFFSET, TOPIC_ID, UPDATED_AT) VALUES {values}"


def batch_parts(batch: StagedBatch) -> dict[str, pa.Table]:
    """Every table of ``batch`` a SQL sink stages, by part name (``DIM_<name>``, ``HISTORY_<name>``, ``DATES``, ``FACT_<table>``, ``REJECTS``, ``OFFSETS``)."""
    parts: dict[str, pa.Table] = {f"DIM_{name}": t for name, t in batch.dimensions.items()}
    parts |= {f"HISTORY_{name}": t for name, t in batch.histories.items()}
    if batch.dates is not None:
        parts["DATES"] = batch.dates
    parts |= {f"FACT_{table}": t for table, t in batch.facts.items()}
    return parts | {"REJECTS": batch.rejects, "OFFSETS": batch.offsets_table()}


class SQLSink(Sink):
    """A sink whose warehouse speaks SQL: :meth:`write` runs the whole plan of :class:`StarSQL`.

    A subclass provides the dialect, a connection, how a staged batch becomes
    relations the statements can read (:meth:`_stage_batch`), and transactions.
    Statements whose input is empty (no rejects, no dates) are not sent, and the
    offsets of partitions seen for the first time are inserted only when the update
    found fewer rows than the batch has partitions.
    """

    dialect: Dialect
    #: Whether a batch first asks whether any of its grain values is loaded already
    #: (:meth:`StarSQL.any_loaded`), so that the fact insert and the conflict lookup can
    #: leave the fact table out when none is. Worth it where a statement is cheap
    #: (embedded DuckDB), not where each costs a round trip and the question scans
    #: as much as the join it would save.
    probes_loaded = True

    def __init__(self) -> None:
        self._sql: StarSQL | None = None
        #: Who writes, as the start of each transaction's token shows it in STARLOAD_LOCK.LOCKED_BY (host:pid).
        self._holder = f"{socket.gethostname()}:{os.getpid()}"
        #: Statements sent since prepare or the last committed write, conflict lookup
        #: included (reported in the WriteResult); reading stored offsets is not counted.
        self._statements = 0
        #: Seconds this sink waited for the star's lock, and held it, since the last write returned (see WriteResult).
        self._lock_waited = 0.0
        self._lock_held = 0.0
        #: Whether prepare() has run (the star's tables exist).
        self._created = False

    def _bind(self, schema: StarSchema) -> StarSQL:
        """The statements for ``schema`` (the star this sink serves from now on)."""
        if self._sql is None or self._sql.schema != schema:
            self._sql = StarSQL(schema, self.dialect)
        return self._sql

    # -- what a subclass provides ------------------------------------------------
    @abc.abstractmethod
    def _connect(self) -> None:
        """Open the connection if it is not open."""

    @abc.abstractmethod
    def _disconnect(self) -> None:
        """Drop the connection (the warehouse rolls back what it left open); :meth:`_connect` opens a new one."""

    @abc.abstractmethod
    def _run(self, statement: str, params: Sequence[Any] | None = None) -> list[tuple[Any, ...]]:
        """Run one statement; its rows (for DML, the engine's row count as its first row)."""

    def _execute(self, statement: str, params: Sequence[Any] | None = None) -> list[tuple[Any, ...]]:
        """Run one statement, counting it."""
        self._statements += 1
        return self._run(statement, params)

    @abc.abstractmethod
    def _rowcount(self, rows: list[tuple[Any, ...]]) -> int:
        """Rows affected by the DML statement that returned ``rows``."""

    @abc.abstractmethod
    def _stage_batch(self, batch: StagedBatch) -> dict[str, str]:
        """Make every part of ``batch`` (:func:`batch_parts`) readable by SQL, outside any transaction.

        Returns each part's SQL relation (a table name or a parenthesised query), to be
        used as ``FROM <relation> AS s``.
        """

    @abc.abstractmethod
    def _release_batch(self, staged: dict[str, str]) -> None:
        """Release what :meth:`_stage_batch` made, when the sink keeps nothing staged between calls."""

    @abc.abstractmethod
    def _transaction(self, action: str) -> None:
        """``action`` is ``"begin"``, ``"commit"`` or ``"rollback"`` (sent through :meth:`_execute`)."""

    @abc.abstractmethod
    def _describe_error(self, exc: BaseException) -> SinkError | None:
        """A :class:`SinkError` (transient or terminal) for a driver error, None for others."""

    @abc.abstractmethod
    def _columns(self, tables: Sequence[str]) -> dict[str, dict[str, Column]]:
        """Of ``tables``, those that exist in the sink's schema, with their columns in table order.

        Types are spelt as :class:`Dialect` spells them (``DECIMAL(12, 2)``, not
        ``NUMERIC``), case and spaces aside, so that :mod:`starload.drift` compares like with like.
        """

    # -- the contract ------------------------------------------------------------
    def ddl(self, schema: StarSchema) -> list[str]:
        sql = StarSQL(schema, self.dialect)
        return sql.ddl() + sql.unknown_members()

    def expected_columns(self, schema: StarSchema) -> dict[str, dict[str, Column]]:
        return StarSQL(schema, self.dialect).expected_columns()

    def rejects_location(self) -> str:
        return f"table {REJECTS_TABLE} of {self.location()}"

    def inspect(self, schema: StarSchema) -> WarehouseStar:
        self._bind(schema)
        sql = self._prepared()  # connected
        tables = self._guarded(self._columns, [*schema.tables, STARS_TABLE])
        recorded = None
        if tables.pop(STARS_TABLE, None) is not None:
            rows = self._guarded(self._run, sql.select_recorded(), [schema.name])
            recorded = json.loads(rows[0][0]) if rows else None
        return WarehouseStar(recorded, tables)

    def prepare(self, schema: StarSchema) -> None:
        sql = self._bind(schema)
        found = self.inspect(schema)
        drift.check(schema, found, sql.expected_columns(), sink=self.location())  # first: a star that differs gets nothing created
        new = not any(t in found.tables for t in schema.tables)
        for statement in sql.ddl():
            self._guarded(self._execute, statement)
        if not drift.recorded_as(schema, found):  # else recorded already, its unknown members with it
            self._locked(lambda: self._settle(schema, new=new))
        self._created = True
        self._forget_counts()

    def _settle(self, schema: StarSchema, *, new: bool) -> None:
        """Under the star's lock: add the unknown members, check the star again, and record its spec when it is new or unrecorded.

        Checked again because another loader may have made the tables, for another
        spec, between the first check and the DDL. ``new``: none of the star's tables
        existed, so a spec recorded for its name belongs to tables dropped since (a
        rebuild), and is replaced.
        """
        self._add_unknown_members()
        found = self.inspect(schema)
        drift.check(schema, found, self._prepared().expected_columns(), sink=self.location(), new=new)
        if new or found.recorded is None:
            self._record(schema)

    def _add_unknown_members(self) -> None:
        """Each optional dimension's unknown member, where it is missing (under the star's lock)."""
        for statement in self._prepared().unknown_members():
            self._guarded(self._execute, statement)

    def _record(self, schema: StarSchema) -> None:
        delete, insert = self._prepared().record()
        self._guarded(self._execute, delete, [schema.name])
        row = [schema.name, drift.fingerprint(schema), drift.spec_json(schema), VERSION.decode()]
        self._guarded(self._execute, insert, row)

    def migration(self, schema: StarSchema) -> tuple[list[Difference], list[str]]:
        sql = self._bind(schema)
        diffs = drift.differences(schema, self.inspect(schema), sql.expected_columns())
        return diffs, [statement for d in diffs if d.change for statement in sql.migration(d.change)]

    def rebuilding(self, schema: StarSchema, topics: Sequence[str], group: str | None = None) -> list[Step]:
        """What :meth:`rebuild` would do to the star as it is in the warehouse: each step says what it drops or forgets."""
        sql = self._bind(schema)
        self._guarded(self._connect)
        p = self.dialect.placeholder
        own = self._guarded(self._columns, [*schema.tables, OFFSETS_TABLE, REJECTS_TABLE, STARS_TABLE])
        steps = []
        listed = ", ".join([p] * len(topics))
        if OFFSETS_TABLE in own and topics:
            where, params = f"TOPIC IN ({listed})", list(topics)
            if group is not None:
                where, params = f"GROUP_ID = {p} AND {where}", [group, *params]
            stored = self._guarded(self._run, f"SELECT GROUP_ID, TOPIC, count(*) FROM {quote(OFFSETS_TABLE)} WHERE {where} GROUP BY 1, 2 ORDER BY 1, 2", params)
            for g, topic, partitions in stored:
                steps.append(Step(f"forget the stored offsets of group {g!r} on topic {topic!r} ({partitions} partitions): it reads the topic from its start again",
                                  f"DELETE FROM {quote(OFFSETS_TABLE)} WHERE GROUP_ID = {p} AND TOPIC = {p}", (g, topic)))  # fmt: skip
        if REJECTS_TABLE in own and topics:
            [(rejects,)] = self._guarded(self._run, f"SELECT count(*) FROM {quote(REJECTS_TABLE)} WHERE KAFKA_TOPIC IN ({listed})", list(topics))
            if rejects:
                steps.append(Step(f"forget the {rejects} rejects of {', '.join(map(repr, topics))} in {REJECTS_TABLE}",
                                  f"DELETE FROM {quote(REJECTS_TABLE)} WHERE KAFKA_TOPIC IN ({listed})", tuple(topics)))  # fmt: skip
        if STARS_TABLE in own and self._guarded(self._run, sql.select_recorded(), [schema.name]):
            steps.append(Step(f"forget the spec recorded for star {schema.name!r}", f"DELETE FROM {quote(STARS_TABLE)} WHERE STAR = {p}", (schema.name,)))
        for table in schema.tables:
            if table in own:
                steps.append(Step(f"drop table {table}", f"DROP TABLE IF EXISTS {quote(table)}"))
        if self.dialect.uses_sequence:
            steps += [Step(f"drop sequence {d.sequence}", f"DROP SEQUENCE IF EXISTS {quote(d.sequence)}") for d in sql.schema.dimensions if d.table in own]
        return steps

    def rebuild(self, schema: StarSchema, topics: Sequence[str], group: str | None = None) -> list[Step]:
        """Run :meth:`rebuilding`'s steps: in one transaction where the warehouse's DDL is transactional, else one by one
        (each is idempotent: run it again after an interruption). The steps run; none when there was no star."""
        steps = self.rebuilding(schema, topics, group)
        transactional = self.dialect.transactional_ddl
        if transactional:
            self._guarded(self._transaction, "begin")
        try:
            for step in steps:
                self._guarded(self._execute, step.sql, list(step.params))
            if transactional:
                self._guarded(self._transaction, "commit")
        except BaseException:
            if transactional:
                with contextlib.suppress(Exception):
                    self._transaction("rollback")
            raise
        self._created = False
        self._forget_counts()
        return steps

    def migrate(self, schema: StarSchema) -> None:
        """Run :meth:`migration`'s statements, then record ``schema``: in one transaction where the warehouse's DDL is transactional.

        Elsewhere (Snowflake: every DDL statement commits) the statements run one by
        one; each is idempotent, so running ``migrate`` again after a failure finishes
        the job. The spec is recorded last, so a loader keeps refusing a half-migrated star.
        """
        diffs, statements = self.migration(schema)
        if any(d.change is None for d in diffs):
            raise SpecDriftError(schema.name, self.location(), diffs)
        if not diffs:
            return

        def finish() -> None:
            if self.dialect.transactional_ddl:
                for statement in statements:
                    self._guarded(self._execute, statement)
            self._add_unknown_members()
            self._record(schema)

        if not self.dialect.transactional_ddl:
            for statement in statements:
                self._guarded(self._execute, statement)
        self._locked(finish)
        self._forget_counts()

    def violations(self, schema: StarSchema) -> list[str]:
        """Each of :meth:`StarSQL.invariants` that some row breaks: what, how often, an example; after the drift check (:meth:`verify`)."""
        found = self.verify(schema)
        sql = self._prepared()
        if not any(t in found.tables for t in schema.tables):
            return [f"{self.location()} holds no table of star {schema.name!r}"]
        found = []
        for what, query in sql.invariants():
            [(count, example)] = self._guarded(self._run, query)
            if int(count):
                found.append(f"{what}: {int(count)} (e.g. {example})")
        return found

    def stored_offsets(self, group: str, topic: str) -> dict[int, int]:
        return {p: o for p, (o, _) in self._stored(group, topic).items()}

    def stored_topic_ids(self, group: str, topic: str) -> dict[int, str]:
        return {p: i for p, (_, i) in self._stored(group, topic).items() if i is not None}

    def _stored(self, group: str, topic: str) -> dict[int, tuple[int, str | None]]:
        """Stored offsets; before :meth:`prepare`, none when the offsets table does not exist (nothing is created)."""
        sql = self._prepared()
        if not self._created and OFFSETS_TABLE not in self._guarded(self._columns, [OFFSETS_TABLE]):
            return {}
        rows = self._guarded(self._run, sql.select_offsets(), [group, topic])
        return {int(p): (int(o), i) for p, o, i in rows}

    def reset_offsets(self, group: str, topic: str, offsets: Mapping[int, int], topic_id: str | None) -> None:
        if not offsets:
            return
        sql = self._prepared()
        parts = sorted(offsets)
        rows = [value for p in parts for value in (group, topic, p, offsets[p], topic_id)]

        def apply() -> None:
            self._guarded(self._execute, sql.delete_offsets(len(parts)), [group, topic, *parts])
            self._guarded(self._execute, sql.insert_offset_rows(len(parts)), rows)

        self._locked(apply)
        self._forget_counts()

    def find_conflicts(self, batch: StagedBatch) -> pa.Table:
        sql = self._prepared()
        staged = self._guarded(self._stage_batch, batch)
        try:
            rows = []
            for fact in batch.schema.all_facts:
                if batch.facts[fact.table].num_rows and not fact.changing:  # a latest fact has no conflicts
                    part = staged[f"FACT_{fact.table}"]
                    loaded = self._any_loaded(fact, part, self._count)
                    rows.append(self._guarded(self._execute, sql.find_conflicts(fact, part, loaded=loaded)))
        finally:
            self._release_batch(staged)
        return conflict_table(*rows)

    def write(self, batch: StagedBatch) -> WriteResult:
        self._prepared()
        staged = self._guarded(self._stage_batch, batch)
        try:
            counts = self._write_batch(batch, staged)
            statements, waited, held = self._statements, self._lock_waited, self._lock_held
            self._forget_counts()
        finally:
            self._release_batch(staged)
        return WriteResult(
            facts_inserted=counts["facts"] + counts["messages"],
            facts_updated=counts["changed"],
            duplicates=batch.counted_rows() - counts["messages"],
            records=batch.records,
            tombstones=batch.tombstones,
            rejects=batch.rejects.num_rows,
            dimension_rows_inserted=counts["inserted"],
            dimension_rows_updated=counts["updated"],
            statements=statements,
            conflicts=batch.conflicts,
            lock_waited=waited,
            lock_held=held,
        )

    def _write_batch(self, batch: StagedBatch, staged: dict[str, str]) -> dict[str, int]:
        """Run the batch's transaction (:meth:`_apply_batch` under the star's lock) a statement at a time; its counts.

        A subclass may send it in fewer requests; the statements and their order are the same.
        """
        counts = dict.fromkeys(COUNTERS, 0)

        def run(counter: str, statement: str) -> None:
            rows = self._guarded(self._execute, statement)
            if counter:
                counts[counter] += self._rowcount(rows)

        def apply() -> None:
            self._apply_batch(batch, staged, run, self._count)
            self._check_offsets(batch, counts)  # before COMMIT: a batch that may not commit is rolled back

        self._locked(apply, batch)
        return counts

    def _apply_batch(
        self, batch: StagedBatch, staged: dict[str, str], run: Callable[[str, str], None], ask: Callable[[str], int] | None
    ) -> None:
        """Every statement of the batch's transaction after the star's lock, in order: ``run(counter, statement)``.

        ``ask(query)`` answers a count inside the transaction, so the statements after it
        see what it saw; ``None``: nothing may be asked (the transaction is sent whole), so
        the statements a question could skip all run. Each is correct either way.
        ``counter``: the :data:`COUNTERS` its row count adds to ("": none).
        """
        sql = self._prepared()
        if batch.partitions and batch.expected_offsets is not None:
            run("moved", sql.fence(staged["OFFSETS"]))
        facts = [f for f in batch.schema.all_facts if batch.facts[f.table].num_rows]
        loaded = {f.table: self._any_loaded(f, staged[f"FACT_{f.table}"], ask) for f in facts}
        for dim in batch.schema.dimensions:
            if not batch.dimensions[dim.name].num_rows:
                continue
            members = staged[f"DIM_{dim.name}"]
            if not dim.keeps_history:
                run("updated", sql.update_dimension(dim, members))
                run("inserted", sql.insert_dimension(dim, members))
                continue
            run("", sql.insert_observations(dim, staged[f"HISTORY_{dim.name}"], loaded=any(loaded.values()) or batch.records > 0 or not facts))
            late = ask is None or ask(sql.late_members(dim, members)) > 0
            run("updated", sql.update_versions(dim, members))
            run("inserted", sql.insert_versions(dim, members))
            if late:  # re-pointing facts, and dropping collapsed versions, change nothing when no member is late
                for fact in batch.schema.all_facts:
                    if dim.name in fact.dimensions:
                        run("", sql.repoint_facts(fact, dim, members))
                run("", sql.drop_collapsed(dim))
        if batch.dates is not None and batch.dates.num_rows:
            run("inserted", sql.insert_dates(staged["DATES"]))
        for fact in facts:
            part, feed = staged[f"FACT_{fact.table}"], batch.schema.feed_of(fact)
            if fact.changing:  # every message is loaded (StagedBatch.counted_rows): its event is folded into its row
                if loaded[fact.table]:
                    run("changed", sql.update_facts(fact, part))
                run("facts", sql.insert_facts(fact, part, loaded=loaded[fact.table]))
            elif feed.counting_fact() is not fact:
                run("facts", sql.insert_facts(fact, part, loaded=loaded[fact.table]))
            elif feed.array_of(fact) is None:
                run("messages", sql.insert_facts(fact, part, loaded=loaded[fact.table]))
            else:
                run("messages", sql.insert_facts(fact, part, loaded=loaded[fact.table], elements="first"))
                run("facts", sql.insert_facts(fact, part, loaded=loaded[fact.table], elements="rest"))
        if batch.rejects.num_rows:
            run("", sql.insert_rejects(staged["REJECTS"]))
        if batch.partitions:
            # Last: with the fence, this also finds a transaction aborted under this loader's feet
            # (its statements then ran outside it, and changed nothing; see StarSQL.holding).
            fenced = batch.expected_offsets is not None
            run("advanced", sql.update_offsets(staged["OFFSETS"], fenced=fenced))
            run("advanced", sql.insert_offsets(staged["OFFSETS"], fenced=fenced))

    @staticmethod
    def _check_offsets(batch: StagedBatch, counts: Mapping[str, int]) -> None:
        """Raise :class:`OffsetsMovedError` when a fenced batch's offsets were not where expected (it wrote nothing then)."""
        if batch.expected_offsets is None or not batch.partitions:
            return
        if counts["moved"] or counts["advanced"] != batch.partitions:
            shown = "; ".join(f"{t!r} {dict(sorted(parts.items()))}" for t, parts in sorted(batch.expected_offsets.items()))
            msg = (
                f"the offsets stored for group {batch.group!r} are not where this loader left them "
                f"(expected {shown}): another loader wrote them, or this loader's transaction was aborted"
            )
            raise OffsetsMovedError(msg)

    def _locked(self, apply: Callable[[], object], batch: StagedBatch | None = None) -> None:
        """Run ``apply`` in one transaction that first takes the star's lock (:meth:`StarSQL.lock`); commit.

        A COMMIT that fails may still have committed (its answer was lost): with
        ``batch``, that is decided by reading the stored offsets (see :meth:`_committed`),
        never assumed either way.
        """
        sql = self._new_token()
        self._guarded(self._transaction, "begin")
        asked = taken = time.monotonic()
        try:
            try:
                locked = self._rowcount(self._guarded(self._execute, sql.lock()))
            finally:
                taken = time.monotonic()
                self._lock_waited += taken - asked
            log.debug("%s: took the star's lock in %.3f s", type(self).__name__, taken - asked)
            self._check_lock(locked)
            apply()
        except BaseException:
            self._rollback_quietly()
            self._lock_held += time.monotonic() - taken
            raise
        try:
            try:
                self._guarded(self._transaction, "commit")
            finally:
                self._lock_held += time.monotonic() - taken
        except SinkError as exc:
            self._rollback_quietly()
            if batch is None:
                raise
            self._resolve_commit(batch, exc)

    def _new_token(self) -> StarSQL:
        """The statements of a new write transaction: with a token of its own (:func:`lock_token`)."""
        self._sql = attrs.evolve(self._prepared(), token=lock_token(self._holder))
        return self._sql

    @staticmethod
    def _check_lock(locked: int) -> None:
        """Raise when the lock statement found no row to lock (writers could not take turns)."""
        if locked < 1:
            msg = (
                f"{LOCK_TABLE} has no row, so writers to this star cannot take turns; restore it: "
                f"INSERT INTO {LOCK_TABLE} (LOCKED_BY) VALUES ('')"
            )
            raise TerminalSinkError(msg)

    def _resolve_commit(self, batch: StagedBatch, exc: SinkError) -> None:
        """After a request holding the COMMIT failed (and a rollback): return when the stored offsets show it committed.

        Else raise: a transient error as one saying the batch is written again; a
        statement the warehouse refused (terminal) as it is, since it would be refused again.
        """
        if self._committed(batch):
            log.warning("%s: COMMIT failed (%s), but the stored offsets show the batch committed", type(self).__name__, exc)
            return
        if isinstance(exc, TerminalSinkError):
            raise exc
        msg = f"COMMIT failed and the stored offsets show the batch did not commit; it is written again: {exc}"
        raise TransientSinkError(msg) from exc

    def _forget_counts(self) -> None:
        """Start the counts a write reports afresh (after a transaction that is not a batch's)."""
        self._statements = 0
        self._lock_waited = self._lock_held = 0.0

    def _committed(self, batch: StagedBatch) -> bool:
        """After a failed COMMIT (and a ROLLBACK, or a new session): whether the stored offsets are the batch's."""
        try:
            stored = {topic: self.stored_offsets(batch.group, topic) for topic in batch.next_offsets}
        except SinkError as exc:
            log.warning("%s: could not read the stored offsets after a failed COMMIT: %s", type(self).__name__, exc)
            return False
        return all(stored[t].get(p) == o for t, parts in batch.next_offsets.items() for p, o in parts.items())

    def _count(self, query: str) -> int:
        """The one value of a query's first row (a count)."""
        [(count, *_), *_] = self._guarded(self._execute, query)
        return int(count)

    def _any_loaded(self, fact: Fact, staged: str, ask: Callable[[str], int] | None) -> bool:
        """Whether ``fact``'s table may hold a grain value of ``staged`` (:meth:`StarSQL.any_loaded`), asked with ``ask``.

        Without :attr:`probes_loaded`, or when nothing may be asked (``ask`` None: a
        transaction sent whole), always True: the statements then check every row.
        """
        if not self.probes_loaded:
            return True
        return ask is None or ask(self._prepared().any_loaded(fact, staged)) > 0

    def _prepared(self) -> StarSQL:
        if self._sql is None:
            msg = f"{type(self).__name__}.prepare(schema) must be called before use"
            raise SinkError(msg)
        self._guarded(self._connect)
        return self._sql

    def _guarded(self, fn: Callable[..., T], *args: Any) -> T:
        """Call ``fn``, turning driver errors into transient or terminal :class:`SinkError`."""
        try:
            return fn(*args)
        except SinkError:
            raise
        except Exception as exc:
            error = self._describe_error(exc)
            if error is None:
                raise
            raise error from exc

    def _rollback_quietly(self) -> None:
        """Roll back after an error; if even that fails, drop the session rather than reuse it half-done.

        A session whose transaction may still be open must not run another statement:
        on Snowflake the next DDL would commit whatever it holds.
        """
        try:
            self._transaction("rollback")
        except Exception:
            log.warning("%s: rollback failed after an error; reconnecting", type(self).__name__, exc_info=True)
            try:
                self._disconnect()
            except Exception:
                log.warning("%s: closing the failed session failed too", type(self).__name__, exc_info=True)
