"""Wire formats: Avro and JSON Schema in Confluent's wire format, decoded with writer schemas from a Schema Registry.

The registry is the test layer's (``local_schema_registry``: Confluent's REST API and
compatibility rule); the client is confluent-kafka's own. Each test registers its own subjects.
"""

from __future__ import annotations

import io
import json
import logging
import os
import threading
import time
import uuid
from datetime import UTC, date, datetime
from decimal import Decimal as D
from itertools import islice
from pathlib import Path

import attrs
import duckdb
import fastavro
import orjson
import pytest
import yaml
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_integration import run_cli

from starload.broker import free_port
from starload.exceptions import SpecError, StarloadError
from starload.formats import Decoding
from starload.formats.avro import schema_for
from starload.formats.framing import framed, unframed
from starload.formats.registry import URL_ENV, SchemaRegistry
from starload.formats.writing import FramedWriter
from starload.generators.orders import ORDERS_GENERATOR, ORDERS_SCHEMA
from starload.generators.shop import CUSTOMERS_TOPIC, SHOP_SCHEMA
from starload.mapping import Mapper, raw_batch
from starload.sinks.duckdb import DuckDBSink
from starload.spec import (
    Date,
    DateDimension,
    Decimal,
    Dimension,
    Fact,
    Field,
    Format,
    Integer,
    StarSchema,
    String,
    Timestamp,
    type_spelling,
)
from starload.testing import debezium_change, epoch_ms, sample_orders, write_batches

AVRO_ORDERS = attrs.evolve(ORDERS_SCHEMA, fact=attrs.evolve(ORDERS_SCHEMA.fact, format="avro"))
STAR_TABLES = ("FACT_ORDERS", "DIM_CUSTOMER", "DIM_PRODUCT", "DIM_DATE")


def subject() -> str:
    return f"t{uuid.uuid4().hex[:12]}"


def register(registry, schema: dict | str, schema_type: str = "AVRO", name: str | None = None) -> int:
    text = schema if isinstance(schema, str) else json.dumps(schema)
    return SchemaRegistryClient({"url": registry.url}).register_schema(
        f"{name or subject()}-value", Schema(text, schema_type)
    )


def avro(schema: dict, record: dict) -> bytes:
    out = io.BytesIO()
    fastavro.schemaless_writer(out, fastavro.parse_schema(schema), record)
    return out.getvalue()


def mapper(registry, star: StarSchema) -> Mapper:
    return Mapper(star, decoding=Decoding(SchemaRegistry({"url": registry.url})))


def star_rows(con: duckdb.DuckDBPyConnection, tables=STAR_TABLES) -> dict[str, list]:
    """Every row of each table, but the wall-clock times."""
    found = {}
    for table in tables:
        columns = [
            c
            for (c,) in con.execute(
                f"SELECT column_name FROM duckdb_columns() WHERE table_name = '{table}'"
            ).fetchall()
        ]
        kept = ", ".join(f'"{c}"' for c in columns if c not in ("LOADED_AT", "UPDATED_AT"))  # not the wall-clock times
        found[table] = con.execute(f"SELECT {kept} FROM {table} ORDER BY ALL").fetchall()
    return found


def load(star: StarSchema, messages: list, batch_size: int, m: Mapper | None = None) -> tuple[DuckDBSink, list]:
    sink = DuckDBSink(":memory:")
    sink.prepare(star)
    results = write_batches(sink, m or Mapper(star), messages, batch_size)
    return sink, results


def test_the_wire_format_is_a_zero_byte_and_a_big_endian_id():
    assert framed(258, b"rec") == b"\x00\x00\x00\x01\x02rec"
    assert unframed(b"\x00\x00\x00\x01\x02rec") == (258, b"rec")
    with pytest.raises(ValueError, match="first byte is 123"):
        unframed(b'{"a": 1}')
    with pytest.raises(ValueError, match="too short"):
        unframed(b"\x00\x00\x01")


@pytest.mark.parametrize("batch_size", [7, 100])
def test_an_avro_orders_topic_loads_the_star_its_json_twin_loads(local_schema_registry, batch_size):
    orders = sample_orders(60)
    feed = AVRO_ORDERS.feeds()[0]
    writer = FramedWriter(feed, Format.AVRO, SchemaRegistryClient({"url": local_schema_registry.url}), subject())
    as_avro = [("orders", 0, n, writer.value(o)) for n, o in enumerate(orders)]
    as_json = [("orders", 0, n, o) for n, o in enumerate(orders)]
    avro_sink, results = load(AVRO_ORDERS, as_avro, batch_size, mapper(local_schema_registry, AVRO_ORDERS))
    json_sink, _ = load(ORDERS_SCHEMA, as_json, batch_size)
    assert sum(r.facts_inserted for r in results) == 60 and sum(r.rejects for r in results) == 0
    assert star_rows(avro_sink.connection) == star_rows(json_sink.connection)  # MESSAGE_HASH too: the record's JSON text is the JSON twin's


def test_values_that_are_no_records_of_their_schema_are_rejects_saying_why(local_schema_registry):
    schema = {"type": "record", "name": "O", "fields": [{"name": "order_id", "type": "string"}]}
    good = register(local_schema_registry, schema)
    protobuf = register(local_schema_registry, 'syntax = "proto3";\nmessage O { string order_id = 1; }\n', "PROTOBUF")
    record = avro(schema, {"order_id": "O1"})
    values = [
        b'{"order_id": "O1"}',  # JSON on an Avro topic
        framed(good, record[:-1]),  # truncated
        framed(good, record + b"\x00\x00"),  # bytes after the record
        framed(9_999_999, record),  # an id the registry does not hold
        framed(protobuf, record),  # a schema of another format
        b"",
    ]
    batch = mapper(local_schema_registry, AVRO_ORDERS).stage(raw_batch(values), topic="orders", group="g")
    reasons = batch.rejects.column("REASON").to_pylist()
    assert reasons[0].startswith("not in the Schema Registry's wire format: the first byte is 123")
    assert reasons[1].startswith(f"schema id {good}: not an Avro record of its schema")
    assert reasons[2] == f"schema id {good}: not an Avro record of its schema: 2 bytes after the record"
    assert reasons[3] == f"schema id 9999999 is not in the Schema Registry at {local_schema_registry.url}"
    assert reasons[4] == f"schema id {protobuf} is a PROTOBUF schema; the spec reads the topic as avro"
    assert reasons[5] == "empty message"
    assert batch.rejects.column("MESSAGE_VALUE").to_pylist() == values  # the bytes as they came, for the dead letters


