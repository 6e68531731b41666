"""Facts that change (``changes: latest``): a row holds its grain value's latest event by event time, milestones the first time a condition held."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from datetime import UTC, datetime
from decimal import Decimal as D
from typing import Any

import attrs
import duckdb
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from starload import Changes, DuckDBSink, Envelope, Milestone, StarSchema, Updates
from starload.exceptions import SpecError
from starload.mapping import Mapper
from starload.sinks.base import Sink, WriteResult
from starload.spec import DateDimension, Dimension, Fact, Field, Integer, String, Timestamp
from starload.spec import Decimal as Dec
from starload.testing import as_instant, debezium_change, deliveries, epoch_ms, interleave, write_batches

STATUSES = ("placed", "paid", "shipped", "delivered", "cancelled")
#: What the property tests on DuckDB vary besides the events: the batch size, and redeliveries (see :func:`~starload.testing.deliveries`).
BATCH_SIZES = st.integers(1, 12)
REDELIVERIES = st.lists(st.tuples(st.integers(0, 40), st.integers(1, 8)), max_size=2)
MILESTONES = tuple(Milestone(f"{s.upper()}_AT", "status", s) for s in STATUSES[1:])


def status_schema(**fact: object) -> StarSchema:
    """Order status events, one row per order: its latest status and amount, dated by when the order was placed."""
    options = {"changes": "latest", "dated_by": "PLACED_AT", "milestones": MILESTONES} | fact
    return StarSchema(
        name="order_status",
        dimensions=(
            Dimension(
                name="customer",
                table="DIM_CUSTOMER",
                key="CUSTOMER_KEY",
                natural_key=(Field("CUSTOMER_ID", "customer_id", String(16), required=True),),
                attributes=(Field("TIER", "tier", String(16), history=True),),
            ),
        ),
        date_dimension=DateDimension(),
        fact=Fact(
            table="FACT_ORDER_STATUS",
            grain=(Field("ORDER_ID", "order_id", String(16), required=True),),
            event_time=Field("STATUS_AT", "at", Timestamp(), required=True),
            dimensions=("customer",),
            columns=(
                Field("STATUS", "status", String(16), required=True),
                Field("PLACED_AT", "placed_at", Timestamp(), required=True),
                Field("AMOUNT", "amount", Dec(12, 2)),
            ),
            **options,  # type: ignore[arg-type]
        ),
    )


STATUS_SCHEMA = status_schema()

INSTANTS = [f"2024-01-0{d}T{h:02d}:00:00Z" for d in (1, 2, 3) for h in (0, 12)]
#: Each order was placed at a fixed time (its dating field), before any of its status events.
PLACED = {f"O{i}": f"2023-12-3{i % 2}T0{i}:00:00Z" for i in range(5)}
event = st.fixed_dictionaries(
    {
        "partition": st.integers(0, 2),
        "order_id": st.sampled_from(sorted(PLACED)),
        "status": st.sampled_from(STATUSES),
        "at": st.sampled_from(INSTANTS),
        "customer_id": st.sampled_from(["C1", "C2"]),
        "amount": st.sampled_from(["10.00", "12.5", None]),
    }
)


def placed(events: list[dict]) -> list[tuple[int, int, dict]]:
    """Each event at its (partition, offset), offsets counting up within a partition."""
    counts: dict[int, int] = {}
    found = []
    for e in events:
        p = e["partition"]
        value = {k: v for k, v in e.items() if k != "partition"} | {"placed_at": PLACED[e["order_id"]]}
        found.append((p, counts.get(p, 0), value))
        counts[p] = counts.get(p, 0) + 1
    return found


def oracle(messages: list[tuple[int, int, dict]]) -> list[tuple]:
    """Per order, by the rules alone: the values of its latest event by (event time, partition, offset), and each milestone's earliest time."""
    unique = {(p, o): v for p, o, v in messages}
    rows = []
    for order in sorted({v["order_id"] for v in unique.values()}):
        mine = sorted((as_instant(v["at"]), p, o, v) for (p, o), v in unique.items() if v["order_id"] == order)
        at, _, _, last = mine[-1]
        amount = D(last["amount"]).quantize(D("0.01")) if last["amount"] is not None else None
        reached = [min((t for t, _, _, v in mine if v["status"] == s), default=None) for s in STATUSES[1:]]
        placed_at = as_instant(last["placed_at"])
        rows.append((order, at, last["status"], placed_at, amount, last["customer_id"], int(placed_at.strftime("%Y%m%d")), *reached))
    return rows


