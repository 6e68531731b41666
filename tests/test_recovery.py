"""Nothing lost, nothing doubled: SIGKILL at random instants, SIGTERM, sink outages."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from decimal import Decimal
from itertools import islice
from pathlib import Path

import duckdb
import orjson
import pytest
import snowflake.connector
from confluent_kafka import Producer

from starload import ORDERS_GENERATOR, ORDERS_SCHEMA, DuckDBSink, LocalBroker, StarLoader
from starload.exceptions import TerminalSinkError, TransientSinkError
from starload.kafka import ensure_topic, producer_config
from starload.testing import history_oracle, read_history

NOW = "2024-06-01T12:00:00+00:00"


#: How a loader is told the star: the orders star, or the same with the history of each customer's region.
ORDERS = ("--schema", "orders")
HISTORY = ("--spec", str(Path(__file__).resolve().parents[1] / "examples" / "orders_history.yaml"))


def produce_stream(bootstrap: str, topic: str, count: int, seed: int, partitions: int = 2, moves: int = 0) -> tuple[list[dict], int]:
    """``count`` orders (customers moving ``moves`` times), every 50th sent twice and every 100th followed by a bad message; returns (orders, bad)."""
    ensure_topic(bootstrap, topic, partitions=partitions)
    orders = [e.value for e in islice(ORDERS_GENERATOR.stream(seed, now=NOW, moves=moves), count)]
    producer = Producer(producer_config(bootstrap))
    bad = 0
    for i, order in enumerate(orders):
        key = order["order_id"].encode()
        producer.produce(topic, orjson.dumps(order), key=key)
        if i % 50 == 0:
            producer.produce(topic, orjson.dumps(order), key=key)
        if i % 100 == 0:
            producer.produce(topic, b'{"order_id": "broken", "quantity": "three"}', key=key)
            bad += 1
        if i % 10_000 == 0:
            producer.poll(0)
    producer.flush()
    return orders, bad


def assert_exact(query: Callable[[str], list[tuple]], orders: list[dict], bad: int, *, history: bool = False) -> None:
    """The star holds exactly ``orders`` and ``bad`` rejects; ``query`` runs SQL on the warehouse.

    ``history``: the star of ``examples/orders_history.yaml``, whose customers must be the
    oracle's versions (each order at the Kafka coordinates it was loaded from).
    """
    assert query("SELECT count(*), count(DISTINCT ORDER_ID) FROM FACT_ORDERS") == [(len(orders), len(orders))]
    [(total,)] = query("SELECT CAST(sum(TOTAL_AMOUNT) AS VARCHAR) FROM FACT_ORDERS")
    assert Decimal(total) == sum(Decimal(o["price"]) * o["quantity"] for o in orders)
    got = dict(query(
        "SELECT f.ORDER_ID, c.CUSTOMER_ID || '/' || p.PRODUCT_ID FROM FACT_ORDERS f "
        "JOIN DIM_CUSTOMER c ON c.CUSTOMER_KEY = f.CUSTOMER_KEY JOIN DIM_PRODUCT p ON p.PRODUCT_KEY = f.PRODUCT_KEY"
    ))
    assert got == {o["order_id"]: f"{o['customer_id']}/{o['product_id']}" for o in orders}
    if history:
        at = {o: (p, offset) for o, p, offset in query("SELECT ORDER_ID, KAFKA_PARTITION, KAFKA_OFFSET FROM FACT_ORDERS")}
        versions, facts = history_oracle([(*at[o["order_id"]], o) for o in orders])
        assert read_history(query) == (versions, facts)
        assert len(versions) > 10  # the customers did move
    else:
        assert query("SELECT count(*) - count(DISTINCT CUSTOMER_ID) FROM DIM_CUSTOMER") == [(0,)]
    assert query("SELECT count(*) - count(DISTINCT PRODUCT_ID) FROM DIM_PRODUCT") == [(0,)]
    assert query("SELECT count(*) FROM STARLOAD_REJECTS") == [(bad,)]
    [(offsets,)] = query("SELECT sum(NEXT_OFFSET) FROM STARLOAD_OFFSETS")
    assert offsets == len(orders) + len(orders[::50]) + bad


def duckdb_query(db: Path) -> Callable[[str], list[tuple]]:
    def query(sql: str) -> list[tuple]:
        with duckdb.connect(str(db), read_only=True) as con:
            return con.execute(sql).fetchall()

    return query


def loader_command(bootstrap: str, topic: str | None, db: Path | None, *extra: str, star: tuple[str, ...] = ORDERS) -> list[str]:
    """The loader as a subprocess: into the DuckDB file ``db``, or into Snowflake when ``db`` is None (``topic`` None: the star names its topics)."""
    # On Snowflake a killed loader's transaction keeps its locks: the next loader aborts it once the
    # killed one has not beaten for dead_after (default sink options).
    snowflake = ["--sink", "snowflake"]
    sink = ["--duckdb-path", str(db)] if db else snowflake
    return [
        sys.executable, "-m", "starload.cli", "load", "--bootstrap-servers", bootstrap, *(["--topic", topic] if topic else []), *star,
        "--group", "crashy", "--instance-id", "crashy-1", *sink, "--batch-rows", "3000", "--batch-seconds", "0.3", *extra,
    ]


def start_and_wait_for_assignment(command: list[str]) -> subprocess.Popen[str]:
    proc = subprocess.Popen(command, stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    for line in proc.stderr:
        if "assigned" in line:
            break
    # Keep draining stderr so the child never blocks on a full pipe.
    threading.Thread(target=proc.stderr.read, daemon=True).start()
    return proc


def crash_repeatedly(bootstrap: str, topic: str | None, db: Path | None, kills: int, seed: int, star: tuple[str, ...] = ORDERS) -> None:
    """Start the loader, SIGKILL it at a random instant after it got its partitions, ``kills`` times; then drain."""
    rng = random.Random(seed)
    killed = 0
    for _ in range(kills):
        proc = start_and_wait_for_assignment(loader_command(bootstrap, topic, db, star=star))
        time.sleep(rng.uniform(0.2, 2.5))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            killed += 1
        proc.wait()
    assert killed == kills
    final = subprocess.run(loader_command(bootstrap, topic, db, "--until-idle", "3", star=star),
                           capture_output=True, text=True, timeout=600, check=False)
    assert final.returncode == 0, final.stderr
    sink = ["--duckdb-path", str(db)] if db else ["--sink", "snowflake"]
    verified = subprocess.run([sys.executable, "-m", "starload.cli", "verify", *star, *sink],
                              capture_output=True, text=True, timeout=120, check=False)
    assert verified.returncode == 0, verified.stdout + verified.stderr


def test_sigkill_at_random_instants_loses_and_doubles_nothing(local_broker, tmp_path):
    orders, bad = produce_stream(local_broker.bootstrap_servers, "crash-orders", 30_000, seed=31)
    db = tmp_path / "crash.duckdb"
    crash_repeatedly(local_broker.bootstrap_servers, "crash-orders", db, kills=4, seed=5)
    assert_exact(duckdb_query(db), orders, bad)


def test_sigkill_on_the_history_star_loses_doubles_and_misplaces_nothing(local_broker, tmp_path):
    """Customers who move, orders in shuffled time order: after SIGKILLs, the versions are the oracle's."""
    orders, bad = produce_stream(local_broker.bootstrap_servers, "crash-history", 12_000, seed=32, moves=4)
    db = tmp_path / "history.duckdb"
    crash_repeatedly(local_broker.bootstrap_servers, "crash-history", db, kills=3, seed=8, star=HISTORY)
    assert_exact(duckdb_query(db), orders, bad, history=True)


