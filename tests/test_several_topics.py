"""One star from several topics (examples/shop.yaml) on DuckDB: Debezium events, inferred members, order independence, one loader for every topic.

What every sink must do with such a star is in the sink behaviour suite (:class:`starload.testing.SinkBehaviour`)."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from pathlib import Path
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from starload import SHOP_SCHEMA, DuckDBSink, StarSchema
from starload.generators.shop import CUSTOMERS_TOPIC, ORDERS_TOPIC, PAYMENTS_TOPIC, SHOP_TYPE1_SCHEMA
from starload.engine import loader_topics
from starload.exceptions import StarloadError
from starload.mapping import Mapper
from starload.testing import as_instant
from starload.testing import debezium_change as change
from starload.testing import epoch_ms as ms
from starload.testing import stage_topics as stage

SHOP = SHOP_SCHEMA
CUSTOMERS, ORDERS, PAYMENTS = CUSTOMERS_TOPIC, ORDERS_TOPIC, PAYMENTS_TOPIC


def customer(id_: int, region: str | None, first_name: str = "Anne") -> dict[str, Any]:
    return {"id": id_, "first_name": first_name, "last_name": "Kretchmar", "email": "annek@noanswer.org", "region": region}


def order(order_id: str, customer_id: int, at: str, product: str = "P1") -> bytes:
    return json.dumps(
        {"order_id": order_id, "order_timestamp": at, "customer_id": customer_id, "product_id": product,
         "product_name": "Mouse", "category": "Accessories", "quantity": 2, "unit_price": "12.50"}
    ).encode()  # fmt: skip


def payment(payment_id: str, customer_id: int, at: str) -> bytes:
    return json.dumps(
        {"payment_id": payment_id, "paid_at": at, "payer": {"customer_id": customer_id}, "order_id": "O1", "amount": "25.00", "method": "card"}
    ).encode()


@pytest.fixture
def mapper():
    m = Mapper(SHOP)
    yield m
    m.close()


@pytest.fixture
def sink():
    with DuckDBSink(":memory:") as s:
        s.prepare(SHOP)
        yield s


def rows(sink: DuckDBSink, sql: str) -> list[tuple[Any, ...]]:
    return sink.connection.execute(sql).fetchall()


def test_the_spec_names_every_topic_and_what_each_carries():
    assert [(f.topic, f.facts[0].table if f.facts else f.dimension.name) for f in SHOP.feeds()] == [
        (ORDERS, "FACT_ORDERS"), (PAYMENTS, "FACT_PAYMENTS"), (CUSTOMERS, "customer"),
    ]  # fmt: skip
    payments = SHOP.feed(PAYMENTS)
    assert [f.source for f in payments.fields_of(SHOP.dimension("customer"))] == ["payer.customer_id"]
    assert payments.fields_of(SHOP.dimension("product")) == ()  # payments do not refer to products
    assert loader_topics(SHOP, None) == (ORDERS, PAYMENTS, CUSTOMERS)
    with pytest.raises(StarloadError, match="names its topics"):
        loader_topics(SHOP, "orders")
    assert StarSchema.from_dict(SHOP.to_dict()) == SHOP
    assert StarSchema.from_file(Path(__file__).parents[1] / "examples" / "shop.yaml") == SHOP  # the file is the twin


def test_a_record_older_than_the_first_fact_moves_the_first_version_back_and_the_facts_follow(sink, mapper):
    """With history, the first version starts at the member's earliest event: a snapshot older than its facts re-points them."""
    sink.write(stage(mapper, {ORDERS: [order("O1", 1, "2024-05-01T10:00:00Z")]}))
    sink.write(stage(mapper, {CUSTOMERS: [change("r", customer(1, "EU"), ms("2024-05-01T09:00:00Z"))]}))
    assert rows(sink, "SELECT REGION, IS_INFERRED, VALID_FROM, VALID_TO FROM FACT_ORDERS JOIN DIM_CUSTOMER USING (CUSTOMER_KEY)") == [
        ("EU", False, datetime(2024, 5, 1, 9, tzinfo=UTC), None)
    ]
    assert rows(sink, "SELECT count(*) FROM DIM_CUSTOMER") == [(1,)]