#: The rows by natural keys; each milestone with whether it is NULL (the local Snowflake endpoint reads a NULL timestamp back as 1970).
STAR = """SELECT f.ORDER_ID, f.STATUS_AT, f.STATUS, f.PLACED_AT, f.AMOUNT, c.CUSTOMER_ID, f.DATE_KEY,
       f.PAID_AT, f.SHIPPED_AT, f.DELIVERED_AT, f.CANCELLED_AT,
       f.PAID_AT IS NULL, f.SHIPPED_AT IS NULL, f.DELIVERED_AT IS NULL, f.CANCELLED_AT IS NULL
FROM FACT_ORDER_STATUS f JOIN DIM_CUSTOMER c USING (CUSTOMER_KEY) ORDER BY 1"""


def normal(rows: list) -> list[tuple]:
    """Rows of :data:`STAR` with every timestamp in UTC (drivers hand them back in their own zones), and NULL milestones None."""
    found = []
    for row in rows:
        values, nulls = row[:-4], row[-4:]
        values = [x.astimezone(UTC) if isinstance(x, datetime) else x for x in values]
        found.append((*values[:7], *(None if null else x for x, null in zip(values[7:], nulls))))
    return found


def load(messages: list[tuple[int, int, Any]], batch_size: int, sink: Sink, schema: StarSchema = STATUS_SCHEMA) -> list[WriteResult]:
    """``messages`` (partition, offset, value) of the star's one topic in batches into ``sink``, as the engine writes them."""
    topic = schema.feeds()[0].topic or "status"
    return load_topics([(topic, p, o, v) for p, o, v in messages], batch_size, sink, schema)


def load_topics(messages: list[tuple[str, int, int, Any]], batch_size: int, sink: Sink, schema: StarSchema) -> list[WriteResult]:
    """``messages`` (topic, partition, offset, value) in batches into ``sink`` (:func:`~starload.testing.write_batches`)."""
    sink.prepare(schema)
    mapper = Mapper(schema)
    try:
        return write_batches(sink, mapper, messages, batch_size)
    finally:
        mapper.close()


# ---- the spec ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"changes": "insert"}, "dated_by needs changes: latest"),
        ({"changes": "insert", "dated_by": None}, "milestones needs changes: latest"),
        ({"changes": "sometimes"}, "changes must be one of insert, latest (got 'sometimes')"),
        ({"dated_by": "AMOUNT"}, "dated_by 'AMOUNT' must name a required timestamp column of the fact"),
        ({"dated_by": "NOWHERE"}, "dated_by 'NOWHERE' must name a required timestamp column"),
        ({"milestones": (Milestone("STATUS", "status", "paid"),)}, "column 'STATUS' appears 2 times"),
        ({"milestones": (Milestone("PAID_AT", "status", "paid", date_key="DATE_KEY"),)}, "column 'DATE_KEY' appears 2 times"),
    ],
)
def test_a_changing_fact_is_checked_whole(change, problem):
    with pytest.raises(SpecError, match=re.escape(problem)):
        status_schema(**change)


def test_updates_from_another_topic_are_checked_whole():
    fact = PROGRESS_SCHEMA.fact
    part = fact.updates[0]

    def with_updates(*updates: Updates, **more: object) -> Fact:
        return attrs.evolve(fact, updates=updates, **more)  # type: ignore[arg-type]

    cases = {
        "needs changes: latest": lambda: with_updates(part, changes="insert", dated_by=None),
        "read 2 grain sources for 1 grain columns": lambda: with_updates(attrs.evolve(part, grain=("id", "x"))),
        "updates from 'orders', its own topic": lambda: with_updates(attrs.evolve(part, topic="orders")),
        "updates from topic 'order_status' appears 2 times": lambda: with_updates(part, part),
        "event_time 'STATUS_AT' must be a required timestamp": lambda: attrs.evolve(part, event_time=Field("STATUS_AT", "at", Timestamp())),
        "fills nothing": lambda: attrs.evolve(part, columns=(), milestones=()),
        "column 'STATUS' appears 2 times": lambda: StarSchema(
            name="x", dimensions=PROGRESS_SCHEMA.dimensions, fact=with_updates(attrs.evolve(part, columns=(*part.columns, Field("STATUS", "s"))))
        ),
    }
    for problem, build in cases.items():
        with pytest.raises(SpecError, match=re.escape(problem)):
            build()
    assert PROGRESS_SCHEMA.named_topics == ("orders", "order_status")
    columns = PROGRESS_SCHEMA.fact_columns(fact)
    assert columns[:6] == ["ORDER_ID", "UPDATED_AT", "PLACED_AT", "AMOUNT", "STATUS_AT", "STATUS"]
    assert columns[-2:] == ["_SL_AT_UPDATED_AT", "_SL_AT_STATUS_AT"]


