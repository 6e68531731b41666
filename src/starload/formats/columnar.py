"""A batch of Avro records, decoded at once into the typed columns the mapping reads.

The per-message path (:class:`~starload.formats.avro.AvroReader`) decodes each record
with fastavro and writes it as JSON text, which the mapping then parses. This path
decodes the whole batch in one call to rugo (C++, into Arrow) and gives the mapping each
field the spec reads as a column of its declared type, so nothing is parsed twice.

It is taken only where it gives exactly what the per-message path gives; the batch is
decoded per message otherwise (which also names each bad message's problem):

- The writer schema is flat: every field a scalar (:data:`SCALARS`), a union only of
  null and one of them, and no decimal wider than rugo takes.
- Every path the spec reads is a top-level field whose writer type is of the declared
  type's own kind (:data:`SAME_KIND`; a decimal whose digits fit the declared one's), or
  is absent from the schema (missing, as in a JSON message without the key).
- Every value of the batch is framed (a batch of several schema ids is decoded a schema
  at a time, then put back in order), and rugo reads every one. Each datum goes in its
  own block of an in-memory container, so a datum that does not fill its block exactly
  (truncated, bytes after it) fails the batch instead of shifting the next one. Every
  string is valid UTF-8 (rugo does not check it), and every date and timestamp the spec
  reads lies in the years 1 to 9999.

Why rugo, and what it refuses, is in docs/wire-formats.md.
"""

from __future__ import annotations

import copy
import datetime as dt
import functools
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import attrs
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from starload.formats.avro import named, type_names, writer_kind
from starload.formats.framing import HEADER, unframed
from starload.spec import (
    Boolean,
    ColumnType,
    Date,
    Decimal,
    Double,
    Feed,
    Format,
    Integer,
    Source,
    String,
    Timestamp,
    source_name,
    source_path,
)

try:
    from rugo import avro as rugo_avro
except ImportError:  # the extra starload[rugo] is not installed (it has no wheel for every platform): Avro is decoded per message
    rugo_avro = None

log = logging.getLogger(__name__)

#: The writer types (a logical type, else the Avro type) a flat schema's fields may have.
SCALARS = frozenset(
    {"boolean", "int", "long", "float", "double", "string", "bytes", "fixed", "enum", "decimal", "date", "timestamp-millis", "timestamp-micros", "uuid"}
)
#: The Avro type each logical type must annotate to be read as it (fastavro reads another as its Avro type).
_ANNOTATES = {"decimal": {"bytes", "fixed"}, "date": {"int"}, "timestamp-millis": {"long"}, "timestamp-micros": {"long"}, "uuid": {"string"}}
#: Per declared type, the writer types whose values its column holds as they are.
SAME_KIND: dict[type[ColumnType], frozenset[str]] = {
    String: frozenset({"string", "enum", "uuid"}),
    Integer: frozenset({"int", "long"}),
    Decimal: frozenset({"decimal"}),
    Double: frozenset({"float", "double"}),
    Boolean: frozenset({"boolean"}),
    Date: frozenset({"date"}),
    Timestamp: frozenset({"timestamp-millis", "timestamp-micros"}),
}
#: The widest writer decimal the spec may read this way: rugo 0.5.6 rounds values of more than 28 digits.
MAX_PRECISION = 18
#: The widest decimal rugo reads at all (a field the spec does not read may be this wide).
RUGO_MAX_PRECISION = 38
#: The sync marker of the in-memory container (any 16 bytes).
SYNC = b"starload-avro-16"
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
#: The years 1 to 9999 in microseconds and in days since 1970-01-01 (end exclusive).
_MICROS = (
    (dt.datetime(1, 1, 1, tzinfo=dt.UTC) - _EPOCH) // dt.timedelta(microseconds=1),
    (dt.datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=dt.UTC) - _EPOCH) // dt.timedelta(microseconds=1) + 1,
)
_DAYS = ((dt.date(1, 1, 1) - _EPOCH.date()).days, (dt.date(9999, 12, 31) - _EPOCH.date()).days + 1)


