"""End to end over the real local broker: produce, load, check the star exactly."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from collections import Counter
from decimal import Decimal
from itertools import islice
from pathlib import Path

import duckdb
import orjson
import pytest
from confluent_kafka import Producer

from starload import ORDERS_GENERATOR, ORDERS_SCHEMA, DuckDBSink, StarLoader, produce
from starload.broker import port_is_free
from starload.generators.base import SEEDED_NOW
from starload.kafka import ensure_topic, producer_config
from starload.testing import load_until_idle

ROOT = Path(__file__).resolve().parents[1]
NOW = "2024-06-01T12:00:00+00:00"


def produced_orders(count: int, seed: int, now: object = NOW) -> list[dict]:
    return [e.value for e in islice(ORDERS_GENERATOR.stream(seed, now=now), count)]


def check_star(con: duckdb.DuckDBPyConnection, orders: list[dict], *, dates: bool = True) -> None:
    """The star holds exactly ``orders`` (unique by order_id); ``dates=False`` ignores event dates."""
    by_id = {o["order_id"]: o for o in orders}
    assert con.execute("SELECT count(*) FROM FACT_ORDERS").fetchall() == [(len(by_id),)]
    expected_total = sum(Decimal(o["price"]) * o["quantity"] for o in by_id.values())
    [(total,)] = con.execute("SELECT CAST(sum(TOTAL_AMOUNT) AS VARCHAR) FROM FACT_ORDERS").fetchall()
    assert Decimal(total) == expected_total
    rows = con.execute(
        """SELECT f.ORDER_ID, c.CUSTOMER_ID, p.PRODUCT_ID, f.DATE_KEY, f.QUANTITY FROM FACT_ORDERS f
           JOIN DIM_CUSTOMER c USING (CUSTOMER_KEY) JOIN DIM_PRODUCT p USING (PRODUCT_KEY)"""
    ).fetchall()
    got = {r[0]: r[1:] if dates else r[1:3] + r[4:] for r in rows}
    assert got == {
        i: (o["customer_id"], o["product_id"], int(o["order_timestamp"][:10].replace("-", "")), o["quantity"])
        if dates
        else (o["customer_id"], o["product_id"], o["quantity"])
        for i, o in by_id.items()
    }
    for table, key in (("DIM_CUSTOMER", "CUSTOMER_ID"), ("DIM_PRODUCT", "PRODUCT_ID")):
        assert con.execute(f"SELECT count(*) = count(DISTINCT {key}) FROM {table}").fetchall() == [(True,)]
    missing = con.execute("SELECT count(*) FROM FACT_ORDERS f ANTI JOIN DIM_DATE d USING (DATE_KEY)").fetchall()
    assert missing == [(0,)]
    if dates:
        stored = {d for (d,) in con.execute("SELECT DATE_KEY FROM DIM_DATE").fetchall()}
        assert {int(o["order_timestamp"][:10].replace("-", "")) for o in orders} <= stored


def test_produce_and_load_exactly(local_broker, tmp_path):
    topic = "orders-exact"
    produce(local_broker.bootstrap_servers, topic, ORDERS_GENERATOR, 20_000, seed=11, partitions=4, options={"now": NOW})
    with DuckDBSink(tmp_path / "star.duckdb") as sink:
        stats = load_until_idle(ORDERS_SCHEMA, sink, local_broker, topic, batch_rows=3_000)
        assert (stats.consumed, stats.facts_loaded, stats.duplicates, stats.rejected) == (20_000, 20_000, 0, 0)
        assert stats.batches >= 7
        check_star(sink.connection, produced_orders(20_000, 11))
        assert sum(sink.stored_offsets("test", topic).values()) == 20_000


def test_restart_resumes_from_the_offsets_stored_in_the_sink(local_broker, topic, tmp_path):
    orders = produced_orders(3_000, 5)
    producer = Producer(producer_config(local_broker.bootstrap_servers))
    bad = [b"", b"not json", b'{"order_id": "X", "quantity": 2.5}']
    for o in orders[:1_000]:
        producer.produce(topic, orjson.dumps(o), key=o["order_id"].encode())
    for value in bad:
        producer.produce(topic, value)
    producer.flush()
    path = tmp_path / "star.duckdb"
    with DuckDBSink(path) as sink:
        first = load_until_idle(ORDERS_SCHEMA, sink, local_broker, topic, group="g1")
    assert (first.facts_loaded, first.rejected) == (1_000, 3)
    # The second half and a redelivery of the first 500 orders.
    for o in orders[1_000:] + orders[:500]:
        producer.produce(topic, orjson.dumps(o), key=o["order_id"].encode())
    producer.flush()
    with DuckDBSink(path) as sink:
        second = load_until_idle(ORDERS_SCHEMA, sink, local_broker, topic, group="g1")
        assert (second.consumed, second.facts_loaded, second.duplicates, second.rejected) == (2_500, 2_000, 500, 0)
        check_star(sink.connection, orders)
        assert sink.connection.execute("SELECT count(*) FROM STARLOAD_REJECTS").fetchall() == [(3,)]
        assert sink.stored_offsets("g1", topic) == {0: 3_000 + 3 + 500}


def test_kafka_offsets_are_committed_after_the_sink(local_broker, topic):
    produce(local_broker.bootstrap_servers, topic, ORDERS_GENERATOR, 500, seed=3, partitions=1)
    with DuckDBSink(":memory:") as sink:
        loader = StarLoader(ORDERS_SCHEMA, sink, bootstrap_servers=local_broker.bootstrap_servers, topic=topic, group="hint")
        loader.run(until_idle=1.0)
        stored = sink.stored_offsets("hint", topic)
    from confluent_kafka import Consumer, TopicPartition

    from starload.kafka import consumer_config

    consumer = Consumer(consumer_config(local_broker.bootstrap_servers, "hint"))
    [committed] = consumer.committed([TopicPartition(topic, 0)], timeout=10)
    consumer.close()
    assert committed.offset == stored[0] == 500


def run_cli(
    *args: str, timeout: float = 120, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    env = {**(os.environ if env is None else env), "PYTHONUNBUFFERED": "1"}
    return subprocess.run(
        [sys.executable, "-m", "starload.cli", *args], capture_output=True, text=True, timeout=timeout, env=env, cwd=cwd, check=False
    )


def test_cli_produce_load_ddl_plugins(local_broker, tmp_path):
    bootstrap = local_broker.bootstrap_servers
    produced = run_cli("produce", "--bootstrap-servers", bootstrap, "--topic", "cli-orders", "--count", "2000", "--seed", "9", "--option", f"now={NOW}")
    assert produced.returncode == 0, produced.stderr
    assert "produced 2000 orders events" in produced.stdout
    db = tmp_path / "cli.duckdb"
    loaded = run_cli(
        "load", "--bootstrap-servers", bootstrap, "--topic", "cli-orders", "--schema", "orders", "--group", "cli",
        "--sink", "duckdb", "--duckdb-path", str(db), "--until-idle", "1.5", "--batch-rows", "700",
    )
    assert loaded.returncode == 0, loaded.stderr
    summary = dict(line.split(": ", 1) for line in loaded.stdout.strip().splitlines())
    assert summary["consumed"] == "2000" and summary["facts loaded"] == "2000"
    assert summary["duplicates skipped"] == "0" and summary["rejected"] == "0"
    assert "progress" not in loaded.stdout
    with duckdb.connect(str(db), read_only=True) as con:
        check_star(con, produced_orders(2000, 9))

    ddl = run_cli("ddl", "--sink", "duckdb")
    assert ddl.returncode == 0
    assert 'CREATE TABLE IF NOT EXISTS "FACT_ORDERS"' in ddl.stdout
    assert not Path("starload.duckdb").exists() or Path("starload.duckdb").stat().st_size > 0

    listed = run_cli("plugins")
    assert listed.returncode == 0
    assert "duckdb" in listed.stdout and "orders" in listed.stdout and "starload" in listed.stdout


def test_cli_errors_are_clear(local_broker):
    unknown = run_cli("load", "--bootstrap-servers", local_broker.bootstrap_servers, "--sink", "nope")
    assert unknown.returncode == 2
    assert "unknown sink 'nope'; registered: duckdb" in unknown.stderr
    assert "Traceback" not in unknown.stderr


def test_example_runs_to_the_end_and_reruns_as_duplicates(local_broker, tmp_path):
    db = tmp_path / "orders.duckdb"
    command = [sys.executable, str(ROOT / "examples" / "run_orders.py"), "--count", "300", "--duckdb-path", str(db), "--seed", "4"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=180, check=False)
    assert done.returncode == 0, done.stderr
    assert "loaded 300 facts" in done.stdout
    for title in ("Rows per table", "Revenue by customer region", "Revenue by category", "Top customers"):
        assert title in done.stdout
    # A seeded stream is the same on any day: the second run's orders are duplicates, not conflicts.
    assert [e.value for e in islice(ORDERS_GENERATOR.stream(4), 300)] == produced_orders(300, 4, now=SEEDED_NOW)
    with duckdb.connect(str(db), read_only=True) as con:
        check_star(con, produced_orders(300, 4, now=SEEDED_NOW), dates=False)
    again = subprocess.run(command, capture_output=True, text=True, timeout=180, check=False)
    assert again.returncode == 0, again.stderr
    assert "loaded 0 facts (300 duplicates, 0 rejected)" in again.stdout


def test_history_example_reports_revenue_by_region_then_and_now(local_broker, tmp_path):
    """``run_orders.py --history``: customers move, and the report sets the region at the order's time next to the region now."""
    db = tmp_path / "history.duckdb"
    command = [sys.executable, str(ROOT / "examples" / "run_orders.py"), "--history", "--count", "400", "--seed", "6", "--duckdb-path", str(db)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=180, check=False)
    assert done.returncode == 0, done.stderr
    assert "loaded 400 facts" in done.stdout and "Revenue by region then and now" in done.stdout
    orders = [e.value for e in islice(ORDERS_GENERATOR.stream(6, moves=4), 400)]
    # By the rules alone: an order's version holds the region the order carries; the region now is the one of the customer's latest order.
    now = {o["customer_id"]: o["customer_region"] for o in sorted(orders, key=lambda o: o["order_timestamp"])}
    expected: Counter = Counter()
    for o in orders:
        expected[o["customer_region"], now[o["customer_id"]]] += Decimal(str(o["price"])) * o["quantity"]
    sql = dict(_history_report())["Revenue by region then and now"]
    with duckdb.connect(str(db), read_only=True) as con:
        got = {(then, current): revenue for then, current, _, revenue in con.execute(sql).fetchall()}
    assert got == dict(expected)
    assert any(then != current for then, current in got), "customers moved: some revenue was made in a region they left"