def test_milestones_have_a_date_key_each_and_the_row_its_position():
    fact = STATUS_SCHEMA.fact
    assert fact.changes is Changes.LATEST
    assert [m.date_key_column for m in fact.milestones] == ["PAID_DATE_KEY", "SHIPPED_DATE_KEY", "DELIVERED_DATE_KEY", "CANCELLED_DATE_KEY"]
    assert Milestone("DONE", "status", "done").date_key_column == "DONE_DATE_KEY"
    columns = STATUS_SCHEMA.fact_columns(fact)
    assert columns[columns.index("DATE_KEY") + 1 : columns.index("GRAIN_HASH")] == [
        "PAID_AT", "PAID_DATE_KEY", "SHIPPED_AT", "SHIPPED_DATE_KEY", "DELIVERED_AT", "DELIVERED_DATE_KEY", "CANCELLED_AT", "CANCELLED_DATE_KEY",
    ]  # fmt: skip
    assert columns[-1] == "_SL_AT_STATUS_AT"


def test_a_fact_of_elements_cannot_change():
    with pytest.raises(SpecError, match=r"has a row per element of lines: changes: latest keeps the latest event of a row per message"):
        StarSchema(
            name="x",
            dimensions=(),
            fact=Fact(
                table="F",
                grain=(Field("ID", "id", String(), required=True), Field("LINE_NO", "lines[#]", Integer(), required=True)),
                event_time=Field("AT", "at", Timestamp(), required=True),
                dimensions=(),
                changes="latest",
            ),
        )


def test_the_file_spelling_round_trips(tmp_path):
    for schema in (STATUS_SCHEMA, PROGRESS_SCHEMA):
        spec = tmp_path / "status.yaml"
        spec.write_text(json.dumps(schema.to_dict()))  # JSON is YAML
        assert StarSchema.from_file(spec) == schema
    assert PROGRESS_SCHEMA.to_dict()["fact"]["updates"][0]["grain"] == ["id"]
    fact = STATUS_SCHEMA.to_dict()["fact"]
    assert fact["changes"] == "latest" and fact["dated_by"] == "PLACED_AT"
    assert fact["milestones"][0] == {"column": "PAID_AT", "source": "status", "equals": "paid"}


# ---- the rule: a row is a function of its events ---------------------------------------------


def test_a_row_holds_its_latest_event_and_each_milestone_its_first_time():
    sink = DuckDBSink(":memory:")
    events = [
        {"order_id": "O1", "status": "shipped", "at": "2024-01-03T00:00:00Z", "customer_id": "C1", "amount": "10.00"},
        {"order_id": "O1", "status": "placed", "at": "2024-01-01T00:00:00Z", "customer_id": "C1", "amount": "9.00"},  # late
        {"order_id": "O1", "status": "paid", "at": "2024-01-02T00:00:00Z", "customer_id": "C1", "amount": None},  # late
        {"order_id": "O1", "status": "shipped", "at": "2024-01-03T00:00:00Z", "customer_id": "C1", "amount": "10.00"},  # again
    ]
    results = load(placed([{"partition": 0} | e for e in events]), 1, sink)
    assert [(r.facts_inserted, r.facts_updated, r.duplicates, r.rejects) for r in results] == [(1, 0, 0, 0), (0, 0, 0, 0), (0, 1, 0, 0), (0, 1, 0, 0)]
    [row] = normal(sink.connection.execute(STAR).fetchall())

    def day(d: int) -> datetime:
        return datetime(2024, 1, d, tzinfo=UTC)

    # The last "shipped" ties with the first on time; the later offset wins (same values, a new position).
    assert row == ("O1", day(3), "shipped", as_instant(PLACED["O1"]), D("10.00"), "C1", 20231231, day(2), day(3), None, None)
    dates = sink.connection.execute("SELECT PAID_DATE_KEY, SHIPPED_DATE_KEY FROM FACT_ORDER_STATUS").fetchall()
    assert dates == [(20240102, 20240103)]
    keys = {k for (k,) in sink.connection.execute("SELECT DATE_KEY FROM DIM_DATE").fetchall()}
    assert {20231231, 20240102, 20240103} <= keys
    assert sink.violations(STATUS_SCHEMA) == []


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    events=st.lists(event, min_size=1, max_size=40),
    picks=st.lists(st.integers(0, 2)),
    batch_size=BATCH_SIZES,
    again=REDELIVERIES,
)
def test_the_rows_follow_event_time_whatever_the_interleaving_batches_and_redeliveries(events, picks, batch_size, again):
    messages = placed(events)
    sink = DuckDBSink(":memory:")
    results = load(deliveries(interleave(messages, picks), again), batch_size, sink)
    assert normal(sink.connection.execute(STAR).fetchall()) == oracle(messages)
    assert sink.violations(STATUS_SCHEMA) == []
    # every message is loaded: none is a duplicate or a conflict
    assert sum(r.duplicates + r.rejects for r in results) == 0
    assert sum(r.facts_inserted for r in results) == len({v["order_id"] for _, _, v in messages})


