"""Writing a topic's JSON-shaped values (a generator's events) in a framed format, as a registry-aware producer does.

Avro and Protobuf get a writer schema made from what the spec reads of the topic
(:func:`topic_schema`, :func:`~starload.formats.protobuf.file_for`); JSON Schema an
open object schema (the values are the JSON as it is).

The writer schema is made from what the spec reads of the topic (:func:`topic_schema`),
registered under the topic's subject (``<topic>-value``, Confluent's default
TopicNameStrategy), and each value is framed with the id the registry gave it.
A topic of Debezium change events gets the Avro converter's envelope: ``before`` and
``after`` as unions of null and the row, ``op``, ``ts_ms`` and ``source``.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from confluent_kafka.schema_registry import Schema, SchemaRegistryClient

from starload.formats.avro import AvroWriter, schema_for
from starload.formats.framing import framed
from starload.formats.protobuf import ProtobufWriter, file_for
from starload.spec import Feed, Format

#: The ``source`` block of a Debezium change event as the writer schema holds it (every field optional).
_SOURCE = {
    "type": "record",
    "name": "Source",
    "namespace": "io.debezium.connector",
    "fields": [
        *(
            {"name": n, "type": ["null", "string"], "default": None}
            for n in ("version", "connector", "name", "db", "schema", "table")
        ),
        {"name": "ts_ms", "type": ["null", "long"], "default": None},
        {"name": "snapshot", "type": ["null", "boolean", "string"], "default": None},
    ],
}


def _fields(feed: Feed) -> dict[Any, tuple[Any, bool]]:
    """Per path the messages of ``feed`` are read at, its declared type and whether a message carries it always."""
    envelope = feed.envelope is not None
    fields = {s: (t, feed.is_required(s) and not envelope) for s, t in feed.source_fields().items()}
    if envelope and feed.dimension is not None:
        fields |= {f.source: (f.type, True) for f in feed.dimension.natural_key}
    return fields


def topic_schema(feed: Feed, name: str) -> dict[str, Any]:
    """The Avro writer schema of the messages of ``feed`` (the row's record, in Debezium's envelope when the topic has one)."""
    envelope = feed.envelope is not None
    row = schema_for(_fields(feed), name if not envelope else "Value")
    if not envelope:
        return row
    return {
        "type": "record",
        "name": "Envelope",
        "namespace": name,
        "connect.name": f"{name}.Envelope",
        "fields": [
            {"name": "before", "type": ["null", row], "default": None},
            {"name": "after", "type": ["null", "Value"], "default": None},
            {"name": "source", "type": ["null", _SOURCE], "default": None},
            {"name": "op", "type": "string"},
            {"name": "ts_ms", "type": ["null", "long"], "default": None},
        ],
    }


class FramedWriter:
    """Frames one topic's values in ``kind`` (``avro``, ``json_schema``) with a schema it registers once in ``client``'s registry."""

    def __init__(self, feed: Feed, kind: Format, client: SchemaRegistryClient, topic: str) -> None:
        self._writer: AvroWriter | ProtobufWriter | None = None
        if kind is Format.AVRO:
            schema = topic_schema(feed, _name(topic))
            self._writer = AvroWriter(schema)
            text, schema_type = json.dumps(schema), "AVRO"
        elif kind is Format.PROTOBUF:
            if feed.envelope is not None:
                msg = "Debezium's change events are written in Avro or JSON here, not Protobuf"
                raise ValueError(msg)
            file = file_for(_fields(feed), _name(topic))
            self._writer = ProtobufWriter(file)
            text, schema_type = base64.b64encode(file.SerializeToString()).decode(), "PROTOBUF"
        else:
            text, schema_type = json.dumps({"type": "object"}), "JSON"
        self.schema_id = client.register_schema(f"{topic}-value", Schema(text, schema_type))

    def value(self, value: Any) -> bytes | None:
        """``value`` framed (None stays a tombstone); ValueError naming what does not fit the schema."""
        if value is None:
            return None
        record = self._writer.record(value) if self._writer is not None else json.dumps(value).encode()
        return framed(self.schema_id, record)


def _name(topic: str) -> str:
    cleaned = "".join(c if c.isalnum() else "_" for c in topic)
    return cleaned if cleaned[:1].isalpha() else f"t_{cleaned}"