def test_a_record_before_any_fact_is_not_inferred_and_a_later_fact_keeps_it_so(sink, mapper):
    sink.write(stage(mapper, {CUSTOMERS: [change("c", customer(7, "EU"), ms("2024-01-01T00:00:00Z"), wrapped=False)]}))
    sink.write(stage(mapper, {ORDERS: [order("O7", 7, "2024-02-01T00:00:00Z")]}))
    assert rows(sink, "SELECT CUSTOMER_ID, IS_INFERRED, REGION FROM DIM_CUSTOMER") == [(7, False, "EU")]
    assert rows(sink, "SELECT count(*) FROM FACT_ORDERS JOIN DIM_CUSTOMER USING (CUSTOMER_KEY)") == [(1,)]


def test_debezium_events_with_and_without_the_schema_wrapper(mapper):
    """Snapshot reads, creates and updates are upserts at ts_ms, a delete marks its row, a tombstone is counted; anything else is a reject."""
    at = ms("2024-03-01T12:00:00Z")
    events = [
        change("r", customer(1, "EU"), at),
        change("c", customer(2, "US"), at + 1, wrapped=False),
        change("u", customer(2, "APAC"), at + 2, before=None),
        change("d", None, at + 3, before={"id": 1, "first_name": None, "last_name": None, "email": None, "region": None}),
        None,  # the tombstone Debezium writes after a delete
        b'{"payload": {"op": "x", "after": {"id": 3}, "ts_ms": 1}}',
        b'{"op": "u", "after": {"id": 4}, "ts_ms": "soon"}',
        change("d", None, at + 4, before=None),  # REPLICA IDENTITY NOTHING: no row to delete
        b"",
    ]
    batch = stage(mapper, {CUSTOMERS: events})
    members = {r["CUSTOMER_ID"]: r for r in batch.dimensions["customer"].to_pylist()}
    assert sorted(members) == [1, 2]
    assert (members[1]["FIRST_NAME"], members[1]["IS_INFERRED"], members[1]["DELETED_AT"]) == ("Anne", False, datetime(2024, 3, 1, 12, 0, 0, 3000, tzinfo=UTC))
    assert (members[2]["FIRST_NAME"], members[2]["DELETED_AT"]) == ("Anne", None)
    history = sorted(batch.histories["customer"].to_pylist(), key=lambda h: h["_SL_AT"])
    assert [(h["CUSTOMER_ID"], h["REGION"], h["IS_DELETED"]) for h in history] == [(1, "EU", False), (2, "US", False), (2, "APAC", False), (1, None, True)]
    assert (batch.records, batch.tombstones) == (4, 1)
    reasons = {r["KAFKA_OFFSET"]: r["REASON"] for r in batch.rejects.to_pylist()}
    assert reasons == {
        5: "not a Debezium change event: op is 'x'",
        6: "ts_ms: expected a JSON number of milliseconds since 1970-01-01 UTC",
        7: "before: expected an object (the row a delete removes; a table with REPLICA IDENTITY NOTHING gives none)",
        8: "empty message",
    }
    assert {r["KAFKA_TOPIC"] for r in batch.rejects.to_pylist()} == {CUSTOMERS}


@pytest.mark.parametrize("reverse", [False, True], ids=["in-order", "reversed"])
def test_a_delete_marks_a_type1_member_and_a_reinsert_revives_it_whatever_the_order(reverse):
    created, deleted, revived = ms("2024-01-01T00:00:00Z"), ms("2024-02-01T00:00:00Z"), ms("2024-03-01T00:00:00Z")
    events = [
        change("c", customer(1, "EU"), created),
        change("d", None, deleted, before={"id": 1}),
        None,
        change("c", customer(1, "US", "Anne Marie"), revived),
    ]
    mapper = Mapper(SHOP_TYPE1_SCHEMA)
    with DuckDBSink(":memory:") as sink:
        sink.prepare(SHOP_TYPE1_SCHEMA)
        states = []
        for n in range(len(events)):  # one event a batch, each batch at its own offset
            i = len(events) - 1 - n if reverse else n
            result = sink.write(stage(mapper, {CUSTOMERS: [events[i]]}, start={CUSTOMERS: i}))
            assert result.rejects == 0 and result.tombstones == (events[i] is None)
            states.append(rows(sink, "SELECT FIRST_NAME, REGION, IS_DELETED, DELETED_AT FROM DIM_CUSTOMER")[0])
        mapper.close()
    gone = datetime(2024, 2, 1, tzinfo=UTC)
    assert states[-1] == ("Anne Marie", "US", False, gone)  # revived; DELETED_AT says when it was last deleted
    if not reverse:
        assert states[1] == ("Anne", "EU", True, gone)  # deleted: its last known values stay