# Each example is a fresh schema and a dozen requests a batch on the endpoint: fewer examples, fewer batches.
@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(
    events=st.lists(event, min_size=1, max_size=24),
    picks=st.lists(st.integers(0, 2)),
    batch_size=st.integers(4, 12),
    again=st.lists(st.tuples(st.integers(0, 24), st.integers(1, 6)), max_size=1),
)
def test_the_rows_through_the_local_snowflake_endpoint_are_the_oracles(local_snowflake, events, picks, batch_size, again):
    from starload.sinks.snowflake import SnowflakeSink

    messages = placed(events)
    settings_ = local_snowflake.fresh_schema("latest")
    with SnowflakeSink(**settings_) as sink:
        load(deliveries(interleave(messages, picks), again), batch_size, sink)
        assert sink.violations(STATUS_SCHEMA) == []
    with local_snowflake.connect(settings_) as con:
        rows = con.cursor().execute(STAR).fetchall()
    assert normal(rows) == oracle(messages)


def test_the_dating_field_picks_the_dimension_version_and_keeps_it_while_the_status_changes():
    """A customer's tier changes after the order was placed: the row keeps pointing at the version in force when it was placed."""
    sink = DuckDBSink(":memory:")
    base = {"order_id": "O1", "customer_id": "C1", "amount": "10.00"}
    events = [
        base | {"status": "placed", "at": "2023-12-30T00:00:00Z", "tier": "silver"},
        base | {"status": "shipped", "at": "2024-01-03T00:00:00Z", "tier": "gold"},
        base | {"order_id": "O2", "status": "placed", "at": "2024-01-01T00:00:00Z", "tier": "silver"},  # late: splits nothing
    ]
    load(placed([{"partition": 0} | e for e in events]), 1, sink)
    rows = sink.connection.execute(
        "SELECT f.ORDER_ID, f.STATUS, c.TIER, c.VALID_FROM FROM FACT_ORDER_STATUS f JOIN DIM_CUSTOMER c USING (CUSTOMER_KEY) ORDER BY 1"
    ).fetchall()
    assert [(o, s, t) for o, s, t, _ in rows] == [("O1", "shipped", "silver"), ("O2", "placed", "silver")]
    assert sink.violations(STATUS_SCHEMA) == []
    # Dated by the event time instead, the shipped row points at the version in force when it shipped.
    by_event = status_schema(dated_by=None)
    sink = DuckDBSink(":memory:")
    load(placed([{"partition": 0} | e for e in events]), 1, sink, by_event)
    rows = sink.connection.execute(
        "SELECT f.ORDER_ID, f.STATUS, c.TIER, f.DATE_KEY FROM FACT_ORDER_STATUS f JOIN DIM_CUSTOMER c USING (CUSTOMER_KEY) ORDER BY 1"
    ).fetchall()
    assert rows == [("O1", "shipped", "gold", 20240103), ("O2", "placed", "silver", 20240101)]
    assert sink.violations(by_event) == []


# ---- the wrong choice says so -------------------------------------------------------------------