def test_a_date_or_timestamp_beyond_the_years_python_holds_is_a_reject_not_a_crash(local_schema_registry):
    at = {"type": "long", "logicalType": "timestamp-micros"}
    schema = {"type": "record", "name": "O", "fields": [{"name": "order_id", "type": "string"}, {"name": "order_timestamp", "type": at}]}
    good = register(local_schema_registry, schema)
    values = [framed(good, avro(schema, {"order_id": "O1", "order_timestamp": micros})) for micros in (2**62, -(2**62))]
    batch = mapper(local_schema_registry, AVRO_ORDERS).stage(raw_batch(values), topic="orders", group="g")
    assert batch.rejects.column("REASON").to_pylist() == [f"schema id {good}: not an Avro record of its schema: date value out of range"] * 2


def test_a_writer_type_that_cannot_become_the_declared_type_is_a_reject_naming_both(local_schema_registry):
    fields = {s: (t, True) for s, t in AVRO_ORDERS.feeds()[0].source_fields().items()}
    schema = schema_for(fields, "order")
    for f in schema["fields"]:
        f["type"] = {
            "price": "double",
            "order_timestamp": "long",
            "customer_id": {"type": "record", "name": "C", "fields": [{"name": "id", "type": "string"}]},
        }.get(f["name"], f["type"])
    sid = register(local_schema_registry, schema)
    order = {**sample_orders(1)[0], "price": 12.5, "order_timestamp": 1_700_000_000_000, "customer_id": {"id": "C1"}}
    batch = mapper(local_schema_registry, AVRO_ORDERS).stage(
        raw_batch([framed(sid, avro(schema, order))]), topic="orders", group="g"
    )
    (reason,) = batch.rejects.column("REASON").to_pylist()
    assert reason == (
        f"schema id {sid}: order_timestamp: the writer type long cannot become timestamp; "
        "price: the writer type double cannot become decimal(18,2); customer_id: the writer type record cannot become string(64)"
    )


