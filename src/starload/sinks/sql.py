"""SQL that every SQL warehouse sink shares: DDL, dimension MERGE, fact insert, offsets.

A :class:`Dialect` holds what differs between warehouses (type names, how to draw
the next surrogate key, how a table of staged rows is named); :class:`StarSQL`
builds every statement of a batch from the spec, so the DuckDB and Snowflake sinks
run the same set-based plan. Identifiers are validated by the spec and always
quoted; values only ever arrive as staged tables or bound parameters.
"""

from __future__ import annotations

from collections.abc import Callable

import attrs

from starload.mapping import natural_key_column, quote
from starload.sinks.base import OFFSETS_TABLE, REJECTS_TABLE
from starload.spec import DATE_ATTRIBUTES, ColumnType, Decimal, Dimension, Integer, StarSchema, String, Timestamp


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
    binary: str = "BLOB"
    #: Expression drawing the next value of a sequence, given the quoted sequence name.
    next_value: Callable[[str], str] = attrs.field(default=lambda seq: f"nextval('{seq}')")
    #: Whether DDL may declare ``DEFAULT <next value>`` for a surrogate key.
    sequence_default: bool = True
    #: Whether PRIMARY KEY / UNIQUE are declared (and enforced) by the warehouse.
    declare_keys: bool = True
    placeholder: str = "?"

    def type_name(self, column_type: ColumnType) -> str:
        """The warehouse type of a spec type."""
        if isinstance(column_type, Decimal):
            return self.decimal.format(p=column_type.precision, s=column_type.scale)
        if isinstance(column_type, Integer):
            return self.integer
        if isinstance(column_type, Timestamp):
            return self.timestamp
        if isinstance(column_type, String) and column_type.max_length and self.string != "VARCHAR":
            return f"{self.string}({column_type.max_length})"
        return self.string


DUCKDB = Dialect(name="duckdb")


def _col(name: str, type_name: str, *, not_null: bool = False) -> str:
    return f"{quote(name)} {type_name}{' NOT NULL' if not_null else ''}"