def test_a_topic_of_mostly_conflicts_warns_once_naming_the_option(local_broker, tmp_path):
    """Status events loaded as insert-only facts: most are conflicts; the loader says which option loads them, and exits 0 (nothing is lost)."""
    import uuid

    import orjson
    from confluent_kafka import Producer

    from starload.kafka import ensure_topic, producer_config

    bootstrap, topic = local_broker.bootstrap_servers, f"status-{uuid.uuid4().hex[:8]}"
    ensure_topic(bootstrap, topic, partitions=1)
    producer = Producer(producer_config(bootstrap))
    for n in range(150):
        order = f"O{n % 30}"
        value = {"order_id": order, "status": STATUSES[n // 30], "at": f"2024-01-0{1 + n // 30}T00:00:00Z", "placed_at": "2023-12-31T00:00:00Z", "customer_id": "C1"}
        producer.produce(topic, orjson.dumps(value))
    producer.flush()

    def run(schema: StarSchema, name: str) -> subprocess.CompletedProcess[str]:
        spec = tmp_path / f"{name}.yaml"
        spec.write_text(json.dumps(schema.to_dict()))
        command = [
            sys.executable, "-m", "starload.cli", "load", "--bootstrap-servers", bootstrap, "--topic", topic, "--spec", str(spec),
            "--duckdb-path", str(tmp_path / f"{name}.duckdb"), "--until-idle", "2", "--group", name,
        ]  # fmt: skip
        return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)

    done = run(status_schema(changes="insert", dated_by=None, milestones=()), "insert")
    assert done.returncode == 0, done.stderr
    advice = (
        f"120 of the 150 messages from '{topic}' so far were conflicts (a grain value loaded before, with other content: "
        "rejected, the first version kept); if its events change their rows, declare changes: latest on FACT_ORDER_STATUS"
    )
    assert f"warning: {advice}" in done.stdout
    assert done.stderr.count(advice) == 1
    assert "conflicts (among rejected): 120" in done.stdout

    done = run(STATUS_SCHEMA, "latest")
    assert done.returncode == 0, done.stderr
    assert "warning:" not in done.stdout and "conflicts" not in done.stderr
    assert "messages loaded: 150" in done.stdout and "facts loaded: 30" in done.stdout
    with duckdb.connect(str(tmp_path / "latest.duckdb")) as con:
        assert con.execute("SELECT STATUS, count(*) FROM FACT_ORDER_STATUS GROUP BY 1").fetchall() == [("cancelled", 30)]


# ---- an accumulating snapshot of two topics: orders make the row, status events fill it ----------

PROGRESS_SCHEMA = StarSchema(
    name="progress",
    dimensions=(
        Dimension(
            name="customer",
            table="DIM_CUSTOMER",
            key="CUSTOMER_KEY",
            natural_key=(Field("CUSTOMER_ID", "customer_id", String(16), required=True),),
            attributes=(Field("TIER", "tier", String(16)),),
        ),
    ),
    date_dimension=DateDimension(),
    fact=Fact(
        table="FACT_ORDER_PROGRESS",
        topic="orders",
        grain=(Field("ORDER_ID", "order_id", String(16), required=True),),
        event_time=Field("UPDATED_AT", "updated_at", Timestamp(), required=True),
        dimensions=("customer",),
        columns=(Field("PLACED_AT", "placed_at", Timestamp(), required=True), Field("AMOUNT", "amount", Dec(12, 2))),
        changes="latest",
        dated_by="PLACED_AT",
        updates=(
            Updates(
                topic="order_status",
                grain=("id",),
                event_time=Field("STATUS_AT", "at", Timestamp(), required=True),
                columns=(Field("STATUS", "status", String(16)),),
                milestones=MILESTONES,
            ),
        ),
    ),
)
#: The row by natural keys, each timestamp with whether it is NULL (the local Snowflake endpoint reads a NULL one back as 1970).
PROGRESS_TIMES = ["UPDATED_AT", "PLACED_AT", "STATUS_AT", *(m.column for m in MILESTONES)]
PROGRESS = (
    "SELECT f.ORDER_ID, f.AMOUNT, c.CUSTOMER_ID, f.DATE_KEY, f.STATUS, "
    + ", ".join(f"f.{t}, f.{t} IS NULL" for t in PROGRESS_TIMES)
    + " FROM FACT_ORDER_PROGRESS f JOIN DIM_CUSTOMER c USING (CUSTOMER_KEY) ORDER BY 1"
)


def progress_rows(rows: list) -> list[tuple]:
    """Rows of :data:`PROGRESS` as (order, amount, customer, date key, status, then each of PROGRESS_TIMES in UTC or None)."""
    found = []
    for row in rows:
        times = [None if null else t.astimezone(UTC) for t, null in zip(row[5::2], row[6::2])]
        found.append((*row[:5], *times))
    return found


progress_event = st.one_of(
    st.fixed_dictionaries(
        {
            "topic": st.just("orders"),
            "partition": st.integers(0, 1),
            "order_id": st.sampled_from(sorted(PLACED)),
            "updated_at": st.sampled_from(INSTANTS),
            "customer_id": st.sampled_from(["C1", "C2"]),
            "tier": st.sampled_from(["gold", None]),
            "amount": st.sampled_from(["10.00", "12.5", None]),
        }
    ),
    st.fixed_dictionaries(
        {
            "topic": st.just("order_status"),
            "partition": st.integers(0, 1),
            "id": st.sampled_from(sorted(PLACED)),
            "status": st.sampled_from(STATUSES),
            "at": st.sampled_from(INSTANTS),
        }
    ),
)


def on_topics(events: list[dict]) -> list[tuple[str, int, int, dict]]:
    """Each event at its (topic, partition, offset); an order's placed_at is fixed."""
    counts: dict[tuple[str, int], int] = {}
    found = []
    for e in events:
        where = (e["topic"], e["partition"])
        value = {k: v for k, v in e.items() if k not in ("topic", "partition")}
        if e["topic"] == "orders":
            value["placed_at"] = PLACED[e["order_id"]]
        found.append((*where, counts.get(where, 0), value))
        counts[where] = counts.get(where, 0) + 1
    return found


def progress_oracle(messages: list[tuple[str, int, int, dict]]) -> list[tuple]:
    """Per order id seen on either topic: the orders topic's latest event's values (unknown while it has none), the status topic's, the milestones."""
    unique = {(t, p, o): v for t, p, o, v in messages}
    rows = []
    for order in sorted({v.get("order_id", v.get("id")) for v in unique.values()}):
        orders = sorted((as_instant(v["updated_at"]), p, o, v) for (t, p, o), v in unique.items() if t == "orders" and v["order_id"] == order)
        statuses = sorted((as_instant(v["at"]), p, o, v) for (t, p, o), v in unique.items() if t == "order_status" and v["id"] == order)
        amount = customer = date_key = updated = placed_at = status = status_at = None
        if orders:
            updated, _, _, last = orders[-1]
            amount = D(last["amount"]).quantize(D("0.01")) if last["amount"] is not None else None
            customer, placed_at = last["customer_id"], as_instant(last["placed_at"])
            date_key = int(placed_at.strftime("%Y%m%d"))
        if statuses:
            status_at, _, _, last = statuses[-1]
            status = last["status"]
        reached = [min((t for t, _, _, v in statuses if v["status"] == s), default=None) for s in STATUSES[1:]]
        rows.append((order, amount, customer, date_key, status, updated, placed_at, status_at, *reached))
    return rows


def test_a_status_before_its_order_makes_the_row_and_the_order_completes_it():
    sink = DuckDBSink(":memory:")
    messages = on_topics([
        {"topic": "order_status", "partition": 0, "id": "O1", "status": "paid", "at": "2024-01-02T00:00:00Z"},
        {"topic": "orders", "partition": 0, "order_id": "O1", "updated_at": "2024-01-01T00:00:00Z", "customer_id": "C1", "tier": "gold", "amount": "10"},
        {"topic": "order_status", "partition": 0, "id": "O1", "status": "placed", "at": "2024-01-01T00:00:00Z"},
    ])  # fmt: skip
    results = load_topics(messages[:1], 1, sink, PROGRESS_SCHEMA)
    [waiting] = progress_rows(sink.connection.execute(PROGRESS).fetchall())
    assert waiting == ("O1", None, None, None, "paid", None, None, datetime(2024, 1, 2, tzinfo=UTC), datetime(2024, 1, 2, tzinfo=UTC), None, None, None)
    assert sink.connection.execute("SELECT CUSTOMER_KEY FROM FACT_ORDER_PROGRESS").fetchall() == [(-1,)]  # the unknown member
    results += load_topics(messages[1:], 1, sink, PROGRESS_SCHEMA)
    assert [(r.facts_inserted, r.facts_updated, r.duplicates) for r in results] == [(1, 0, 0), (0, 1, 0), (0, 0, 0)]
    assert progress_rows(sink.connection.execute(PROGRESS).fetchall()) == progress_oracle(messages)
    assert sink.violations(PROGRESS_SCHEMA) == []


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    events=st.lists(progress_event, min_size=1, max_size=40),
    picks=st.lists(st.integers(0, 3)),
    batch_size=BATCH_SIZES,
    again=REDELIVERIES,
)
def test_the_snapshot_is_a_function_of_both_topics_events(events, picks, batch_size, again):
    """Orders and status events on two topics of two partitions each, interleaved at random, in any batches, redelivered: the oracle's rows."""
    messages = on_topics(events)
    keyed = [((t, p), o, (t, p, o, v)) for t, p, o, v in messages]
    arrived = [m for _, _, m in deliveries(interleave(keyed, picks), again)]
    sink = DuckDBSink(":memory:")
    results = load_topics(arrived, batch_size, sink, PROGRESS_SCHEMA)
    assert progress_rows(sink.connection.execute(PROGRESS).fetchall()) == progress_oracle(messages)
    assert sink.violations(PROGRESS_SCHEMA) == []
    assert sum(r.duplicates + r.rejects for r in results) == 0


@settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(events=st.lists(progress_event, min_size=1, max_size=24), picks=st.lists(st.integers(0, 3)), batch_size=st.integers(4, 12))
def test_the_snapshot_through_the_local_snowflake_endpoint_is_the_oracles(local_snowflake, events, picks, batch_size):
    from starload.sinks.snowflake import SnowflakeSink

    messages = on_topics(events)
    keyed = [((t, p), o, (t, p, o, v)) for t, p, o, v in messages]
    settings_ = local_snowflake.fresh_schema("snapshot")
    with SnowflakeSink(**settings_) as sink:
        load_topics([m for _, _, m in interleave(keyed, picks)], batch_size, sink, PROGRESS_SCHEMA)
        assert sink.violations(PROGRESS_SCHEMA) == []
    with local_snowflake.connect(settings_) as con:
        rows = con.cursor().execute(PROGRESS).fetchall()
    assert progress_rows(rows) == progress_oracle(messages)


# ---- change data capture on a fact table ---------------------------------------------------------

CDC_SCHEMA = StarSchema(
    name="orders_cdc",
    dimensions=(
        Dimension(name="customer", table="DIM_CUSTOMER", key="CUSTOMER_KEY", natural_key=(Field("CUSTOMER_ID", "customer_id", String(16), required=True),)),
    ),
    date_dimension=DateDimension(),
    fact=Fact(
        table="FACT_ORDERS",
        topic="pg.public.orders",
        grain=(Field("ORDER_ID", "id", Integer(), required=True),),
        event_time=Field("CHANGED_AT", "ts_ms", Timestamp(), required=True),
        dimensions=("customer",),
        columns=(
            Field("STATUS", "status", String(16), required=True),
            Field("AMOUNT", "amount", Dec(12, 2), required=True),
            Field("PLACED_AT", "placed_at", Timestamp(), required=True),
        ),
        changes="latest",
        dated_by="PLACED_AT",
        envelope=Envelope.DEBEZIUM,
    ),
)
CDC = """SELECT f.ORDER_ID, f.STATUS, f.AMOUNT, c.CUSTOMER_ID, f.DATE_KEY, f.IS_DELETED, f.CHANGED_AT, f.CHANGED_AT IS NULL,
    f.DELETED_AT, f.DELETED_AT IS NULL FROM FACT_ORDERS f JOIN DIM_CUSTOMER c USING (CUSTOMER_KEY) ORDER BY 1"""
