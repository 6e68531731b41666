"""Wire formats: a topic's raw message values, decoded into the JSON text or the typed columns the mapping reads.

The mapping reads every format the same way: the record as JSON text
(:mod:`starload.mapping`). A ``json`` topic's values are that text already, and the
mapping reads their bytes itself. A framed topic's (``avro``, ``protobuf``, ``json_schema``: Confluent's
wire format, :mod:`starload.formats.framing`) are decoded here, per batch: the schema of
each id met is fetched once (:class:`~starload.formats.registry.SchemaRegistry`), the
spec's paths are checked against it once, and the values become two columns beside the
raw ones, ``MESSAGE_TEXT`` (the record as JSON text) and ``DECODE_PROBLEM`` (why a value
is not a record of its topic's format: a reject's reason). The raw bytes stay as they
came, for the rejects and the dead-letter topic.

A batch of flat Avro records is decoded at once instead, where that gives the same star
(:mod:`starload.formats.columnar`): one column beside the raw ones, ``MESSAGE_RECORD``,
a struct of the spec's fields already of their declared types.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

import pyarrow as pa

from starload.exceptions import StarloadError
from starload.formats.avro import AvroReader
from starload.formats.columnar import ColumnarAvro, by_schema, columnar_feed, in_order
from starload.formats.framing import unframed
from starload.formats.protobuf import ProtobufReader
from starload.formats.registry import SchemaRegistry
from starload.spec import Feed, Format

#: The columns a decoded table has beyond :data:`~starload.mapping.RAW_SCHEMA`'s.
DECODED_FIELDS = (pa.field("MESSAGE_TEXT", pa.string()), pa.field("DECODE_PROBLEM", pa.string()))
#: The column a batch decoded at once has instead (see :mod:`starload.formats.columnar`): the spec's fields, typed.
RECORD_COLUMN = "MESSAGE_RECORD"
T = TypeVar("T")
#: The registry's name of each framed format's schemas (its ``schemaType``; absent means Avro).
SCHEMA_TYPES = {Format.AVRO: "AVRO", Format.PROTOBUF: "PROTOBUF", Format.JSON_SCHEMA: "JSON"}


class Reader(Protocol):
    """The records of one writer schema."""

    def text(self, payload: bytes) -> str:
        """The record in ``payload`` (the framed value without its frame) as JSON text; ValueError when it is none."""
        ...

    def problems(self, fields: dict, *, within: tuple[str, ...] = ()) -> list[str]:
        """Why the spec's paths and declared types cannot be read from these records (empty when they can)."""
        ...


class JsonSchemaReader:
    """JSON Schema records: the payload is the JSON text, read as a ``json`` topic's is (the values' types are checked there)."""

    def __init__(self, schema_str: str) -> None:
        self.schema_str = schema_str

    def text(self, payload: bytes) -> str:
        try:
            return payload.decode()
        except UnicodeDecodeError:
            raise ValueError("not UTF-8 text") from None

    def problems(self, fields: dict, *, within: tuple[str, ...] = ()) -> list[str]:
        return []


READERS: dict[Format, type[Reader]] = {Format.AVRO: AvroReader, Format.PROTOBUF: ProtobufReader, Format.JSON_SCHEMA: JsonSchemaReader}


