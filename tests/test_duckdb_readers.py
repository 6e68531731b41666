"""The DuckDB star is readable from another process while a loader runs, and the loader loses and doubles nothing."""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Sequence

import orjson
import pytest
from confluent_kafka import Producer

from starload import ORDERS_SCHEMA, DuckDBSink, StarLoader
from starload.generators.orders import ORDERS_GENERATOR
from starload.kafka import ensure_topic, producer_config
from starload.producing import produce as starload_produce
from starload.progress import describe_load
from starload.sinks.duckdb import read_only
from starload.testing import ReaderProbe, sample_orders


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


#: ``starload`` on a machine whose file opens cannot be watched (not Linux): readers are let in on a timer.
WITHOUT_INOTIFY = ["-c", "import sys, starload.sinks.duckdb as d; d.INotify = None; from starload.cli import main; sys.exit(main())"]


def run_loader(bootstrap: str, topic: str, path: str, *options: str, program: Sequence[str] = ("-m", "starload.cli")) -> subprocess.Popen[str]:
    """``starload load`` as a subprocess, returned once it has its partitions (its log is drained meanwhile)."""
    loader = subprocess.Popen(
        [sys.executable, *program, "load", "--bootstrap-servers", bootstrap, "--topic", topic,
         "--schema", "orders", "--duckdb-path", path, "--until-idle", "3", "--no-dlq", *options],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert loader.stderr is not None
    for line in loader.stderr:
        if "assigned" in line:
            break
    threading.Thread(target=loader.stderr.read, daemon=True).start()
    return loader


def test_read_only_queries_succeed_within_seconds_while_a_loader_runs(local_broker, tmp_path):
    topic, path = f"readers-{uuid.uuid4().hex[:8]}", str(tmp_path / "star.duckdb")
    produce(local_broker.bootstrap_servers, topic, 150_000)
    loader = run_loader(local_broker.bootstrap_servers, topic, path, "--batch-rows", "5000")
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
        with caplog.at_level(logging.WARNING, logger="starload"):
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


@pytest.mark.parametrize("program", [("-m", "starload.cli"), WITHOUT_INOTIFY], ids=["knocks", "timer"])
def test_a_reader_trying_once_a_second_gets_in_within_3_s_during_a_live_stream(local_broker, tmp_path, program):
    # A steady stream, a batch a second: before, the loader reopened the file for each batch
    # right after letting it go, and such a reader got in about once in twenty tries.
    topic, path = f"live-{uuid.uuid4().hex[:8]}", str(tmp_path / "star.duckdb")
    bootstrap = local_broker.bootstrap_servers
    produce(bootstrap, topic, 1, partitions=1)
    loader = run_loader(bootstrap, topic, path, "--batch-seconds", "1", program=program)
    stream = threading.Thread(target=starload_produce, args=(bootstrap, topic, ORDERS_GENERATOR, 4_800), kwargs={"seed": 2, "rate": 240})
    with ReaderProbe(path) as reader:
        stream.start()
        stream.join()
        assert loader.wait(60) == 0
    assert len(reader.tries) >= 15, reader.summary()
    assert max(reader.waits, default=0) <= 3, reader.summary()
    assert star(path) == (4_801, 4_801, 4_801)


def test_a_reader_trying_once_a_second_gets_in_within_3_s_during_a_backlog(local_broker, tmp_path):
    topic, path = f"backlog-{uuid.uuid4().hex[:8]}", str(tmp_path / "star.duckdb")
    bootstrap = local_broker.bootstrap_servers
    starload_produce(bootstrap, topic, ORDERS_GENERATOR, 800_000, seed=3, partitions=2)
    with ReaderProbe(path) as reader:
        loader = run_loader(bootstrap, topic, path)  # default batches (125,000 rows)
        assert loader.wait(120) == 0
    assert len(reader.tries) >= 4 and sum(ok for _, ok in reader.tries) >= 2, reader.summary()
    assert max(reader.waits, default=0) <= 3, reader.summary()
    assert star(path) == (800_000, 800_000, 800_000)


def test_a_loader_waiting_for_a_reader_says_so_in_its_health_its_live_line_and_its_log(local_broker, tmp_path, caplog):
    topic, path = f"wait-{uuid.uuid4().hex[:8]}", str(tmp_path / "star.duckdb")
    ensure_topic(local_broker.bootstrap_servers, topic, partitions=1)
    hold = f"from starload.sinks.duckdb import read_only\nimport time\nwith read_only({path!r}):\n    print('open', flush=True)\n    time.sleep(9)"
    with DuckDBSink(path) as sink:
        sink.prepare(ORDERS_SCHEMA)
        loader = StarLoader(
            ORDERS_SCHEMA, sink, bootstrap_servers=local_broker.bootstrap_servers, topic=topic, group="g",
            dlq_topic=None, batch_rows=500, progress_interval=0.2,
        )  # fmt: skip
        with caplog.at_level(logging.INFO, logger="starload"):
            running = threading.Thread(target=loader.run, kwargs={"until_idle": 5})
            running.start()
            deadline = time.monotonic() + 30
            while loader.stats.partitions != 1 and time.monotonic() < deadline:
                time.sleep(0.1)
            reader = subprocess.Popen([sys.executable, "-c", hold], stdout=subprocess.PIPE, text=True)
            assert reader.stdout is not None and reader.stdout.readline() == "open\n"  # the loader let it in
            produce(local_broker.bootstrap_servers, topic, 1_000, partitions=1)
            seen: list[tuple[dict, str]] = []
            while reader.poll() is None:
                seen.append((loader.health()[1], describe_load(loader.stats)))
                time.sleep(0.2)
            running.join(60)
    waiting = [(state, line) for state, line in seen if state["waiting_for"]]
    assert waiting, seen
    state, line = waiting[-1]
    assert "a reader of DuckDB file" in state["waiting_for"] and f"PID {reader.pid}" in state["waiting_for"], state
    assert state["waiting_since"].endswith("+00:00"), state
    assert line.startswith("waiting ") and "DuckDB file" in line and len(line) <= 80, line
    assert "waiting for a reader of DuckDB file" in caplog.text and "no longer waiting" in caplog.text
    assert loader.stats.facts_loaded == 1_000
