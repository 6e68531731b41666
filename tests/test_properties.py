"""Invariants of the star, for arbitrary streams loaded in arbitrary batch sizes (DuckDB; history also through the local Snowflake endpoint)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from starload import ORDERS_HISTORY_SCHEMA, ORDERS_SCHEMA, DuckDBSink, StarSchema
from starload.mapping import Mapper, raw_batch
from starload.sinks.base import Sink
from starload.testing import deliveries, history_oracle, interleave, read_history

names = st.sampled_from(["Ali Raza", "Zoë 李", "O'Brien; DROP TABLE x", None])
order = st.fixed_dictionaries(
    {
        "order_id": st.sampled_from([f"O{i}" for i in range(12)]),
        "order_timestamp": st.sampled_from(["2024-01-01T10:00:00Z", "2024-02-29T23:30:00-05:00", "2024-03-01 00:00:00"]),
        "customer_id": st.sampled_from(["C1", "C2", "C3"]),
        "customer_name": names,
        "customer_region": st.sampled_from(["Sindh", "Punjab", None]),
        "shipping_region": st.sampled_from(["Sindh", None]),
        "product_id": st.sampled_from(["P1", "P2"]),
        "product_name": st.sampled_from(["Mouse", None]),
        "category": st.sampled_from(["Accessories", "Electronics"]),
        "price": st.sampled_from([2500, 19.99, "0.50", 0]),
        "quantity": st.integers(1, 5),
    }
).map(lambda d: json.dumps(d).encode())
invalid = st.one_of(
    st.binary(max_size=40),
    st.sampled_from([b"", b"[]", b"null", b'{"order_id": "O1"}', b'{"order_id": "O2", "quantity": 2.5}']),
    order.map(lambda b: b.replace(b'"quantity": ', b'"quantity": -')),
)
streams = st.lists(st.one_of(order, order, invalid), min_size=1, max_size=60)


def load(values: list[bytes], batch_size: int, sink: DuckDBSink | None = None) -> tuple[DuckDBSink, dict[str, int]]:
    sink = sink or DuckDBSink(":memory:")
    sink.prepare(ORDERS_SCHEMA)
    mapper = Mapper(ORDERS_SCHEMA)
    counts = {"consumed": 0, "facts": 0, "duplicates": 0, "rejects": 0}
    for start in range(0, len(values), batch_size):
        chunk = values[start : start + batch_size]
        batch = mapper.stage(raw_batch(chunk, offsets=range(start, start + len(chunk))), topic="t", group="g")
        batch = batch.with_conflicts(sink.find_conflicts(batch))
        result = sink.write(batch)
        counts["consumed"] += batch.messages
        counts["facts"] += result.facts_inserted
        counts["duplicates"] += result.duplicates
        counts["rejects"] += result.rejects
    mapper.close()
    return sink, counts


def star(sink: DuckDBSink) -> dict[str, list[tuple]]:
    """The star by natural keys (surrogate key values depend on arrival, not on content)."""
    queries = {
        "facts": """SELECT f.ORDER_ID, f.ORDER_TIMESTAMP, c.CUSTOMER_ID, p.PRODUCT_ID, f.DATE_KEY, f.QUANTITY,
                        f.UNIT_PRICE, f.TOTAL_AMOUNT, f.SHIPPING_REGION, f.KAFKA_OFFSET
                    FROM FACT_ORDERS f JOIN DIM_CUSTOMER c USING (CUSTOMER_KEY) JOIN DIM_PRODUCT p USING (PRODUCT_KEY)
                    ORDER BY 1""",
        "customers": "SELECT CUSTOMER_ID, CUSTOMER_NAME, CUSTOMER_REGION, LAST_EVENT_AT FROM DIM_CUSTOMER ORDER BY 1",
        "products": "SELECT PRODUCT_ID, PRODUCT_NAME, CATEGORY, PRICE, LAST_EVENT_AT FROM DIM_PRODUCT ORDER BY 1",
        "dates": "SELECT * FROM DIM_DATE ORDER BY 1",
        "rejects": "SELECT KAFKA_OFFSET, MESSAGE_VALUE, REASON FROM STARLOAD_REJECTS ORDER BY 1",
        "offsets": "SELECT GROUP_ID, TOPIC, KAFKA_PARTITION, NEXT_OFFSET FROM STARLOAD_OFFSETS",
        "orphans": """SELECT ORDER_ID FROM FACT_ORDERS f WHERE NOT EXISTS (SELECT 1 FROM DIM_DATE d WHERE d.DATE_KEY = f.DATE_KEY)""",
    }
    return {name: sink.connection.execute(sql).fetchall() for name, sql in queries.items()}


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(values=streams, batch_size=st.integers(1, 25))
def test_any_batch_size_gives_the_same_star(values, batch_size):
    whole, _ = load(values, len(values))
    batched, _ = load(values, batch_size)
    assert star(batched) == star(whole)
    assert star(batched)["orphans"] == []


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(values=streams, batch_size=st.integers(1, 25))
def test_every_message_is_accounted_for_exactly_once(values, batch_size):
    sink, counts = load(values, batch_size)
    assert counts["consumed"] == len(values)
    assert counts["facts"] + counts["duplicates"] + counts["rejects"] == len(values)
    facts = star(sink)["facts"]
    assert len(facts) == counts["facts"] == len({row[0] for row in facts})
    assert len(star(sink)["rejects"]) == counts["rejects"]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(values=streams, batch_size=st.integers(1, 25), replay_batch=st.integers(1, 25))
def test_replaying_the_stream_changes_nothing(values, batch_size, replay_batch):
    sink, _ = load(values, batch_size)
    before = star(sink)
    _, counts = load(values, replay_batch, sink)
    after = star(sink)
    assert after == before
    assert counts["facts"] == 0
    assert counts["duplicates"] + counts["rejects"] == len(values)


class Crash(Exception):
    """The loader dies here."""


class CrashingSink(DuckDBSink):
    """Dies in the middle of the write transaction (after the facts, before the offsets) when told to."""

    crash_next = False

    def _execute(self, statement, params=None):
        if self.crash_next and statement.startswith('INSERT INTO "STARLOAD_REJECTS"'):
            self.crash_next = False
            raise Crash
        return super()._execute(statement, params)


def load_with_crashes(values: list[bytes], batch_size: int, crashes: set[int]) -> tuple[DuckDBSink, int]:
    """Load like the engine after each crash: resume at the stored offset; crash during batch writes in ``crashes``."""
    sink = CrashingSink(":memory:")
    sink.prepare(ORDERS_SCHEMA)
    mapper = Mapper(ORDERS_SCHEMA)
    writes = accounted = 0
    while (start := sink.stored_offsets("g", "t").get(0, 0)) < len(values):
        chunk = values[start : start + batch_size]
        batch = mapper.stage(raw_batch(chunk, offsets=range(start, start + len(chunk))), topic="t", group="g")
        batch = batch.with_conflicts(sink.find_conflicts(batch))
        writes += 1
        sink.crash_next = writes in crashes
        try:
            result = sink.write(batch)
        except Crash:
            continue  # the process died; the next one resumes from the stored offsets
        accounted += result.facts_inserted + result.duplicates + result.rejects
    mapper.close()
    return sink, accounted


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(values=streams, batch_size=st.integers(1, 25), crashes=st.sets(st.integers(1, 30), max_size=6))
def test_crashes_at_any_batch_change_nothing(values, batch_size, crashes):
    clean, _ = load(values, len(values))
    crashed, accounted = load_with_crashes(values, batch_size, crashes)
    assert star(crashed) == star(clean)
    assert accounted == len(values)  # every message exactly once: fact, duplicate or reject


# ---- type 1 by event time: the star does not depend on how partitions interleave ----------

#: Instants with ties across spellings: 10:00Z and 05:00-05:00 are one instant.
INSTANTS = {
    "2024-01-01T10:00:00Z": datetime(2024, 1, 1, 10, tzinfo=UTC),
    "2024-01-01T05:00:00-05:00": datetime(2024, 1, 1, 10, tzinfo=UTC),
    "2024-01-01T09:59:59.999999Z": datetime(2024, 1, 1, 9, 59, 59, 999_999, tzinfo=UTC),
    "2023-12-31 23:00:00": datetime(2023, 12, 31, 23, tzinfo=UTC),
}
event = st.fixed_dictionaries(
    {
        "partition": st.integers(0, 2),
        "order_timestamp": st.sampled_from(sorted(INSTANTS)),
        "customer_id": st.sampled_from(["C1", "C2"]),
        "customer_name": names,
        "customer_region": st.sampled_from(["Sindh", "Punjab", None]),
    }
)


def placed(events: list[dict]) -> list[tuple[int, int, dict]]:
    """Each event at its (partition, offset): offsets count up within a partition; each order is unique."""
    counts = {0: 0, 1: 0, 2: 0}
    found = []
    for n, e in enumerate(events):
        p = e["partition"]
        value = {k: v for k, v in e.items() if k != "partition"}
        value |= {"order_id": f"O{n}", "product_id": "P1", "category": "Accessories", "price": 1, "quantity": 1}
        found.append((p, counts[p], value))
        counts[p] += 1
    return found


def load_messages(messages: list[tuple[int, int, dict]], batch_size: int, schema: StarSchema = ORDERS_SCHEMA, sink: Sink | None = None) -> Sink:
    """``messages`` in batches of ``batch_size`` into ``sink`` (default: a new in-memory DuckDB sink), conflicts found as the engine finds them."""
    sink = sink or DuckDBSink(":memory:")
    sink.prepare(schema)
    mapper = Mapper(schema)
    for start in range(0, len(messages), batch_size):
        chunk = messages[start : start + batch_size]
        table = raw_batch([json.dumps(v).encode() for _, _, v in chunk], partitions=[p for p, _, _ in chunk], offsets=[o for _, o, _ in chunk])
        batch = mapper.stage(table, topic="t", group="g")
        sink.write(batch.with_conflicts(sink.find_conflicts(batch)))
    mapper.close()
    return sink


def customers_by_oracle(messages: list[tuple[int, int, dict]]) -> list[tuple]:
    """Per customer, each attribute's value at its latest (event time, partition, offset) where it is not null."""
    found = []
    for customer in sorted({v["customer_id"] for _, _, v in messages}):
        mine = sorted((INSTANTS[v["order_timestamp"]], p, o, v) for p, o, v in messages if v["customer_id"] == customer)
        latest = [next((v[a] for *_, v in reversed(mine) if v[a] is not None), None) for a in ("customer_name", "customer_region")]
        found.append((customer, *latest, mine[-1][0]))
    return found


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events=st.lists(event, min_size=1, max_size=40), picks=st.lists(st.integers(0, 2)), batch_size=st.integers(1, 15))
def test_dimensions_follow_event_time_whatever_the_interleaving_and_batches(events, picks, batch_size):
    messages = placed(events)
    sink = load_messages(interleave(messages, picks), batch_size)
    rows = sink.connection.execute("SELECT CUSTOMER_ID, CUSTOMER_NAME, CUSTOMER_REGION, LAST_EVENT_AT FROM DIM_CUSTOMER ORDER BY 1").fetchall()
    assert [(c, n, r, t.astimezone(UTC)) for c, n, r, t in rows] == customers_by_oracle(messages)
    # and the same as one batch of the events sorted by event time
    sorted_once = load_messages(sorted(messages, key=lambda m: (INSTANTS[m[2]["order_timestamp"]], m[0], m[1])), len(messages))
    facts = "SELECT ORDER_ID, CUSTOMER_ID FROM FACT_ORDERS JOIN DIM_CUSTOMER USING (CUSTOMER_KEY) ORDER BY 1"
    assert sink.connection.execute(facts).fetchall() == sorted_once.connection.execute(facts).fetchall()
    assert rows == sorted_once.connection.execute("SELECT CUSTOMER_ID, CUSTOMER_NAME, CUSTOMER_REGION, LAST_EVENT_AT FROM DIM_CUSTOMER ORDER BY 1").fetchall()


