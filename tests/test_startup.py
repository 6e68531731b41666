"""Bounded start-up: no broker, no topic, no partitions: each ends, with one line, instead of running forever."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid

import pytest
from confluent_kafka.admin import AdminClient

from starload import ORDERS_GENERATOR, ORDERS_SCHEMA, DuckDBSink, StarLoader
from starload.exceptions import ConsumerGroupError, StartupError
from starload.kafka import ensure_topic
from starload.producing import produce
from starload.progress import describe_load


def starload(*args: str, timeout: float = 120) -> tuple[subprocess.CompletedProcess[str], float]:
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "starload.cli", *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    return done, time.monotonic() - started


def last_line(done: subprocess.CompletedProcess[str]) -> str:
    return done.stderr.strip().splitlines()[-1]


def test_load_without_a_broker_stops_at_the_startup_timeout(tmp_path):
    done, seconds = starload(
        "load", "--bootstrap-servers", "127.0.0.1:1", "--duckdb-path", str(tmp_path / "s.duckdb"),
        "--until-idle", "5", "--startup-timeout", "3",
    )  # fmt: skip
    assert done.returncode == 2, done.stderr[-2000:]
    assert last_line(done).startswith("starload: error: no Kafka broker answered at 127.0.0.1:1 within 3 s")
    assert seconds < 30


def test_produce_without_a_broker_names_the_address():
    done, seconds = starload("produce", "--bootstrap-servers", "127.0.0.1:1", "--count", "5", "--startup-timeout", "3")
    assert done.returncode == 2, done.stderr[-2000:]
    assert last_line(done).startswith("starload: error: no Kafka broker answered at 127.0.0.1:1 within 3 s")
    assert seconds < 30


def test_load_of_a_missing_topic_stops_and_creates_nothing(local_broker, tmp_path):
    topic = f"missing-{uuid.uuid4().hex[:8]}"
    done, _ = starload(
        "load", "--bootstrap-servers", local_broker.bootstrap_servers, "--topic", topic, "--schema", "orders",
        "--duckdb-path", str(tmp_path / "s.duckdb"), "--startup-timeout", "3",
    )  # fmt: skip
    assert done.returncode == 2, done.stderr[-2000:]
    assert last_line(done).startswith(f"starload: error: topic {topic!r} does not exist on {local_broker.bootstrap_servers}")
    topics = AdminClient({"bootstrap.servers": local_broker.bootstrap_servers}).list_topics(timeout=10).topics
    assert topic not in topics and f"{topic}.dlq" not in topics
    assert list(tmp_path.iterdir()) == [], "no DuckDB file, no tables, no lock file left behind"


def test_until_idle_ends_a_loader_whose_assignment_is_empty(local_broker, tmp_path):
    """Two loaders, one partition: the one left without a partition is idle and stops too."""
    topic = f"one-{uuid.uuid4().hex[:8]}"
    ensure_topic(local_broker.bootstrap_servers, topic, partitions=1)
    command = [
        sys.executable, "-m", "starload.cli", "load", "--bootstrap-servers", local_broker.bootstrap_servers,
        "--topic", topic, "--schema", "orders", "--group", topic, "--until-idle", "2", "--no-dlq",
    ]  # fmt: skip
    loaders = [
        subprocess.Popen([*command, "--duckdb-path", str(tmp_path / f"{i}.duckdb")], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
        for i in range(2)
    ]  # fmt: skip
    outputs = [loader.communicate(timeout=90) for loader in loaders]
    assert [loader.returncode for loader in loaders] == [0, 0], outputs


def test_until_idle_ends_a_loader_the_group_never_assigns(local_broker, topic):
    """No assignment at all by the start-up timeout plus ``until_idle``: one clear error, not a wait forever."""
    loader = StarLoader(
        ORDERS_SCHEMA, DuckDBSink(":memory:"), bootstrap_servers=local_broker.bootstrap_servers, topic=topic,
        group=f"slow-{uuid.uuid4().hex[:6]}", dlq_topic=None, startup_timeout=0.2,
    )  # fmt: skip
    # A first join takes about 3 s on the local broker: longer than 0.2 + 0.3 s.
    with pytest.raises(StartupError, match="gave this loader no assignment"):
        loader.run(until_idle=0.3)


def test_until_idle_ends_a_loader_whose_partitions_are_revoked_and_never_given_back(local_broker, topic):
    """A revoke no assignment follows (not even an empty one) is bounded like a join that never ends, and shown meanwhile.

    Once everything is loaded, the loader's own consumer (a real one, on the real broker)
    leaves the group from the consume loop's thread (the progress callback runs there):
    the group revokes its partitions through the rebalance callback and, as the loader
    is no member any more, never assigns it anything, which is what a group stuck in a
    rebalance does to it.
    """
    produce(local_broker.bootstrap_servers, topic, ORDERS_GENERATOR, 300, seed=3)
    seen: list[tuple[dict, str]] = []
    left: list[float] = []
    loader: StarLoader

    def watch(stats) -> None:
        if stats.loaded == 300 and not left:
            left.append(time.monotonic())
            loader._consumer.unsubscribe()
        seen.append((loader.health()[1], describe_load(stats)))

    loader = StarLoader(
        ORDERS_SCHEMA, DuckDBSink(":memory:"), bootstrap_servers=local_broker.bootstrap_servers, topic=topic,
        group=f"revoked-{uuid.uuid4().hex[:6]}", dlq_topic=None, startup_timeout=3, health_timeout=0.5,
        progress=watch, progress_interval=0.1,
    )  # fmt: skip
    with pytest.raises(ConsumerGroupError, match="revoked this loader's partitions .* --until-idle 3") as raised:
        loader.run(until_idle=3)
    assert isinstance(raised.value, StartupError)  # exit code 2, as a join that never ends
    assert time.monotonic() - left[0] >= 6  # the start-up timeout plus until_idle, from the revoke
    assert loader.stats.loaded == 300
    revoked = [(health, line) for health, line in seen if line.startswith("no assignment for")]
    assert revoked, [line for _, line in seen]
    assert any(
        health["status"] == "unhealthy" and health["problem"].startswith("no partition assignment from group")
        for health, _ in revoked
    ), revoked


def test_produce_creates_its_topic_with_the_x_settings_too(local_broker):
    """-X reaches the admin client that creates the topic: SSL to a plaintext broker creates nothing."""
    topic = f"ssl-{uuid.uuid4().hex[:8]}"
    done, _ = starload(
        "produce", "--bootstrap-servers", local_broker.bootstrap_servers, "--topic", topic, "--count", "5",
        "-X", "security.protocol=SSL", "--startup-timeout", "3",
    )  # fmt: skip
    assert done.returncode == 2, done.stderr[-2000:]
    assert last_line(done).startswith(f"starload: error: no Kafka broker answered at {local_broker.bootstrap_servers}")
    topics = AdminClient({"bootstrap.servers": local_broker.bootstrap_servers}).list_topics(timeout=10).topics
    assert topic not in topics


def test_a_misspelt_topic_stops_at_once_with_the_nearest_names(local_broker, tmp_path):
    """The broker answered and lists no such topic: no waiting out --startup-timeout, and the names it meant."""
    prefix = f"book{uuid.uuid4().hex[:6]}"
    ensure_topic(local_broker.bootstrap_servers, f"{prefix}.order_lines", partitions=1)
    done, seconds = starload(
        "load", "--bootstrap-servers", local_broker.bootstrap_servers, "--topic", f"{prefix}.orderlines", "--schema", "orders",
        "--duckdb-path", str(tmp_path / "s.duckdb"), "--startup-timeout", "60",
    )  # fmt: skip
    assert done.returncode == 2, done.stderr[-2000:]
    assert last_line(done).startswith(
        f"starload: error: topic '{prefix}.orderlines' does not exist on {local_broker.bootstrap_servers}; did you mean '{prefix}.order_lines'?"
    )
    assert seconds < 20  # the broker's answer was enough (it waited the whole 60 s before)
    assert list(tmp_path.iterdir()) == []