def test_sigkill_on_the_snowflake_sink(local_broker, snowflake_environment, snowflake_settings):
    """On the history star (a type-1 product, a type-2 customer), so both kinds of dimension are killed mid-write."""
    orders, bad = produce_stream(local_broker.bootstrap_servers, "crash-sf", 15_000, seed=36, moves=4)
    crash_repeatedly(local_broker.bootstrap_servers, "crash-sf", None, kills=3, seed=6, star=HISTORY)

    def query(sql: str) -> list[tuple]:
        with snowflake.connector.connect(**snowflake_settings, network_timeout=10) as con:
            return [tuple(r) for r in con.cursor().execute(sql).fetchall()]

    assert_exact(query, orders, bad, history=True)


def test_sigterm_finishes_the_batch_and_exits_cleanly(local_broker, tmp_path):
    topic = "term-orders"
    orders, bad = produce_stream(local_broker.bootstrap_servers, topic, 30_000, seed=32)
    db = tmp_path / "term.duckdb"
    proc = start_and_wait_for_assignment(loader_command(local_broker.bootstrap_servers, topic, db))
    time.sleep(1.0)
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0
    assert time.monotonic() - started < 20
    summary = dict(line.split(": ", 1) for line in out.strip().splitlines())
    with duckdb.connect(str(db), read_only=True) as con:
        [(facts,)] = con.execute("SELECT count(*) FROM FACT_ORDERS").fetchall()
        [(offsets,)] = con.execute("SELECT sum(NEXT_OFFSET) FROM STARLOAD_OFFSETS").fetchall()
    # What the summary reports is exactly what was committed.
    assert int(summary["facts loaded"]) == facts
    assert int(summary["consumed"]) == offsets
    rest = subprocess.run(loader_command(local_broker.bootstrap_servers, topic, db, "--until-idle", "2"),
                          capture_output=True, text=True, timeout=300, check=False)
    assert rest.returncode == 0, rest.stderr
    assert_exact(duckdb_query(db), orders, bad)


