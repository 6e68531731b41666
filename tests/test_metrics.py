"""Prometheus metrics and /healthz of a loader at work, over the real local broker and a DuckDB sink."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from typing import Any

from confluent_kafka import Producer
from prometheus_client.parser import text_string_to_metric_families

from starload import ORDERS_SCHEMA, DuckDBSink, StarLoader
from starload.kafka import ensure_topic, producer_config
from starload.metrics import REASON_CLASSES, MetricsServer, reason_class
from starload.sinks.base import StagedBatch, WriteResult
from starload.testing import sample_orders

METRICS = {
    "starload_messages_consumed": "counter",
    "starload_facts_loaded": "counter",
    "starload_facts_updated": "counter",
    "starload_duplicates": "counter",
    "starload_records": "counter",
    "starload_tombstones": "counter",
    "starload_rejects": "counter",
    "starload_conflicts": "counter",
    "starload_consumer_lag": "gauge",
    "starload_batch_write_seconds": "histogram",
    "starload_lock_wait_seconds": "histogram",
    "starload_lock_held_seconds": "histogram",
    "starload_batch_map_seconds": "histogram",
    "starload_batch_rows": "histogram",
    "starload_sink_retries": "counter",
    "starload_last_commit_timestamp_seconds": "gauge",
    "starload_assigned_partitions": "gauge",
}


def produce(bootstrap: str, topic: str, values: list[bytes], partitions: int) -> None:
    ensure_topic(bootstrap, topic, partitions=partitions)
    producer = Producer(producer_config(bootstrap))
    for i, value in enumerate(values):
        producer.produce(topic, value, partition=i % partitions)
    assert producer.flush(30) == 0


def orders(count: int, seed: int = 1) -> list[bytes]:
    return [json.dumps(o).encode() for o in sample_orders(count, seed=seed)]


def families(port: int) -> list[Any]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return list(text_string_to_metric_families(text))


def scrape(port: int) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """Every sample on /metrics, by sample name, then by sorted labels."""
    found: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in families(port):
        for sample in family.samples:
            found.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return found


def health(port: int) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def running(loader: StarLoader, until_idle: float) -> tuple[threading.Thread, list[BaseException]]:
    errors: list[BaseException] = []

    def run() -> None:
        try:
            loader.run(until_idle=until_idle)
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread, which asserts on it
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    return thread, errors


def test_every_metric_is_served_and_moves_during_a_load(local_broker):
    topic = f"metrics-{uuid.uuid4().hex[:8]}"
    good, bad = orders(20_000), [b"{not json"] * 30 + [b"[1, 2]"] * 5
    produce(local_broker.bootstrap_servers, topic, good + bad, partitions=2)
    with DuckDBSink(":memory:") as sink:
        loader = StarLoader(
            ORDERS_SCHEMA, sink, bootstrap_servers=local_broker.bootstrap_servers, topic=topic, group="g",
            dlq_topic=None, batch_rows=1_000, progress_interval=0.1,
        )  # fmt: skip
        with MetricsServer(loader.metrics.registry, loader.health, "127.0.0.1", 0) as server:
            # Before anything happens, every series an alert may watch is there, at 0; no *_created series at all.
            first = scrape(server.port)
            assert first["starload_rejects_total"] == {(("reason", c), ("topic", topic)): 0 for c in REASON_CLASSES}
            for counted in ("messages_consumed", "records", "tombstones"):
                assert first[f"starload_{counted}_total"] == {(("topic", topic),): 0}
            assert first["starload_sink_retries_total"] == {(): 0}
            assert not [name for name in first if name.endswith("_created")], sorted(first)
            thread, errors = running(loader, until_idle=2)
            consumed, assigned, lagged = [], set(), False
            while thread.is_alive():
                seen = scrape(server.port)
                consumed.append(seen["starload_messages_consumed_total"][(("topic", topic),)])
                assigned.add(seen["starload_assigned_partitions"][()])
                lagged |= {(("partition", "0"), ("topic", topic)), (("partition", "1"), ("topic", topic))} <= set(seen.get("starload_consumer_lag", {}))
                time.sleep(0.05)
            thread.join()
            assert not errors, errors
            final = scrape(server.port)
            described = {f.name: f.type for f in families(server.port)}
    assert described == METRICS
    assert consumed == sorted(consumed) and len(set(consumed)) >= 3, consumed  # it moved, and never back
    assert 2.0 in assigned and lagged
    assert final["starload_messages_consumed_total"] == {(("topic", topic),): 20_035}
    assert final["starload_facts_loaded_total"][()] == 20_000
    assert {k: v for k, v in final["starload_rejects_total"].items() if v} == {
        (("reason", "invalid_json"), ("topic", topic)): 30,
        (("reason", "not_an_object"), ("topic", topic)): 5,
    }
    assert not [name for name in final if name.endswith("_created")]
    assert final["starload_duplicates_total"][()] == final["starload_conflicts_total"][()] == 0
    assert final["starload_sink_retries_total"][()] == 0
    batches = final["starload_batch_write_seconds_count"][()]
    assert batches >= 20 and final["starload_batch_map_seconds_count"][()] == batches
    # DuckDB's star lock: every batch took it at once (one loader) and held it for its writes.
    assert final["starload_lock_wait_seconds_count"][()] == final["starload_lock_held_seconds_count"][()] == batches
    assert 0 < final["starload_lock_held_seconds_sum"][()] < final["starload_batch_write_seconds_sum"][()]
    assert final["starload_batch_rows_sum"][()] == 20_035
    assert abs(final["starload_last_commit_timestamp_seconds"][()] - time.time()) < 30
    assert final["starload_assigned_partitions"][()] == 0  # the loader left the group


def test_reject_reasons_are_counted_by_class():
    assert reason_class("not valid JSON") == "invalid_json"
    assert reason_class("quantity: missing; price: missing") == "missing_field"
    assert reason_class("conflict: order_id O1 was first seen at partition 0 offset 3 with different content") == "conflict"
    assert reason_class("TOTAL_AMOUNT: out of range for DECIMAL(18,2)") == "out_of_range"
    assert reason_class("quantity: expected an integer, got 'x'") == "invalid_value"


class HeldSink(DuckDBSink):
    """A DuckDB sink whose first write waits until :attr:`release` is set (a warehouse that hangs)."""

    def __init__(self) -> None:
        super().__init__(":memory:")
        self.release = threading.Event()

    def write(self, batch: StagedBatch) -> WriteResult:
        self.release.wait(60)
        return super().write(batch)


def watch(port: int, until: Callable[[int, str | None], bool], timeout: float = 60) -> list[tuple[int, str | None]]:
    """The distinct /healthz answers (code, problem without its numbers), up to the first for which ``until`` is true."""
    seen: list[tuple[int, str | None]] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        code, state = health(port)
        problem = state["problem"] and state["problem"].split(" for ")[0].split(" have waited ")[0]
        if not seen or seen[-1] != (code, problem):
            seen.append((code, problem))
        if until(code, problem):
            break
        time.sleep(0.05)
    return seen


def test_healthz_reports_no_assignment_then_a_stuck_sink_then_recovers(local_broker):
    topic = f"health-{uuid.uuid4().hex[:8]}"
    produce(local_broker.bootstrap_servers, topic, orders(500), partitions=1)
    sink = HeldSink()
    loader = StarLoader(
        ORDERS_SCHEMA, sink, bootstrap_servers=local_broker.bootstrap_servers, topic=topic, group="g",
        dlq_topic=None, health_timeout=1.0,
    )  # fmt: skip
    assert loader.health() == (False, loader.health()[1]) and loader.health()[1]["problem"] == "not running"
    with sink, MetricsServer(loader.metrics.registry, loader.health, "127.0.0.1", 0) as server:
        thread, errors = running(loader, until_idle=5)  # idle time runs during the held write: leave room after it
        # The group's first answer takes about 3 s on the local broker: longer than the bound.
        first = watch(server.port, lambda code, problem: problem == "1 batches")
        sink.release.set()
        then = watch(server.port, lambda code, problem: code == 200)
        thread.join()
    assert not errors, errors
    assert first[-1] == (503, "1 batches"), first
    assert (503, "no partition assignment from group 'g'") in first, first
    assert first[-2][0] == 200, first  # assigned, and the held write not yet past the bound
    assert then[-1] == (200, None), then
    assert loader.stats.facts_loaded == 500


def test_healthz_reports_a_consume_loop_that_stopped_turning(local_broker):
    topic = f"stall-{uuid.uuid4().hex[:8]}"
    produce(local_broker.bootstrap_servers, topic, orders(50), partitions=1)
    stalled, resume = threading.Event(), threading.Event()

    def progress(stats: Any) -> None:  # runs on the consume loop: hold it once, after assignment
        if stats.partitions and not stalled.is_set():
            stalled.set()
            resume.wait(30)

    with DuckDBSink(":memory:") as sink:
        loader = StarLoader(
            ORDERS_SCHEMA, sink, bootstrap_servers=local_broker.bootstrap_servers, topic=topic, group="g",
            dlq_topic=None, health_timeout=1.0, progress=progress, progress_interval=0.1,
        )  # fmt: skip
        with MetricsServer(loader.metrics.registry, loader.health, "127.0.0.1", 0) as server:
            thread, errors = running(loader, until_idle=1)
            assert stalled.wait(30)
            time.sleep(1.5)
            code, state = health(server.port)
            resume.set()
            thread.join()
    assert not errors, errors
    assert code == 503 and state["problem"].startswith("the consume loop has not turned for "), state
    assert loader.stats.facts_loaded == 50


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_the_cli_serves_metrics_and_health(local_broker, tmp_path):
    topic = f"cli-{uuid.uuid4().hex[:8]}"
    produce(local_broker.bootstrap_servers, topic, orders(100), partitions=1)
    port = free_port()
    loader = subprocess.Popen(
        [sys.executable, "-m", "starload.cli", "load", "--bootstrap-servers", local_broker.bootstrap_servers,
         "--topic", topic, "--schema", "orders", "--duckdb-path", str(tmp_path / "s.duckdb"), "--until-idle", "3", "--no-dlq",
         "--metrics-port", str(port), "--metrics-host", "127.0.0.1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline, answers = time.monotonic() + 60, []
        while time.monotonic() < deadline:
            try:
                answers.append(health(port))
                if answers[-1][0] == 200 and scrape(port)["starload_facts_loaded_total"][()] == 100:
                    break
            except (urllib.error.URLError, ConnectionError):
                pass
            time.sleep(0.2)
        assert answers and answers[-1][0] == 200, answers
        assert answers[-1][1]["status"] == "ok" and answers[-1][1]["assigned_partitions"] == 1
    finally:
        _, err = loader.communicate(timeout=60)
    assert loader.returncode == 0, err[-2000:]


def test_a_metrics_port_in_use_is_one_line_and_exit_2(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "starload.cli", "load", "--duckdb-path", str(tmp_path / "s.duckdb"),
             "--metrics-port", str(port), "--metrics-host", "127.0.0.1", "--bootstrap-servers", "127.0.0.1:1",
             "--startup-timeout", "1"],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines()[-1] == (
        f"starload: error: cannot serve metrics on 127.0.0.1:{port} (--metrics-host, --metrics-port): Address already in use"
    )
