"""Avro batches decoded at once into typed columns (:mod:`starload.formats.columnar`) load what per-message decoding loads.

The columnar path is taken or not per batch (a corrupt datum, a schema it does not read
or a value out of range sends the whole batch per message), so the star would depend on
how the messages were batched if the two paths ever differed: the property below compares
them on generated flat schemas (one or two in a batch), values and corruptions, message by
message, fingerprints and reject reasons included.
"""

from __future__ import annotations

import logging
import uuid
from datetime import datetime
from decimal import Decimal as D
from itertools import islice
from unittest import mock

import pyarrow as pa
import pytest
from confluent_kafka.schema_registry import SchemaRegistryClient
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from test_formats import AVRO_ORDERS, avro, register, star_rows

from starload.formats import RECORD_COLUMN, Decoding, columnar
from starload.formats.columnar import ColumnarAvro
from starload.formats.framing import framed
from starload.formats.registry import SchemaRegistry
from starload.formats.writing import FramedWriter
from starload.generators.orders import ORDERS_GENERATOR
from starload.mapping import Mapper, raw_batch
from starload.sinks.duckdb import DuckDBSink
from starload.spec import (
    Boolean,
    DateDimension,
    Decimal,
    Dimension,
    Double,
    Fact,
    Field,
    Format,
    Integer,
    StarSchema,
    String,
    Timestamp,
)
from starload.spec import Date as DateType
from starload.testing import write_batches

STAR = StarSchema(
    name="columnar",
    dimensions=(
        Dimension(
            name="item",
            table="DIM_ITEM",
            key="ITEM_KEY",
            natural_key=(Field("ITEM_ID", "s", String(16)),),
            attributes=(Field("FLAG", "b", Boolean()), Field("DAY", "day", DateType())),
        ),
    ),
    date_dimension=DateDimension(),
    fact=Fact(
        table="FACT_T",
        topic="t",
        format="avro",
        grain=(Field("ID", "n", Integer(), required=True),),
        event_time=Field("AT", "at", Timestamp(), required=True),
        dimensions=("item",),
        columns=(Field("AMOUNT", "d", Decimal(18, 2)), Field("RATIO", "x", Double()), Field("NOTE", "note", String(4))),
    ),
)
TABLES = ("FACT_T", "DIM_ITEM", "DIM_DATE")
MICROS = {"type": "long", "logicalType": "timestamp-micros"}
MILLIS = {"type": "long", "logicalType": "timestamp-millis"}
DAY = {"type": "int", "logicalType": "date"}


def decimal(kind: str, precision: int, scale: int) -> dict:
    found = {"type": kind, "logicalType": "decimal", "precision": precision, "scale": scale}
    return {**found, "name": f"Fixed{precision}_{scale}", "size": 16} if kind == "fixed" else found


def nullable(kind) -> list:
    return ["null", kind]


#: Per field the spec reads, and one it does not: the writer types to draw from (None: the field is absent).
#: Some make the schema one the columnar path does not take (a string time, a decimal of 20 digits or of
#: a larger scale than the declared one), so that both kinds of schema are compared.
WRITER_TYPES = {
    "n": ["int", "long", nullable("long")],
    "at": [MICROS, MILLIS, nullable(MICROS), "string"],
    "s": ["string", nullable("string"), {"type": "enum", "name": "Item", "symbols": ["A", "B", "Ce"]}, {"type": "string", "logicalType": "uuid"}],
    "d": [decimal("bytes", 18, 2), decimal("bytes", 9, 2), decimal("bytes", 4, 0), decimal("fixed", 18, 2), nullable(decimal("bytes", 18, 2)), decimal("bytes", 18, 3), decimal("bytes", 20, 2), None],
    "x": ["float", "double", nullable("double"), None],
    "b": ["boolean", nullable("boolean"), None],
    "day": [DAY, nullable(DAY), None],
    "note": ["string", None],
    "unread": ["bytes", {"type": "fixed", "name": "Three", "size": 3}, decimal("bytes", 38, 4), "long", None],
}
#: Microseconds and days from the years 1 to 9999, and beyond them (years Python does not hold).
IN_YEARS_MICROS = st.integers(-62135596800000000, 253402300799999999)
IN_YEARS_DAYS = st.integers(-719162, 2932896)