class FlakySink(DuckDBSink):
    """A DuckDB sink whose warehouse is 'down' for the first ``failures`` writes."""

    def __init__(self, failures: int, error: type[Exception] = TransientSinkError) -> None:
        super().__init__(":memory:")
        self.failures = failures
        self.error = error
        self.attempts = 0

    def write(self, batch):
        self.attempts += 1
        if self.attempts <= self.failures:
            msg = f"warehouse unreachable (simulated, attempt {self.attempts})"
            raise self.error(msg)
        return super().write(batch)


def test_transient_outage_is_retried_and_loads_exactly_once(local_broker, topic):
    orders, bad = produce_stream(local_broker.bootstrap_servers, topic, 5_000, seed=33, partitions=1)
    sink = FlakySink(failures=4)
    loader = StarLoader(ORDERS_SCHEMA, sink, bootstrap_servers=local_broker.bootstrap_servers, topic=topic,
                        group="flaky", batch_rows=1_000, max_backoff=0.5, dlq_topic=None)
    stats = loader.run(until_idle=2)
    assert sink.attempts > 4
    assert (stats.facts_loaded, stats.rejected) == (5_000, bad)
    assert_exact(lambda sql: sink.connection.execute(sql).fetchall(), orders, bad)
    sink.close()


def test_terminal_error_stops_without_advancing_offsets(local_broker, topic):
    produce_stream(local_broker.bootstrap_servers, topic, 500, seed=34, partitions=1)
    sink = FlakySink(failures=10**9, error=TerminalSinkError)
    loader = StarLoader(ORDERS_SCHEMA, sink, bootstrap_servers=local_broker.bootstrap_servers, topic=topic,
                        group="doomed", dlq_topic=None)
    with pytest.raises(TerminalSinkError, match="simulated"):
        loader.run(until_idle=2)
    assert sink.stored_offsets("doomed", topic) == {}
    assert sink.connection.execute("SELECT count(*) FROM FACT_ORDERS").fetchall() == [(0,)]
    sink.close()


def test_cli_reports_a_terminal_error_clearly(local_broker, topic, tmp_path):
    produce_stream(local_broker.bootstrap_servers, topic, 10, seed=35, partitions=1)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SNOWFLAKE_")}
    done = subprocess.run(
        [sys.executable, "-m", "starload.cli", "load", "--bootstrap-servers", local_broker.bootstrap_servers,
         "--topic", topic, "--schema", "orders", "--sink", "snowflake", "--until-idle", "2"],
        capture_output=True, text=True, timeout=120, env=env, check=False,
    )
    assert done.returncode == 2
    assert "starload: error: Snowflake account not configured" in done.stderr
    assert "Traceback" not in done.stderr


