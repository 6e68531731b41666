"""Raw Kafka messages → a typed, columnar :class:`~starload.sinks.base.StagedBatch`.

The whole batch is decoded, validated and typed in one embedded (in-memory) DuckDB
connection, as SQL over an Arrow column of raw values: no Python dict is built per
message, the JSON parser runs in C++, and DuckDB releases the GIL, so mapping one
batch overlaps with consuming the next.

A message is rejected, with every reason found, when it is empty or null, not UTF-8,
not valid JSON, not a JSON object, lacks a required field, has a value of the wrong
type (see :mod:`starload.spec` for the typing rules), has a value that is not an
object where a field's path goes on, fails a range check, or yields a measure out
of range. Every field, nested or not, is found by one parse of the message
(``json_extract`` with the JSON pointers of every path). Every valid message is staged as a fact row with a
fingerprint of its content (MESSAGE_HASH: 63 bits of the MD5 of its mapped fields as
minified JSON, so whitespace, key order and unmapped fields do not count), its rank among the batch's
messages of the same grain value (by partition, offset) and the fingerprint and
coordinates of the first of them; the sink loads only the first, and
:meth:`~starload.sinks.base.Sink.find_conflicts` tells duplicates from conflicts.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

import attrs
import duckdb
import pyarrow as pa

from starload.sinks.base import StagedBatch, natural_key_column
from starload.spec import (
    Boolean,
    Check,
    ColumnType,
    Date,
    Decimal,
    Double,
    Integer,
    Source,
    StarSchema,
    String,
    Timestamp,
    position_column,
    source_name,
    source_path,
)

_RAW = "_sl_raw"
_PARSED = "_sl_parsed"
_REASON = "_SL_REASON"
_RANK = "_SL_RANK"
_EVENT = "_SL_EVENT"
_DATE = "_SL_DATE"
_POSITION = "_sl_position"
#: Microseconds from 0001-01-01 to 1970-01-01: event times (years 1 to 9999) shifted by it are never negative.
_YEAR_ONE_US = 62_135_596_800_000_000
_JSON_SPACE = " \t\n\r"

#: The ISO-8601 forms a ``timestamp`` field takes: a date, optionally a time (``T`` or a space; minutes,
#: seconds and a fraction), optionally ``Z`` or an offset; anything else is a reject, however DuckDB would read it.
ISO_TIMESTAMP = r"[0-9]{4}-[0-9]{2}-[0-9]{2}([T ][0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]+)?)?)?(Z|[+-][0-9]{2}(:?[0-9]{2})?)?"

RAW_SCHEMA = pa.schema(
    [
        ("KAFKA_PARTITION", pa.int32()),
        ("KAFKA_OFFSET", pa.int64()),
        ("MESSAGE_KEY", pa.binary()),
        ("MESSAGE_VALUE", pa.binary()),
    ]
)


def quote(identifier: str) -> str:
    """A double-quoted SQL identifier (identifiers are validated by the spec)."""
    return '"' + identifier.replace('"', '""') + '"'


def raw_batch(
    values: Sequence[bytes | None],
    *,
    partitions: Sequence[int] | None = None,
    offsets: Sequence[int] | None = None,
    keys: Sequence[bytes | None] | None = None,
) -> pa.Table:
    """Raw messages as the Arrow table the mapper reads (partition 0, offsets 0… by default)."""
    n = len(values)
    return pa.Table.from_arrays(
        [
            pa.array(partitions if partitions is not None else [0] * n, pa.int32()),
            pa.array(offsets if offsets is not None else range(n), pa.int64()),
            pa.array(keys if keys is not None else [None] * n, pa.binary()),
            pa.array(values, pa.binary()),
        ],
        schema=RAW_SCHEMA,
    )


def duckdb_type(column_type: ColumnType) -> str:
    """The DuckDB type of a spec type (the staged batch carries these)."""
    if isinstance(column_type, Decimal):
        return f"DECIMAL({column_type.precision}, {column_type.scale})"
    if isinstance(column_type, Integer):
        return "BIGINT"
    if isinstance(column_type, Timestamp):
        return "TIMESTAMPTZ"
    if isinstance(column_type, Double):
        return "DOUBLE"
    if isinstance(column_type, Boolean):
        return "BOOLEAN"
    if isinstance(column_type, Date):
        return "DATE"
    return "VARCHAR"


def _nested(path: tuple[str, ...], leaf: object) -> dict[str, object]:
    """``{"a": {"b": leaf}}`` for the path ``("a", "b")``."""
    for key in reversed(path[1:]):
        leaf = {key: leaf}
    return {path[0]: leaf}


def _extract(struct: str, path: tuple[str, ...]) -> str:
    """SQL reading ``path`` out of the struct expression ``struct`` (NULL when an object on the way is)."""
    for key in path:
        struct = f"struct_extract({struct}, {_literal(key)})"
    return struct


def _pointer(path: tuple[str, ...]) -> str:
    """``path`` as a JSON pointer (RFC 6901), which DuckDB's JSON functions take as a path."""
    return "/" + "/".join(k.replace("~", "~0").replace("/", "~1") for k in path)