def _history_report():
    """The example's own report queries (the test checks what it prints, not a copy of it)."""
    spec = importlib.util.spec_from_file_location("run_orders", ROOT / "examples" / "run_orders.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.HISTORY_REPORTS.items()


def test_broker_command_listens_where_the_other_commands_look():
    """On 9092 when that is free, so `starload produce` and `load` need no --bootstrap-servers; else anywhere, saying so."""
    if not port_is_free(9092):
        pytest.skip("127.0.0.1:9092 is in use on this machine")
    command = [sys.executable, "-m", "starload.cli", "broker"]
    env = {k: v for k, v in os.environ.items() if k != "STARLOAD_BOOTSTRAP_SERVERS"}
    first = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env)
    second = None
    try:
        assert first.stdout.readline().strip() == "local broker listening; bootstrap servers: 127.0.0.1:9092"
        produced = run_cli("produce", "--count", "20", "--topic", "probe", env=env)
        assert produced.returncode == 0, produced.stderr
        second = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        line = second.stdout.readline()
        assert "bootstrap servers: 127.0.0.1:" in line and not line.strip().endswith(":9092")
        bootstrap = line.rsplit(" ", 1)[1].strip()
        assert ensure_topic(bootstrap, "probe", partitions=2) is True
    finally:
        for proc in (first, second):
            if proc is not None:
                proc.terminate()
                assert proc.wait(20) == 0
    assert f"127.0.0.1:9092 is in use; pass --bootstrap-servers {bootstrap}" in second.stderr.read()


def test_generator_is_reproducible_and_follows_the_seed_shape():
    a = produced_orders(50, 1)
    assert a == produced_orders(50, 1)
    assert list(a[0]) == [
        "order_id", "order_timestamp", "customer_id", "customer_name", "customer_region", "shipping_region",
        "product_id", "product_name", "category", "price", "quantity",
    ]
    assert len({o["customer_id"] for o in produced_orders(500, 2)}) == 5
    assert Counter(1 <= o["quantity"] <= 5 for o in a) == Counter({True: 50})
