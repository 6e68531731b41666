"""For generated specs (nesting depth, every type, required or not, an array whose elements are a second fact's
rows) and generated messages, the DuckDB star equals an independent pure-Python oracle, whatever the batch size,
and every invalid value is rejected with a reason naming its path (and its element)."""

from __future__ import annotations

import json
import math
import re
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal as D
from typing import Any

import attrs
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from starload import Boolean, Date, Decimal, Dimension, Double, DuckDBSink, Fact, Field, Integer, StarSchema, String, Timestamp
from starload.mapping import ISO_TIMESTAMP, Mapper, raw_batch
from starload.spec import element_path, source_name

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
TYPES = [String(), String(4), Integer(), Decimal(8, 2), Double(), Boolean(), Date(), Timestamp(), Timestamp("epoch_s"), Timestamp("epoch_ms")]
MISSING = object()


# ---- the oracle: what a value of each type must be, in plain Python ------------------------------


def typed(column_type: Any, value: Any) -> Any:
    """The value the column holds, or MISSING when the type refuses ``value``."""
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(column_type, String):
        ok = isinstance(value, str) and (column_type.max_length is None or len(value) <= column_type.max_length)
        return value if ok else MISSING
    if isinstance(column_type, Integer):
        return value if isinstance(value, int) and not isinstance(value, bool) and -(2**63) <= value < 2**63 else MISSING
    if isinstance(column_type, Decimal):
        if not (number or isinstance(value, str)):
            return MISSING
        try:
            exact = D(str(value))
        except ArithmeticError:
            return MISSING
        fits = exact.as_tuple().exponent >= -column_type.scale and abs(exact) < 10 ** (column_type.precision - column_type.scale)
        return exact if exact.is_finite() and fits else MISSING
    if isinstance(column_type, Double):
        return float(value) if number and math.isfinite(value) else MISSING
    if isinstance(column_type, Boolean):
        return value if isinstance(value, bool) else MISSING
    if isinstance(column_type, Date):
        if not (isinstance(value, str) and re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", value)):
            return MISSING
        try:
            return date.fromisoformat(value)
        except ValueError:
            return MISSING
    if column_type.encoding == "iso8601":
        try:
            parsed = datetime.fromisoformat(value) if isinstance(value, str) and re.fullmatch(ISO_TIMESTAMP, value) else None
        except ValueError:
            parsed = None
        return MISSING if parsed is None else parsed.replace(tzinfo=parsed.tzinfo or UTC).astimezone(UTC)
    if not number:
        return MISSING
    unit = timedelta(seconds=1) if column_type.encoding == "epoch_s" else timedelta(milliseconds=1)
    try:
        return EPOCH + unit * value
    except OverflowError:  # past the years 1 to 9999
        return MISSING


def walk(message: dict, path: tuple[str, ...]) -> Any:
    """The value at ``path`` (MISSING when an object on the way is missing, null or not an object)."""
    value: Any = message
    for key in path:
        if not isinstance(value, dict) or value.get(key) is None:
            return MISSING
        value = value[key]
    return value


def values(fields: list[tuple[Field, tuple[str, ...]]], node: dict, within: str = "", also: tuple[tuple[str, ...], ...] = ()) -> tuple[dict[str, Any], set[tuple[str, str]]]:
    """The columns of ``fields`` (each with its path inside ``node``) and the reasons, named ``within`` + path.

    ``also``: more paths whose objects on the way must be objects (an array's).
    """
    reasons = set()
    prefixes = {path[:n] for path in (*(p for _, p in fields), *also) for n in range(1, len(path))}
    for prefix in prefixes:
        parent = walk(node, prefix[:-1]) if len(prefix) > 1 else node
        if isinstance(parent, dict) and parent.get(prefix[-1]) is not None and not isinstance(parent[prefix[-1]], dict):
            reasons.add((within + source_name(prefix), "object"))
    row = {}
    for field, path in fields:
        value = walk(node, path)
        if value is MISSING:
            row[field.column] = None
            if field.required:
                reasons.add((within + source_name(path), "missing"))
            continue
        row[field.column] = typed(field.type, value)
        if row[field.column] is MISSING:
            reasons.add((within + source_name(path), "invalid"))
    return row, reasons


def oracle(
    fields: list[Field], message: dict, array: tuple[str, ...] | None = None, elements: list[Field] | None = None
) -> tuple[dict[str, Any] | None, dict[int, dict[str, Any]], set[tuple[str, str]]]:
    """(the fact's columns, or None when rejected; the element fact's rows by position; the reasons as (path, 'missing' | 'object' | 'invalid')).

    An array missing or null has no elements; one that is not a list is a reject; the elements
    are judged only when the rest of the message is sound (the loader reads them only then), each one named by its position.
    """
    row, reasons = values([(f, f.path) for f in fields], message, also=(array,) if array else ())
    rows: dict[int, dict[str, Any]] = {}
    found = walk(message, array) if array is not None else MISSING
    if found is not MISSING and not isinstance(found, list):
        reasons.add((source_name(array), "invalid"))
    for n, element in enumerate(found if isinstance(found, list) and not reasons else []):
        name = f"{source_name(array)}[{n}]"
        if not isinstance(element, dict):
            reasons.add((name, "invalid"))
            continue
        inside = [(f, element_path(f.source)) for f in elements or [] if element_path(f.source) is not None]
        rows[n], found_reasons = values(inside, element, name + ".")
        rows[n] |= {f.column: n for f in elements or [] if element_path(f.source) is None}
        reasons |= found_reasons
    return (None if reasons else row), ({} if reasons else rows), reasons


def reason_set(reason: str) -> set[tuple[str, str]]:
    found = set()
    for part in reason.split("; "):
        part = part.split(", got an array (write ")[0]  # an array where an object is expected: "…, got an array (write a[].b …)"
        path, _, what = part.rpartition(": ")
        if what not in ("missing", "expected an object"):
            path, _, what = part.partition(": ")
        found.add((path, {"missing": "missing", "expected an object": "object"}.get(what, "invalid")))
    return found


# ---- generated specs and messages --------------------------------------------------------------

keys = st.sampled_from(["p", "q", "r.s"])
paths = st.lists(keys, min_size=1, max_size=3).map(tuple)


@st.composite
def specs(draw: st.DrawFn) -> list[Field]:
    chosen: list[tuple[str, ...]] = []
    for path in draw(st.lists(paths, min_size=1, max_size=5, unique=True)):
        if not any(path[: len(p)] == p or p[: len(path)] == path for p in chosen):  # no value is also an object
            chosen.append(path)
    return [
        Field(f"C{i}", list(path), draw(st.sampled_from(TYPES)), required=draw(st.booleans())) for i, path in enumerate(chosen)
    ]


def valid(column_type: Any) -> st.SearchStrategy[Any]:
    if isinstance(column_type, String):
        return st.text(max_size=column_type.max_length or 12)
    if isinstance(column_type, Integer):
        return st.integers(-(2**63), 2**63 - 1)
    if isinstance(column_type, Decimal):
        amounts = st.decimals(min_value=-999999, max_value=999999, places=2)
        return st.one_of(amounts.map(str), amounts.map(float))
    if isinstance(column_type, Double):
        return st.one_of(st.floats(allow_nan=False, allow_infinity=False), st.integers(-(10**15), 10**15))
    if isinstance(column_type, Boolean):
        return st.booleans()
    if isinstance(column_type, Date):
        return st.dates(min_value=date(1, 1, 1)).map(date.isoformat)
    if column_type.encoding == "iso8601":
        offsets = st.sampled_from([UTC, *(datetime.strptime(o, "%z").tzinfo for o in ("+0530", "-0800"))])
        moments = st.datetimes(min_value=datetime(1900, 1, 1), max_value=datetime(2200, 1, 1), timezones=offsets)
        return moments.map(datetime.isoformat)
    if column_type.encoding == "epoch_s":
        return st.one_of(st.integers(-(10**10), 10**10), st.integers(-(10**11), 10**11).map(lambda n: n / 8))
    return st.integers(-(10**13), 10**13)


invalid = st.sampled_from(
    ["nope", "", "true", "1.5", "2024-2-3", "2023-02-29", "0000-01-01", "1.234", 12345678.5, 1e20, True, False, 1.5, -7, 2**64, [1], {"z": 1}]
)


def near_misses(column_type: Any) -> st.SearchStrategy[Any]:
    """Values a careless producer sends for ``column_type``, each of which it must refuse."""
    if isinstance(column_type, String):
        return st.sampled_from(["abcde" * 3, 5, True]) if column_type.max_length else st.sampled_from([5, False, 1.5])
    if isinstance(column_type, Integer):
        return st.sampled_from([2.5, "3", 2**64, True])
    if isinstance(column_type, Decimal):
        return st.sampled_from(["1.234", 12345678.5, "abc", True, 0.001])
    if isinstance(column_type, Double):
        return st.sampled_from(["1.5", True, 1e400])
    if isinstance(column_type, Boolean):
        return st.sampled_from(["true", 1, 0, "yes"])
    if isinstance(column_type, Date):
        return st.sampled_from(["2024-2-3", "2023-02-29", "0000-01-01", "2024-02-03T00:00", 20240203])
    if column_type.encoding == "iso8601":
        return st.sampled_from(["2024-2-3", "2024-02-03t10:00", "yesterday", 1714557600, "2024-02-03T10:00:00 UTC"])
    return st.sampled_from(["1714557600", True, 1e20, -1e20])


def value_for(field: Field) -> st.SearchStrategy[Any]:
    return st.one_of(st.just(MISSING), st.none(), valid(field.type), valid(field.type), near_misses(field.type), invalid)


def put(message: dict, path: tuple[str, ...], value: Any) -> None:
    """Set ``path`` in ``message`` unless another field made an object on the way something else."""
    node = message
    for key in path[:-1]:
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            return
    if path[-1] not in node:
        node[path[-1]] = value


@st.composite
def arrays(draw: st.DrawFn) -> tuple[tuple[str, ...] | None, list[Field]]:
    """None, or an array (at the top or inside an object) and the fields of its elements: typed fields at any depth, the position."""
    array = draw(st.sampled_from([None, ("L",), ("m", "L")]))
    if array is None:
        return None, []
    *parents, name = array
    inside = [attrs.evolve(f, column=f"E{f.column}", source=(*parents, f"{name}[]", *f.path)) for f in draw(specs())]
    return array, [Field("N", (*parents, f"{name}[#]"), Integer()), *inside]


def element_value(draw: st.DrawFn, elements: list[Field]) -> Any:
    """One element of the array: an object of its fields' values (now and then a wrong shape inside), or now and then no object."""
    if draw(st.integers(0, 9)) == 0:
        return draw(st.sampled_from([3, "x", None, [1], True]))
    element: dict = {}
    for field in elements:
        path = element_path(field.source)
        if not path:
            continue
        if draw(st.integers(0, 14)) == 0:
            put(element, path[:1], draw(st.sampled_from(["flat", 3, [1, 2]])))
        value = draw(value_for(field))
        if value is not MISSING:
            put(element, path, value)
    return element


@st.composite
def streams(draw: st.DrawFn) -> tuple[list[Field], tuple[str, ...] | None, list[Field], list[dict]]:
    fields = draw(specs())
    array, elements = draw(arrays())
    messages = []
    for i in range(draw(st.integers(1, 12))):
        message: dict = {"id": i, "at": "2024-01-01T00:00:00Z", "dim": {"id": "d"}}
        for field in fields:
            if draw(st.integers(0, 9)) == 0:  # a wrong shape: a value where the path goes on
                put(message, field.path[:1], draw(st.sampled_from(["flat", 3, [1, 2]])))
            value = draw(value_for(field))
            if value is not MISSING:
                put(message, field.path, value)
        if array is not None:  # empty, one element, many; missing, null, or no array at all now and then
            shape = draw(st.sampled_from(["list", "list", "list", "list", "missing", "null", "wrong"]))
            if shape == "list":
                put(message, array, [element_value(draw, elements) for _ in range(draw(st.integers(0, 4)))])
            elif shape != "missing":
                put(message, array, None if shape == "null" else draw(st.sampled_from(["flat", 3, {"z": 1}])))
        messages.append(message)
    return fields, array, elements, messages


def schema_of(fields: list[Field], elements: list[Field]) -> StarSchema:
    """A fact of a row per message; with ``elements``, a second fact on the same topic, a row per element (grain: id and position)."""
    grain, at = [Field("ID", "id", Integer(), required=True)], Field("AT", "at", Timestamp(), required=True)
    facts = [Fact("F", grain, at, ["d"], fields, topic="t")]
    if elements:
        facts.append(Fact("G", [*grain, elements[0]], at, ["d"], elements[1:], topic="t"))
    return StarSchema(
        name="generated", dimensions=[Dimension("d", "DIM_D", "D_KEY", [Field("D_ID", "dim.id")])], date_dimension=None, facts=facts
    )


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(stream=streams(), batch_size=st.integers(1, 12))
def test_the_duckdb_star_equals_the_python_oracle(stream, batch_size):
    fields, array, elements, messages = stream
    schema = schema_of(fields, elements)
    values = [json.dumps(m).encode() for m in messages]
    sink, mapper = DuckDBSink(":memory:"), Mapper(schema)
    try:
        sink.prepare(schema)
        for start in range(0, len(values), batch_size):
            chunk = values[start : start + batch_size]
            sink.write(mapper.stage(raw_batch(chunk, offsets=range(start, start + len(chunk))), topic="t", group="g"))
        columns = ", ".join(f'"{f.column}"' for f in fields)
        facts = {row[0]: dict(zip((f.column for f in fields), row[1:])) for row in sink.connection.execute(f'SELECT "ID", {columns} FROM "F"').fetchall()}
        rejects = dict(sink.connection.execute('SELECT "KAFKA_OFFSET", "REASON" FROM "STARLOAD_REJECTS"').fetchall())
        lines: dict[int, dict[int, dict[str, Any]]] = {}
        if elements:
            names = [f.column for f in elements]
            quoted = ", ".join(f'"{c}"' for c in names)
            for i, *row in sink.connection.execute(f'SELECT "ID", {quoted} FROM "G"').fetchall():
                lines.setdefault(i, {})[row[0]] = dict(zip(names, row))
    finally:
        mapper.close()
        sink.close()
    for i, message in enumerate(messages):
        row, rows, reasons = oracle(fields, message, array, elements)
        if row is None:
            assert i not in facts and i not in lines and reason_set(rejects[i]) == reasons, (message, rejects.get(i), reasons)
        else:
            assert i not in rejects, (message, rejects[i])
            assert facts[i] == row, (message, facts[i], row)
            assert lines.get(i, {}) == rows, (message, lines.get(i), rows)