change = st.fixed_dictionaries(
    {
        "partition": st.integers(0, 1),
        "op": st.sampled_from(["c", "u", "u", "r", "d", "tombstone"]),
        "id": st.integers(1, 4),
        "ts": st.sampled_from(INSTANTS),
        "status": st.sampled_from(STATUSES),
        "amount": st.sampled_from(["10.00", "99.95"]),
        "customer_id": st.sampled_from(["C1", "C2"]),
        "full_before": st.booleans(),  # REPLICA IDENTITY FULL, or DEFAULT (a delete's before holds the key only)
    }
)


def cdc_messages(changes: list[dict]) -> list[tuple[int, int, bytes | None]]:
    """Debezium change events (JSON converter, schemas on) of table ``public.orders`` at (partition, offset); a tombstone is a null value."""
    counts: dict[int, int] = {}
    found = []
    for c in changes:
        row = {"id": c["id"], "status": c["status"], "amount": c["amount"], "customer_id": c["customer_id"], "placed_at": PLACED[f"O{c['id']}"]}
        if c["op"] == "tombstone":
            value = None
        elif c["op"] == "d":
            value = debezium_change("d", None, epoch_ms(c["ts"]), before=row if c["full_before"] else {"id": c["id"]})
        else:
            value = debezium_change(c["op"], row, epoch_ms(c["ts"]))
        found.append((c["partition"], counts.get(c["partition"], 0), value))
        counts[c["partition"]] = counts.get(c["partition"], 0) + 1
    return found


def cdc_oracle(changes: list[dict]) -> list[tuple]:
    """Per order: the values of its latest create, update or read by (ts_ms, partition, offset) (a delete's before image when it has none); deleted if its latest change is a delete."""
    placed_ = cdc_messages(changes)
    unique = {(p, o): c for (p, o, _), c in zip(placed_, changes) if c["op"] != "tombstone"}
    rows = []
    for order in sorted({c["id"] for c in unique.values()}):
        mine = sorted((as_instant(c["ts"]), p, o, c) for (p, o), c in unique.items() if c["id"] == order)
        kept = [m for m in mine if m[3]["op"] != "d"]
        at, _, _, values = kept[-1] if kept else mine[-1]
        known = values["op"] != "d" or values["full_before"]
        placed_at = as_instant(PLACED[f"O{order}"]) if known else None
        deleted = mine[-1][3]["op"] == "d"
        row = (values["status"], D(values["amount"]), values["customer_id"], int(placed_at.strftime("%Y%m%d"))) if known else (None,) * 4
        rows.append((order, *row, deleted, at, mine[-1][0] if deleted else None))
    return rows


def cdc_rows(rows: list) -> list[tuple]:
    return [(*row[:6], None if row[7] else row[6].astimezone(UTC), None if row[9] else row[8].astimezone(UTC)) for row in rows]