EXACT = StarSchema(
    name="exact",
    dimensions=(),
    date_dimension=DateDimension(),
    fact=Fact(
        table="FACT_READINGS",
        topic="readings",
        format="avro",
        dimensions=(),
        grain=(Field("ID", "id", String(36), required=True),),
        event_time=Field("AT", "at", Timestamp(), required=True),
        columns=(
            Field("AMOUNT", "amount", Decimal(12, 2)),
            Field("FIXED_AMOUNT", "fixed_amount", Decimal(20, 4)),
            Field("CONNECT_AMOUNT", "connect_amount", Decimal(10, 3)),
            Field("ANY_SCALE", "any_scale", Decimal(18, 6)),
            Field("COUNT", "count", Integer()),
            Field("DAY", "day", Date()),
            Field("DBZ_DAY", "dbz_day", Date()),
            Field("LOCAL_AT", "local_at", Timestamp()),
            Field("DBZ_AT", "dbz_at", Timestamp()),
            Field("DBZ_MICRO_AT", "dbz_micro_at", Timestamp()),
            Field("DBZ_NANO_AT", "dbz_nano_at", Timestamp()),
            Field("ZONED_AT", "zoned_at", Timestamp()),
            Field("KIND", "kind", String()),
            Field("EMAIL", "contact.email", String()),
        ),
    ),
)
EXACT_SCHEMA = {
    "type": "record",
    "name": "Reading",
    "fields": [
        {"name": "id", "type": {"type": "string", "logicalType": "uuid"}},
        {"name": "at", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {"name": "amount", "type": ["null", {"type": "bytes", "logicalType": "decimal", "precision": 12, "scale": 2}], "default": None},
        {"name": "fixed_amount", "type": {"type": "fixed", "name": "F", "size": 9, "logicalType": "decimal", "precision": 20, "scale": 4}},
        # Kafka Connect's Decimal as its Avro converter writes it, and as older ones did (no logicalType)
        {"name": "connect_amount", "type": {"type": "bytes", "connect.name": "org.apache.kafka.connect.data.Decimal", "connect.parameters": {"scale": "3"}}},
        {"name": "any_scale", "type": {"type": "record", "name": "VariableScaleDecimal", "namespace": "io.debezium.data",
                                       "fields": [{"name": "scale", "type": "int"}, {"name": "value", "type": "bytes"}],
                                       "connect.name": "io.debezium.data.VariableScaleDecimal"}},
        {"name": "count", "type": "int"},
        {"name": "day", "type": {"type": "int", "logicalType": "date"}},
        {"name": "dbz_day", "type": {"type": "int", "connect.name": "io.debezium.time.Date"}},
        {"name": "local_at", "type": {"type": "long", "logicalType": "local-timestamp-micros"}},
        {"name": "dbz_at", "type": {"type": "long", "connect.name": "io.debezium.time.Timestamp"}},
        {"name": "dbz_micro_at", "type": {"type": "long", "connect.name": "io.debezium.time.MicroTimestamp"}},
        {"name": "dbz_nano_at", "type": {"type": "long", "connect.name": "io.debezium.time.NanoTimestamp"}},
        {"name": "zoned_at", "type": {"type": "string", "connect.name": "io.debezium.time.ZonedTimestamp"}},
        {"name": "kind", "type": {"type": "enum", "name": "Kind", "symbols": ["METER", "SENSOR"]}},
        {"name": "contact", "type": ["null", {"type": "record", "name": "Contact", "fields": [{"name": "email", "type": ["null", "string"], "default": None}]}], "default": None},
    ],
}  # fmt: skip


def test_logical_and_semantic_types_arrive_exact(local_schema_registry):
    """Avro's logical types and Kafka Connect's and Debezium's semantic types, each as the value it means."""
    writer_view = json.loads(json.dumps(EXACT_SCHEMA))
    for f in writer_view["fields"]:  # what the writer's encoder sees: the bare types under the semantic names
        if f["name"] == "connect_amount":
            f["type"] = {"type": "bytes", "logicalType": "decimal", "precision": 10, "scale": 3}
        if f["name"] == "any_scale":
            f["type"] = {
                "type": "record",
                "name": "V",
                "fields": [{"name": "scale", "type": "int"}, {"name": "value", "type": "bytes"}],
            }
    sid = register(local_schema_registry, EXACT_SCHEMA)
    at = datetime(2024, 3, 1, 12, 30, 15, 123000, tzinfo=UTC)
    record = {
        "id": "6ba7b810-9dad-11d1-80b4-00c04fd430c8", "at": at, "amount": D("-12.50"), "fixed_amount": D("1234567.8901"),
        "connect_amount": D("-0.125"), "any_scale": {"scale": 5, "value": (123456789).to_bytes(4, "big", signed=True)},
        "count": 7, "day": date(2024, 2, 29), "dbz_day": 19782, "local_at": datetime(2024, 3, 1, 8, 0, 0, 1),
        "dbz_at": 1_709_280_000_123, "dbz_micro_at": 1_709_280_000_123_456, "dbz_nano_at": 1_709_280_000_123_456_789,
        "zoned_at": "2024-03-01T10:00:00+02:00", "kind": "SENSOR", "contact": {"email": "a@example.com"},
    }  # fmt: skip
    sink, results = load(
        EXACT, [("readings", 0, 0, framed(sid, avro(writer_view, record)))], 1, mapper(local_schema_registry, EXACT)
    )
    assert results[0].rejects == 0
    row = sink.connection.execute(
        'SELECT ID, "AT", AMOUNT, FIXED_AMOUNT, CONNECT_AMOUNT, ANY_SCALE, COUNT, DAY, DBZ_DAY, LOCAL_AT, DBZ_AT, DBZ_MICRO_AT, DBZ_NANO_AT, ZONED_AT, KIND, EMAIL FROM FACT_READINGS'
    ).fetchone()
    utc = lambda *a: datetime(*a, tzinfo=UTC)
    assert row == (
        "6ba7b810-9dad-11d1-80b4-00c04fd430c8", at, D("-12.50"), D("1234567.8901"), D("-0.125"), D("1234.56789"), 7,
        date(2024, 2, 29), date(2024, 2, 29), utc(2024, 3, 1, 8, 0, 0, 1), utc(2024, 3, 1, 8, 0, 0, 123000),
        utc(2024, 3, 1, 8, 0, 0, 123456), utc(2024, 3, 1, 8, 0, 0, 123456), utc(2024, 3, 1, 8, 0, 0), "SENSOR", "a@example.com",
    )  # fmt: skip


def test_a_new_schema_version_mid_stream_loads_without_a_restart_and_each_id_is_fetched_once(local_schema_registry):
    name = subject()
    v1 = {"type": "record", "name": "O", "fields": [{"name": "order_id", "type": "string"}, {"name": "order_timestamp", "type": "string"},
          {"name": "customer_id", "type": "string"}, {"name": "product_id", "type": "string"}, {"name": "price", "type": "string"}, {"name": "quantity", "type": "int"}]}  # fmt: skip
    v2 = {**v1, "fields": [*v1["fields"], {"name": "shipping_region", "type": ["null", "string"], "default": None}]}
    id1, id2 = register(local_schema_registry, v1, name=name), register(local_schema_registry, v2, name=name)
    assert id1 != id2
    orders = [{**o, "price": str(o["price"])} for o in sample_orders(20)]
    messages = [
        ("orders", 0, n, framed(id1, avro(v1, o)) if n < 10 else framed(id2, avro(v2, o))) for n, o in enumerate(orders)
    ]
    m = mapper(local_schema_registry, AVRO_ORDERS)
    local_schema_registry.reset()
    sink, results = load(AVRO_ORDERS, messages, 4, m)
    assert sum(r.facts_inserted for r in results) == 20 and sum(r.rejects for r in results) == 0
    assert local_schema_registry.requests() == 2  # one per id, however many batches
    regions = sink.connection.execute(
        "SELECT SHIPPING_REGION IS NULL, count(*) FROM FACT_ORDERS GROUP BY 1 ORDER BY 1"
    ).fetchall()
    assert regions == [(False, 10), (True, 10)]


def test_a_registry_that_fails_is_waited_for_and_nothing_is_rejected(local_schema_registry):
    orders = sample_orders(5)
    sid = FramedWriter(
        AVRO_ORDERS.feeds()[0], Format.AVRO, SchemaRegistryClient({"url": local_schema_registry.url}), subject()
    )
    values = [sid.value(o) for o in orders]
    registry = SchemaRegistry({"url": local_schema_registry.url})
    local_schema_registry.reset()
    local_schema_registry.fail_next(3, status=503)
    seen, done = set(), threading.Event()

    def watch() -> None:
        while not done.is_set():
            if (wait := registry.waits.current(at_least=0)) is not None:
                seen.add(wait.what.split(" (")[0])
            time.sleep(0.01)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    batch = Mapper(AVRO_ORDERS, decoding=Decoding(registry)).stage(raw_batch(values), topic="orders", group="g")
    done.set()
    watcher.join()
    assert batch.rejects.num_rows == 0 and batch.facts["FACT_ORDERS"].num_rows == 5
    assert local_schema_registry.requests() == 4
    assert seen == {
        f"the Schema Registry at {local_schema_registry.url} for schema id {sid.schema_id}"
    }  # on the live line and /healthz
    assert registry.waits.current() is None


def test_a_loader_stopping_gives_up_waiting_for_the_registry(local_schema_registry):
    registry = SchemaRegistry({"url": local_schema_registry.url})
    local_schema_registry.fail_next(1000, status=500)
    try:
        registry.waits.stopping.set()
        with pytest.raises(
            Exception, match="stopped while waiting for the Schema Registry at .* for schema id 5 .*answered 500"
        ):
            registry.schema(5)
    finally:
        local_schema_registry.reset()


def test_secrets_in_the_registry_url_never_show(local_schema_registry, caplog):
    caplog.set_level(logging.DEBUG)
    port = local_schema_registry.url.rsplit(":", 1)[1]
    registry = SchemaRegistry({"url": f"http://ann:s3cret@127.0.0.1:{port}"})
    assert registry.url == f"http://127.0.0.1:{port}"
    registry.check()
    batch = Mapper(AVRO_ORDERS, decoding=Decoding(registry)).stage(raw_batch([framed(8_888_888, b"")]), topic="orders", group="g")
    assert batch.rejects.column("REASON")[0].as_py() == f"schema id 8888888 is not in the Schema Registry at http://127.0.0.1:{port}"
    assert "GET http://127.0.0.1" in caplog.text and "s3cret" not in caplog.text  # the HTTP library's log lines too


def test_a_json_schema_topic_loads_as_its_json_twin(local_schema_registry):
    star = attrs.evolve(ORDERS_SCHEMA, fact=attrs.evolve(ORDERS_SCHEMA.fact, format="json_schema"))
    writer = FramedWriter(
        star.feeds()[0], Format.JSON_SCHEMA, SchemaRegistryClient({"url": local_schema_registry.url}), subject()
    )
    orders = sample_orders(30)
    framed_sink, _ = load(
        star, [("orders", 0, n, writer.value(o)) for n, o in enumerate(orders)], 8, mapper(local_schema_registry, star)
    )
    json_sink, _ = load(ORDERS_SCHEMA, [("orders", 0, n, o) for n, o in enumerate(orders)], 8)
    assert star_rows(framed_sink.connection) == star_rows(json_sink.connection)


def test_debeziums_avro_converter_builds_the_star_its_json_converter_builds(local_schema_registry):
    """The shop's customers as change events of the Avro converter: the same dimension, history, deletes, tombstones and inferred members."""
    avro_shop = attrs.evolve(
        SHOP_SCHEMA, dimensions=[attrs.evolve(SHOP_SCHEMA.dimensions[0], format="avro"), *SHOP_SCHEMA.dimensions[1:]]
    )
    feed = next(f for f in avro_shop.feeds() if f.topic == CUSTOMERS_TOPIC)
    writer = FramedWriter(feed, Format.AVRO, SchemaRegistryClient({"url": local_schema_registry.url}), subject())
    row = lambda i, region: {
        "id": i,
        "first_name": "Ann",
        "last_name": "Lee",
        "email": f"c{i}@example.com",
        "region": region,
    }
    changes = [
        ("r", row(1, "EU"), None, "2024-01-01T00:00:00Z"),
        ("c", row(2, "US"), None, "2024-01-02T00:00:00Z"),
        ("u", row(1, "APAC"), row(1, "EU"), "2024-01-03T00:00:00Z"),
        ("d", None, {"id": 2}, "2024-01-04T00:00:00Z"),
        ("tombstone", None, None, None),
        ("c", row(2, "LATAM"), None, "2024-01-05T00:00:00Z"),
    ]
    order = {
        "order_id": "O1",
        "order_timestamp": "2024-01-02T12:00:00Z",
        "customer_id": 3,
        "product_id": "P1",
        "product_name": "Mouse",
        "category": "A",
        "quantity": 1,
        "unit_price": "9.99",
    }
    as_json, as_avro = [], []
    for n, (op, after, before, at) in enumerate(changes):
        if op == "tombstone":
            as_json.append((CUSTOMERS_TOPIC, 0, n, None))
            as_avro.append((CUSTOMERS_TOPIC, 0, n, None))
            continue
        as_json.append((CUSTOMERS_TOPIC, 0, n, debezium_change(op, after, epoch_ms(at), before=before)))
        event = orjson.loads(debezium_change(op, after, epoch_ms(at), before=before, wrapped=False))
        as_avro.append((CUSTOMERS_TOPIC, 0, n, writer.value(event)))
    as_json.append(("shop.orders", 0, 0, order))
    as_avro.append(("shop.orders", 0, 0, order))
    tables = ("DIM_CUSTOMER", "STARLOAD_HISTORY_DIM_CUSTOMER", "FACT_ORDERS")
    json_sink, _ = load(SHOP_SCHEMA, as_json, 3)
    avro_sink, results = load(avro_shop, as_avro, 3, mapper(local_schema_registry, avro_shop))
    assert sum(r.rejects for r in results) == 0
    assert star_rows(avro_sink.connection, tables) == star_rows(json_sink.connection, tables)
    assert avro_sink.connection.execute("SELECT count(*) FROM DIM_CUSTOMER WHERE IS_INFERRED").fetchone() == (1,)


# ---- end to end: the CLI over the local broker ------------------------------------------------

ROOT = Path(__file__).resolve().parents[1]
NOW = "2024-06-01T12:00:00+00:00"


def produce_cli(broker, topic: str, *more: str) -> None:
    done = run_cli("produce", "--bootstrap-servers", broker.bootstrap_servers, "--topic", topic, "--count", "400", "--seed", "4",
                   "--option", f"now={NOW}", "--partitions", "2", *more)  # fmt: skip
    assert done.returncode == 0, done.stderr


def load_cli(broker, topic: str, *more: str, env: dict | None = None):
    return run_cli("load", "--bootstrap-servers", broker.bootstrap_servers, "--topic", topic, "--group", f"g-{topic}",
                   "--until-idle", "2", "--batch-rows", "150", *more, env=env)  # fmt: skip


def test_avro_produced_and_loaded_by_the_cli_is_the_star_of_its_json_twin(local_broker, local_schema_registry, tmp_path):
    topic = f"avro-{uuid.uuid4().hex[:8]}"
    produce_cli(local_broker, topic, "--format", "avro", "--schema-registry", local_schema_registry.url)
    produce_cli(local_broker, f"{topic}-json")
    env = {**os.environ, URL_ENV: local_schema_registry.url}  # the registry from the environment
    loaded = load_cli(local_broker, topic, "--spec", str(ROOT / "examples" / "orders_avro.yaml"), "--duckdb-path", str(tmp_path / "a.duckdb"), env=env)
    assert loaded.returncode == 0, loaded.stderr
    twin = load_cli(local_broker, f"{topic}-json", "--schema", "orders", "--duckdb-path", str(tmp_path / "j.duckdb"))
    assert twin.returncode == 0, twin.stderr
    # What each row says, by natural keys (the broker may put the two topics' messages in other partitions: keys and positions differ)
    facts = """SELECT f.ORDER_ID, f.ORDER_TIMESTAMP, f.QUANTITY, f.UNIT_PRICE, f.TOTAL_AMOUNT, f.SHIPPING_REGION, f.DATE_KEY,
        c.CUSTOMER_ID, c.CUSTOMER_NAME, c.CUSTOMER_REGION, p.PRODUCT_ID, p.PRODUCT_NAME, p.CATEGORY, p.PRICE, f.MESSAGE_HASH
        FROM FACT_ORDERS f JOIN DIM_CUSTOMER c USING (CUSTOMER_KEY) JOIN DIM_PRODUCT p USING (PRODUCT_KEY) ORDER BY ALL"""
    with duckdb.connect(str(tmp_path / "a.duckdb"), read_only=True) as a, duckdb.connect(str(tmp_path / "j.duckdb"), read_only=True) as j:
        assert len(a.execute(facts).fetchall()) == 400
        assert a.execute(facts).fetchall() == j.execute(facts).fetchall()
        assert star_rows(a, ("DIM_DATE",)) == star_rows(j, ("DIM_DATE",))


def test_a_framed_topic_without_a_registry_answering_stops_at_start_with_one_line(local_broker, tmp_path):
    spec = str(ROOT / "examples" / "orders_avro.yaml")
    env = {k: v for k, v in os.environ.items() if k != URL_ENV}
    missing = load_cli(local_broker, "orders-nowhere", "--spec", spec, "--duckdb-path", str(tmp_path / "x.duckdb"), env=env)
    assert missing.returncode == 2
    assert missing.stderr.strip().splitlines() == [
        f"starload: error: topic orders-nowhere (avro) is in a Schema Registry's wire format: give the registry's URL (--schema-registry URL, or {URL_ENV})"
    ]
    silent = f"http://ann:s3cret@127.0.0.1:{free_port()}"
    down = load_cli(local_broker, "orders-nowhere", "--spec", spec, "--duckdb-path", str(tmp_path / "x.duckdb"), "--schema-registry", silent, env=env)
    assert down.returncode == 2
    [line] = down.stderr.strip().splitlines()
    assert line.startswith(f"starload: error: the Schema Registry at http://127.0.0.1:{silent.rsplit(':', 1)[1]} did not answer")
    assert "s3cret" not in down.stderr + down.stdout


def test_avro_loads_into_the_local_snowflake_endpoint(local_broker, local_schema_registry, snowflake_environment, snowflake_settings, local_snowflake):
    topic = f"avro-sf-{uuid.uuid4().hex[:8]}"
    produce_cli(local_broker, topic, "--format", "avro", "--schema-registry", local_schema_registry.url)
    loaded = load_cli(local_broker, topic, "--spec", str(ROOT / "examples" / "orders_avro.yaml"), "--sink", "snowflake",
                      "--schema-registry", local_schema_registry.url, env={**os.environ, **snowflake_environment})  # fmt: skip
    assert loaded.returncode == 0, loaded.stderr
    orders = [e.value for e in islice(ORDERS_GENERATOR.stream(4, now=NOW), 400)]
    with local_snowflake.connect(snowflake_settings) as con:
        rows = con.cursor().execute('SELECT "ORDER_ID", "QUANTITY", "TOTAL_AMOUNT" FROM "FACT_ORDERS" ORDER BY 1').fetchall()
    assert rows == sorted((o["order_id"], o["quantity"], D(o["price"]) * o["quantity"]) for o in orders)


# ---- a property: any writer schema of the same events loads the star the JSON events load -----

PROPERTY_STAR = StarSchema(
    name="readings_avro",
    dimensions=(
        Dimension(
            name="customer",
            table="DIM_CUSTOMER",
            key="CUSTOMER_KEY",
            natural_key=(Field("CUSTOMER_ID", "customer.id", String(16)),),
            attributes=(Field("REGION", "customer.region", String(8)),),
        ),
    ),
    date_dimension=DateDimension(),
    fact=Fact(
        table="FACT_READINGS",
        topic="readings",
        format="avro",
        grain=(Field("ID", "id", Integer(), required=True), Field("LINE", "lines[#]", Integer(), required=True)),
        event_time=Field("AT", "at", Timestamp(), required=True),
        dimensions=("customer",),
        columns=(Field("AMOUNT", "amount", Decimal(12, 2)), Field("NOTE", "note", String()), Field("SKUS", "lines[].sku", String())),
    ),
)
PROPERTY_JSON_STAR = attrs.evolve(PROPERTY_STAR, fact=attrs.evolve(PROPERTY_STAR.fact, format="json"))


def nullable(kind, optional: bool):
    return ["null", kind] if optional else kind


writer_choices = st.fixed_dictionaries(
    {
        "id": st.sampled_from(["int", "long"]),
        "at": st.sampled_from([{"type": "long", "logicalType": "timestamp-millis"}, {"type": "long", "logicalType": "timestamp-micros"}, "string"]),
        "amount": st.sampled_from(
            [
                {"type": "bytes", "logicalType": "decimal", "precision": 12, "scale": 2},
                {"type": "fixed", "name": "Money", "size": 8, "logicalType": "decimal", "precision": 16, "scale": 2},
                "string",
            ]
        ),
        "optional_amount": st.booleans(),
        "region_enum": st.booleans(),
        "note_in_v1": st.booleans(),  # else the note comes with a second version of the schema, with a default
    }
)
readings = st.lists(
    st.fixed_dictionaries(
        {
            "id": st.integers(1, 6),
            "at": st.datetimes(min_value=datetime(2024, 1, 1), max_value=datetime(2024, 1, 4)).map(lambda d: d.replace(microsecond=d.microsecond // 1000 * 1000, tzinfo=UTC)),
            "amount": st.one_of(st.none(), st.decimals(min_value=-999, max_value=999, places=2)),
            "customer": st.one_of(st.none(), st.fixed_dictionaries({"id": st.sampled_from(["C1", "C2"]), "region": st.sampled_from(["EU", "US"])})),
            "note": st.one_of(st.none(), st.text(max_size=5)),
            "lines": st.lists(st.fixed_dictionaries({"sku": st.sampled_from(["A", "B"])}), min_size=1, max_size=2),
        }
    ),
    min_size=1,
    max_size=12,
)


def property_schemas(choice: dict) -> tuple[dict, dict]:
    """(version 1, version 2) of the writer schema ``choice`` draws; version 2 adds a field with a default."""
    region = {"type": "enum", "name": "Region", "symbols": ["EU", "US"]} if choice["region_enum"] else "string"
    customer = {"type": "record", "name": "Customer", "namespace": "shop", "fields": [{"name": "id", "type": "string"}, {"name": "region", "type": region}]}
    amount = choice["amount"] if not choice["optional_amount"] else ["null", choice["amount"]]
    fields = [
        {"name": "id", "type": choice["id"]},
        {"name": "at", "type": choice["at"]},
        {"name": "amount", "type": ["null", choice["amount"]], "default": None} if choice["optional_amount"] else {"name": "amount", "type": amount},
        {"name": "customer", "type": ["null", customer], "default": None},
        {"name": "lines", "type": {"type": "array", "items": {"type": "record", "name": "Line", "fields": [{"name": "sku", "type": "string"}]}}},
    ]
    note = {"name": "note", "type": ["null", "string"], "default": None}
    v1 = {"type": "record", "name": "Reading", "namespace": "shop", "fields": fields + ([note] if choice["note_in_v1"] else [])}
    v2 = {**v1, "fields": [*v1["fields"], note] if not choice["note_in_v1"] else [*v1["fields"], {"name": "extra", "type": "int", "default": 0}]}
    return v1, v2


def as_written(reading: dict, schema: dict) -> dict:
    """``reading`` as a writer of ``schema`` holds it (strings for ``string`` fields, no note in a schema without one)."""
    kinds = {f["name"]: f["type"] for f in schema["fields"]}
    value = dict(reading)
    if kinds["at"] == "string":
        value["at"] = reading["at"].isoformat().replace("+00:00", "Z")
    if value["amount"] is not None and (kinds["amount"] == "string" or kinds["amount"] == ["null", "string"]):
        value["amount"] = format(reading["amount"], "f")
    if "note" not in kinds:
        value.pop("note")
    return value


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(choice=writer_choices, events=readings, batch_size=st.integers(1, 8), evolve_at=st.integers(0, 12))
def test_any_writer_schema_of_the_events_loads_the_star_their_json_loads(local_schema_registry, choice, events, batch_size, evolve_at):
    if not choice["optional_amount"]:
        events = [{**e, "amount": e["amount"] if e["amount"] is not None else D("0.00")} for e in events]
    v1, v2 = property_schemas(choice)
    name = subject()
    ids = (register(local_schema_registry, v1, name=name), register(local_schema_registry, v2, name=name))
    as_avro, as_json = [], []
    for n, event in enumerate(events):
        schema, sid = (v1, ids[0]) if n < evolve_at else (v2, ids[1])
        value = as_written(event, schema)
        as_avro.append(("readings", 0, n, framed(sid, avro(schema, value))))
        as_json.append(("readings", 0, n, orjson.loads(orjson.dumps(value, default=lambda d: format(d, "f"), option=orjson.OPT_UTC_Z))))
    tables = ("DIM_CUSTOMER", "DIM_DATE", "FACT_READINGS")
    avro_sink, results = load(PROPERTY_STAR, as_avro, batch_size, mapper(local_schema_registry, PROPERTY_STAR))
    json_sink, json_results = load(PROPERTY_JSON_STAR, as_json, batch_size)
    assert [r.rejects for r in results] == [r.rejects for r in json_results]
    assert star_rows(avro_sink.connection, tables) == star_rows(json_sink.connection, tables)


# ---- spec draft: a first spec from a topic, in any format ------------------------------------


def test_a_spec_drafted_from_a_json_topic_loads_as_printed(local_broker, tmp_path):
    topic = f"draft-json-{uuid.uuid4().hex[:8]}"
    produce_cli(local_broker, topic)
    drafted = run_cli("spec", "draft", "--bootstrap-servers", local_broker.bootstrap_servers, "--topic", topic, "--samples", "300")
    assert drafted.returncode == 0, drafted.stderr
    spec = StarSchema.from_dict(yaml.safe_load(drafted.stdout))
    fact = spec.fact
    assert (fact.grain[0].source, fact.event_time.source, fact.topic) == ("order_id", "order_timestamp", topic)
    types = {f.source: type_spelling(f.type) for f in fact.columns}
    assert types == {"customer_id": "string", "customer_name": "string", "customer_region": "string", "shipping_region": "string",
                     "product_id": "string", "product_name": "string", "category": "string", "price": "integer", "quantity": "integer"}  # fmt: skip
    assert "# A first spec drafted from 300 messages" in drafted.stdout
    path = tmp_path / "draft.yaml"
    path.write_text(drafted.stdout)
    loaded = load_cli(local_broker, topic, "--spec", str(path), "--duckdb-path", str(tmp_path / "d.duckdb"))
    assert loaded.returncode == 0, loaded.stderr
    with duckdb.connect(str(tmp_path / "d.duckdb"), read_only=True) as con:
        assert con.execute(f"SELECT count(*) FROM {fact.table}").fetchone() == (400,)


def test_a_spec_drafted_from_an_avro_topic_takes_the_writer_schemas_types_and_loads(local_broker, local_schema_registry, tmp_path):
    topic = f"draft-avro-{uuid.uuid4().hex[:8]}"
    produce_cli(local_broker, topic, "--format", "avro", "--schema-registry", local_schema_registry.url)
    drafted = run_cli("spec", "draft", "--bootstrap-servers", local_broker.bootstrap_servers, "--topic", topic,
                      "--schema-registry", local_schema_registry.url)  # fmt: skip
    assert drafted.returncode == 0, drafted.stderr
    spec = StarSchema.from_dict(yaml.safe_load(drafted.stdout))
    assert spec.fact.format is Format.AVRO
    types = {f.source: type_spelling(f.type) for f in spec.fact.columns}
    assert (types["price"], types["quantity"], type_spelling(spec.fact.event_time.type)) == ("decimal(18,2)", "integer", "timestamp")
    path = tmp_path / "draft.yaml"
    path.write_text(drafted.stdout)
    loaded = load_cli(local_broker, topic, "--spec", str(path), "--duckdb-path", str(tmp_path / "d.duckdb"), "--schema-registry", local_schema_registry.url)
    assert loaded.returncode == 0, loaded.stderr
    with duckdb.connect(str(tmp_path / "d.duckdb"), read_only=True) as con:
        assert con.execute(f"SELECT count(*), sum(PRICE * QUANTITY) > 0 FROM {spec.fact.table}").fetchone() == (400, True)


# ---- Protobuf, written by confluent-kafka's own serializer -----------------------------------


def orders_proto(quantity: int | None = None, name: str = "shop/orders.proto") -> type:
    """A message class for the orders topic, made at run time as a producer's generated code would declare it (``quantity``: its field type)."""
    from confluent_kafka.schema_registry.confluent.type import decimal_pb2
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, timestamp_pb2

    F = descriptor_pb2.FieldDescriptorProto
    file = descriptor_pb2.FileDescriptorProto(name=name, package="shop", syntax="proto3",
                                              dependency=["google/protobuf/timestamp.proto", "confluent/type/decimal.proto"])  # fmt: skip
    order = file.message_type.add(name="Order")
    fields = [("order_id", F.TYPE_STRING, None), ("order_timestamp", F.TYPE_MESSAGE, ".google.protobuf.Timestamp"), ("quantity", quantity or F.TYPE_INT64, None),
              ("price", F.TYPE_MESSAGE, ".confluent.type.Decimal"), ("customer_id", F.TYPE_STRING, None), ("customer_name", F.TYPE_STRING, None),
              ("customer_region", F.TYPE_STRING, None), ("product_id", F.TYPE_STRING, None), ("product_name", F.TYPE_STRING, None),
              ("category", F.TYPE_STRING, None)]  # fmt: skip
    for number, (field, kind, type_name) in enumerate(fields, 1):
        order.field.add(name=field, number=number, type=kind, label=F.LABEL_OPTIONAL, **({"type_name": type_name} if type_name else {}))
    # shipping_region: proto3 `optional` (presence), in its synthetic oneof
    order.oneof_decl.add(name="_shipping_region")
    order.field.add(name="shipping_region", number=20, type=F.TYPE_STRING, label=F.LABEL_OPTIONAL, proto3_optional=True, oneof_index=0)
    pool = descriptor_pool.DescriptorPool()
    for known in (timestamp_pb2, decimal_pb2):
        pool.AddSerializedFile(known.DESCRIPTOR.serialized_pb)
    return message_factory.GetMessageClass(pool.Add(file).message_types_by_name["Order"])


def test_a_protobuf_topic_loads_the_star_its_json_twin_loads(local_schema_registry):
    from confluent_kafka.schema_registry.protobuf import ProtobufSerializer
    from confluent_kafka.serialization import MessageField, SerializationContext

    order_class = orders_proto()
    client = SchemaRegistryClient({"url": local_schema_registry.url})
    serializer = ProtobufSerializer(order_class, client, {"use.deprecated.format": False})
    orders = sample_orders(40)
    values = []
    for n, o in enumerate(orders):
        message = order_class(**{k: o[k] for k in ("order_id", "quantity", "customer_id", "customer_name", "customer_region", "product_id", "product_name", "category")})
        message.order_timestamp.FromJsonString(o["order_timestamp"])
        unscaled = int(D(o["price"]) * 100)
        message.price.value, message.price.precision, message.price.scale = unscaled.to_bytes(8, "big", signed=True).lstrip(b"\x00") or b"\x00", 18, 2
        if n % 3:
            message.shipping_region = o["shipping_region"]
        values.append(serializer(message, SerializationContext(f"{subject()}", MessageField.VALUE)))
    star = attrs.evolve(ORDERS_SCHEMA, fact=attrs.evolve(ORDERS_SCHEMA.fact, format="protobuf"))
    as_json = [("orders", 0, n, {k: v for k, v in o.items() if k != "shipping_region" or n % 3}) for n, o in enumerate(orders)]
    proto_sink, results = load(star, [("orders", 0, n, v) for n, v in enumerate(values)], 9, mapper(local_schema_registry, star))
    json_sink, _ = load(ORDERS_SCHEMA, as_json, 9)
    assert sum(r.rejects for r in results) == 0 and sum(r.facts_inserted for r in results) == 40
    assert star_rows(proto_sink.connection) == star_rows(json_sink.connection)


def test_protobuf_values_that_do_not_fit_are_rejects_saying_why(local_schema_registry):
    from confluent_kafka.schema_registry.protobuf import ProtobufSerializer
    from confluent_kafka.serialization import MessageField, SerializationContext
    from google.protobuf.descriptor_pb2 import FieldDescriptorProto

    client = SchemaRegistryClient({"url": local_schema_registry.url})
    star = attrs.evolve(ORDERS_SCHEMA, fact=attrs.evolve(ORDERS_SCHEMA.fact, format="protobuf"))
    good_class, double_class = orders_proto(), orders_proto(FieldDescriptorProto.TYPE_DOUBLE, "shop/orders2.proto")
    good = ProtobufSerializer(good_class, client, {"use.deprecated.format": False})(good_class(order_id="O1", quantity=1), SerializationContext(subject(), MessageField.VALUE))
    double = ProtobufSerializer(double_class, client, {"use.deprecated.format": False})(double_class(order_id="O2", quantity=1.5), SerializationContext(subject(), MessageField.VALUE))
    sid, other = int.from_bytes(good[1:5], "big"), int.from_bytes(double[1:5], "big")
    values = [double, good[:5] + b"\x04\x02\x02" + good[6:], good[:-2] + b"\xff\xff", good[:5] + b"\x00\x0a\xff"]
    reasons = mapper(local_schema_registry, star).stage(raw_batch(values), topic="orders", group="g").rejects.column("REASON").to_pylist()
    assert reasons[0] == f"schema id {other}: quantity: the writer type double cannot become integer"
    assert reasons[1] == f"schema id {sid}: no message at indexes [1, 1] of its schema"
    assert reasons[2].startswith(f"schema id {sid}: not a Protobuf message of its schema")
    assert reasons[3].startswith(f"schema id {sid}: not a Protobuf message of its schema")


def test_orders_written_by_produce_in_protobuf_load_the_star_of_their_json_twin(local_schema_registry):
    star = attrs.evolve(ORDERS_SCHEMA, fact=attrs.evolve(ORDERS_SCHEMA.fact, format="protobuf"))
    writer = FramedWriter(star.feeds()[0], Format.PROTOBUF, SchemaRegistryClient({"url": local_schema_registry.url}), subject())
    orders = sample_orders(50)
    proto_sink, results = load(star, [("orders", 0, n, writer.value(o)) for n, o in enumerate(orders)], 11, mapper(local_schema_registry, star))
    json_sink, _ = load(ORDERS_SCHEMA, [("orders", 0, n, o) for n, o in enumerate(orders)], 11)
    assert sum(r.facts_inserted for r in results) == 50 and sum(r.rejects for r in results) == 0
    assert star_rows(proto_sink.connection) == star_rows(json_sink.connection)


def test_the_shop_star_from_avro_topics_is_the_star_of_its_json_topics_on_duckdb_and_snowflake(
    local_broker, local_schema_registry, snowflake_environment, snowflake_settings, tmp_path
):
    """Customers through Debezium's Avro envelope, orders and payments in Avro: the members, versions, deletes and facts of the JSON topics."""
    from test_recovery import duckdb_query
    from test_several_loaders import snowflake_query
    from test_several_topics import shop_on, view

    run = uuid.uuid4().hex[:8]
    avro, plain = f"a{run}-", f"j{run}-"
    for prefix, more in ((avro, ("--format", "avro", "--schema-registry", local_schema_registry.url)), (plain, ())):
        done = run_cli("produce", "--bootstrap-servers", local_broker.bootstrap_servers, "--generator", "shop", "--count", "3000",
                       "--seed", "21", "--partitions", "2", "--option", f"prefix={prefix}", "--option", "customers=30", *more)  # fmt: skip
        assert done.returncode == 0, done.stderr
    data = shop_on(avro).to_dict()
    for part in [*data["dimensions"], *data["facts"]]:
        if "topic" in part:
            part["format"] = "avro"
    avro_spec, json_spec = tmp_path / "avro.yaml", tmp_path / "json.yaml"
    avro_spec.write_text(yaml.safe_dump(data))
    json_spec.write_text(yaml.safe_dump(shop_on(plain).to_dict()))
    registry = ("--schema-registry", local_schema_registry.url)

    def loaded(spec, *more, env=None):
        done = run_cli("load", "--bootstrap-servers", local_broker.bootstrap_servers, "--spec", str(spec), "--group", f"g-{run}", "--until-idle", "2",
                       *more, env=env, timeout=300)  # fmt: skip
        assert done.returncode == 0, done.stderr
        return dict(line.split(": ", 1) for line in done.stdout.splitlines() if ": " in line)

    avro_summary = loaded(avro_spec, "--duckdb-path", str(tmp_path / "a.duckdb"), *registry)
    json_summary = loaded(json_spec, "--duckdb-path", str(tmp_path / "j.duckdb"))
    loaded(avro_spec, "--sink", "snowflake", *registry, env={**os.environ, **snowflake_environment})
    assert (avro_summary["consumed"], avro_summary["rejected"]) == (json_summary["consumed"], json_summary["rejected"]) == ("3000", json_summary["rejected"])
    assert int(avro_summary["tombstones (acknowledged)"]) > 0
    expected = view(duckdb_query(tmp_path / "j.duckdb"))
    versions, orders, payments = expected
    assert any(deleted for *_, deleted, _, _, _ in versions) and len(orders) > 1000 and payments
    assert view(duckdb_query(tmp_path / "a.duckdb")) == expected
    assert view(snowflake_query(snowflake_settings)) == expected


def test_a_topics_parts_agree_on_its_format_and_a_dimension_without_a_topic_has_none():
    shop = SHOP_SCHEMA.to_dict()
    shop["facts"][0]["format"] = "avro"  # the orders fact; its topic feeds nothing else, so the star is fine
    assert StarSchema.from_dict(shop).facts[0].format is Format.AVRO
    shop["dimensions"][0]["format"] = "protobuf"
    shop["dimensions"][1]["format"] = "avro"  # the product dimension has no topic of its own
    with pytest.raises(SpecError) as raised:
        StarSchema.from_dict(shop)
    assert "dimension 'product': format needs a topic" in str(raised.value)
    both = ORDERS_SCHEMA.to_dict()
    fact = both.pop("fact")
    both["facts"] = [{**fact, "topic": "o", "format": "avro"}, {**fact, "table": "FACT_OTHER", "topic": "o"}]
    with pytest.raises(SpecError, match=r"topic 'o': its parts disagree on its format \(avro, json\)"):
        StarSchema.from_dict(both)


def test_a_registry_that_refuses_stops_the_load_with_one_line(local_schema_registry):
    registry = SchemaRegistry({"url": local_schema_registry.url})
    local_schema_registry.fail_next(1, status=401)
    with pytest.raises(StarloadError, match=r"refused schema id 3: 401 .*check its credentials"):
        registry.schema(3)


def test_a_registry_failing_mid_load_is_waited_for_on_healthz_and_nothing_is_lost(local_broker, local_schema_registry):
    from confluent_kafka import Producer

    from starload.engine import StarLoader
    from starload.kafka import ensure_topic, producer_config

    topic = f"avro-outage-{uuid.uuid4().hex[:8]}"
    ensure_topic(local_broker.bootstrap_servers, topic, partitions=1)
    writer = FramedWriter(AVRO_ORDERS.feeds()[0], Format.AVRO, SchemaRegistryClient({"url": local_schema_registry.url}), topic)
    producer = Producer(producer_config(local_broker.bootstrap_servers))
    orders = sample_orders(300)
    for o in orders:
        producer.produce(topic, writer.value(o), o["order_id"].encode())
    producer.flush(30)
    sink = DuckDBSink(":memory:")
    loader = StarLoader(AVRO_ORDERS, sink, bootstrap_servers=local_broker.bootstrap_servers, topic=topic, group="outage",
                        schema_registry={"url": local_schema_registry.url})  # fmt: skip
    local_schema_registry.reset()
    seen: list[dict] = []
    done = threading.Event()

    def watch() -> None:
        faulted = False
        while not done.wait(0.1):
            if not faulted and local_schema_registry.requests() >= 1:  # the start-up check answered: fail the schema fetches
                local_schema_registry.fail_next(5, status=503)
                faulted = True
            _, state = loader.health()
            if state.get("waiting_for"):
                seen.append(state)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        stats = loader.run(until_idle=2)
    finally:
        done.set()
        watcher.join()
    assert seen and "the Schema Registry at" in seen[0]["waiting_for"] and "answered 503" in seen[0]["waiting_for"]
    assert stats.rejected == 0 and stats.consumed == 300
    assert sink.connection.execute("SELECT count(*) FROM FACT_ORDERS").fetchone() == (300,)


def test_a_draft_types_a_field_by_most_of_its_values_and_reads_a_sometimes_object_as_the_object():
    """examples/payments.jsonl: some lines are broken on purpose (a merchant that is a string, a refund flag that is text)."""
    from starload.drafting import draft

    records = [orjson.loads(line) for line in (ROOT / "examples" / "payments.jsonl").read_text().splitlines() if line.strip()]
    text = draft("payments", [r for r in records if isinstance(r, dict)])
    spec = StarSchema.from_dict(yaml.safe_load(text))  # valid as printed
    types = {f.source: type_spelling(f.type) for f in spec.fact.columns}
    assert (types["is_refund"], types["settled_on"], types["amount"], types["merchant.id"]) == ("boolean", "date", "decimal(18,2)", "string")
    assert "merchant" not in types
    assert "# Values that do not fit the type drafted, which will be rejects: is_refund (1 of 10), settled_on (1 of 9)" in text
    assert "# A value in some messages, an object in others (those will be rejects): merchant" in text
