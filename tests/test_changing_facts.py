"""Facts that change (``changes: latest``): a row holds its grain value's latest event by event time, milestones the first time a condition held."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from datetime import UTC, datetime
from decimal import Decimal as D

import duckdb
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from starload import Changes, DuckDBSink, Milestone, StarSchema
from starload.exceptions import SpecError
from starload.mapping import Mapper, raw_batch
from starload.sinks.base import Sink
from starload.spec import DateDimension, Dimension, Fact, Field, Integer, String, Timestamp
from starload.spec import Decimal as Dec
from starload.testing import as_instant, deliveries, interleave

STATUSES = ("placed", "paid", "shipped", "delivered", "cancelled")
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


def load(messages: list[tuple[int, int, dict]], batch_size: int, sink: Sink, schema: StarSchema = STATUS_SCHEMA) -> list:
    """``messages`` in batches into ``sink``, as the engine writes them; the write results."""
    sink.prepare(schema)
    mapper = Mapper(schema)
    results = []
    try:
        for start in range(0, len(messages), batch_size):
            chunk = messages[start : start + batch_size]
            table = raw_batch([json.dumps(v).encode() for _, _, v in chunk], partitions=[p for p, _, _ in chunk], offsets=[o for _, o, _ in chunk])
            batch = mapper.stage(table, topic="status", group="g")
            results.append(sink.write(batch.with_conflicts(sink.find_conflicts(batch))))
    finally:
        mapper.close()
    return results


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
    spec = tmp_path / "status.yaml"
    spec.write_text(
        json.dumps(STATUS_SCHEMA.to_dict())  # JSON is YAML
    )
    assert StarSchema.from_file(spec) == STATUS_SCHEMA
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
    batch_size=st.integers(1, 12),
    again=st.lists(st.tuples(st.integers(0, 40), st.integers(1, 8)), max_size=2),
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

    def load(schema: StarSchema, name: str) -> subprocess.CompletedProcess[str]:
        spec = tmp_path / f"{name}.yaml"
        spec.write_text(json.dumps(schema.to_dict()))
        command = [
            sys.executable, "-m", "starload.cli", "load", "--bootstrap-servers", bootstrap, "--topic", topic, "--spec", str(spec),
            "--duckdb-path", str(tmp_path / f"{name}.duckdb"), "--until-idle", "2", "--group", name,
        ]  # fmt: skip
        return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)

    done = load(status_schema(changes="insert", dated_by=None, milestones=()), "insert")
    assert done.returncode == 0, done.stderr
    advice = (
        f"120 of the 150 messages from '{topic}' so far were conflicts (a grain value loaded before, with other content: "
        "rejected, the first version kept); if its events change their rows, declare changes: latest on FACT_ORDER_STATUS"
    )
    assert f"warning: {advice}" in done.stdout
    assert done.stderr.count(advice) == 1
    assert "conflicts (among rejected): 120" in done.stdout

    done = load(STATUS_SCHEMA, "latest")
    assert done.returncode == 0, done.stderr
    assert "warning:" not in done.stdout and "conflicts" not in done.stderr
    assert "messages loaded: 150" in done.stdout and "facts loaded: 30" in done.stdout
    with duckdb.connect(str(tmp_path / "latest.duckdb")) as con:
        assert con.execute("SELECT STATUS, count(*) FROM FACT_ORDER_STATUS GROUP BY 1").fetchall() == [("cancelled", 30)]