def test_a_captured_orders_table_loads_as_latest_state_facts():
    """Snapshot, creates, updates of status and amount, a delete (key-only before), its tombstone, a re-create; sums follow in the same batch."""
    ts = {n: f"2024-01-0{n}T00:00:00Z" for n in range(1, 7)}
    changes = [
        {"op": "r", "id": 1, "ts": ts[1], "status": "placed", "amount": "10.00", "customer_id": "C1"},
        {"op": "c", "id": 2, "ts": ts[2], "status": "placed", "amount": "20.00", "customer_id": "C2"},
        {"op": "u", "id": 1, "ts": ts[3], "status": "paid", "amount": "12.50", "customer_id": "C1"},
        {"op": "d", "id": 2, "ts": ts[4], "status": "placed", "amount": "20.00", "customer_id": "C2", "full_before": False},
        {"op": "tombstone", "id": 2, "ts": ts[4], "status": "", "amount": "0", "customer_id": ""},
        {"op": "u", "id": 1, "ts": ts[2], "status": "placed", "amount": "11.00", "customer_id": "C1"},  # late: changes nothing
    ]
    changes = [{"partition": 0, "full_before": True} | c for c in changes]
    sink = DuckDBSink(":memory:")
    results = load(cdc_messages(changes), 3, sink, CDC_SCHEMA)
    assert sum(r.tombstones for r in results) == 1 and sum(r.rejects + r.duplicates for r in results) == 0
    assert cdc_rows(sink.connection.execute(CDC).fetchall()) == cdc_oracle(changes)
    assert cdc_rows(sink.connection.execute(CDC).fetchall()) == [
        (1, "paid", D("12.50"), "C1", 20231231, False, as_instant(ts[3]), None),
        (2, "placed", D("20.00"), "C2", 20231230, True, as_instant(ts[2]), as_instant(ts[4])),
    ]
    open_amount = "SELECT sum(AMOUNT) FROM FACT_ORDERS WHERE NOT IS_DELETED"
    assert sink.connection.execute(open_amount).fetchall() == [(D("12.50"),)]
    # the order comes back: created again, later
    load([(0, 6, debezium_change("c", {"id": 2, "status": "placed", "amount": "5.00", "customer_id": "C2", "placed_at": PLACED["O2"]}, epoch_ms(ts[5])))], 1, sink, CDC_SCHEMA)
    assert sink.connection.execute(open_amount).fetchall() == [(D("17.50"),)]
    assert sink.violations(CDC_SCHEMA) == []


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    changes=st.lists(change, min_size=1, max_size=40),
    picks=st.lists(st.integers(0, 1)),
    batch_size=BATCH_SIZES,
    again=REDELIVERIES,
)
@example(  # an order only ever deleted, in two batches: it holds its latest delete's change time (found by CI)
    changes=[
        {"partition": 0, "op": "d", "id": 2, "ts": ts, "status": "placed", "amount": "10.00", "customer_id": "C1", "full_before": False}
        for ts in ("2024-01-01T00:00:00Z", "2024-01-01T12:00:00Z")
    ],
    picks=[],
    batch_size=1,
    again=[],
)
def test_change_events_make_the_latest_state_whatever_the_batches(changes, picks, batch_size, again):
    sink = DuckDBSink(":memory:")
    results = load(deliveries(interleave(cdc_messages(changes), picks), again), batch_size, sink, CDC_SCHEMA)
    assert cdc_rows(sink.connection.execute(CDC).fetchall()) == cdc_oracle(changes)
    assert sink.violations(CDC_SCHEMA) == []
    assert sum(r.rejects for r in results) == 0


@settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(changes=st.lists(change, min_size=1, max_size=24), picks=st.lists(st.integers(0, 1)), batch_size=st.integers(4, 12))
def test_change_events_through_the_local_snowflake_endpoint_are_the_oracles(local_snowflake, changes, picks, batch_size):
    from starload.sinks.snowflake import SnowflakeSink

    settings_ = local_snowflake.fresh_schema("cdc")
    with SnowflakeSink(**settings_) as sink:
        load(interleave(cdc_messages(changes), picks), batch_size, sink, CDC_SCHEMA)
        assert sink.violations(CDC_SCHEMA) == []
    with local_snowflake.connect(settings_) as con:
        rows = con.cursor().execute(CDC).fetchall()
    assert cdc_rows(rows) == cdc_oracle(changes)


def test_the_example_spec_is_the_generators_twin():
    from pathlib import Path

    from starload.generators.bookshop import BOOKSHOP_PROGRESS_SCHEMA

    assert StarSchema.from_file(Path(__file__).parents[1] / "examples" / "bookshop_progress.yaml") == BOOKSHOP_PROGRESS_SCHEMA


def test_a_topic_feeds_facts_that_all_change_or_none():
    """A conflict in an insert-only fact would reject its message whole, which a latest fact of the same topic cannot take back."""
    orders = attrs.evolve(STATUS_SCHEMA.fact, table="FACT_ORDERS", changes="insert", dated_by=None, milestones=(), topic="status")
    with pytest.raises(SpecError, match=re.escape("topic 'status' feeds FACT_ORDER_STATUS (changes: latest) and FACT_ORDERS (insert-only)")):
        StarSchema(name="x", dimensions=STATUS_SCHEMA.dimensions, facts=(attrs.evolve(STATUS_SCHEMA.fact, topic="status"), orders))