def _text(j: str) -> str:
    """The value of JSON string text ``j`` (NULL when ``j`` is not a string).

    Minified JSON escapes only quotes, backslashes and control characters, so most
    strings are their text without the quotes; the others are decoded.
    """
    return (
        f"CASE WHEN starts_with({j}, '\"') THEN "
        f"CASE WHEN contains({j}, '\\') THEN json_extract_string({j}, '$') ELSE {j}[2:-2] END END"
    )


def _typed_value(column_type: ColumnType, path: tuple[str, ...], i: int) -> tuple[list[str], str, str]:
    """(candidate columns, typed value, 'wrong type' message) of the source field at ``path`` (number ``i``).

    Columns of the earlier steps: ``_sl_j{i}``, the field as minified JSON text (from
    ``json_extract``; NULL when missing or null), so its JSON type is plain to see
    (a string starts with ``"``, an integer is its own digits), and ``_sl_s{i}``, the
    value when it is a JSON string (:func:`_text`). The candidate columns come next,
    and the typed value is computed from them: every expression is evaluated once.

    A decimal comes from the number's text, or from a string. JSON numbers are
    minified through a double, so one whose text is longer than 15 characters is
    read again from the message, straight into the column type: every amount that
    fits the column is exact. One that would need rounding to the column's scale is
    refused: it differs from its double value (which catches every rounding of a
    number of up to 15 significant digits).
    """
    j, s, c = f"_sl_j{i}", f"_sl_s{i}", f"_sl_c{i}"
    if isinstance(column_type, Integer):
        return [f"TRY_CAST({j} AS BIGINT) AS {c}"], f"CASE WHEN {j} = CAST({c} AS VARCHAR) THEN {c} END", "expected a 64-bit integer"
    if isinstance(column_type, Decimal):
        decimal, number = duckdb_type(column_type), f"coalesce({s}, {j})"
        reread = _extract(f"TRY(json_transform(_sl_text, {_literal(json.dumps(_nested(path, decimal)))}))", path)
        exact = (
            f"CASE WHEN {j} IN ('true', 'false') THEN NULL WHEN {s} IS NULL AND length({j}) > 15 THEN {reread} "
            f"ELSE TRY_CAST({number} AS {decimal}) END"
        )
        candidates = [f"{exact} AS {c}", f"TRY_CAST({number} AS DOUBLE) AS _sl_d{i}"]
        wrong = (
            f"expected a number with at most {column_type.precision - column_type.scale} digits "
            f"before and {column_type.scale} after the decimal point"
        )
        return candidates, f"CASE WHEN _sl_d{i} = CAST({c} AS DOUBLE) THEN {c} END", wrong
    if isinstance(column_type, Double):
        # A JSON string, true or false does not cast; a number too large for a double casts to infinity.
        return [f"TRY_CAST({j} AS DOUBLE) AS {c}"], f"CASE WHEN isfinite({c}) THEN {c} END", "expected a finite JSON number, not a string"
    if isinstance(column_type, Boolean):
        return [f"CASE {j} WHEN 'true' THEN true WHEN 'false' THEN false END AS {c}"], c, "expected true or false"
    if isinstance(column_type, Date):
        iso = f"regexp_full_match({s}, '[0-9]{{4}}-[0-9]{{2}}-[0-9]{{2}}') AND NOT starts_with({s}, '0000')"
        return [f"CASE WHEN {iso} THEN TRY_CAST({s} AS DATE) END AS {c}"], c, "expected an ISO date string (YYYY-MM-DD)"
    if isinstance(column_type, Timestamp) and column_type.encoding != "iso8601":
        # Seconds or milliseconds read exactly (as a decimal), to whole microseconds since the epoch.
        scale, unit = (6, "seconds") if column_type.encoding == "epoch_s" else (3, "milliseconds")
        micros = f"TRY_CAST(TRY_CAST({j} AS DECIMAL(38, {scale})) * {10**scale} AS BIGINT)"
        return [f"TRY(make_timestamptz({micros})) AS {c}"], _in_years(c), f"expected a JSON number of {unit} since 1970-01-01 UTC (years 1 to 9999)"
    if isinstance(column_type, Timestamp):
        iso = f"regexp_full_match({s}, {_literal(ISO_TIMESTAMP)})"
        return [f"CASE WHEN {iso} THEN TRY_CAST({s} AS TIMESTAMPTZ) END AS {c}"], _in_years(c), "expected an ISO-8601 timestamp string"
    return [f"{s} AS {c}"], c, "expected a string"


