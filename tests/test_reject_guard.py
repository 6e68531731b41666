"""The reject guard: a batch that is (nearly) all rejects stops the loader before anything is written."""

from __future__ import annotations

import re
import subprocess
import sys
import uuid

import duckdb
import pytest
import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

from starload.kafka import consumer_config, ensure_topic, producer_config


def produce_clicks(bootstrap: str, count: int, topic: str | None = None) -> str:
    """``count`` click events (not orders) to ``topic`` (default: a new one)."""
    topic = topic or f"clicks-{uuid.uuid4().hex[:8]}"
    ensure_topic(bootstrap, topic, partitions=1)
    producer = Producer(producer_config(bootstrap))
    for i in range(count):
        producer.produce(topic, orjson.dumps({"event": "click", "page": f"/p/{i % 7}", "user": f"u{i % 30}"}))
    producer.flush()
    return topic


def load(bootstrap: str, topic: str, db, *extra: str) -> subprocess.CompletedProcess[str]:
    command = [
        sys.executable, "-m", "starload.cli", "load", "--bootstrap-servers", bootstrap, "--topic", topic, "--schema", "orders",
        "--duckdb-path", str(db), "--until-idle", "2", *extra,
    ]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


def dead_letters(bootstrap: str, topic: str) -> int:
    consumer = Consumer(consumer_config(bootstrap, f"peek-{uuid.uuid4().hex[:6]}"))
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(4)])
    try:
        return len(consumer.consume(num_messages=10_000, timeout=3))
    finally:
        consumer.close()


def produce_orders(bootstrap: str, topic: str, count: int) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "starload.cli", "produce", "--bootstrap-servers", bootstrap, "--topic", topic,
         "--count", str(count), "--seed", "3", "--partitions", "1"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr


def test_a_new_star_of_rejects_stops_before_anything_is_created_or_dead_lettered(local_broker, tmp_path):
    bootstrap = local_broker.bootstrap_servers
    topic = produce_clicks(bootstrap, 2_000)
    db = tmp_path / "star.duckdb"
    done = load(bootstrap, topic, db)
    assert done.returncode == 2, done.stderr
    line = done.stderr.strip().splitlines()[-1]
    assert line.startswith("starload: error: ") and "are rejects" in line, line
    assert re.search(r"\(100%, over --max-reject-ratio 0.9\); most common reason \([\d,]+×\): 'order_id: missing", line), line
    assert "nothing was created in the warehouse" in line
    assert not db.exists() and not (tmp_path / "star.duckdb.loader").exists()
    assert dead_letters(bootstrap, f"{topic}.dlq") == 0


def test_the_first_messages_are_judged_whatever_the_batch_size(local_broker, tmp_path):
    """20 messages in batches of 5: on a new star the guard waits for all it can see, then judges."""
    bootstrap = local_broker.bootstrap_servers
    topic = produce_clicks(bootstrap, 20)
    db = tmp_path / "star.duckdb"
    done = load(bootstrap, topic, db, "--batch-rows", "5")
    assert done.returncode == 2, done.stderr
    assert re.search(r"(\d+) of the \1 messages of a batch from", done.stderr), done.stderr
    assert not db.exists()


def test_the_guard_counts_across_small_batches_on_a_loaded_star(local_broker, tmp_path):
    bootstrap = local_broker.bootstrap_servers
    topic = f"mixed-{uuid.uuid4().hex[:8]}"
    produce_orders(bootstrap, topic, 30)
    db = tmp_path / "star.duckdb"
    first = load(bootstrap, topic, db, "--batch-rows", "20")
    assert first.returncode == 0, first.stderr
    produce_clicks(bootstrap, 300, topic)
    done = load(bootstrap, topic, db, "--batch-rows", "20")
    assert done.returncode == 2, done.stderr
    assert re.search(r"of the 1\d\d messages of the last \d+ batches from", done.stderr), done.stderr
    with duckdb.connect(str(db), read_only=True) as con:
        [(rejects,)] = con.execute("SELECT count(*) FROM STARLOAD_REJECTS").fetchall()
        [(stored,)] = con.execute("SELECT NEXT_OFFSET FROM STARLOAD_OFFSETS").fetchall()
    assert 0 < rejects < 100 and stored == 30 + rejects  # the batch that crossed the line was not written


def test_the_guard_can_be_turned_off_and_spares_a_few_rejects_on_a_loaded_star(local_broker, tmp_path):
    bootstrap = local_broker.bootstrap_servers
    off = load(bootstrap, produce_clicks(bootstrap, 500), tmp_path / "off.duckdb", "--max-reject-ratio", "1")
    assert off.returncode == 0, off.stderr
    assert "rejected: 500" in off.stdout
    # Fewer than 100 messages judged, on a star with stored offsets: rejects as usual.
    topic = f"few-{uuid.uuid4().hex[:8]}"
    produce_orders(bootstrap, topic, 30)
    db = tmp_path / "few.duckdb"
    assert load(bootstrap, topic, db).returncode == 0
    produce_clicks(bootstrap, 60, topic)
    few = load(bootstrap, topic, db)
    assert few.returncode == 0, few.stderr
    assert "rejected: 60" in few.stdout


def test_the_reject_guard_judges_each_topic_on_its_own(local_broker):
    """A topic of nothing but rejects stops the load though a busy healthy topic keeps the overall ratio low."""
    from starload import DuckDBSink, StarLoader
    from starload.exceptions import RejectGuardError
    from test_several_topics import CUSTOMERS, ORDERS, PAYMENTS, order, shop_on

    bootstrap = local_broker.bootstrap_servers
    prefix = f"g{uuid.uuid4().hex[:8]}-"
    for topic in (CUSTOMERS, ORDERS, PAYMENTS):
        ensure_topic(bootstrap, prefix + topic, partitions=1)
    producer = Producer(producer_config(bootstrap))
    for i in range(900):
        producer.produce(prefix + ORDERS, order(f"O{i}", i % 9, "2024-05-01T10:00:00Z"))
    for i in range(120):  # orders sent to the payments topic by mistake: 12% of all messages, every payment
        producer.produce(prefix + PAYMENTS, order(f"P{i}", i % 9, "2024-05-01T10:00:00Z"))
    producer.flush()
    with DuckDBSink(":memory:") as sink:
        loader = StarLoader(shop_on(prefix), sink, bootstrap_servers=bootstrap, group="g", dlq_topic=None, batch_rows=2_000,
                            consumer_overrides={"session.timeout.ms": 6000, "heartbeat.interval.ms": 1000})  # fmt: skip
        with pytest.raises(RejectGuardError) as refused:
            loader.run(until_idle=2)
        tables = sink.connection.execute("SELECT count(*) FROM information_schema.tables WHERE table_name LIKE 'FACT_%'").fetchall()
    message = str(refused.value)
    assert f"120 of the 120 messages of a batch from '{prefix}{PAYMENTS}' are rejects (100%" in message, message
    assert "'payment_id: missing" in message and "nothing was created in the warehouse" in message, message
    assert tables == [(0,)]