def columnar_feed(feed: Feed) -> bool:
    """Whether ``feed``'s messages may be mapped from typed columns: Avro, no envelope or arrays, every path a top-level key, rugo installed."""
    shaped = (
        feed.format is Format.AVRO
        and feed.envelope is None
        and feed.event_time is not None
        and not feed.arrays
        and all(len(source_path(s)) == 1 and arrow_type(t) is not None for s, t in feed.source_fields().items())
    )
    if shaped and rugo_avro is None:
        _say_rugo_is_missing()
    return shaped and rugo_avro is not None


@functools.cache
def _say_rugo_is_missing() -> None:
    log.info("rugo is not installed: Avro is decoded one message at a time, about 3 times slower (pip install 'starload[rugo]')")


def arrow_type(declared: ColumnType) -> pa.DataType | None:
    """The Arrow type of a declared type's column (None: a type the typed columns do not carry, an epoch timestamp)."""
    if isinstance(declared, Decimal):
        return pa.decimal128(declared.precision, declared.scale) if declared.precision <= RUGO_MAX_PRECISION else None
    if isinstance(declared, Timestamp):
        return pa.timestamp("us", tz="UTC") if declared.encoding == "iso8601" else None
    types = {String: pa.string(), Integer: pa.int64(), Double: pa.float64(), Boolean: pa.bool_(), Date: pa.date32()}
    return types[type(declared)]


def _varint(n: int) -> bytes:
    """An Avro ``long`` (zig-zag, then 7 bits a byte, low first)."""
    n = (n << 1) ^ (n >> 63)
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _container_header(writer: dict[str, Any]) -> bytes:
    """The header of an Avro object container holding ``writer``'s records, uncompressed, with :data:`SYNC`."""
    meta = {b"avro.schema": orjson.dumps(_for_rugo(writer)), b"avro.codec": b"null"}
    entries = b"".join(_varint(len(k)) + k + _varint(len(v)) + v for k, v in meta.items())
    return b"Obj\x01" + _varint(len(meta)) + entries + _varint(0) + SYNC


def _for_rugo(schema: Any) -> Any:
    """``schema`` with ``uuid`` strings as plain strings (rugo reads them into a type it cannot give Arrow)."""
    schema = copy.deepcopy(schema)

    def walk(node: Any) -> Any:
        if isinstance(node, list):
            return [walk(b) for b in node]
        if isinstance(node, dict):
            if node.get("logicalType") == "uuid":
                return node["type"]
            for key in ("type", "items", "values"):
                if isinstance(node.get(key), (dict, list)):
                    node[key] = walk(node[key])
            for field in node.get("fields", ()):
                field["type"] = walk(field["type"])
        return node

    return walk(schema)


def _flat_fields(writer: Any) -> dict[str, Any] | None:
    """The writer's fields by name, each its type with a union with null taken as its other branch; None when the schema is not flat."""
    names = type_names(writer)
    if not (isinstance(writer, dict) and writer.get("type") == "record"):
        return None
    fields = {}
    for field in writer["fields"]:
        kind = named(field["type"], names)
        name = writer_kind(kind)
        base = writer_kind(kind.get("type")) if isinstance(kind, dict) else name
        if name not in SCALARS or (name in _ANNOTATES and base not in _ANNOTATES[name]):
            return None
        if name == "decimal" and not 0 < int(kind.get("precision", 0)) <= RUGO_MAX_PRECISION:
            return None
        fields[field["name"]] = kind
    return fields


