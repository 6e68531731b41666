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

A batch of flat Avro records decoded at once (:mod:`starload.formats.columnar`) is read
from its typed columns instead of JSON text: the same values, fingerprints and reasons,
with no text to parse and no type to check.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping, Sequence

import attrs
import duckdb
import pyarrow as pa

from starload.formats import RECORD_COLUMN, Decoding
from starload.formats.columnar import columnar_feed
from starload.identity import quote
from starload.sinks.base import ELEMENT_COLUMN, StagedBatch, natural_key_column
from starload.spec import (
    CHANGE_SOURCE,
    DELETES_POSITION,
    Boolean,
    Check,
    ColumnType,
    Date,
    Decimal,
    Double,
    Fact,
    Feed,
    Integer,
    Source,
    StarSchema,
    String,
    Timestamp,
    array_of,
    element_path,
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
        unit = "seconds" if column_type.encoding == "epoch_s" else "milliseconds"
        return [f"{_epoch(j, column_type.encoding)} AS {c}"], _in_years(c), f"expected a JSON number of {unit} since 1970-01-01 UTC (years 1 to 9999)"
    if isinstance(column_type, Timestamp):
        iso = f"regexp_full_match({s}, {_literal(ISO_TIMESTAMP)})"
        return [f"CASE WHEN {iso} THEN TRY_CAST({s} AS TIMESTAMPTZ) END AS {c}"], _in_years(c), "expected an ISO-8601 timestamp string"
    return [f"{s} AS {c}"], c, "expected a string"


def _epoch(j: str, encoding: str) -> str:
    """The timestamp of the JSON number text ``j`` of seconds (``epoch_s``) or milliseconds (``epoch_ms``), read exactly (as a decimal) to whole microseconds."""
    scale = 6 if encoding == "epoch_s" else 3
    return f"TRY(make_timestamptz(TRY_CAST(TRY_CAST({j} AS DECIMAL(38, {scale})) * {10**scale} AS BIGINT)))"


def _position_text(p: str, topics: Sequence[str] = ()) -> str:
    """The text of the event position ``p`` (the HUGEINT of :func:`_position`), as :func:`position_column` spells it.

    ``topics``: the star's topics sorted by name, in a star of several: the text then ends with the topic's name.
    """
    micros = f"CAST({p} >> 68 AS BIGINT) - {_YEAR_ONE_US}"
    text = (
        f"strftime(make_timestamp({micros}), '%Y-%m-%dT%H:%M:%S.%fZ ') || "
        f"lpad(CAST(({p} >> 48) & 65535 AS VARCHAR), 5, '0') || ' ' || lpad(CAST({p} & {2**48 - 1} AS VARCHAR), 15, '0')"
    )
    if topics:
        names = "[" + ", ".join(_literal(t) for t in topics) + "]"
        text += f" || ' ' || {names}[CAST(({p} >> 64) & 15 AS INTEGER) + 1]"
    return text


def _position(rank: int) -> str:
    """The event position of a parsed row of the topic ranked ``rank`` (see :meth:`~starload.spec.StarSchema.topic_rank`) as one HUGEINT.

    Microseconds since 0001-01-01 above 68 bits, the topic's rank in the next 4, then
    (partition, offset) in the low 64: the order of the rule "event time, then
    partition, then offset, then topic", cheaper to compare than a tuple.
    """
    return (
        f"(CAST(epoch_us({_EVENT}) + {_YEAR_ONE_US} AS HUGEINT) << 68) + (CAST({rank} AS HUGEINT) << 64) "
        f"+ (CAST(KAFKA_PARTITION AS BIGINT) << 48) + KAFKA_OFFSET"
    )


def _utc_date(t: str) -> str:
    """The UTC day of the timestamp ``t``."""
    return f"CAST(timezone('UTC', {t}) AS DATE)"


def _date_key(d: str) -> str:
    """The date dimension's key (YYYYMMDD) of the date ``d``."""
    return f"CAST(year({d}) * 10000 + month({d}) * 100 + day({d}) AS INTEGER)"


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


def _object_problems(paths: Mapping[Source, tuple[str, ...]], index: Mapping[Source, int], within: str = "") -> list[str]:
    """SQL texts of the problem 'not an object' for every object a path goes through (NULL when it is one).

    A path through a value that is not an object (a string, an array) finds nothing,
    as a missing one does; only for rows where every field under an object is missing
    is that object's JSON type looked up, so well-formed messages cost next to nothing.
    An array where an object is expected gets a reason saying how to read its elements.
    ``within``: what reasons put before a path (``lines[].`` for the paths inside an array's elements).
    """
    prefixes = sorted({path[:n] for path in paths.values() for n in range(1, len(path))}, key=len)
    found = []
    for prefix in prefixes:
        under = [name for name, path in paths.items() if path[: len(prefix)] == prefix]
        leaves = [f"_sl_j{index[name]} IS NULL" for name in under]
        head = within + source_name(prefix)
        each = f"{head}[].{source_name(paths[under[0]][len(prefix) :])}"
        kind = f"json_type(_sl_text, {_literal(_pointer(prefix))})"
        found.append(
            f"CASE WHEN {' AND '.join(leaves)} THEN CASE WHEN {kind} = 'ARRAY' THEN {_literal(f'{head}: expected an object, got an array (write {each} to read each element)')} "
            f"WHEN {kind} NOT IN ('OBJECT', 'NULL') THEN {_literal(head + ': expected an object')} END END"
        )
    return found


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


#: What ``op`` a Debezium change event may have: create, update, delete, snapshot read.
DEBEZIUM_OPS = ("c", "u", "d", "r")


def _message_text(feed: Feed, raw: str) -> str:
    """The first CTEs of a parse: the message as text, and ``_sl_text``, the JSON text its fields are read from.

    Without an envelope that is the message. With Debezium's, it is ``after`` (``before``
    for a delete) of the change event, itself the message or its ``payload`` (the JSON
    converter with schemas enabled wraps it in ``schema`` and ``payload``).
    """
    if feed.format.framed:  # decoded by starload.formats beforehand
        decoded = f"SELECT KAFKA_PARTITION, KAFKA_OFFSET, MESSAGE_VALUE, MESSAGE_TEXT AS _sl_message, DECODE_PROBLEM AS _sl_decode_problem FROM {raw}"
    else:
        decoded = f"SELECT KAFKA_PARTITION, KAFKA_OFFSET, MESSAGE_VALUE, TRY(decode(MESSAGE_VALUE)) AS _sl_message, NULL AS _sl_decode_problem FROM {raw}"
    if feed.envelope is None:
        return f"text AS (SELECT *, _sl_message AS _sl_text FROM ({decoded}))"
    event = "CASE WHEN json_exists(_sl_message, '/payload') AND NOT json_exists(_sl_message, '/op') THEN json_extract(_sl_message, '/payload') ELSE CAST(_sl_message AS JSON) END"
    row = "CAST(json_extract(_sl_event, CASE WHEN _sl_op = 'd' THEN '/before' ELSE '/after' END) AS VARCHAR)"
    return (
        f"decoded AS ({decoded}), "
        f"events AS (SELECT *, CASE WHEN TRY(json_type(_sl_message)) = 'OBJECT' THEN {event} END AS _sl_event FROM decoded), "
        "ops AS (SELECT *, json_extract_string(_sl_event, '/op') AS _sl_op, json_extract(_sl_event, '/ts_ms') AS _sl_ts_ms FROM events), "
        f"text AS (SELECT *, {row} AS _sl_text FROM ops)"
    )


def _envelope_problem(feed: Feed) -> str:
    """SQL text of what makes a message not a change event of the feed's envelope (NULL when it is one)."""
    ops = ", ".join(_literal(op) for op in DEBEZIUM_OPS)
    return (
        "CASE WHEN _sl_event IS NULL THEN CASE WHEN json_valid(_sl_message) THEN 'not a JSON object' ELSE 'not valid JSON' END "
        f"WHEN _sl_op IS NULL OR _sl_op NOT IN ({ops}) THEN 'not a Debezium change event: op is ' || coalesce('''' || _sl_op || '''', 'missing') "
        "WHEN (_sl_text IS NULL OR NOT starts_with(_sl_text, '{')) AND _sl_op = 'd' "
        "THEN 'before: expected an object (the row a delete removes; a table with REPLICA IDENTITY NOTHING gives none)' "
        "WHEN _sl_text IS NULL OR NOT starts_with(_sl_text, '{') THEN 'after: expected an object (the row of a create, update or read)' "
        + (
            "WHEN _sl_event_at IS NULL THEN 'ts_ms: expected a JSON number of milliseconds since 1970-01-01 UTC' "
            if feed.event_time is None
            else ""
        )
        + "END"
    )


def _json_kind(j: str) -> str:
    """SQL of ``', got <the kind of JSON value>'`` for the JSON text ``j`` (never the value itself: a reason holds no message content)."""
    return (
        f"CASE left({j}, 1) WHEN '{{' THEN ', got an object' WHEN '[' THEN ', got an array' WHEN '\"' THEN ', got a string' "
        f"WHEN 'n' THEN ', got null' WHEN 't' THEN ', got true' WHEN 'f' THEN ', got false' ELSE ', got a number' END"
    )


def _field_steps(
    feed: Feed,
    items: Mapping[Source, ColumnType],
    paths: Mapping[Source, tuple[str, ...]],
    index: Mapping[Source, int],
    *,
    columnar: bool = False,
) -> tuple[list[str], list[str], list[str], list[str]]:
    """The (texts, candidates, values, problems) columns that read and type ``items`` from ``_sl_j{i}`` (see :func:`_typed_value`).

    ``columnar``: read from the typed record instead (:func:`_columnar_value`): no
    candidates, the values come first and the texts are made from them.
    """
    # What a delete must still carry: its row's key (the dimension's natural key, or the fact's grain).
    own = feed.dimension
    natural_sources = {f.source for f in feed.fields_of(own) if f.column in {k.column for k in own.natural_key}} if own else set()
    natural_sources |= {g.source for fact in feed.facts for g in fact.grain}
    texts, candidates, values, problems = [], [], [], []
    for name, column_type in items.items():
        i, shown = index[name], source_name(name)
        j, v = f"_sl_j{i}", f"_sl_v{i}"
        if columnar:
            value, text = _columnar_value(column_type, _extract(RECORD_COLUMN, (shown,)), v)
            texts.append(f"{text} AS {j}")
            wrong_type = None  # the writer type is the declared type's: a value is NULL only where its text is
        else:
            texts.append(f"{_text(j)} AS _sl_s{i}")
            columns, value, wrong_type = _typed_value(column_type, paths[name], i)
            candidates += columns
        values.append(f"{value} AS {v}")
        when_missing = _literal(f"{shown}: missing") if feed.is_required(name) else "NULL"
        if feed.envelope is not None and name not in natural_sources:
            # A delete's row may hold its key only (Debezium's ``before`` under REPLICA IDENTITY DEFAULT).
            when_missing = f"CASE WHEN _sl_op = 'd' THEN NULL ELSE {when_missing} END"
        check = _check_problem(shown, column_type, feed.check_of(name), v)
        got = f"CASE left({j}, 1) WHEN '{{' THEN ', got an object' WHEN '[' THEN ', got an array' ELSE '' END"
        wrong = f"WHEN {v} IS NULL THEN {_literal(f'{shown}: {wrong_type}')} || {got} " if wrong_type else ""
        problems.append(f"CASE WHEN {j} IS NULL THEN {when_missing} {wrong}{'ELSE ' + check if check else ''} END")
    return texts, candidates, values, problems


def _columnar_value(column_type: ColumnType, field: str, v: str) -> tuple[str, str]:
    """(typed value, text) of a field of the typed record (:mod:`starload.formats.columnar`), its value ``field``.

    The value is the field's (a double's only when finite: the per-message path writes NaN
    and infinities as null). The text, made from the value (column ``v``), is the field's
    minified JSON text as the per-message path's ``_sl_j`` holds it, so that a message's
    fingerprint is the same whichever path decoded it: a string, number or boolean as
    DuckDB writes JSON, a date ``"YYYY-MM-DD"``, a timestamp
    ``"YYYY-MM-DDTHH:MM:SS[.ffffff]Z"`` (as orjson writes it), a decimal its digits (its
    fingerprint is its value's).
    """
    if isinstance(column_type, Double):
        return f"CASE WHEN isfinite({field}) THEN {field} END", f"CAST(to_json({v}) AS VARCHAR)"
    if isinstance(column_type, Decimal):
        return field, f"CAST({v} AS VARCHAR)"
    if isinstance(column_type, Date):
        return field, f"'\"' || strftime({v}, '%Y-%m-%d') || '\"'"
    if isinstance(column_type, Timestamp):
        fraction = f"CASE WHEN epoch_us({v}) % 1000000 <> 0 THEN strftime({v}, '.%f') ELSE '' END"
        return field, f"'\"' || strftime({v}, '%Y-%m-%dT%H:%M:%S') || {fraction} || 'Z\"'"
    return field, f"CAST(to_json({v}) AS VARCHAR)"


def _measure_name(f: int, m: int) -> str:
    """The column of measure number ``m`` of the feed's fact number ``f`` while the batch is mapped."""
    return f"_sl_measure{f}_{m}"


def _measure_steps(fact: Fact, f: int, index: Mapping[Source, int]) -> tuple[list[str], list[str]]:
    """The columns (:func:`_measure_name`) of ``fact``'s (number ``f``) measures, and their 'out of range' problems."""
    fields = {x.column: x for x in fact.fields}
    columns, problems = [], []
    for m, measure in enumerate(fact.measures):
        product = " * ".join(f"_sl_v{index[fields[c].source]}" for c in measure.factors)
        columns.append(f"TRY_CAST(TRY({product}) AS {duckdb_type(measure.type)}) AS {_measure_name(f, m)}")
        all_present = " AND ".join(f"_sl_v{index[fields[c].source]} IS NOT NULL" for c in measure.factors)
        problems.append(
            f"CASE WHEN {all_present} AND {_measure_name(f, m)} IS NULL "
            f"THEN {_literal(f'{measure.column}: out of range for {duckdb_type(measure.type)}')} END"
        )
    return columns, problems


def _fingerprint(items: Mapping[Source, ColumnType], index: Mapping[Source, int]) -> str:
    """SQL of the texts a fingerprint is made of: the fields' JSON texts, "null" when missing (a decimal's exact value instead: its JSON text went through a double)."""
    return ", ".join(f"coalesce({f'CAST(_sl_v{index[x]} AS VARCHAR)' if isinstance(t, Decimal) else f'_sl_j{index[x]}'}, 'null')" for x, t in items.items())


def _pipeline(source: str, pointers: list[str], j_columns: list[str], texts: list[str], candidates: list[str], values: list[str], measures: list[str]) -> str:
    """The CTEs that read fields out of ``_sl_text`` of the relation ``source`` and type them (see :func:`_field_steps`), ending in ``typed``."""
    extract = f"CASE WHEN _sl_object THEN TRY(json_extract(_sl_text, [{', '.join(pointers)}])) END" if pointers else "NULL"
    ctes = [f"fields AS (SELECT *, {extract} AS _sl_json FROM {source})"]
    ctes.append(f"extracted AS (SELECT *{''.join(', ' + c for c in j_columns)} FROM fields)")
    ctes.append(f"texts AS (SELECT *{''.join(', ' + c for c in texts)} FROM extracted)")
    ctes.append(f"candidates AS (SELECT *{''.join(', ' + c for c in candidates)} FROM texts)")
    ctes.append(f"\"values\" AS (SELECT *{''.join(', ' + c for c in values)} FROM candidates)")
    ctes.append(f"typed AS (SELECT *{''.join(', ' + m for m in measures)} FROM \"values\")")
    return ", ".join(ctes)


@attrs.frozen
class FeedSQL:
    """The SQL that stages one topic's messages (a :class:`~starload.spec.Feed`) of a batch.

    ``parse``: the statements that fill the table of its messages (one row per message:
    typed values, event time, ``MESSAGE_HASH`` and the reason it is rejected, NULL when
    it is not), first one table per array of its elements (typed, each with its reason).
    A message's reason holds every element's problems, and its fingerprint every element.
    ``facts``: per fact table, (whether no grain value repeats, the rows when none does,
    the rows ranked when some do). ``observations``: per dimension the messages feed, a
    query of one row per valid message (per member in its elements, for a natural key read
    from an array) carrying its natural key: the natural key, every attribute (NULL
    where these messages carry none), the event position, ``_SL_EVENT`` and
    ``_sl_own`` (whether the message is a record of the dimension's own topic).
    """

    feed: Feed
    raw: str
    parse: tuple[str, ...]
    #: The statement filling the same table from a batch decoded at once (:data:`~starload.formats.RECORD_COLUMN`); empty when the feed is never.
    columnar: tuple[str, ...]
    observations: dict[str, str]
    dates: str | None
    facts: dict[str, tuple[str, str, str]]
    rejects: str
    offsets: str
    #: How many messages are tombstones (null values; only on a topic of change events).
    tombstones: str | None

    @classmethod
    def build(cls, schema: StarSchema, feed: Feed, n: int) -> FeedSQL:
        raw, parsed, messages = f"{_RAW}{n}", f"{_PARSED}{n}", f"{_PARSED}{n}_messages"
        sources = feed.source_fields()
        arrays = feed.arrays
        outer = {name: t for name, t in sources.items() if array_of(name) is None}
        # One number per source, across the message and its arrays' elements, so that an
        # element's row can carry its message's values under the same names.
        index = {name: i for i, name in enumerate(outer)}
        array_index = {a: len(index) + k for k, a in enumerate(arrays)}
        inner = {a: {name: t for name, t in sources.items() if array_of(name) == a} for a in arrays}
        for name in (name for a in arrays for name in inner[a]):
            index[name] = len(index) + len(arrays)
        paths = {name: source_path(name) for name in outer}
        problems = _object_problems({**paths, **{a: a for a in arrays}}, {**index, **array_index})
        texts, candidates, values, field_problems = _field_steps(feed, outer, paths, index)
        problems += field_problems
        measure_problems: list[str] = []
        for a, m in array_index.items():
            j = f"_sl_j{m}"
            problems.append(
                f"CASE WHEN {j} IS NOT NULL AND NOT starts_with({j}, '[') THEN {_literal(source_name(a) + ': expected an array')} || "
                f"{_json_kind(j)} END"
            )
        array_of_fact = {fact.table: feed.array_of(fact) for fact in feed.facts}
        measures = []
        for f, fact in enumerate(feed.facts):
            if array_of_fact[fact.table] is None:
                columns, found = _measure_steps(fact, f, index)
                measures += columns
                measure_problems += found
        problems += measure_problems
        if feed.event_time is not None:
            event = f"_sl_v{index[feed.event_time.source]}"
        else:  # the envelope's ts_ms
            event = "_sl_event_at"
            candidates.append(f"{_epoch('CAST(_sl_ts_ms AS VARCHAR)', 'epoch_ms')} AS _sl_ts")
            values.append(f"{_in_years('_sl_ts')} AS _sl_event_at")
        fingerprint = _fingerprint(outer, index)
        if not arrays:
            hashes = f"CAST(md5_number(concat_ws(',', {fingerprint})) >> 65 AS BIGINT) AS MESSAGE_HASH,"
        else:
            hashes = f"concat_ws(',', {fingerprint}) AS _sl_fingerprint,"
        if feed.facts:
            hashes = f"{_utc_date(event)} AS {_DATE}, " + hashes
        pointers = [_literal(_pointer(path)) for path in paths.values()] + [_literal(_pointer(a)) for a in arrays]
        columns = [f"NULLIF(CAST(_sl_json[{k + 1}] AS VARCHAR), 'null') AS _sl_j{i}" for k, i in enumerate([*(index[x] for x in outer), *array_index.values()])]
        if feed.envelope is None:
            message_problem = (
                "WHEN NOT _sl_object THEN CASE WHEN json_valid(_sl_text) THEN 'not a JSON object' ELSE 'not valid JSON' END "
                "WHEN _sl_json IS NULL THEN 'not valid JSON' "
            )
        else:
            message_problem = f"WHEN {_envelope_problem(feed)} IS NOT NULL THEN {_envelope_problem(feed)} "
        # A tombstone (a null value, which Debezium writes after a delete for log compaction) is no reject: it is counted.
        tombstone = "WHEN MESSAGE_VALUE IS NULL THEN NULL " if feed.envelope is not None else ""
        kept = [f"_sl_v{index[x]}" for x in outer] + [f"_sl_j{m}" for m in array_index.values()]
        kept += [_measure_name(f, m) for f, fact in enumerate(feed.facts) if array_of_fact[fact.table] is None for m in range(len(fact.measures))]

        def checked(whens: str, problems: list[str]) -> str:
            """The CTE that keeps a message's values, fingerprint and event time, and its reject reason: ``whens``, else ``problems``."""
            fields_problem = f"NULLIF(concat_ws('; ', {', '.join(problems)}), '')" if problems else "NULL"
            return f"""checked AS (
    SELECT KAFKA_PARTITION, KAFKA_OFFSET, {", ".join(kept)},
        {hashes}
        {event} AS {_EVENT},{" _sl_op," if feed.envelope is not None else ""}
        CASE
            {tombstone}WHEN MESSAGE_VALUE IS NULL OR octet_length(MESSAGE_VALUE) = 0 THEN 'empty message'
            {whens}
            ELSE {fields_problem}
        END AS {_REASON}
    FROM typed
)"""

        parse = f"""
CREATE OR REPLACE TEMP TABLE {messages if arrays else parsed} AS
WITH {_message_text(feed, raw)}, objects AS (
    SELECT *, starts_with(_sl_text, '{{') OR starts_with(ltrim(_sl_text, {_literal(_JSON_SPACE)}), '{{') AS _sl_object
    FROM text
), {_pipeline("objects", pointers, columns, texts, candidates, values, measures)}, {checked(
    "WHEN _sl_decode_problem IS NOT NULL THEN _sl_decode_problem WHEN _sl_message IS NULL THEN 'not UTF-8 text' " + message_problem, problems
)}
SELECT * FROM checked
"""
        columnar: tuple[str, ...] = ()
        if columnar_feed(feed):  # one statement from the typed record (no arrays, no envelope): no text to parse, no type to check
            typed_texts, _, typed_values, typed_problems = _field_steps(feed, outer, paths, index, columnar=True)
            columnar = (
                f"""
CREATE OR REPLACE TEMP TABLE {parsed} AS
WITH "values" AS (SELECT KAFKA_PARTITION, KAFKA_OFFSET, MESSAGE_VALUE{"".join(", " + v for v in typed_values)} FROM {raw}),
texts AS (SELECT *{"".join(", " + t for t in typed_texts)} FROM "values"), typed AS (SELECT *{"".join(", " + m for m in measures)} FROM texts),
{checked("", typed_problems + measure_problems)}
SELECT * FROM checked
""",
            )
        statements = [parse]
        elements = {a: f"{_PARSED}{n}_elements{k}" for k, a in enumerate(arrays)}
        for k, a in enumerate(arrays):
            statements.append(cls._elements(feed, a, k, inner[a], index, array_index[a], [f"_sl_v{index[x]}" for x in outer], messages, elements[a]))
        if arrays:
            statements.append(cls._combine(feed, arrays, elements, index, messages, parsed))
        # A tombstone has no reason and no row: it is neither valid nor a reject.
        valid = f"{parsed} WHERE {_REASON} IS NULL" + (" AND _sl_op IS NOT NULL" if feed.envelope is not None else "")

        def rows_of(array: tuple[str, ...] | None) -> str:
            """The relation of ``valid`` messages, or of their elements of ``array`` joined to them."""
            if array is None:
                return valid
            return f"{parsed} JOIN {elements[array]} USING (KAFKA_PARTITION, KAFKA_OFFSET) WHERE {parsed}.{_REASON} IS NULL"

        observations = {}
        rank = schema.topic_rank(feed)
        for dim in schema.dimensions:
            carried = {f.column: f for f in feed.fields_of(dim)}
            if not carried:
                continue
            keys = [f"_sl_v{index[carried[f.column].source]}" for f in dim.natural_key]
            nk = [f"{k} AS {quote(f.column)}" for k, f in zip(keys, dim.natural_key)]
            changes = {"IS_DELETED": "_sl_op = 'd'", "DELETED_AT": f"CASE WHEN _sl_op = 'd' THEN {_EVENT} END"} if feed.dimension is dim else {}
            attributes = [
                f"_sl_v{index[carried[f.column].source]} AS {quote(f.column)}"
                if f.column in carried
                else f"{changes[f.column]} AS {quote(f.column)}"
                if f.source == CHANGE_SOURCE and f.column in changes
                else f"CAST(NULL AS {duckdb_type(f.type)}) AS {quote(f.column)}"
                for f in dim.tracked_attributes
            ]
            present = " AND ".join(f"{k} IS NOT NULL" for k in keys)
            own = "true" if feed.dimension is dim else "false"
            array = feed.dimension_array(dim)
            tail = f"{_position(rank)} AS {_POSITION}, {_EVENT}, {own} AS _sl_own"
            if array is None:
                observations[dim.name] = f"SELECT {', '.join(nk + attributes)}, {tail} FROM {rows_of(None)} AND {present}"
                # A fact dated by another time than its event's points at the version in force then: the member is
                # observed then too (its natural key alone), so that its first version starts no later.
                for dated in sorted({f"_sl_v{index[x.dating.source]}" for x in feed.facts if dim.name in x.dimensions and x.dating is not x.event_time}):
                    unknown = [f"CAST(NULL AS {duckdb_type(f.type)}) AS {quote(f.column)}" for f in dim.tracked_attributes]
                    observations[dim.name] += (
                        f" UNION ALL SELECT {', '.join(nk + unknown)}, {tail} FROM (SELECT * REPLACE ({dated} AS {_EVENT}) FROM {valid}) WHERE {present}"
                    )
                continue
            # One observation per member and message: of elements repeating a member, the later one's values win.
            pos = f"_sl_pos{arrays.index(array)}"
            names = [quote(f.column) for f in dim.natural_key]
            latest = [f"arg_max({quote(f.column)}, {pos}) FILTER (WHERE {quote(f.column)} IS NOT NULL) AS {quote(f.column)}" for f in dim.tracked_attributes]
            observations[dim.name] = (
                f"SELECT {', '.join(names + latest)}, any_value({_POSITION}) AS {_POSITION}, any_value({_EVENT}) AS {_EVENT}, {own} AS _sl_own "
                f"FROM (SELECT KAFKA_PARTITION, KAFKA_OFFSET, {pos}, {', '.join(nk + attributes)}, {tail} FROM {rows_of(array)} AND {present}) "
                f"GROUP BY KAFKA_PARTITION, KAFKA_OFFSET, {', '.join(names)}"
            )
        dates = None
        if feed.facts and schema.date_dimension:
            # The events' days (a milestone's is its event's), and the days of the columns that date latest facts.
            dated = {_utc_date(f"_sl_v{index[x.dating.source]}") for x in feed.facts if x.dating is not x.event_time}
            dates = " UNION ".join([f"SELECT DISTINCT {_DATE} FROM {valid}", *(f"SELECT DISTINCT {d} FROM {valid} AND {d} IS NOT NULL" for d in sorted(dated))])
        topic = "CAST(? AS VARCHAR) AS KAFKA_TOPIC"
        rejects = f"""
SELECT {topic}, r.KAFKA_PARTITION, r.KAFKA_OFFSET, r.MESSAGE_KEY, r.MESSAGE_VALUE, p.{_REASON} AS REASON
FROM {raw} r JOIN {parsed} p USING (KAFKA_PARTITION, KAFKA_OFFSET)
WHERE p.{_REASON} IS NOT NULL ORDER BY r.KAFKA_PARTITION, r.KAFKA_OFFSET
"""
        offsets = f"SELECT KAFKA_PARTITION, max(KAFKA_OFFSET) + 1 FROM {raw} GROUP BY 1"
        tombstones = f"SELECT count(*) FROM {raw} WHERE MESSAGE_VALUE IS NULL" if feed.envelope is not None else None
        facts = {}
        topics = sorted(str(x.topic) for x in schema.feeds()) if schema.several_topics else []
        for f, fact in enumerate(feed.facts):
            array = array_of_fact[fact.table]
            fact_cols = [f"{_EVENT if x is fact.event_time else f'_sl_v{index[x.source]}'} AS {quote(x.column)}" for x in fact.fields]
            fact_cols += [
                f"_sl_v{index[feed.fields_of(d)[k].source]} AS {quote(natural_key_column(d.table, x.column))}"
                for d in schema.referenced_dimensions(fact)
                for k, x in enumerate(d.natural_key)
            ]
            fact_cols += [f"{_measure_name(f, m)} AS {quote(x.column)}" for m, x in enumerate(fact.measures)]
            if schema.date_dimension:
                dated = _DATE if fact.dating is fact.event_time else _utc_date(f"_sl_v{index[fact.dating.source]}")
                fact_cols.append(f"{_date_key(dated)} AS {quote(schema.date_dimension.key)}")
            grain_text = ", ".join(f"CAST(_sl_v{index[x.source]} AS VARCHAR)" for x in fact.grain)
            fact_cols.append(f"CAST(md5_number(concat_ws(',', {grain_text})) >> 65 AS BIGINT) AS GRAIN_HASH")
            if array is not None:
                fact_cols.append(f"_sl_pos{arrays.index(array)} AS {ELEMENT_COLUMN}")
            common = f"{', '.join(fact_cols)}, MESSAGE_HASH, {topic}, KAFKA_PARTITION, KAFKA_OFFSET"
            grain = ", ".join(f"_sl_v{index[x.source]}" for x in fact.grain)
            rows = rows_of(array)
            # Most batches repeat no grain value: then every row is the first of its value,
            # and the (costly) window that ranks repeated values is not needed.
            unique_grain = f"SELECT count(*) = count(DISTINCT ({grain})) FROM {rows}"
            if fact.changing:
                facts[fact.table] = (unique_grain, *cls._latest_rows(schema, fact, common, grain, rows, index, rank, topics))
                continue
            facts_unique = f"""
SELECT {common}, 1 AS {_RANK}, MESSAGE_HASH AS FIRST_HASH, KAFKA_PARTITION AS FIRST_PARTITION, KAFKA_OFFSET AS FIRST_OFFSET
FROM {rows}
"""
            facts_ranked = f"""
SELECT {common}, row_number() OVER first_seen AS {_RANK}, first_value(MESSAGE_HASH) OVER first_seen AS FIRST_HASH,
    first_value(KAFKA_PARTITION) OVER first_seen AS FIRST_PARTITION, first_value(KAFKA_OFFSET) OVER first_seen AS FIRST_OFFSET
FROM {rows}
WINDOW first_seen AS (PARTITION BY {grain} ORDER BY KAFKA_PARTITION, KAFKA_OFFSET)
"""
            facts[fact.table] = (unique_grain, facts_unique, facts_ranked)
        return cls(feed, raw, tuple(statements), columnar, observations, dates, facts, rejects, offsets, tombstones)

    @staticmethod
    def _latest_rows(
        schema: StarSchema, fact: Fact, common: str, grain: str, rows: str, index: Mapping[Source, int], rank: int, topics: Sequence[str]
    ) -> tuple[str, str]:
        """A ``latest`` fact's rows (see :class:`~starload.spec.Changes`): (when no grain value repeats, when some do).

        Each valid message is a row; ``_SL_RANK`` 1 is its grain value's latest event of
        the batch (by event position, descending), whose values the sink loads. Every row
        is its own first version (no event is a conflict). Each milestone holds the
        earliest event time of the grain value's rows that meet its condition.
        """
        position = f"{_position_text(_position(rank), topics)} AS {quote(fact.position_column)}"
        latest = f"{_position(rank)} DESC"
        deleted, deleted_at = ("_sl_op = 'd'", f"CASE WHEN _sl_op = 'd' THEN {_EVENT} END") if fact.deletes else ("", "")
        meets = f"NOT {deleted} AND " if fact.deletes else ""  # a delete's before reached nothing new
        met = [f"CASE WHEN {meets}CAST(_sl_v{index[m.source]} AS VARCHAR) = {_literal(m.equals)} THEN {_EVENT} END" for m in fact.milestones]
        markers, ranked_markers = "", ""
        if fact.deletes:
            # The values follow the latest create, update or read (a delete's row may hold its key only); the markers every change.
            position = f"CASE WHEN NOT {deleted} THEN {_position_text(_position(rank), topics)} END AS {quote(fact.position_column)}"
            latest = f"{deleted}, {latest}"
            at = quote(DELETES_POSITION)
            names = [quote(f.column) for f in fact.deletes]
            markers = f", {deleted} AS {names[0]}, {deleted_at} AS {names[1]}, {_position_text(_position(rank), topics)} AS {at}"
            last = f"OVER (same ORDER BY {_position(rank)} DESC ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING)"
            ranked_markers = (
                f", first_value({deleted}) {last} AS {names[0]}, first_value({deleted_at}) {last} AS {names[1]}, "
                f"{_position_text(f'max({_position(rank)}) OVER same', topics)} AS {at}"
            )

        def milestones(times: list[str]) -> str:
            found = []
            for m, at in zip(fact.milestones, times):
                found.append(f"{at} AS {quote(m.column)}")
                if schema.date_dimension:
                    found.append(f"{_date_key(_utc_date(at))} AS {quote(m.date_key_column)}")
            return "".join(", " + x for x in found)

        first = "MESSAGE_HASH AS FIRST_HASH, KAFKA_PARTITION AS FIRST_PARTITION, KAFKA_OFFSET AS FIRST_OFFSET"
        unique = f"SELECT {common}{milestones(met)}{markers}, {position}, 1 AS {_RANK}, {first} FROM {rows}"
        ranked = f"""
SELECT {common}{milestones([f"min({x}) OVER same" for x in met])}{ranked_markers}, {position},
    row_number() OVER (same ORDER BY {latest}) AS {_RANK}, {first}
FROM {rows}
WINDOW same AS (PARTITION BY {grain})
"""
        return unique, ranked

    @staticmethod
    def _elements(
        feed: Feed, array: tuple[str, ...], k: int, items: Mapping[Source, ColumnType], index: Mapping[Source, int], m: int, outer: list[str], messages: str, table: str
    ) -> str:
        """The statement that fills ``table`` with the elements of ``array`` (number ``k``) of the messages without a problem so far.

        A row per element: its position ``_sl_pos{k}``, its typed values, the measures of
        the facts with a row per element, its reason (naming the element:
        ``lines[2].qty: must be > 0``) and its fingerprint.
        """
        position = {name for name in items if element_path(name) is None}
        fields = {name: t for name, t in items.items() if name not in position}
        paths = {name: element_path(name) or () for name in fields}
        objects = any(paths.values())
        texts, candidates, values, field_problems = _field_steps(feed, fields, paths, index)
        values += [f"CAST(_sl_pos{k} AS BIGINT) AS _sl_v{index[name]}" for name in position]
        measures, problems = [], []
        for f, fact in enumerate(feed.facts):
            if feed.array_of(fact) == array:
                columns, measure_problems = _measure_steps(fact, f, index)
                measures += columns
                problems += measure_problems
        prefixes = {name: path for name, path in paths.items() if len(path) > 1}
        problems = _object_problems(prefixes, index, within=source_name(array) + "[].") + field_problems + problems
        name = source_name(array)
        reason = f"NULLIF(concat_ws('; ', {', '.join(problems)}), '')" if problems else "NULL"
        if objects:
            got = _json_kind("_sl_text")
            reason = f"CASE WHEN NOT _sl_object THEN {_literal(name + '[]: expected an object')} || {got} ELSE {reason} END"
        reason = f"replace({reason}, {_literal(name + '[]')}, {_literal(name + '[')} || _sl_pos{k} || ']')"
        pointers = [_literal(_pointer(path) if path else "") for path in paths.values()]
        columns = [f"NULLIF(CAST(_sl_json[{n + 1}] AS VARCHAR), 'null') AS _sl_j{index[x]}" for n, x in enumerate(fields)]
        fingerprint = _fingerprint(fields, index)
        kept = [f"_sl_v{index[x]}" for x in items]
        kept += [_measure_name(f, m) for f, fact in enumerate(feed.facts) if feed.array_of(fact) == array for m in range(len(fact.measures))]
        return f"""
CREATE OR REPLACE TEMP TABLE {table} AS
WITH lists AS (
    SELECT KAFKA_PARTITION, KAFKA_OFFSET{"".join(", " + v for v in outer)}, CAST(_sl_j{m} AS JSON[]) AS _sl_list
    FROM {messages} WHERE {_REASON} IS NULL AND starts_with(_sl_j{m}, '[')
), elements AS (
    SELECT * EXCLUDE (_sl_list), CAST(unnest(_sl_list) AS VARCHAR) AS _sl_text, generate_subscripts(_sl_list, 1) - 1 AS _sl_pos{k} FROM lists
), objects AS (
    SELECT *, {"starts_with(_sl_text, '{')" if objects else "true"} AS _sl_object FROM elements
), {_pipeline("objects", pointers, columns, texts, candidates, values, measures)}
SELECT KAFKA_PARTITION, KAFKA_OFFSET, _sl_pos{k}{"".join(", " + c for c in kept)},
    {reason} AS _sl_element_reason, concat_ws(',', {fingerprint or "''"}) AS _sl_element_fingerprint
FROM typed
"""

    @staticmethod
    def _combine(
        feed: Feed, arrays: tuple[tuple[str, ...], ...], elements: Mapping[tuple[str, ...], str], index: Mapping[Source, int], messages: str, parsed: str
    ) -> str:
        """The statement that joins each message to its elements' reasons and fingerprints: its reason, its MESSAGE_HASH.

        A fact with a row per element whose grain does not read the position must not
        find two elements of one message with one grain value: that message is a reject.
        """
        joins, reasons, prints = [], [], []
        for k, a in enumerate(arrays):
            found = [f"string_agg(_sl_element_reason, '; ' ORDER BY _sl_pos{k})"]
            for fact in feed.facts:
                grain = [g for g in fact.grain if array_of(g.source) == a]
                if feed.array_of(fact) == a and all(element_path(g.source) is not None for g in grain):
                    values = ", ".join(f"_sl_v{index[g.source]}" for g in grain)
                    names = ", ".join(source_name(g.source) for g in grain)
                    found.append(
                        f"CASE WHEN count(DISTINCT row({values})) FILTER (WHERE _sl_element_reason IS NULL) < count(*) FILTER (WHERE _sl_element_reason IS NULL) THEN "
                        f"{_literal(f'{source_name(a)}: two elements have the same {names}, a grain value of {fact.table} (add {source_name(a)}[#] to its grain if both are rows)')} END"
                    )
            joins.append(
                f"LEFT JOIN (SELECT KAFKA_PARTITION, KAFKA_OFFSET, NULLIF(concat_ws('; ', {', '.join(found)}), '') AS _sl_reason{k}, "
                f"string_agg(_sl_element_fingerprint, ',' ORDER BY _sl_pos{k}) AS _sl_fingerprint{k} "
                f"FROM {elements[a]} GROUP BY KAFKA_PARTITION, KAFKA_OFFSET) AS e{k} USING (KAFKA_PARTITION, KAFKA_OFFSET)"
            )
            reasons.append(f"e{k}._sl_reason{k}")
            prints.append(f"'[' || coalesce(e{k}._sl_fingerprint{k}, '') || ']'")
        return f"""
CREATE OR REPLACE TEMP TABLE {parsed} AS
SELECT m.* EXCLUDE ({_REASON}, _sl_fingerprint),
    coalesce(m.{_REASON}, NULLIF(concat_ws('; ', {", ".join(reasons)}), '')) AS {_REASON},
    CAST(md5_number(concat_ws(',', m._sl_fingerprint, {", ".join(prints)})) >> 65 AS BIGINT) AS MESSAGE_HASH
FROM {messages} AS m {" ".join(joins)}
"""


@attrs.frozen
class MappingSQL:
    """The SQL that stages one batch for ``schema``, built once per schema: one :class:`FeedSQL` per topic, and what combines them.

    ``dimensions`` and ``histories`` read every topic's observations of a dimension
    together, so a batch holds one row per member however many topics carry it.
    """

    schema: StarSchema
    feeds: tuple[FeedSQL, ...]
    dimensions: dict[str, str]
    histories: dict[str, str]
    dates: str | None

    @classmethod
    def build(cls, schema: StarSchema) -> MappingSQL:
        feeds = tuple(FeedSQL.build(schema, feed, n) for n, feed in enumerate(schema.feeds()))
        topics = sorted(str(f.topic) for f in schema.feeds()) if schema.several_topics else []
        dimensions, histories = {}, {}
        for dim in schema.dimensions:
            observed = " UNION ALL ".join(f.observations[dim.name] for f in feeds if dim.name in f.observations)
            if not observed:
                continue
            nk = [quote(f.column) for f in dim.natural_key]
            cols = list(nk)
            latest = []
            for n, f in enumerate(dim.current_attributes):
                v = quote(f.column)
                cols += [
                    f"arg_max({v}, {_POSITION}) FILTER (WHERE {v} IS NOT NULL) AS {v}",
                    f"max({_POSITION}) FILTER (WHERE {v} IS NOT NULL) AS _sl_p{n}",
                ]
                latest.append(f"{_position_text(f'_sl_p{n}', topics)} AS {quote(position_column(f.column))}")
            named = [*nk, *(quote(f.column) for f in dim.current_attributes)]
            extra = ", FIRST_EVENT_AT" if dim.keeps_history else ""
            extra += ", NOT _sl_own AS IS_INFERRED" if dim.topic is not None else ""
            dimensions[dim.name] = f"""
SELECT {", ".join(named + latest)}, LAST_EVENT_AT{extra} FROM (
    SELECT {", ".join(cols)}, max({_EVENT}) AS LAST_EVENT_AT, min({_EVENT}) AS FIRST_EVENT_AT, bool_or(_sl_own) AS _sl_own
    FROM ({observed}) GROUP BY {", ".join(nk)}
)
"""
            if dim.keeps_history:
                # Every event that carries a history attribute, and each member's earliest
                # (where its first version starts), with its position.
                hs = [quote(f.column) for f in dim.history_attributes]
                known = " OR ".join(f"{h} IS NOT NULL" for h in hs)
                histories[dim.name] = f"""
SELECT {", ".join(nk)}, {_EVENT} AS _SL_EVENT_AT, {_position_text(_POSITION, topics)} AS _SL_AT, {", ".join(hs)}
FROM (SELECT *, row_number() OVER (PARTITION BY {", ".join(nk)} ORDER BY {_POSITION}) AS _sl_n FROM ({observed}))
WHERE {known} OR _sl_n = 1
"""
        days = " UNION ".join(f.dates for f in feeds if f.dates)
        dates = None
        if schema.date_dimension and days:
            d = _DATE
            dates = f"""
SELECT {_date_key(d)} AS {quote(schema.date_dimension.key)}, {d} AS FULL_DATE,
    CAST(day({d}) AS INTEGER) AS DAY, CAST(month({d}) AS INTEGER) AS MONTH, monthname({d}) AS MONTH_NAME,
    CAST(quarter({d}) AS INTEGER) AS QUARTER, CAST(year({d}) AS INTEGER) AS YEAR,
    CAST(isodow({d}) AS INTEGER) AS DAY_OF_WEEK, dayname({d}) AS DAY_NAME,
    CAST(weekofyear({d}) AS INTEGER) AS WEEK_OF_YEAR, isodow({d}) >= 6 AS IS_WEEKEND
FROM ({days}) ORDER BY 1
"""
        return cls(schema, feeds, dimensions, histories, dates)


class Mapper:
    """Stages raw batches for one schema on a private in-memory DuckDB connection.

    Not thread-safe: the engine uses one mapper from one worker thread at a time.
    ``threads`` is DuckDB's own parallelism (``None``: one per core); one thread is
    fastest here, the mapper already runs beside the consumer and the writer.
    """

    def __init__(self, schema: StarSchema, *, decoding: Decoding | None = None, threads: int | None = 1) -> None:
        self.sql = MappingSQL.build(schema)
        #: Decodes the values of framed topics (without a registry it fails on the first one it meets).
        self.decoding = decoding or Decoding(None)
        self._con = duckdb.connect(":memory:", config={"memory_limit": "256MB"})
        self._con.execute("SET TimeZone = 'UTC'")
        if threads:
            self._con.execute(f"SET threads = {int(threads)}")

    def stage(self, raw: pa.Table, *, topic: str, group: str) -> StagedBatch:
        """Map ``raw`` (see :data:`RAW_SCHEMA`), the messages of one ``topic``, to a staged batch for ``group``."""
        return self.stage_topics({topic: raw}, group=group)

    def stage_topics(self, raws: Mapping[str, pa.Table], *, group: str) -> StagedBatch:
        """Map the messages of several topics (per topic, a :data:`RAW_SCHEMA` table) to one staged batch for ``group``.

        A topic the star does not name goes to its fact that names none (the loader's ``--topic``).
        Every part of the batch is there (empty when no message fed it), whichever topics the batch holds.
        """
        schema, con = self.sql.schema, self._con
        by_feed: dict[int, tuple[str, pa.Table]] = {}
        for topic, raw in raws.items():
            n = schema.feeds().index(schema.feed(topic))
            if n in by_feed:
                msg = f"topics {by_feed[n][0]!r} and {topic!r} both feed the fact that names no topic"
                raise ValueError(msg)
            by_feed[n] = (topic, raw)
        empty = pa.Table.from_batches([], RAW_SCHEMA)
        parts: dict[str, list[pa.Table]] = {}
        rejects, next_offsets, consumed, records, tombstones = [], {}, {}, {}, {}
        try:
            for n, sql in enumerate(self.sql.feeds):
                topic, raw = by_feed.get(n, (sql.feed.topic or "", empty))
                if sql.feed.format.framed:
                    raw = self.decoding.decode(sql.feed, raw)
                con.register(sql.raw, raw)
                for statement in sql.columnar if RECORD_COLUMN in raw.column_names else sql.parse:
                    con.execute(statement)
                for table, (unique_grain, facts_unique, facts_ranked) in sql.facts.items():
                    ((unique,),) = con.execute(unique_grain).fetchall()
                    parts.setdefault(table, []).append(con.sql(facts_unique if unique else facts_ranked, params=[topic]).to_arrow_table())
                rejects.append(con.sql(sql.rejects, params=[topic]).to_arrow_table())
                if n in by_feed:
                    next_offsets[topic] = dict(con.execute(sql.offsets).fetchall())
                    consumed[topic] = raw.num_rows
                    if sql.tombstones is not None:
                        ((tombstones[topic],),) = con.execute(sql.tombstones).fetchall()
                    if not sql.feed.facts:
                        records[topic] = raw.num_rows - rejects[-1].num_rows - tombstones.get(topic, 0)
            facts = {table: tables[0] if len(tables) == 1 else self._merged(schema, table, tables) for table, tables in parts.items()}
            dims = {name: con.sql(q).to_arrow_table() for name, q in self.sql.dimensions.items()}
            histories = {name: con.sql(q).to_arrow_table() for name, q in self.sql.histories.items()}
            dates = con.sql(self.sql.dates).to_arrow_table() if self.sql.dates else None
        finally:
            for sql in self.sql.feeds:
                with contextlib.suppress(Exception):
                    con.unregister(sql.raw)
        return StagedBatch(
            schema=schema,
            group=group,
            facts=facts,
            dimensions=dims,
            histories=histories,
            dates=dates,
            rejects=pa.concat_tables(rejects) if len(rejects) > 1 else rejects[0],
            next_offsets=next_offsets,
            consumed=consumed,
            records_by_topic=records,
            tombstones_by_topic=tombstones,
            raw={topic: raw for topic, raw in by_feed.values()},
        )

    def _merged(self, schema: StarSchema, table: str, tables: list[pa.Table]) -> pa.Table:
        """The rows of a ``latest`` fact fed by several topics (its own, then each of its updates): one row per grain value.

        Each topic's latest event of the grain value (``_SL_RANK`` 1) gives the columns that
        topic fills and its position; the row's metadata (hashes, Kafka coordinates) is its
        own topic's event's when the batch has one, else the first of the other topics'.
        """
        fact = next(f for f in schema.all_facts if f.table == table)
        grain = [quote(g.column) for g in fact.grain]
        shared = {g.column for g in fact.grain} | {"GRAIN_HASH", "MESSAGE_HASH", "KAFKA_TOPIC", "KAFKA_PARTITION", "KAFKA_OFFSET", _RANK}
        shared |= {"FIRST_HASH", "FIRST_PARTITION", "FIRST_OFFSET"}
        aliases = [f"p{k}" for k in range(len(tables))]
        columns = [f"coalesce({', '.join(f'{a}.{c}' for a in aliases)}) AS {c}" for c in [*grain, *map(quote, sorted(shared - {g.column for g in fact.grain}))]]
        seen = set(shared)
        if schema.date_dimension:
            seen.add(schema.date_dimension.key)  # the fact's own topic dates the row
            columns.append(f"p0.{quote(schema.date_dimension.key)}")
        for a, part in zip(aliases, tables):
            columns += [f"{a}.{quote(c)}" for c in part.column_names if c not in seen]
            seen |= set(part.column_names)
        joined = f"(SELECT * FROM _sl_part0 WHERE {_RANK} = 1) AS p0"
        for k in range(1, len(tables)):
            on = " AND ".join(f"p{k}.{g} = coalesce({', '.join(f'p{j}.{g}' for j in range(k))})" for g in grain)
            joined += f" FULL OUTER JOIN (SELECT * FROM _sl_part{k} WHERE {_RANK} = 1) AS p{k} ON {on}"
        con = self._con
        for k, part in enumerate(tables):
            con.register(f"_sl_part{k}", part)
        try:
            return con.sql(f"SELECT {', '.join(columns)} FROM {joined}").to_arrow_table()
        finally:
            for k in range(len(tables)):
                con.unregister(f"_sl_part{k}")

    def close(self) -> None:
        """Close the private connection."""
        self._con.close()
