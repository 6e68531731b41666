"""The reject guard: a batch that is (nearly) all rejects stops the loader before anything is written."""

from __future__ import annotations

import re
import subprocess
import sys
import uuid

import duckdb
import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

from starload.kafka import consumer_config, ensure_topic, producer_config


def produce_clicks(bootstrap: str, count: int) -> str:
    """``count`` click events (not orders) to a new topic."""
    topic = f"clicks-{uuid.uuid4().hex[:8]}"
    ensure_topic(bootstrap, topic, partitions=1)
    producer = Producer(producer_config(bootstrap))
    for i in range(count):
        producer.produce(topic, orjson.dumps({"event": "click", "page": f"/p/{i % 7}", "user": f"u{i % 30}"}))
    producer.flush()
    return topic


def load(bootstrap: str, topic: str, db, *extra: str) -> subprocess.CompletedProcess[str]:
    command = [
        sys.executable, "-m", "starload.cli", "load", "--bootstrap-servers", bootstrap, "--topic", topic,
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


def test_a_batch_of_rejects_stops_before_anything_is_written_or_dead_lettered(local_broker, tmp_path):
    bootstrap = local_broker.bootstrap_servers
    topic = produce_clicks(bootstrap, 2_000)
    db = tmp_path / "star.duckdb"
    done = load(bootstrap, topic, db)
    assert done.returncode == 2, done.stderr
    line = done.stderr.strip().splitlines()[-1]
    assert line.startswith("starload: error: ") and "are rejects" in line, line
    assert re.search(r"\(100%, over --max-reject-ratio 0.9\); most common reason \([\d,]+×\): 'order_id: missing", line), line
    with duckdb.connect(str(db), read_only=True) as con:
        for table in ("FACT_ORDERS", "STARLOAD_REJECTS", "STARLOAD_OFFSETS"):
            assert con.execute(f"SELECT count(*) FROM {table}").fetchall() == [(0,)], table
    assert dead_letters(bootstrap, f"{topic}.dlq") == 0


def test_the_guard_can_be_turned_off_and_spares_small_batches(local_broker, tmp_path):
    bootstrap = local_broker.bootstrap_servers
    off = load(bootstrap, produce_clicks(bootstrap, 500), tmp_path / "off.duckdb", "--max-reject-ratio", "1")
    assert off.returncode == 0, off.stderr
    assert "rejected: 500" in off.stdout
    # Fewer than 100 messages in the batch: rejects as usual.
    small = load(bootstrap, produce_clicks(bootstrap, 60), tmp_path / "small.duckdb")
    assert small.returncode == 0, small.stderr
    assert "rejected: 60" in small.stdout
