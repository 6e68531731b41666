"""Avro records of a writer schema, as the JSON text the mapping reads, with their logical types exact.

Decoded with fastavro from a parsed writer schema kept per schema id (why not pyruhvro,
which decodes into Arrow: see docs/wire-formats.md). A value becomes JSON as the
mapping reads it: a ``decimal`` the string of its exact digits, a ``date``
``YYYY-MM-DD``, a ``timestamp-*`` ISO-8601 in UTC, a ``local-timestamp-*`` ISO-8601
without an offset (read as UTC, the rule for any timestamp without one), ``uuid`` and
``enum`` strings; records are objects, maps objects, arrays arrays, a union its branch.

Kafka Connect's and Debezium's semantic types (``connect.name``) are read as what they
mean (:data:`SEMANTIC`), so Debezium's Avro converter gives the values its JSON
converter does: ``io.debezium.time.Date`` a date, ``Timestamp``/``MicroTimestamp``/
``NanoTimestamp`` the database's wall time (no offset: UTC; nanoseconds truncated to
the microseconds the star keeps), ``ZonedTimestamp`` its ISO text,
``io.debezium.data.VariableScaleDecimal`` (``{scale, value}``) an exact decimal.

Before a schema's records are read, every path the spec reads is looked up in the
schema (:meth:`AvroReader.problems`): a writer type that cannot become the declared type
(a ``double`` for a ``decimal``, a ``long`` for a ``timestamp``) makes every message of
that schema a reject naming the path and both types; never a guess.
"""

from __future__ import annotations

import base64
import copy
import datetime as dt
import decimal
import io
from collections.abc import Iterator, Mapping
from typing import Any

import fastavro
import orjson
from fastavro.read import LOGICAL_READERS

from starload.spec import (
    ARRAY_MARK,
    POSITION_MARK,
    ColumnType,
    Date,
    Decimal,
    Double,
    Integer,
    Source,
    String,
    Timestamp,
    source_path,
    type_spelling,
)
from starload.spec import Boolean as BooleanType

#: The custom logical types of the semantic types fastavro has none for.
_NANOS = "starload-local-timestamp-nanos"
_VARIABLE_SCALE = "starload-variable-scale-decimal"

#: A semantic type (``connect.name``) → the logical type it is read as.
SEMANTIC = {
    "io.debezium.time.Date": "date",
    "io.debezium.time.Timestamp": "local-timestamp-millis",
    "io.debezium.time.MicroTimestamp": "local-timestamp-micros",
    "io.debezium.time.NanoTimestamp": _NANOS,
    "io.debezium.data.VariableScaleDecimal": _VARIABLE_SCALE,
    "org.apache.kafka.connect.data.Date": "date",
    "org.apache.kafka.connect.data.Timestamp": "timestamp-millis",
    "org.apache.kafka.connect.data.Decimal": "decimal",
}

_TIMESTAMPS = {"timestamp-millis", "timestamp-micros", "local-timestamp-millis", "local-timestamp-micros", _NANOS}
#: Per declared type, the writer types (a logical type, else the Avro type) its values may come from.
ACCEPTS: dict[type[ColumnType], frozenset[str]] = {
    Integer: frozenset({"int", "long"}),
    Decimal: frozenset({"decimal", _VARIABLE_SCALE, "int", "long", "string"}),
    Double: frozenset({"float", "double", "int", "long", "decimal", _VARIABLE_SCALE}),
    String: frozenset({"string", "enum", "uuid"}),
    BooleanType: frozenset({"boolean"}),
    Date: frozenset({"date", "string"}),
    Timestamp: frozenset({*_TIMESTAMPS, "string"}),
}