class Decoding:
    """Decodes the framed topics of one star, with the writer schemas of ``registry``; shared by the loader's mappers.

    Without a registry (None) it decodes nothing: the first framed value raises :class:`StarloadError`.
    """

    def __init__(self, registry: SchemaRegistry | None) -> None:
        self.registry = registry
        self._readers: dict[tuple[Format, int], Reader | str] = {}
        self._problems: dict[tuple[str | None, int], str | None] = {}
        self._columnar: dict[tuple[str | None, int], ColumnarAvro | None] = {}
        self._guard = threading.Lock()

    def decode(self, feed: Feed, raw: pa.Table) -> pa.Table:
        """``raw`` (:data:`~starload.mapping.RAW_SCHEMA`) with its values read as ``feed.format``.

        Added: :data:`RECORD_COLUMN` when the batch was decoded at once, else :data:`DECODED_FIELDS`.
        """
        record = self._record(feed, raw) if columnar_feed(feed) else None
        if record is not None:
            return raw.append_column(RECORD_COLUMN, record)
        texts: list[str | None] = []
        problems: list[str | None] = []
        usable: dict[int, Reader | str] = {}  # per schema id of the batch, looked up once: its reader, or why none reads it
        for value in raw.column("MESSAGE_VALUE").to_pylist():
            text, problem = self._one(feed, value, usable)
            texts.append(text)
            problems.append(problem)
        for field, values in zip(DECODED_FIELDS, (texts, problems)):
            raw = raw.append_column(field, pa.array(values, field.type))
        return raw

    def _record(self, feed: Feed, raw: pa.Table) -> pa.StructArray | None:
        """The spec's fields of the whole batch at once, or None: it is decoded per message (see :mod:`starload.formats.columnar`)."""
        values = raw.column("MESSAGE_VALUE").combine_chunks()
        groups = by_schema(values)
        if groups is None:
            return None
        parts = []
        for schema_id, positions in groups:
            decoder = self._columnar_decoder(feed, schema_id)
            record = None if decoder is None else decoder.record(values if positions is None else values.take(positions))
            if record is None:
                return None
            if positions is None:
                return record
            parts.append((positions, record))
        return in_order(parts)

    def _columnar_decoder(self, feed: Feed, schema_id: int) -> ColumnarAvro | None:
        """The columnar decoder of ``schema_id``'s records for ``feed`` (None: its batches are decoded per message)."""
        reader = self._usable(feed, schema_id)
        if not isinstance(reader, AvroReader):
            return None
        return self._memo(self._columnar, (feed.topic, schema_id), lambda: ColumnarAvro.of(reader.writer, feed.source_fields()))

    def _one(self, feed: Feed, value: bytes | None, usable: dict[int, Reader | str]) -> tuple[str | None, str | None]:
        if not value:
            return None, None  # a tombstone or an empty value: the mapping says which
        try:
            schema_id, payload = unframed(value)
        except ValueError as exc:
            return None, str(exc)
        reader = usable.get(schema_id)
        if reader is None:
            reader = usable[schema_id] = self._usable(feed, schema_id)
        if isinstance(reader, str):
            return None, reader
        try:
            return reader.text(payload), None
        except ValueError as exc:
            return None, f"schema id {schema_id}: {exc}"

    def _usable(self, feed: Feed, schema_id: int) -> Reader | str:
        """The reader of ``schema_id``'s records for ``feed``, or why they cannot be read (no schema, or not what the spec reads)."""
        reader = self.reader(feed.format, schema_id)
        if isinstance(reader, str):
            return reader
        problem = self._problem(feed, schema_id, reader)
        return reader if problem is None else problem

    def reader(self, kind: Format, schema_id: int) -> Reader | str:
        """The reader of ``schema_id``'s records, or why there is none (the registry holds no such id, or a schema of another format)."""
        return self._memo(self._readers, (kind, schema_id), lambda: self._fetched(kind, schema_id))

    def _fetched(self, kind: Format, schema_id: int) -> Reader | str:
        if self.registry is None:
            msg = f"a value of a {kind.value} topic came, and no Schema Registry was given to read its schema id {schema_id} from"
            raise StarloadError(msg)
        schema = self.registry.schema(schema_id, serialized=kind is Format.PROTOBUF)
        if schema is None:
            return f"schema id {schema_id} is not in the Schema Registry at {self.registry.url}"
        if (schema.schema_type or "AVRO") != SCHEMA_TYPES[kind]:
            return f"schema id {schema_id} is a {schema.schema_type} schema; the spec reads the topic as {kind.value}"
        try:
            return READERS[kind](schema.schema_str)
        except ValueError as exc:  # a schema that cannot be read: neither can its messages
            return f"schema id {schema_id} cannot be read: {exc}"

    def _problem(self, feed: Feed, schema_id: int, reader: Reader) -> str | None:
        def found() -> str | None:
            within = ("after",) if feed.envelope is not None else ()
            problems = reader.problems(feed.source_fields(), within=within)
            return f"schema id {schema_id}: " + "; ".join(problems) if problems else None

        return self._memo(self._problems, (feed.topic, schema_id), found)

    def _memo(self, table: dict[Any, T], key: Any, make: Callable[[], T]) -> T:
        """``table[key]``, made by ``make()`` when first asked for (outside the lock: it may wait for the registry)."""
        with self._guard:
            if key in table:
                return table[key]
        made = make()
        with self._guard:
            return table.setdefault(key, made)