@attrs.frozen
class ColumnarAvro:
    """Decodes batches of one writer schema's records into the columns of the spec's ``fields`` (see :meth:`of`)."""

    header: bytes
    #: Per source field (by :func:`~starload.spec.source_name`): the writer's field holding it (None: absent) and the column's Arrow type.
    reads: dict[str, tuple[str | None, pa.DataType]]

    @classmethod
    def of(cls, writer: dict[str, Any], fields: Mapping[Source, ColumnType]) -> ColumnarAvro | None:
        """The decoder of ``writer``'s (prepared: :func:`~starload.formats.avro.prepared`) records, or None when it would not read them exactly."""
        flat = _flat_fields(writer)
        if flat is None:
            return None
        reads: dict[str, tuple[str | None, pa.DataType]] = {}
        for source, declared in fields.items():
            (key,) = source_path(source)
            column = arrow_type(declared)
            kind = flat.get(key)
            if column is None:
                return None
            if kind is not None and writer_kind(kind) not in SAME_KIND[type(declared)]:
                return None
            if kind is not None and isinstance(declared, Decimal) and not _fits(kind, declared):
                return None
            reads[source_name(source)] = (None if kind is None else key, column)
        return cls(_container_header(writer), reads)

    def record(self, values: pa.Array) -> pa.StructArray | None:
        """The spec's fields of ``values`` (each framed with this schema's id: :func:`by_schema`) as one struct column, or None: they are decoded per message."""
        table = self._decoded(values, pc.subtract(pc.binary_length(values), HEADER))
        if table is None:
            return None
        columns = []
        for field, column_type in self.reads.values():
            if field is None:
                columns.append(pa.nulls(len(values), column_type))
                continue
            column = table.column(field).combine_chunks()
            if not _in_years(column):
                return None
            columns.append(column.cast(column_type))
        return pa.StructArray.from_arrays(columns, names=list(self.reads))

    def _decoded(self, values: pa.Array, sizes: pa.Array) -> pa.Table | None:
        """Every datum of ``values`` (framed; ``sizes``: each without its frame) decoded by rugo, or None when it cannot read them all."""
        distinct = pc.unique(sizes)
        prefixes = pa.array([b"\x02" + _varint(size) for size in distinct.to_pylist()], pa.binary())  # a block of one datum
        blocks = pc.binary_join_element_wise(
            prefixes.take(pc.index_in(sizes, distinct)), pc.binary_slice(values, HEADER, 2**31 - 1), SYNC, b""
        )
        offsets = pa.Array.from_buffers(pa.int32(), len(blocks) + 1, [None, blocks.buffers()[1]], offset=blocks.offset)
        start, end = offsets[0].as_py(), offsets[-1].as_py()
        container = self.header + memoryview(blocks.buffers()[2])[start:end]
        try:
            with rugo_avro.read_avro(container, max_threads=1) as reader:
                morsels = [morsel.to_arrow() for morsel in reader]
            if not morsels:
                return None
            table = pa.concat_tables(morsels)
            table.validate(full=True)  # rugo leaves strings as they came: invalid UTF-8 is found here
        except (RuntimeError, ValueError, pa.ArrowException):  # a datum rugo cannot read: decoded per message, which names it
            return None
        return table if table.num_rows == len(values) else None


def by_schema(values: pa.Array) -> list[tuple[int, pa.Array | None]] | None:
    """Per schema id the framed ``values`` are written with, the positions of its values (None: all); None when a value is not framed."""
    if not len(values) or values.null_count or pc.min(pc.binary_length(values)).as_py() < HEADER:
        return None
    frames = pc.binary_slice(values, 0, HEADER)
    distinct = pc.unique(frames).to_pylist()
    try:
        ids = [unframed(frame)[0] for frame in distinct]
    except ValueError:  # a value without the magic byte
        return None
    if len(distinct) == 1:
        return [(ids[0], None)]
    return [(schema_id, pc.indices_nonzero(pc.equal(frames, frame))) for schema_id, frame in zip(ids, distinct, strict=True)]


def in_order(parts: Sequence[tuple[pa.Array, pa.StructArray]]) -> pa.StructArray:
    """The records of several schemas' values (each with the positions of its values) in the batch's order."""
    positions = pa.concat_arrays([p for p, _ in parts])
    return pa.concat_arrays([r for _, r in parts]).take(pc.sort_indices(positions))


def _fits(kind: dict[str, Any], declared: Decimal) -> bool:
    """Whether every value of the writer decimal ``kind`` is a value of ``declared`` (no digit lost on either side)."""
    precision, scale = int(kind["precision"]), int(kind.get("scale", 0))
    return precision <= MAX_PRECISION and scale <= declared.scale and precision - scale <= declared.precision - declared.scale


def _in_years(column: pa.Array) -> bool:
    """Whether every date or timestamp of ``column`` lies in the years 1 to 9999 (any other column: True)."""
    if pa.types.is_timestamp(column.type):
        if column.type.unit != "us":  # rugo reads every timestamp in microseconds
            return False
        (low, high), numbers = _MICROS, column.cast(pa.int64())
    elif pa.types.is_date32(column.type):
        (low, high), numbers = _DAYS, column.cast(pa.int32())
    else:
        return True
    extremes = pc.min_max(numbers)
    least, most = extremes["min"].as_py(), extremes["max"].as_py()
    return least is None or (low <= least and most < high)