def test_a_delete_closes_the_version_in_force_and_later_facts_point_at_the_deleted_one(sink, mapper):
    sink.write(stage(mapper, {CUSTOMERS: [change("c", customer(1, "EU"), ms("2024-01-01T00:00:00Z"))]}))
    sink.write(stage(mapper, {ORDERS: [order("O1", 1, "2024-01-15T00:00:00Z"), order("O2", 1, "2024-03-01T00:00:00Z")]}))
    sink.write(stage(mapper, {CUSTOMERS: [change("d", None, ms("2024-02-01T00:00:00Z"), before={"id": 1}), None]}, start={CUSTOMERS: 1}))
    assert rows(sink, "SELECT REGION, IS_DELETED, VALID_FROM, VALID_TO, IS_CURRENT FROM DIM_CUSTOMER ORDER BY VALID_FROM") == [
        ("EU", False, datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 2, 1, tzinfo=UTC), False),
        ("EU", True, datetime(2024, 2, 1, tzinfo=UTC), None, True),
    ]
    assert rows(sink, "SELECT ORDER_ID, IS_DELETED FROM FACT_ORDERS JOIN DIM_CUSTOMER USING (CUSTOMER_KEY) ORDER BY 1") == [("O1", False), ("O2", True)]


def test_one_batch_of_three_topics_is_one_transaction_with_every_offset(sink, mapper):
    batch = stage(
        mapper,
        {ORDERS: [order("O1", 1, "2024-05-01T10:00:00Z")], PAYMENTS: [payment("Y1", 2, "2024-05-01T10:00:00Z"), b"{}"],
         CUSTOMERS: [change("r", customer(1, "EU"), ms("2024-05-01T09:00:00Z"))]},
        start={ORDERS: 10, PAYMENTS: 20, CUSTOMERS: 30},
    )  # fmt: skip
    assert batch.next_offsets == {ORDERS: {0: 11}, PAYMENTS: {0: 22}, CUSTOMERS: {0: 31}}
    result = sink.write(batch.fenced({}))
    assert result.facts_inserted + result.duplicates + result.records + result.rejects == batch.messages == 4
    assert {t: sink.stored_offsets("g", t) for t in (ORDERS, PAYMENTS, CUSTOMERS)} == {ORDERS: {0: 11}, PAYMENTS: {0: 22}, CUSTOMERS: {0: 31}}


def view(query: Callable[[str], list[tuple[Any, ...]]]) -> tuple[list[tuple[Any, ...]], ...]:
    """The shop star without its surrogate keys and load times: members' versions, and each fact's member version.

    Timestamps as UTC datetimes whatever the driver; a NULL one read as None by its ``IS NULL``
    (the local Snowflake endpoint reads a NULL timestamp back as 1970).
    """
    versions = query(
        "SELECT CUSTOMER_ID, FIRST_NAME, REGION, IS_INFERRED, IS_DELETED, DELETED_AT, DELETED_AT IS NULL, VALID_FROM, VALID_TO, "
        "VALID_TO IS NULL FROM DIM_CUSTOMER ORDER BY 1, 8"
    )
    orders = query(
        "SELECT ORDER_ID, CUSTOMER_ID, VALID_FROM, PRODUCT_ID, TOTAL_AMOUNT FROM FACT_ORDERS "
        "JOIN DIM_CUSTOMER USING (CUSTOMER_KEY) JOIN DIM_PRODUCT USING (PRODUCT_KEY) ORDER BY 1"
    )
    payments = query("SELECT PAYMENT_ID, CUSTOMER_ID, VALID_FROM, AMOUNT FROM FACT_PAYMENTS JOIN DIM_CUSTOMER USING (CUSTOMER_KEY) ORDER BY 1")
    return (
        [
            (c, n, r, inferred, deleted, None if no_delete else as_instant(at), as_instant(since), None if current else as_instant(until))
            for c, n, r, inferred, deleted, at, no_delete, since, until, current in versions
        ],
        [(o, c, as_instant(since), *rest) for o, c, since, *rest in orders],
        [(y, c, as_instant(since), *rest) for y, c, since, *rest in payments],
    )