@attrs.frozen
class StarSQL:
    """Every statement a SQL sink runs for one schema in one dialect."""

    schema: StarSchema
    dialect: Dialect

    # ---- DDL -----------------------------------------------------------------
    def ddl(self) -> list[str]:
        """CREATE statements for sequences, dimensions, dates, fact, offsets and rejects."""
        d, s = self.dialect, self.schema
        statements = []
        for dim in s.dimensions:
            statements.append(f"CREATE SEQUENCE IF NOT EXISTS {quote(dim.sequence)} START 1")
            key_default = f" DEFAULT {d.next_value(quote(dim.sequence))}" if d.sequence_default else ""
            cols = [f"{quote(dim.key)} {d.integer} NOT NULL{key_default}"]
            cols += [_col(f.column, d.type_name(f.type), not_null=True) for f in dim.natural_key]
            cols += [_col(f.column, d.type_name(f.type)) for f in dim.attributes]
            cols += [_col("LAST_EVENT_AT", d.timestamp), _col("UPDATED_AT", d.timestamp)]
            cols += self._keys([dim.key], [f.column for f in dim.natural_key])
            statements.append(self._create(dim.table, cols))
        if s.date_dimension:
            dd = s.date_dimension
            cols = [
                _col(dd.key, d.small_integer, not_null=True),
                _col("FULL_DATE", d.date, not_null=True),
                *(_col(c, d.small_integer) for c in ("DAY", "MONTH")),
                _col("MONTH_NAME", d.string),
                *(_col(c, d.small_integer) for c in ("QUARTER", "YEAR", "DAY_OF_WEEK")),
                _col("DAY_NAME", d.string),
                _col("WEEK_OF_YEAR", d.small_integer),
                _col("IS_WEEKEND", d.boolean),
                *self._keys([dd.key]),
            ]
            statements.append(self._create(dd.table, cols))
        fact = s.fact
        cols = [_col(f.column, d.type_name(f.type), not_null=f.required or f in fact.grain) for f in fact.fields]
        cols += [_col(dim.key, d.integer, not_null=True) for dim in s.referenced_dimensions]
        if s.date_dimension:
            cols.append(_col(s.date_dimension.key, d.small_integer, not_null=True))
        cols += [_col(m.column, d.type_name(m.type)) for m in fact.measures]
        cols += [
            _col("KAFKA_TOPIC", d.string, not_null=True),
            _col("KAFKA_PARTITION", d.small_integer, not_null=True),
            _col("KAFKA_OFFSET", d.integer, not_null=True),
            _col("LOADED_AT", d.timestamp, not_null=True),
        ]
        # No key on the fact: idempotency comes from the NOT EXISTS in insert_facts,
        # never from a constraint (Snowflake does not enforce them), and a unique
        # index would cost DuckDB about as much as the insert itself.
        statements.append(self._create(fact.table, cols))
        statements.append(
            self._create(
                OFFSETS_TABLE,
                [
                    _col("GROUP_ID", d.string, not_null=True),
                    _col("TOPIC", d.string, not_null=True),
                    _col("KAFKA_PARTITION", d.small_integer, not_null=True),
                    _col("NEXT_OFFSET", d.integer, not_null=True),
                    _col("UPDATED_AT", d.timestamp, not_null=True),
                    *self._keys(["GROUP_ID", "TOPIC", "KAFKA_PARTITION"]),
                ],
            )
        )
        statements.append(
            self._create(
                REJECTS_TABLE,
                [
                    _col("KAFKA_TOPIC", d.string, not_null=True),
                    _col("KAFKA_PARTITION", d.small_integer, not_null=True),
                    _col("KAFKA_OFFSET", d.integer, not_null=True),
                    _col("MESSAGE_KEY", d.binary),
                    _col("MESSAGE_VALUE", d.binary),
                    _col("REASON", d.string, not_null=True),
                    _col("REJECTED_AT", d.timestamp, not_null=True),
                    *self._keys(["KAFKA_TOPIC", "KAFKA_PARTITION", "KAFKA_OFFSET"]),
                ],
            )
        )
        return statements

    def _keys(self, primary: list[str], unique: list[str] | None = None) -> list[str]:
        if not self.dialect.declare_keys:
            return []
        found = [f"PRIMARY KEY ({', '.join(map(quote, primary))})"]
        if unique:
            found.append(f"UNIQUE ({', '.join(map(quote, unique))})")
        return found

    @staticmethod
    def _create(table: str, columns: list[str]) -> str:
        body = ",\n    ".join(columns)
        return f"CREATE TABLE IF NOT EXISTS {quote(table)} (\n    {body}\n)"

    # ---- one batch -----------------------------------------------------------
    def merge_dimension(self, dim: Dimension, staged: str) -> str:
        """Upsert staged dimension rows (one per natural key): SCD type 1.

        The staged row is newer than the stored one (batches arrive in Kafka order),
        so each attribute takes the staged value, except that a NULL never erases a
        known value. LAST_EVENT_AT keeps the latest event time seen.
        """
        on = " AND ".join(f"t.{quote(f.column)} = s.{quote(f.column)}" for f in dim.natural_key)
        updates = {quote(f.column): f"coalesce(s.{quote(f.column)}, t.{quote(f.column)})" for f in dim.attributes}
        updates["LAST_EVENT_AT"] = "greatest(t.LAST_EVENT_AT, s.LAST_EVENT_AT)"
        changed = " OR ".join(f"({expr}) IS DISTINCT FROM t.{col}" for col, expr in updates.items())
        sets = ", ".join(f"{col} = {expr}" for col, expr in updates.items())
        columns = [f.column for f in dim.columns]
        insert_cols = ", ".join(map(quote, [dim.key, *columns, "LAST_EVENT_AT", "UPDATED_AT"]))
        insert_vals = ", ".join(
            [self.dialect.next_value(quote(dim.sequence)), *(f"s.{quote(c)}" for c in columns), "s.LAST_EVENT_AT", "CURRENT_TIMESTAMP"]
        )
        return (
            f"MERGE INTO {quote(dim.table)} AS t USING {staged} AS s ON {on}\n"
            f"WHEN MATCHED AND ({changed}) THEN UPDATE SET {sets}, UPDATED_AT = CURRENT_TIMESTAMP\n"
            f"WHEN NOT MATCHED THEN INSERT ({insert_cols}) VALUES ({insert_vals})"
        )

    def insert_dates(self, staged: str) -> str:
        """Add the staged dates the date dimension does not have yet."""
        dd = self.schema.date_dimension
        assert dd is not None
        cols = ", ".join(map(quote, [dd.key, *DATE_ATTRIBUTES]))
        return (
            f"INSERT INTO {quote(dd.table)} ({cols}) SELECT {cols} FROM {staged} AS s "
            f"WHERE NOT EXISTS (SELECT 1 FROM {quote(dd.table)} AS t WHERE t.{quote(dd.key)} = s.{quote(dd.key)})"
        )

    def insert_facts(self, staged: str) -> str:
        """Insert staged facts with their surrogate keys, skipping grain values already loaded."""
        s = self.schema
        fact = s.fact
        selects = [f"s.{quote(f.column)}" for f in fact.fields]
        joins = []
        for i, dim in enumerate(s.referenced_dimensions):
            alias = f"d{i}"
            selects.append(f"{alias}.{quote(dim.key)}")
            on = " AND ".join(
                f"{alias}.{quote(f.column)} = s.{quote(natural_key_column(dim.table, f.column))}" for f in dim.natural_key
            )
            joins.append(f"JOIN {quote(dim.table)} AS {alias} ON {on}")
        if s.date_dimension:
            selects.append(f"s.{quote(s.date_dimension.key)}")
        selects += [f"s.{quote(m.column)}" for m in fact.measures]
        selects += ["s.KAFKA_TOPIC", "s.KAFKA_PARTITION", "s.KAFKA_OFFSET", "CURRENT_TIMESTAMP"]
        grain = " AND ".join(f"f.{quote(g.column)} = s.{quote(g.column)}" for g in fact.grain)
        columns = ", ".join(map(quote, s.fact_columns()))
        return (
            f"INSERT INTO {quote(fact.table)} ({columns})\n"
            f"SELECT {', '.join(selects)}\nFROM {staged} AS s\n" + "\n".join(joins) + "\n"
            f"WHERE NOT EXISTS (SELECT 1 FROM {quote(fact.table)} AS f WHERE {grain})"
        )

    def insert_rejects(self, staged: str) -> str:
        """Record staged rejects (once per topic/partition/offset)."""
        cols = ["KAFKA_TOPIC", "KAFKA_PARTITION", "KAFKA_OFFSET", "MESSAGE_KEY", "MESSAGE_VALUE", "REASON"]
        same = " AND ".join(f"t.{c} = s.{c}" for c in cols[:3])
        return (
            f"INSERT INTO {quote(REJECTS_TABLE)} ({', '.join(cols)}, REJECTED_AT) "
            f"SELECT {', '.join('s.' + c for c in cols)}, CURRENT_TIMESTAMP FROM {staged} AS s "
            f"WHERE NOT EXISTS (SELECT 1 FROM {quote(REJECTS_TABLE)} AS t WHERE {same})"
        )

    def merge_offsets(self, staged: str) -> str:
        """Advance the stored offsets to the staged ones, never backwards."""
        on = " AND ".join(f"t.{c} = s.{c}" for c in ("GROUP_ID", "TOPIC", "KAFKA_PARTITION"))
        return (
            f"MERGE INTO {quote(OFFSETS_TABLE)} AS t USING {staged} AS s ON {on}\n"
            "WHEN MATCHED THEN UPDATE SET NEXT_OFFSET = greatest(t.NEXT_OFFSET, s.NEXT_OFFSET), UPDATED_AT = CURRENT_TIMESTAMP\n"
            "WHEN NOT MATCHED THEN INSERT (GROUP_ID, TOPIC, KAFKA_PARTITION, NEXT_OFFSET, UPDATED_AT) "
            "VALUES (s.GROUP_ID, s.TOPIC, s.KAFKA_PARTITION, s.NEXT_OFFSET, CURRENT_TIMESTAMP)"
        )

    def select_offsets(self) -> str:
        """Stored offsets of one group and topic (two bound parameters)."""
        p = self.dialect.placeholder
        return f"SELECT KAFKA_PARTITION, NEXT_OFFSET FROM {quote(OFFSETS_TABLE)} WHERE GROUP_ID = {p} AND TOPIC = {p}"