def _nanos(value: int, *_: Any) -> dt.datetime:
    return dt.datetime(1970, 1, 1) + dt.timedelta(microseconds=value // 1000)


def exact_decimal(unscaled: bytes, scale: int) -> decimal.Decimal:
    """The decimal of an unscaled value's big-endian two's-complement bytes and its scale (Debezium's and Confluent's encoding)."""
    return decimal.Decimal(int.from_bytes(unscaled, "big", signed=True)).scaleb(-scale)


def _variable_scale(value: dict[str, Any], *_: Any) -> decimal.Decimal:
    return exact_decimal(value["value"], value["scale"])


LOGICAL_READERS[f"long-{_NANOS}"] = _nanos
LOGICAL_READERS[f"record-{_VARIABLE_SCALE}"] = _variable_scale


def prepared(writer: Any) -> Any:
    """The writer schema (parsed JSON) with each semantic type given the logical type it is read as."""
    writer = copy.deepcopy(writer)
    for node in _nodes(writer):
        meaning = SEMANTIC.get(node.get("connect.name", ""))
        if meaning is None or node.get("logicalType") == meaning:
            continue
        node["logicalType"] = meaning
        if meaning == "decimal":
            parameters = node.get("connect.parameters", {})
            node.setdefault("scale", int(parameters.get("scale", 0)))
            node.setdefault("precision", int(parameters.get("connect.decimal.precision", 64)))
    return writer


def _nodes(schema: Any) -> Iterator[dict[str, Any]]:
    """Every schema object in ``schema`` (records' fields' types, union branches, items, values)."""
    if isinstance(schema, list):
        for branch in schema:
            yield from _nodes(branch)
    elif isinstance(schema, dict):
        yield schema
        for key in ("type", "items", "values"):
            if isinstance(schema.get(key), (dict, list)):
                yield from _nodes(schema[key])
        for field in schema.get("fields", ()):
            yield from _nodes(field.get("type"))


def _json_default(value: Any) -> Any:
    if isinstance(value, decimal.Decimal):
        return format(value, "f")
    if isinstance(value, bytes):  # bytes no declared type reads (writer_problems): kept legible
        return base64.b64encode(value).decode()
    raise TypeError(type(value).__name__)


class AvroReader:
    """The records of one writer schema (its registry text ``schema_str``); ValueError when it is no Avro schema."""

    def __init__(self, schema_str: str) -> None:
        try:
            self.writer = prepared(orjson.loads(schema_str))
            self._parsed = fastavro.parse_schema(self.writer, _force=True)
        except (orjson.JSONDecodeError, fastavro.schema.SchemaParseException, KeyError, TypeError) as exc:
            raise ValueError(f"not an Avro schema fastavro reads: {exc}") from None

    def text(self, payload: bytes) -> str:
        """The record encoded in ``payload`` as JSON text; ValueError when ``payload`` is not one."""
        buffer = io.BytesIO(payload)
        try:
            record = fastavro.schemaless_reader(buffer, self._parsed, None)
        except (EOFError, ValueError, IndexError, KeyError, UnicodeDecodeError, TypeError, OverflowError) as exc:
            # OverflowError: a date or timestamp beyond the years Python holds ("date value out of range")
            raise ValueError(f"not an Avro record of its schema: {exc}") from None
        if buffer.tell() != len(payload):
            raise ValueError(f"not an Avro record of its schema: {len(payload) - buffer.tell()} bytes after the record")
        return orjson.dumps(record, default=_json_default, option=orjson.OPT_UTC_Z).decode()

    def problems(self, fields: Mapping[Source, ColumnType], *, within: tuple[str, ...] = ()) -> list[str]:
        """Why the spec's ``fields`` (paths and declared types) cannot be read from these records (empty when they can).

        ``within``: the keys leading to the row the paths start at (Debezium's ``after``).
        """
        root, names = self.writer, type_names(self.writer)
        for key in within:
            root = _field(named(root, names), key)
            if root is None:
                return [f"{'.'.join(within)}: not in the writer schema"]
        found = []
        for source, declared in fields.items():
            problem = _path_problem(root, source_path(source), declared, names)
            if problem is not None:
                found.append(problem)
        return found


def named(schema: Any, names: dict[str, Any]) -> Any:
    """A type as defined: a union with null its other branch, a reference by name the named type (records may refer to an earlier one)."""
    schema = _branch(schema)
    return _branch(names.get(schema, schema)) if isinstance(schema, str) else schema


def _branch(schema: Any) -> Any:
    """A union with null as its other branch; the schema itself when it is no such union."""
    if isinstance(schema, list):
        others = [b for b in schema if b != "null"]
        return others[0] if len(others) == 1 else schema
    return schema


def _field(record: Any, key: str) -> Any:
    """The type of field ``key`` of a record schema (None: not a record, or no such field)."""
    if isinstance(record, dict) and record.get("type") == "record":
        return next((f["type"] for f in record["fields"] if f["name"] == key), None)
    return None


def writer_kind(schema: Any) -> str:
    """What a writer type is called in the type table: its logical type, else its Avro type."""
    if isinstance(schema, dict):
        return str(schema.get("logicalType") or writer_kind(schema.get("type")))
    if isinstance(schema, list):
        return "union of " + " and ".join(writer_kind(b) for b in schema)
    return str(schema)


def _shown(schema: Any) -> str:
    """A writer type as a reject names it: ``decimal(12,2)``, ``double``, ``io.debezium.time.Date``."""
    if isinstance(schema, dict):
        if schema.get("connect.name") in SEMANTIC:
            return str(schema["connect.name"])
        if schema.get("logicalType") == "decimal":
            return f"decimal({schema.get('precision')},{schema.get('scale', 0)})"
    return writer_kind(schema)


def type_names(schema: Any) -> dict[str, Any]:
    """The named types defined in ``schema``, by name and by full name."""
    names: dict[str, Any] = {}
    for node in _nodes(schema):
        if node.get("type") in ("record", "enum", "fixed") and "name" in node:
            names[node["name"]] = node
            names[f"{node.get('namespace')}.{node['name']}"] = node
    return names


def _path_problem(root: Any, keys: tuple[str, ...], declared: ColumnType, names: dict[str, Any]) -> str | None:
    node = root
    if keys[-1].endswith(POSITION_MARK):  # an element's position is a number whatever the array holds
        return None
    for n, key in enumerate(keys):
        node = named(node, names)
        if isinstance(node, dict) and node.get("type") == "map":
            node = node["values"]
            continue
        name = key.removesuffix(ARRAY_MARK)
        if writer_kind(node) != "record":
            return f"{'.'.join(keys[:n]) or 'the record'}: the writer type {_shown(node)} has no field {name!r}"
        field = _field(node, name)
        if field is None:
            return None  # absent: read as missing, as a JSON message without the key
        node = named(field, names)
        if key.endswith(ARRAY_MARK):
            if not (isinstance(node, dict) and node.get("type") == "array"):
                return f"{'.'.join(keys[: n + 1])}: the writer type {_shown(node)} is not an array"
            node = node["items"]
    node = named(node, names)
    kinds = {writer_kind(b) for b in node if b != "null"} if isinstance(node, list) else {writer_kind(node)}
    if kinds <= accepted(declared):
        return None
    return f"{'.'.join(keys)}: the writer type {_shown(node)} cannot become {type_spelling(declared)}"


def accepted(declared: ColumnType) -> frozenset[str]:
    """The writer types (a logical type, else the Avro type) a declared type's values may come from."""
    if isinstance(declared, Timestamp) and declared.encoding != "iso8601":
        return frozenset({"int", "long"})  # a number of seconds or milliseconds, as written
    return ACCEPTS[type(declared)]


# ---- writing: the Avro schema of a topic's messages as the spec reads them, and its records ---------


def avro_type(declared: ColumnType) -> Any:
    """The Avro type a writer gives a declared type's values (exact: decimals as ``decimal``, times as ``timestamp-micros``)."""
    if isinstance(declared, Decimal):
        return {"type": "bytes", "logicalType": "decimal", "precision": declared.precision, "scale": declared.scale}
    if isinstance(declared, Timestamp):
        return {"type": "long", "logicalType": "timestamp-micros"} if declared.encoding == "iso8601" else "long"
    if isinstance(declared, Date):
        return {"type": "int", "logicalType": "date"}
    return {Integer: "long", Double: "double", BooleanType: "boolean"}.get(type(declared), "string")


def schema_for(fields: Mapping[Source, tuple[ColumnType, bool]], name: str) -> dict[str, Any]:
    """An Avro record schema holding ``fields`` (per path, its declared type and whether it is required) at their paths.

    Objects on the way are records, ``lines[]`` an array of records; a field not
    required is a union with null (default null).
    """
    return _record(path_tree(fields), name, name)


def path_tree(fields: Mapping[Source, Any]) -> dict[str, Any]:
    """``fields`` (per path, a leaf) as nested dicts by key (``lines[]`` keeps its mark; a position ``lines[#]`` makes the array's dict)."""
    tree: dict[str, Any] = {}
    for source, leaf in fields.items():
        keys = source_path(source)
        if keys[-1].endswith(POSITION_MARK):
            keys = (*keys[:-1], keys[-1].removesuffix(POSITION_MARK) + ARRAY_MARK)
            node = tree
            for key in keys:
                node = node.setdefault(key, {})
            continue
        node = tree
        for key in keys[:-1]:
            node = node.setdefault(key, {})
        node[keys[-1]] = leaf
    return tree


def _record(tree: dict[str, Any], name: str, path: str) -> dict[str, Any]:
    fields = []
    for key, node in tree.items():
        clean = key.removesuffix(ARRAY_MARK)
        if isinstance(node, tuple):
            declared, required = node
            kind = avro_type(declared)
        else:
            required = False
            kind = _record(node, _avro_name(f"{path}_{clean}"), f"{path}_{clean}")
        if key.endswith(ARRAY_MARK):
            kind = {"type": "array", "items": kind}
        fields.append(
            {"name": clean, "type": kind} if required else {"name": clean, "type": ["null", kind], "default": None}
        )
    return {"type": "record", "name": _avro_name(name), "fields": fields}


def _avro_name(text: str) -> str:
    cleaned = "".join(c if c.isalnum() or c == "_" else "_" for c in text)
    return cleaned if cleaned[:1].isalpha() or cleaned[:1] == "_" else f"_{cleaned}"


class AvroWriter:
    """Writes JSON-shaped values (a generator's events) as Avro records of ``schema`` (a record schema, parsed JSON).

    A value is converted to its field's type as the spec would read it from JSON: a
    decimal from its number or digits, a timestamp from ISO-8601 (no offset: UTC), a
    date from ``YYYY-MM-DD``; keys the schema does not name are left out.
    """

    def __init__(self, schema: dict[str, Any]) -> None:
        self.schema = schema
        self._parsed = fastavro.parse_schema(schema, _force=True)

    def record(self, value: Any) -> bytes:
        """``value`` as an Avro binary record (unframed); ValueError naming the field when it does not fit the schema."""
        buffer = io.BytesIO()
        try:
            fastavro.schemaless_writer(buffer, self._parsed, _native(self.schema, value))
        except (ValueError, TypeError, KeyError, decimal.InvalidOperation) as exc:
            raise ValueError(f"does not fit the Avro schema {self.schema.get('name')}: {exc}") from None
        return buffer.getvalue()


def _native(schema: Any, value: Any) -> Any:
    """``value`` (JSON-shaped) with each leaf converted to what fastavro writes for ``schema``'s logical types."""
    if value is None:
        return None
    if isinstance(schema, list):
        branch = _branch(schema)
        return value if branch is schema else _native(branch, value)
    if not isinstance(schema, dict):
        return value
    kind, logical = schema.get("type"), schema.get("logicalType")
    if kind == "record":
        if not isinstance(value, dict):
            return value
        return {f["name"]: _native(f["type"], value.get(f["name"])) for f in schema["fields"]}
    if kind == "array":
        return [_native(schema["items"], v) for v in value] if isinstance(value, list) else value
    if kind == "map":
        return {k: _native(schema["values"], v) for k, v in value.items()} if isinstance(value, dict) else value
    if isinstance(kind, (dict, list)):
        return _native(kind, value)
    if logical == "decimal" and isinstance(value, (int, float, str)) and not isinstance(value, bool):
        return decimal.Decimal(str(value))
    if logical in ("timestamp-micros", "timestamp-millis") and isinstance(value, str):
        at = dt.datetime.fromisoformat(value)
        return at if at.tzinfo is not None else at.replace(tzinfo=dt.UTC)
    if logical == "date" and isinstance(value, str):
        return dt.date.fromisoformat(value)
    return value