def test_broker_outage_is_survived(tmp_path):
    """The broker stops answering (SIGSTOP) for a while mid-load, then comes back."""
    with LocalBroker() as broker:
        orders, bad = produce_stream(broker.bootstrap_servers, "outage", 20_000, seed=37, partitions=2)
        sink = DuckDBSink(tmp_path / "outage.duckdb")
        # Small fetches, so that most of the topic is still on the broker when it stops.
        small_fetches = {"fetch.max.bytes": 1_000_000, "message.max.bytes": 1_000_000, "max.partition.fetch.bytes": 32_768, "queued.max.messages.kbytes": 64}
        loader = StarLoader(ORDERS_SCHEMA, sink, bootstrap_servers=broker.bootstrap_servers, topic="outage",
                            group="outage", batch_rows=2_000, batch_seconds=0.2, consumer_overrides=small_fetches)
        results: list = []
        thread = threading.Thread(target=lambda: results.append(loader.run(until_idle=10)))
        thread.start()
        deadline = time.monotonic() + 60
        while loader.stats.consumed < 2_000 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert broker.process is not None
        broker.process.send_signal(signal.SIGSTOP)
        try:
            time.sleep(8)
            before = loader.stats.consumed
        finally:
            broker.process.send_signal(signal.SIGCONT)
        assert before < len(orders)  # the outage really interrupted the load
        thread.join(180)
        assert not thread.is_alive()
        [stats] = results
        assert 0 < loader.stats.consumed
        assert stats.facts_loaded == len(orders)
        assert_exact(lambda sql: sink.connection.execute(sql).fetchall(), orders, bad)
        sink.close()


def test_poison_messages_never_stop_the_loader(local_broker, topic):
    good = [e.value for e in islice(ORDERS_GENERATOR.stream(38, now=NOW), 3)]
    poison = [
        b"",
        b"\x00" * 64,
        bytes(range(256)),
        b"[" * 50_000 + b"]" * 50_000,
        b'{"a":' * 2_000 + b"1" + b"}" * 2_000,
        b"x" * (6 * 1024 * 1024),
        orjson.dumps({**good[0], "order_id": "big", "customer_name": "y" * (5 * 1024 * 1024)}),
        orjson.dumps({**good[1], "order_id": "sql", "customer_name": "Robert'); DROP TABLE FACT_ORDERS;--"}),
        orjson.dumps({**good[2], "order_id": "uni", "customer_name": "Zoë 李 🚀", "quantity": 10**6}),
        orjson.dumps({**good[2], "order_id": "huge", "quantity": 10**18}),  # TOTAL_AMOUNT out of range
        b'{"order_id": "n", "quantity": 1e999}',
        b"null",
        b'"order"',
    ]
    producer = Producer(producer_config(local_broker.bootstrap_servers))
    for value in poison:
        producer.produce(topic, value)
    producer.flush()
    sink = DuckDBSink(":memory:")
    stats = StarLoader(ORDERS_SCHEMA, sink, bootstrap_servers=local_broker.bootstrap_servers, topic=topic,
                       group="poison", dlq_topic=None).run(until_idle=2)
    assert stats.consumed == len(poison)
    assert (stats.facts_loaded, stats.rejected) == (3, len(poison) - 3)
    names = dict(sink.connection.execute(
        "SELECT f.ORDER_ID, c.CUSTOMER_NAME FROM FACT_ORDERS f JOIN DIM_CUSTOMER c USING (CUSTOMER_KEY)"
    ).fetchall())
    assert set(names) == {"big", "sql", "uni"}
    assert len(names["big"]) == 5 * 1024 * 1024
    assert names["sql"] == "Robert'); DROP TABLE FACT_ORDERS;--"
    assert sink.connection.execute("SELECT QUANTITY FROM FACT_ORDERS WHERE ORDER_ID = 'uni'").fetchall() == [(10**6,)]
    sink.close()


def test_no_batch_is_written_after_a_failed_one(local_broker, topic):
    """With batches in flight behind a failed one, none of them may advance the offsets past it."""
    produce_stream(local_broker.bootstrap_servers, topic, 2_000, seed=39, partitions=1)
    sink = FlakySink(failures=1, error=TerminalSinkError)  # only the first write fails
    loader = StarLoader(ORDERS_SCHEMA, sink, bootstrap_servers=local_broker.bootstrap_servers, topic=topic,
                        group="ordered", batch_rows=100, batch_seconds=0.01, dlq_topic=None)
    with pytest.raises(TerminalSinkError):
        loader.run(until_idle=2)
    assert sink.attempts == 1
    assert sink.stored_offsets("ordered", topic) == {}
    sink.close()