def _position_text(p: str) -> str:
    """The text of the event position ``p`` (the HUGEINT of :meth:`MappingSQL.build`), as :func:`position_column` spells it."""
    micros = f"CAST({p} >> 64 AS BIGINT) - {_YEAR_ONE_US}"
    return (
        f"strftime(make_timestamp({micros}), '%Y-%m-%dT%H:%M:%S.%fZ ') || "
        f"lpad(CAST(({p} >> 48) & 65535 AS VARCHAR), 5, '0') || ' ' || lpad(CAST({p} & {2**48 - 1} AS VARCHAR), 15, '0')"
    )


def _in_years(c: str) -> str:
    """The timestamp ``c`` when it falls in the years 1 to 9999 (what Snowflake and Python hold), else NULL."""
    return f"CASE WHEN isfinite({c}) AND {c} >= TIMESTAMPTZ '0001-01-01 00:00:00+00' AND {c} < TIMESTAMPTZ '10000-01-01 00:00:00+00' THEN {c} END"


def _check_problem(name: str, column_type: ColumnType, check: Check | None, value: str) -> str | None:
    """SQL text of a range-check problem (NULL when the value passes)."""
    conditions = []
    if check is Check.POSITIVE:
        conditions.append((f"{value} <= 0", "must be > 0"))
    elif check is Check.NON_NEGATIVE:
        conditions.append((f"{value} < 0", "must be >= 0"))
    if isinstance(column_type, String) and column_type.max_length is not None:
        conditions.append((f"length({value}) > {column_type.max_length}", f"longer than {column_type.max_length} characters"))
    if not conditions:
        return None
    whens = " ".join(f"WHEN {cond} THEN {_literal(f'{name}: {msg}')}" for cond, msg in conditions)
    return f"CASE {whens} END"


def _object_problems(paths: Mapping[Source, tuple[str, ...]], index: Mapping[Source, int]) -> list[str]:
    """SQL texts of the problem 'not an object' for every object a path goes through (NULL when it is one).

    A path through a value that is not an object (a string, an array) finds nothing,
    as a missing one does; only for rows where every field under an object is missing
    is that object's JSON type looked up, so well-formed messages cost next to nothing.
    """
    prefixes = sorted({path[:n] for path in paths.values() for n in range(1, len(path))}, key=len)
    found = []
    for prefix in prefixes:
        leaves = [f"_sl_j{index[name]} IS NULL" for name, path in paths.items() if path[: len(prefix)] == prefix]
        found.append(
            f"CASE WHEN {' AND '.join(leaves)} THEN "
            f"CASE WHEN json_type(_sl_text, {_literal(_pointer(prefix))}) NOT IN ('OBJECT', 'NULL') "
            f"THEN {_literal(source_name(prefix) + ': expected an object')} END END"
        )
    return found


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