def values_of(kind) -> st.SearchStrategy:
    """Values a writer of ``kind`` writes (fastavro's form: decimals as Decimal, times as integers)."""
    if isinstance(kind, list):
        return st.one_of(st.none(), values_of(kind[1]))
    if isinstance(kind, dict):
        logical = kind.get("logicalType")
        if logical == "decimal":
            largest = 10 ** kind["precision"] - 1  # unscaled; a decimal made from text is exact beyond 28 digits
            return st.integers(-largest, largest).map(lambda unscaled: D(f"{unscaled}E-{kind['scale']}"))
        if logical == "timestamp-micros":
            return st.one_of(IN_YEARS_MICROS, IN_YEARS_MICROS, IN_YEARS_MICROS, st.integers(-(2**62), 2**62))
        if logical == "timestamp-millis":
            return st.one_of(*[IN_YEARS_MICROS.map(lambda m: m // 1000)] * 3, st.integers(-(2**55), 2**55))
        if logical == "date":
            return st.one_of(IN_YEARS_DAYS, IN_YEARS_DAYS, IN_YEARS_DAYS, st.integers(-(2**31), 2**31 - 1))
        if logical == "uuid":
            return st.uuids().map(str)
        if kind["type"] == "enum":
            return st.sampled_from(kind["symbols"])
        return st.binary(min_size=kind["size"], max_size=kind["size"])  # fixed
    return {
        "int": st.integers(-(2**31), 2**31 - 1),
        "long": st.one_of(st.integers(-5, 5), st.integers(-(2**63), 2**63 - 1)),
        "string": st.text(max_size=6),
        "bytes": st.binary(max_size=4),
        "float": st.floats(width=32),
        "double": st.floats(),
        "boolean": st.booleans(),
    }[kind]


@st.composite
def writer_schemas(draw) -> tuple[dict, dict, dict]:
    """(the writer type of each field, a flat writer schema of them, a strategy of each field's values)."""
    kinds = {name: draw(st.sampled_from(choices)) for name, choices in WRITER_TYPES.items()}
    if kinds["at"] == "string":  # an ISO time as text: the per-message path's only
        values = {"at": st.integers(0, 10**6).map(lambda s: f"2025-01-01T00:00:{s % 60:02d}Z")}
    else:
        values = {"at": values_of(kinds["at"])}
    values |= {name: values_of(kind) for name, kind in kinds.items() if kind is not None and name != "at"}
    fields = [{"name": name, "type": kind} for name, kind in kinds.items() if kind is not None]
    return kinds, {"type": "record", "name": "T", "namespace": "columnar", "fields": fields}, values


@st.composite
def batches(draw) -> tuple[list[dict], list[tuple[int, bytes]], int]:
    """(one or two flat writer schemas; records, each (the number of its schema, its bytes), some corrupted; a batch size)."""
    schemas = [draw(writer_schemas()) for _ in range(draw(st.integers(1, 2)))]
    records = []
    for _ in range(draw(st.integers(1, 10))):
        version = draw(st.integers(0, len(schemas) - 1))
        kinds, schema, values = schemas[version]
        record = draw(st.fixed_dictionaries(values))
        datum = avro(schema, record)
        harm = draw(st.sampled_from(["none"] * 16 + ["truncated", "bytes after", "garbage", "invalid UTF-8"]))
        if harm == "truncated" and datum:
            datum = datum[:-1]
        elif harm == "bytes after":
            datum += b"\x02A"
        elif harm == "garbage":
            datum = draw(st.binary(min_size=1, max_size=40))
        elif harm == "invalid UTF-8" and kinds["note"] == "string":
            datum = avro(schema, {**record, "note": "\x01\x02"}).replace(b"\x04\x01\x02", b"\x04\xff\xfe")
        records.append((version, datum))
    return [schema for _, schema, _ in schemas], records, draw(st.integers(1, 8))


def load(registry_url: str, messages: list, batch_size: int) -> tuple[dict, list]:
    sink = DuckDBSink(":memory:")
    sink.prepare(STAR)
    results = write_batches(sink, Mapper(STAR, decoding=Decoding(SchemaRegistry({"url": registry_url}))), messages, batch_size)
    return star_rows(sink.connection, TABLES), [r.rejects for r in results]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture, HealthCheck.data_too_large])
@given(drawn=batches())
def test_a_batch_decoded_at_once_loads_what_decoding_each_message_loads(local_schema_registry, drawn):
    schemas, records, batch_size = drawn
    ids = [register(local_schema_registry, schema) for schema in schemas]
    messages = [("t", 0, n, framed(ids[version], record)) for n, (version, record) in enumerate(records)]
    record = ColumnarAvro.record
    taken = []
    with mock.patch.object(ColumnarAvro, "record", lambda self, values: taken.append(record(self, values)) or taken[-1]):
        at_once = load(local_schema_registry.url, messages, batch_size)
    at_once_count = sum(t is not None for t in taken)
    event("schema not read in columns" if not taken else f"batches decoded at once: {'all' if at_once_count == len(taken) else 'some' if at_once_count else 'none'}")
    with mock.patch.object(ColumnarAvro, "record", return_value=None):  # every batch decoded per message
        each = load(local_schema_registry.url, messages, batch_size)
    assert at_once == each


def test_a_batch_of_flat_avro_records_is_decoded_at_once_and_a_corrupt_one_is_decoded_per_message(local_schema_registry):
    feed = AVRO_ORDERS.feeds()[0]
    client = SchemaRegistryClient({"url": local_schema_registry.url})
    writer = FramedWriter(feed, Format.AVRO, client, f"orders{uuid.uuid4().hex[:8]}")
    orders = [e.value for e in islice(ORDERS_GENERATOR.stream(3, customers=20, products=10), 50)]
    values = [writer.value(o) for o in orders]
    decoding = Decoding(SchemaRegistry({"url": local_schema_registry.url}))
    decoded = decoding.decode(feed, raw_batch(values))
    assert RECORD_COLUMN in decoded.column_names and "MESSAGE_TEXT" not in decoded.column_names
    record = decoded.column(RECORD_COLUMN).to_pylist()
    assert [r["order_id"] for r in record] == [o["order_id"] for o in orders]
    assert [r["price"] for r in record] == [D(str(o["price"])) for o in orders]
    assert record[0]["order_timestamp"] == datetime.fromisoformat(orders[0]["order_timestamp"])
    corrupt = decoding.decode(feed, raw_batch([*values[:3], values[3][:-1], values[4] + b"\x00"]))
    assert "MESSAGE_TEXT" in corrupt.column_names and RECORD_COLUMN not in corrupt.column_names
    problems = corrupt.column("DECODE_PROBLEM").to_pylist()
    assert problems[:3] == [None] * 3
    assert all(p.startswith(f"schema id {writer.schema_id}: not an Avro record of its schema") for p in problems[3:])


@pytest.mark.parametrize(
    ("reason", "schema"),
    [
        ("a nested record", {"type": "record", "name": "T", "fields": [{"name": "n", "type": {"type": "record", "name": "In", "fields": [{"name": "a", "type": "int"}]}}]}),
        ("a union of two types", {"type": "record", "name": "T", "fields": [{"name": "n", "type": ["null", "int", "string"]}]}),
        ("a local timestamp", {"type": "record", "name": "T", "fields": [{"name": "at", "type": {"type": "long", "logicalType": "local-timestamp-micros"}}]}),
        ("a date on a string", {"type": "record", "name": "T", "fields": [{"name": "day", "type": {"type": "string", "logicalType": "date"}}]}),
        ("an int read as a decimal", {"type": "record", "name": "T", "fields": [{"name": "d", "type": "int"}]}),
        ("a long read as a double", {"type": "record", "name": "T", "fields": [{"name": "x", "type": "long"}]}),
    ],
)
def test_a_schema_the_columnar_path_would_not_read_exactly_is_decoded_per_message(reason, schema):
    assert ColumnarAvro.of(schema, STAR.feeds()[0].source_fields()) is None, reason


def test_a_flat_schema_of_the_declared_kinds_is_read_in_columns():
    schema = {"type": "record", "name": "T", "fields": [{"name": "n", "type": "long"}, {"name": "at", "type": MICROS}, {"name": "extra", "type": "bytes"}]}
    decoder = ColumnarAvro.of(schema, STAR.feeds()[0].source_fields())
    assert decoder is not None
    assert decoder.reads["n"][0] == "n" and decoder.reads["d"][0] is None  # d is absent: missing, as a JSON message without the key
    record = decoder.record(pa.array([framed(1, avro(schema, {"n": 7, "at": 1_700_000_000_000_000, "extra": b"\x00"}))], pa.binary()))
    assert record.to_pylist()[0]["n"] == 7 and record.to_pylist()[0]["d"] is None
    assert record.type.field("at").type.tz == "UTC"


def test_without_rugo_avro_is_decoded_per_message_and_the_log_says_how_to_speed_it_up(local_schema_registry, monkeypatch, caplog):
    monkeypatch.setattr(columnar, "rugo_avro", None)
    columnar._say_rugo_is_missing.cache_clear()
    feed = AVRO_ORDERS.feeds()[0]
    writer = FramedWriter(feed, Format.AVRO, SchemaRegistryClient({"url": local_schema_registry.url}), f"orders{uuid.uuid4().hex[:8]}")
    values = [writer.value(e.value) for e in islice(ORDERS_GENERATOR.stream(3, customers=20, products=10), 5)]
    decoding = Decoding(SchemaRegistry({"url": local_schema_registry.url}))
    with caplog.at_level(logging.INFO, logger="starload"):
        decoded = [decoding.decode(feed, raw_batch(values)) for _ in range(2)]
    assert all("MESSAGE_TEXT" in d.column_names and RECORD_COLUMN not in d.column_names for d in decoded)
    assert [r.getMessage() for r in caplog.records if "rugo" in r.getMessage()] == [
        "rugo is not installed: Avro is decoded one message at a time, about 3 times slower (pip install 'starload[rugo]')"
    ]


def test_a_batch_of_two_schema_versions_is_decoded_a_version_at_a_time_and_kept_in_order(local_schema_registry):
    v1 = {"type": "record", "name": "T", "fields": [{"name": "n", "type": "long"}, {"name": "at", "type": MICROS}]}
    v2 = {**v1, "fields": [*v1["fields"], {"name": "note", "type": ["null", "string"], "default": None}]}
    ids = [register(local_schema_registry, v1), register(local_schema_registry, v2)]
    values = [framed(ids[n % 3 == 0], avro(v2 if n % 3 == 0 else v1, {"n": n, "at": n, "note": f"v2 {n}"})) for n in range(10)]
    decoded = Decoding(SchemaRegistry({"url": local_schema_registry.url})).decode(STAR.feeds()[0], raw_batch(values))
    assert RECORD_COLUMN in decoded.column_names
    records = decoded.column(RECORD_COLUMN).to_pylist()
    assert [(r["n"], r["note"]) for r in records] == [(n, f"v2 {n}" if n % 3 == 0 else None) for n in range(10)]