hours = st.integers(0, 40).map(lambda h: f"2024-05-{1 + h // 24:02d}T{h % 24:02d}:00:00Z")
events = st.lists(
    st.one_of(
        st.tuples(st.just(ORDERS), st.integers(1, 3), hours, st.sampled_from(["O1", "O2", "O3", "O4"])),
        st.tuples(st.just(PAYMENTS), st.integers(1, 3), hours, st.sampled_from(["Y1", "Y2", "Y3"])),
        st.tuples(st.just(CUSTOMERS), st.integers(1, 3), hours, st.sampled_from(["EU", "US", None])),
    ),
    min_size=1,
    max_size=25,
)


def message(event: tuple[str, int, str, str | None]) -> bytes:
    topic, who, at, what = event
    if topic == ORDERS:
        return order(str(what), who, at)
    if topic == PAYMENTS:
        return payment(str(what), who, at)
    return change("u", customer(who, what), ms(at))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(events, st.randoms(use_true_random=False), st.integers(1, 6))
def test_the_star_is_the_same_whatever_the_interleaving_of_topics_and_the_batches(mapper, stream, random, batch_size):
    """Each topic's messages keep their order (a partition's), the topics interleave at random, cut into batches of any size."""
    per_topic: dict[str, list[bytes]] = {}
    for event in stream:
        per_topic.setdefault(event[0], []).append(message(event))
    with DuckDBSink(":memory:") as one:
        one.prepare(SHOP)
        one.write(stage(mapper, per_topic))
        expected = view(lambda sql: rows(one, sql))
    arrivals = [t for t, values in per_topic.items() for _ in values]
    random.shuffle(arrivals)
    with DuckDBSink(":memory:") as other:
        other.prepare(SHOP)
        taken = dict.fromkeys(per_topic, 0)
        for start in range(0, len(arrivals), batch_size):
            chunk: dict[str, list[bytes]] = {}
            for topic in arrivals[start : start + batch_size]:
                chunk.setdefault(topic, []).append(per_topic[topic][taken[topic] + len(chunk.get(topic, []))])
            other.write(stage(mapper, chunk, start=dict(taken)))
            for topic, values in chunk.items():
                taken[topic] += len(values)
        assert view(lambda sql: rows(other, sql)) == expected


# ---- through the broker -----------------------------------------------------------------


def shop_on(prefix: str) -> StarSchema:
    """The shop star reading topics named ``prefix`` + its own (so tests sharing a broker do not meet)."""
    data = SHOP.to_dict()
    for part in [*data["dimensions"], *data["facts"]]:
        if "topic" in part:
            part["topic"] = prefix + part["topic"]
    return StarSchema.from_dict(data)