@attrs.frozen
class MappingSQL:
    """The SQL that stages one batch for ``schema``, built once per schema."""

    schema: StarSchema
    parse: str
    unique_grain: str
    facts_unique: str
    facts_ranked: str
    dimensions: dict[str, str]
    histories: dict[str, str]
    dates: str | None
    rejects: str
    offsets: str

    @classmethod
    def build(cls, schema: StarSchema) -> MappingSQL:
        sources = schema.source_fields()
        index = {name: i for i, name in enumerate(sources)}

        paths = {name: source_path(name) for name in sources}
        texts, candidates, values, measures, problems = [], [], [], [], []
        problems += _object_problems(paths, index)
        for name, column_type in sources.items():
            i, shown = index[name], source_name(name)
            j, v = f"_sl_j{i}", f"_sl_v{i}"
            texts.append(f"{_text(j)} AS _sl_s{i}")
            columns, value, wrong_type = _typed_value(column_type, paths[name], i)
            candidates += columns
            values.append(f"{value} AS {v}")
            when_missing = _literal(f"{shown}: missing") if schema.is_required(name) else "NULL"
            check = _check_problem(shown, column_type, schema.check_of(name), v)
            got = f"CASE left({j}, 1) WHEN '{{' THEN ', got an object' WHEN '[' THEN ', got an array' ELSE '' END"
            problems.append(
                f"CASE WHEN {j} IS NULL THEN {when_missing} "
                f"WHEN {v} IS NULL THEN {_literal(f'{shown}: {wrong_type}')} || {got} "
                f"{'ELSE ' + check if check else ''} END"
            )
        fact_fields = {f.column: f for f in schema.fact.fields}
        for measure in schema.fact.measures:
            product = " * ".join(f"_sl_v{index[fact_fields[c].source]}" for c in measure.factors)
            measures.append(f"TRY_CAST(TRY({product}) AS {duckdb_type(measure.type)}) AS {quote(measure.column)}")
            all_present = " AND ".join(f"_sl_v{index[fact_fields[c].source]} IS NOT NULL" for c in measure.factors)
            problems.append(
                f"CASE WHEN {all_present} AND {quote(measure.column)} IS NULL "
                f"THEN {_literal(f'{measure.column}: out of range for {duckdb_type(measure.type)}')} END"
            )
        event = f"_sl_v{index[schema.fact.event_time.source]}"

        grain = ", ".join(f"_sl_v{index[f.source]}" for f in schema.fact.grain)
        grain_text = ", ".join(f"CAST(_sl_v{index[f.source]} AS VARCHAR)" for f in schema.fact.grain)
        # The fields' JSON texts, "null" when missing (a decimal's exact value instead:
        # its JSON text went through a double).
        fingerprint = ", ".join(
            f"coalesce({f'CAST(_sl_v{i} AS VARCHAR)' if isinstance(t, Decimal) else f'_sl_j{i}'}, 'null')"
            for t, i in zip(sources.values(), index.values())
        )
        pointers = "[" + ", ".join(_literal(_pointer(path)) for path in paths.values()) + "]"
        columns = ", ".join(f"NULLIF(CAST(_sl_json[{i + 1}] AS VARCHAR), 'null') AS _sl_j{i}" for i in index.values())
        parse = f"""
CREATE OR REPLACE TEMP TABLE {_PARSED} AS
WITH text AS (
    SELECT KAFKA_PARTITION, KAFKA_OFFSET, MESSAGE_VALUE, TRY(decode(MESSAGE_VALUE)) AS _sl_text FROM {_RAW}
), objects AS (
    SELECT *, starts_with(_sl_text, '{{') OR starts_with(ltrim(_sl_text, {_literal(_JSON_SPACE)}), '{{') AS _sl_object
    FROM text
), fields AS (
    SELECT *,
        CASE WHEN _sl_object THEN TRY(json_extract(_sl_text, {pointers})) END AS _sl_json
    FROM objects
), extracted AS (
    SELECT *, {columns} FROM fields
), texts AS (
    SELECT *, {", ".join(texts)} FROM extracted
), candidates AS (
    SELECT *, {", ".join(candidates)} FROM texts
), "values" AS (
    SELECT *, {", ".join(values)} FROM candidates
), typed AS (
    SELECT *{"".join(", " + m for m in measures)} FROM "values"
), checked AS (
    SELECT KAFKA_PARTITION, KAFKA_OFFSET,
        {", ".join(f"_sl_v{i}" for i in range(len(sources)))},
        {", ".join(quote(m.column) for m in schema.fact.measures) + "," if schema.fact.measures else ""}
        CAST(timezone('UTC', {event}) AS DATE) AS {_DATE},
        {event} AS {_EVENT},
        CAST(md5_number(concat_ws(',', {fingerprint})) >> 65 AS BIGINT) AS MESSAGE_HASH,
        CAST(md5_number(concat_ws(',', {grain_text})) >> 65 AS BIGINT) AS GRAIN_HASH,
        CASE
            WHEN MESSAGE_VALUE IS NULL OR octet_length(MESSAGE_VALUE) = 0 THEN 'empty message'
            WHEN _sl_text IS NULL THEN 'not UTF-8 text'
            WHEN NOT _sl_object THEN CASE WHEN json_valid(_sl_text) THEN 'not a JSON object' ELSE 'not valid JSON' END
            WHEN _sl_json IS NULL THEN 'not valid JSON'
            ELSE NULLIF(concat_ws('; ', {", ".join(problems)}), '')
        END AS {_REASON}
    FROM typed
)
SELECT * FROM checked
"""
        valid = f"{_PARSED} WHERE {_REASON} IS NULL"
        # (partition, offset) packed in one BIGINT (offsets stay below 2**48): the
        # order that decides "latest", cheaper to compare than a pair.
        order = "(CAST(KAFKA_PARTITION AS BIGINT) << 48) + KAFKA_OFFSET"
        date_key = f"CAST(year({_DATE}) * 10000 + month({_DATE}) * 100 + day({_DATE}) AS INTEGER)"
        fact_cols = [f"_sl_v{index[f.source]} AS {quote(f.column)}" for f in schema.fact.fields]
        fact_cols += [
            f"_sl_v{index[f.source]} AS {quote(natural_key_column(d.table, f.column))}"
            for d in schema.referenced_dimensions
            for f in d.natural_key
        ]
        fact_cols += [quote(m.column) for m in schema.fact.measures]
        if schema.date_dimension:
            fact_cols.append(f"{date_key} AS {quote(schema.date_dimension.key)}")
        common = f"{', '.join(fact_cols)}, GRAIN_HASH, MESSAGE_HASH, CAST(? AS VARCHAR) AS KAFKA_TOPIC, KAFKA_PARTITION, KAFKA_OFFSET"
        # Most batches repeat no grain value: then every row is the first of its value,
        # and the (costly) window that ranks repeated values is not needed.
        unique_grain = f"SELECT count(*) = count(DISTINCT ({grain})) FROM {valid}"
        facts_unique = f"""
SELECT {common}, 1 AS {_RANK}, MESSAGE_HASH AS FIRST_HASH, KAFKA_PARTITION AS FIRST_PARTITION, KAFKA_OFFSET AS FIRST_OFFSET
FROM {valid}
"""
        facts_ranked = f"""
SELECT {common}, row_number() OVER first_seen AS {_RANK}, first_value(MESSAGE_HASH) OVER first_seen AS FIRST_HASH,
    first_value(KAFKA_PARTITION) OVER first_seen AS FIRST_PARTITION, first_value(KAFKA_OFFSET) OVER first_seen AS FIRST_OFFSET
FROM {valid}
WINDOW first_seen AS (PARTITION BY {grain} ORDER BY KAFKA_PARTITION, KAFKA_OFFSET)
"""
        # The event position (see position_column) as one HUGEINT: microseconds since
        # 0001-01-01 above 64 bits, the (partition, offset) order below.
        position = f"(CAST(epoch_us({_EVENT}) + {_YEAR_ONE_US} AS HUGEINT) << 64) + {order}"
        dimensions, histories = {}, {}
        for dim in schema.dimensions:
            keys = [f"_sl_v{index[f.source]}" for f in dim.natural_key]
            cols = [f"{k} AS {quote(f.column)}" for k, f in zip(keys, dim.natural_key)]
            latest = []
            for n, f in enumerate(dim.current_attributes):
                v = f"_sl_v{index[f.source]}"
                cols += [
                    f"arg_max({v}, {_POSITION}) FILTER (WHERE {v} IS NOT NULL) AS {quote(f.column)}",
                    f"max({_POSITION}) FILTER (WHERE {v} IS NOT NULL) AS _sl_p{n}",
                ]
                latest.append(f"{_position_text(f'_sl_p{n}')} AS {quote(position_column(f.column))}")
            present = " AND ".join(f"{k} IS NOT NULL" for k in keys)
            named = [quote(f.column) for f in (*dim.natural_key, *dim.current_attributes)]
            first = ", FIRST_EVENT_AT" if dim.keeps_history else ""
            dimensions[dim.name] = f"""
SELECT {", ".join(named + latest)}, LAST_EVENT_AT{first} FROM (
    SELECT {", ".join(cols)}, max({_EVENT}) AS LAST_EVENT_AT, min({_EVENT}) AS FIRST_EVENT_AT
    FROM (SELECT *, {position} AS {_POSITION} FROM {valid} AND {present}) GROUP BY {", ".join(keys)}
)
"""
            if dim.keeps_history:
                # Every event that carries a history attribute, and each member's earliest
                # (where its first version starts), with its position.
                values = [f"_sl_v{index[f.source]}" for f in dim.history_attributes]
                known = " OR ".join(f"{v} IS NOT NULL" for v in values)
                histories[dim.name] = f"""
SELECT {", ".join(cols[: len(keys)])}, {_EVENT} AS _SL_EVENT_AT, {_position_text(_POSITION)} AS _SL_AT,
    {", ".join(f"{v} AS {quote(f.column)}" for v, f in zip(values, dim.history_attributes))}
FROM (
    SELECT *, {position} AS {_POSITION}, row_number() OVER (PARTITION BY {", ".join(keys)} ORDER BY {position}) AS _sl_n
    FROM {valid} AND {present}
) WHERE {known} OR _sl_n = 1
"""
        dates = None
        if schema.date_dimension:
            d = _DATE
            dates = f"""
SELECT {date_key} AS {quote(schema.date_dimension.key)}, {d} AS FULL_DATE,
    CAST(day({d}) AS INTEGER) AS DAY, CAST(month({d}) AS INTEGER) AS MONTH, monthname({d}) AS MONTH_NAME,
    CAST(quarter({d}) AS INTEGER) AS QUARTER, CAST(year({d}) AS INTEGER) AS YEAR,
    CAST(isodow({d}) AS INTEGER) AS DAY_OF_WEEK, dayname({d}) AS DAY_NAME,
    CAST(weekofyear({d}) AS INTEGER) AS WEEK_OF_YEAR, isodow({d}) >= 6 AS IS_WEEKEND
FROM (SELECT DISTINCT {d} FROM {valid}) ORDER BY 1
"""
        rejects = f"""
SELECT CAST(? AS VARCHAR) AS KAFKA_TOPIC, r.KAFKA_PARTITION, r.KAFKA_OFFSET, r.MESSAGE_KEY, r.MESSAGE_VALUE,
    p.{_REASON} AS REASON
FROM {_RAW} r JOIN {_PARSED} p USING (KAFKA_PARTITION, KAFKA_OFFSET)
WHERE p.{_REASON} IS NOT NULL ORDER BY r.KAFKA_PARTITION, r.KAFKA_OFFSET
"""
        offsets = f"SELECT KAFKA_PARTITION, max(KAFKA_OFFSET) + 1 FROM {_RAW} GROUP BY 1"
        return cls(schema, parse, unique_grain, facts_unique, facts_ranked, dimensions, histories, dates, rejects, offsets)