# ---- type 2 by event time: history is a function of the events ----------------------------

#: More instants than above, so versions can be split and merged by late events.
MOMENTS = INSTANTS | {f"2024-01-0{d}T12:00:00Z": datetime(2024, 1, d, 12, tzinfo=UTC) for d in range(2, 7)}
moved = st.fixed_dictionaries(
    {
        "partition": st.integers(0, 2),
        "order_timestamp": st.sampled_from(sorted(MOMENTS)),
        "customer_id": st.sampled_from(["C1", "C2"]),
        "customer_name": names,
        "customer_region": st.sampled_from(["Sindh", "Punjab", "Sindh", None]),
    }
)


def history_star(sink: DuckDBSink) -> tuple[list[tuple], list[tuple]]:
    return read_history(lambda sql: sink.connection.execute(sql).fetchall())


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    events=st.lists(moved, min_size=1, max_size=40),
    picks=st.lists(st.integers(0, 2)),
    batch_size=st.integers(1, 12),
    again=st.lists(st.tuples(st.integers(0, 40), st.integers(1, 8)), max_size=2),
)
def test_history_follows_event_time_whatever_the_interleaving_batches_and_redeliveries(events, picks, batch_size, again):
    messages = placed(events)
    sink = load_messages(deliveries(interleave(messages, picks), again), batch_size, ORDERS_HISTORY_SCHEMA)
    assert sink.violations(ORDERS_HISTORY_SCHEMA) == []
    loaded = history_star(sink)
    assert loaded == history_oracle(messages)
    in_order = sorted(messages, key=lambda m: (MOMENTS[m[2]["order_timestamp"]], m[0], m[1]))
    assert loaded == history_star(load_messages(in_order, len(messages), ORDERS_HISTORY_SCHEMA))


# Each example is a fresh schema and a dozen requests a batch on the endpoint: fewer examples, fewer batches.
@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(
    events=st.lists(moved, min_size=1, max_size=24),
    picks=st.lists(st.integers(0, 2)),
    batch_size=st.integers(4, 12),
    again=st.lists(st.tuples(st.integers(0, 24), st.integers(1, 6)), max_size=1),
)
def test_history_through_the_local_snowflake_endpoint_is_the_oracles(local_snowflake, events, picks, batch_size, again):
    """The same property on Snowflake's semantics (the real connector, the endpoint holding fakesnow to Snowflake's rules)."""
    from starload.sinks.snowflake import SnowflakeSink

    messages = placed(events)
    settings_ = local_snowflake.fresh_schema("prop")
    with SnowflakeSink(**settings_) as sink:
        load_messages(deliveries(interleave(messages, picks), again), batch_size, ORDERS_HISTORY_SCHEMA, sink)
        assert sink.violations(ORDERS_HISTORY_SCHEMA) == []
    with local_snowflake.connect(settings_) as con:
        loaded = read_history(lambda sql: con.cursor().execute(sql).fetchall())
    assert loaded == history_oracle(messages)