def test_one_loader_reads_every_topic_of_the_star_in_one_group(local_broker, tmp_path):
    """Each topic's rejects go to its own dead-letter topic; every (topic, partition)'s offset is stored; a rerun loads nothing twice.

    ``starload offsets show`` lists every topic's offsets; ``reset`` moves one topic's.
    """
    import yaml
    from confluent_kafka import Producer
    from test_integration import run_cli

    from starload.engine import StarLoader
    from starload.kafka import ensure_topic, producer_config
    from test_deadletter import read_all

    prefix = f"s{uuid.uuid4().hex[:8]}-"
    star = shop_on(prefix)
    topics = {t: prefix + t for t in (ORDERS, PAYMENTS, CUSTOMERS)}
    for name in topics.values():
        ensure_topic(local_broker.bootstrap_servers, name, partitions=2)
    at = ms("2024-05-01T00:00:00Z")
    messages = {
        ORDERS: [order(f"O{i}", i % 5, f"2024-05-01T{i % 24:02d}:00:00Z") for i in range(40)] + [order("O3", 3, "2024-05-01T03:00:00Z")],
        PAYMENTS: [payment(f"Y{i}", i % 7, f"2024-05-02T{i % 24:02d}:00:00Z") for i in range(30)] + [b"not json"],
        CUSTOMERS: [change("r", customer(i, "EU"), at + i) for i in range(6)] + [change("d", None, at + 99, before=customer(5, "EU")), None],
    }
    producer = Producer(producer_config(local_broker.bootstrap_servers))
    for topic, values in messages.items():
        for i, value in enumerate(values):
            producer.produce(topics[topic], value, partition=i % 2)
    producer.flush()
    total = sum(map(len, messages.values()))

    def load(sink: DuckDBSink) -> Any:
        loader = StarLoader(star, sink, bootstrap_servers=local_broker.bootstrap_servers, group="shop", batch_rows=25,
                            consumer_overrides={"session.timeout.ms": 6000, "heartbeat.interval.ms": 1000})  # fmt: skip
        assert loader.dlq_topics == sorted(f"{t}.dlq" for t in topics.values())
        return loader, loader.run(until_idle=2)

    db = tmp_path / "shop.duckdb"
    with DuckDBSink(db) as sink:
        loader, stats = load(sink)
        assert stats.tombstones == 1
        assert (stats.consumed, stats.facts_loaded, stats.duplicates, stats.records, stats.rejected) == (total, 70, 1, 7, 1)
        # Counted per topic, in the stats and in the metrics.
        assert stats.consumed_by_topic == {name: len(messages[t]) for t, name in topics.items()}
        assert stats.rejected_by_topic == {name: int(t == PAYMENTS) for t, name in topics.items()}
        metric = loader.metrics.registry.get_sample_value
        per_topic = {
            name: [metric(f"starload_{m}_total", {"topic": name}) for m in ("messages_consumed", "records", "tombstones")]
            for name in topics.values()
        }
        assert per_topic == {topics[ORDERS]: [41, 0, 0], topics[PAYMENTS]: [31, 0, 0], topics[CUSTOMERS]: [8, 7, 1]}
        assert metric("starload_rejects_total", {"topic": topics[PAYMENTS], "reason": "invalid_json"}) == 1
        assert metric("starload_rejects_total", {"topic": topics[ORDERS], "reason": "invalid_json"}) == 0
        assert {t: sum(sink.stored_offsets("shop", name).values()) for t, name in topics.items()} == {t: len(v) for t, v in messages.items()}
        # Customers 0-5 have records (5 is deleted since); 6 is known from payments only.
        assert rows(sink, "SELECT CUSTOMER_ID, IS_INFERRED FROM DIM_CUSTOMER WHERE CUSTOMER_KEY <> -1 AND IS_CURRENT ORDER BY 1") == [
            (0, False), (1, False), (2, False), (3, False), (4, False), (5, False), (6, True),
        ]  # fmt: skip
        shared = rows(sink, "SELECT count(DISTINCT o.CUSTOMER_KEY) FROM FACT_ORDERS o JOIN FACT_PAYMENTS p USING (CUSTOMER_KEY)")
        assert shared == [(5,)]
        _, again = load(sink)
        assert (again.consumed, again.facts_loaded) == (0, 0)
    dead = {t: read_all(local_broker.bootstrap_servers, f"{name}.dlq", int(t == PAYMENTS)) for t, name in topics.items()}
    assert {t: len(letters) for t, letters in dead.items()} == {ORDERS: 0, PAYMENTS: 1, CUSTOMERS: 0}

    # starload offsets: show lists every topic of the star; reset takes one of them at a time.
    spec = tmp_path / "shop.yaml"
    spec.write_text(yaml.safe_dump(star.to_dict()))
    where = ("--bootstrap-servers", local_broker.bootstrap_servers, "--spec", str(spec), "--duckdb-path", str(db), "--group", "shop")
    shown = run_cli("offsets", "show", *where)
    assert shown.returncode == 0, shown.stderr
    assert all(f"topic {name!r} on" in shown.stdout for name in topics.values()) and shown.stdout.count(" ok ") == 6, shown.stdout
    refused = run_cli("offsets", "reset", *where, "--to", "earliest")
    assert refused.returncode != 0 and "reset one at a time (--topic TOPIC)" in refused.stderr, refused.stderr
    stranger = run_cli("offsets", "show", *where, "--topic", "orders")
    assert stranger.returncode != 0 and "topic 'orders' is none of them" in stranger.stderr, stranger.stderr
    reset = run_cli("offsets", "reset", *where, "--topic", topics[PAYMENTS], "--to", "earliest", "--execute")
    assert reset.returncode == 0, reset.stderr
    with DuckDBSink(db) as sink:
        sink.prepare(star)
        assert {t: sum(sink.stored_offsets("shop", name).values()) for t, name in topics.items()} == {
            ORDERS: len(messages[ORDERS]), PAYMENTS: 0, CUSTOMERS: len(messages[CUSTOMERS]),
        }  # fmt: skip


