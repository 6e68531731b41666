"""The DuckDB star is readable from another process while a loader runs, and the loader loses and doubles nothing."""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
import time
import uuid

import orjson
from confluent_kafka import Producer

from starload import ORDERS_SCHEMA, DuckDBSink, StarLoader
from starload.kafka import ensure_topic, producer_config
from starload.sinks.duckdb import read_only
from starload.testing import sample_orders


def produce(bootstrap: str, topic: str, count: int, partitions: int = 2) -> None:
    ensure_topic(bootstrap, topic, partitions=partitions)
    producer = Producer(producer_config(bootstrap))
    for i, order in enumerate(sample_orders(count, customers=500, products=50)):
        producer.produce(topic, orjson.dumps(order), partition=i % partitions)
    assert producer.flush(60) == 0


def star(path: str) -> tuple[int, int, int]:
    """Facts, distinct order ids and the stored offsets' sum."""
    with read_only(path, timeout=30) as con:
        [(facts, orders)] = con.execute('SELECT count(*), count(DISTINCT "ORDER_ID") FROM "FACT_ORDERS"').fetchall()
        [(stored,)] = con.execute('SELECT coalesce(sum("NEXT_OFFSET"), 0) FROM "STARLOAD_OFFSETS"').fetchall()
    return facts, orders, stored


def test_read_only_queries_succeed_within_seconds_while_a_loader_runs(local_broker, tmp_path):
    topic, path = f"readers-{uuid.uuid4().hex[:8]}", str(tmp_path / "star.duckdb")
    produce(local_broker.bootstrap_servers, topic, 150_000)
    loader = subprocess.Popen(
        [sys.executable, "-m", "starload.cli", "load", "--bootstrap-servers", local_broker.bootstrap_servers,
         "--topic", topic, "--schema", "orders", "--duckdb-path", path, "--batch-rows", "5000", "--until-idle", "3", "--no-dlq"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert loader.stderr is not None
    for line in loader.stderr:
        if "assigned" in line:
            break
    threading.Thread(target=loader.stderr.read, daemon=True).start()
    waits, seen = [], []
    while loader.poll() is None:
        asked = time.monotonic()
        facts, orders, stored = star(path)
        waits.append(time.monotonic() - asked)
        seen.append(facts)
        assert facts == orders == stored  # each batch is whole: facts and offsets move together
        time.sleep(0.2)
    assert loader.wait(60) == 0
    assert len(seen) >= 3 and seen == sorted(seen), seen
    assert 0 < seen[-1] or 0 < seen[-2], seen  # some reads saw the star mid-load
    assert max(waits) < 10, waits
    assert star(path) == (150_000, 150_000, 150_000)


def test_a_reader_holding_the_file_makes_the_loader_wait_and_retry_not_lose(local_broker, tmp_path, caplog):
    topic, path = f"holder-{uuid.uuid4().hex[:8]}", str(tmp_path / "star.duckdb")
    ensure_topic(local_broker.bootstrap_servers, topic, partitions=1)
    hold = f"from starload.sinks.duckdb import read_only\nimport time\nwith read_only({path!r}):\n    print('open', flush=True)\n    time.sleep(3)"
    with DuckDBSink(path, share_every="0.1", open_timeout="0.5") as sink:
        sink.prepare(ORDERS_SCHEMA)  # the star exists: a loader makes it only at its first write
        loader = StarLoader(
            ORDERS_SCHEMA, sink, bootstrap_servers=local_broker.bootstrap_servers, topic=topic, group="g",
            dlq_topic=None, batch_rows=500,
        )  # fmt: skip
        with caplog.at_level(logging.WARNING, logger="starload.engine"):
            running = threading.Thread(target=loader.run, kwargs={"until_idle": 8})
            running.start()
            deadline = time.monotonic() + 30
            while loader.stats.partitions != 1 and time.monotonic() < deadline:
                time.sleep(0.1)
            time.sleep(0.5)  # the sink lets the file go 0.1 s after its last call
            # Another process (an analyst's long query) opens the file read-only and holds it 3 s;
            # meanwhile orders arrive, and the loader's first write has to wait for it.
            reader = subprocess.Popen([sys.executable, "-c", hold], stdout=subprocess.PIPE, text=True)
            assert reader.stdout is not None and reader.stdout.readline() == "open\n"
            produce(local_broker.bootstrap_servers, topic, 2_000, partitions=1)
            running.join(60)
        assert reader.wait(30) == 0
    assert "is held open by another process" in caplog.text and "retrying" in caplog.text
    assert loader.stats.facts_loaded == 2_000
    assert star(path) == (2_000, 2_000, 2_000)