class Mapper:
    """Stages raw batches for one schema on a private in-memory DuckDB connection.

    Not thread-safe: the engine uses one mapper from one worker thread at a time.
    ``threads`` is DuckDB's own parallelism (``None``: one per core); one thread is
    fastest here, the mapper already runs beside the consumer and the writer.
    """

    def __init__(self, schema: StarSchema, *, threads: int | None = 1) -> None:
        self.sql = MappingSQL.build(schema)
        self._con = duckdb.connect(":memory:", config={"memory_limit": "256MB"})
        self._con.execute("SET TimeZone = 'UTC'")
        if threads:
            self._con.execute(f"SET threads = {int(threads)}")

    def stage(self, raw: pa.Table, *, topic: str, group: str) -> StagedBatch:
        """Map ``raw`` (see :data:`RAW_SCHEMA`) to a staged batch for ``group``/``topic``."""
        con = self._con
        con.register(_RAW, raw)
        try:
            con.execute(self.sql.parse)
            ((unique,),) = con.execute(self.sql.unique_grain).fetchall()
            facts_sql = self.sql.facts_unique if unique else self.sql.facts_ranked
            facts = con.sql(facts_sql, params=[topic]).to_arrow_table()
            dims = {name: con.sql(sql).to_arrow_table() for name, sql in self.sql.dimensions.items()}
            histories = {name: con.sql(sql).to_arrow_table() for name, sql in self.sql.histories.items()}
            dates = con.sql(self.sql.dates).to_arrow_table() if self.sql.dates else None
            rejects = con.sql(self.sql.rejects, params=[topic]).to_arrow_table()
            next_offsets = dict(con.execute(self.sql.offsets).fetchall())
        finally:
            con.unregister(_RAW)
        return StagedBatch(
            schema=self.sql.schema,
            group=group,
            topic=topic,
            facts=facts,
            dimensions=dims,
            histories=histories,
            dates=dates,
            rejects=rejects,
            next_offsets=next_offsets,
            consumed=raw.num_rows,
            raw=raw,
        )

    def close(self) -> None:
        """Close the private connection."""
        self._con.close()