def test_a_topic_missing_at_start_up_names_itself(local_broker):
    from starload.engine import StarLoader
    from starload.exceptions import StartupError
    from starload.kafka import ensure_topic

    prefix = f"m{uuid.uuid4().hex[:8]}-"
    for topic in (ORDERS, CUSTOMERS):
        ensure_topic(local_broker.bootstrap_servers, prefix + topic, partitions=1)
    with DuckDBSink(":memory:") as sink:
        loader = StarLoader(shop_on(prefix), sink, bootstrap_servers=local_broker.bootstrap_servers, startup_timeout=1)
        with pytest.raises(StartupError, match=f"topic '{prefix}{PAYMENTS}' does not exist"):
            loader.run(until_idle=1)
        assert sink.connection.execute("SELECT count(*) FROM information_schema.tables WHERE table_name = 'FACT_ORDERS'").fetchall() == [(0,)]


def test_the_shop_generator_and_sigkills_build_the_star_of_one_uninterrupted_load(local_broker, tmp_path):
    """``produce --generator shop`` feeds three topics; a loader SIGKILLed at random instants, then drained, builds what one loader builds."""
    import subprocess
    import sys

    import yaml
    from test_recovery import crash_repeatedly, duckdb_query, loader_command

    prefix = f"k{uuid.uuid4().hex[:8]}-"
    spec = tmp_path / "shop.yaml"
    spec.write_text(yaml.safe_dump(shop_on(prefix).to_dict()))
    produced = subprocess.run(
        [sys.executable, "-m", "starload.cli", "produce", "--bootstrap-servers", local_broker.bootstrap_servers, "--generator", "shop",
         "--count", "12000", "--seed", "20", "--partitions", "2", "--option", f"prefix={prefix}", "--option", "customers=40"],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert produced.returncode == 0, produced.stderr
    assert "produced 12000 shop events" in produced.stdout
    assert all(repr(f"{prefix}{name}") in produced.stdout for name in (CUSTOMERS, ORDERS, PAYMENTS)), produced.stdout
    star = ("--spec", str(spec))
    crashed, calm = tmp_path / "crashed.duckdb", tmp_path / "calm.duckdb"
    crash_repeatedly(local_broker.bootstrap_servers, None, crashed, kills=3, seed=9, star=star)
    once = subprocess.run(loader_command(local_broker.bootstrap_servers, None, calm, "--until-idle", "3", "--group", "calm", star=star),
                          capture_output=True, text=True, timeout=600, check=False)  # fmt: skip
    assert once.returncode == 0, once.stderr
    summary = dict(line.split(": ", 1) for line in once.stdout.splitlines() if ": " in line)
    assert summary["consumed"] == "12000" and int(summary["tombstones (acknowledged)"]) > 0 and int(summary["rejected"]) > 0
    assert int(summary["duplicates skipped"]) > 0 and int(summary["records (of dimension topics)"]) > 0
    # A line per topic: every topic had messages, their counts add up, and the invalid orders are the orders topic's.
    per_topic = {key.removeprefix(f"topic {prefix}"): value.split(", ") for key, value in summary.items() if key.startswith("topic ")}
    assert sorted(per_topic) == sorted([CUSTOMERS, ORDERS, PAYMENTS]), per_topic
    assert sum(int(consumed.split()[0]) for consumed, _ in per_topic.values()) == 12000
    assert sum(int(rejected.split()[0]) for _, rejected in per_topic.values()) == int(summary["rejected"])
    assert int(per_topic[ORDERS][1].split()[0]) > 0
    expected = view(duckdb_query(calm))
    assert view(duckdb_query(crashed)) == expected
    versions, orders, _ = expected
    assert any(deleted for *_, deleted, _, _, _ in versions)  # the stream did delete, and make history
    assert len(versions) > 40 and len(orders) > 5000
