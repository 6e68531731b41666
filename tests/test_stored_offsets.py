"""Stored offsets that do not belong to the topic as it is now stop the loader, or are reset on purpose.

Over the real local broker: a topic deleted and re-created under a warehouse that keeps
its offsets (before, the loader exited 0 having skipped the new messages below them),
the broker answering that a position is out of range, and ``starload offsets``.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator

import duckdb
import pytest
from confluent_kafka import OFFSET_STORED
from confluent_kafka.admin import AdminClient, NewTopic

from starload import ORDERS_SCHEMA, DuckDBSink, StarLoader, StoredOffsetsError
from starload.kafka import topic_id

PARTITIONS = 2


def starload(*args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "starload.cli", *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def stored(path: str) -> dict[int, tuple[int, str | None]]:
    with duckdb.connect(path, read_only=True) as con:
        rows = con.execute('SELECT "KAFKA_PARTITION", "NEXT_OFFSET", "TOPIC_ID" FROM "STARLOAD_OFFSETS"').fetchall()
    return {p: (o, i) for p, o, i in rows}


def facts(path: str) -> int:
    with duckdb.connect(path, read_only=True) as con:
        return con.execute('SELECT count(*) FROM "FACT_ORDERS"').fetchone()[0]


class Cluster:
    """One topic on the local broker that a test can produce to, and delete and re-create."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.bootstrap, self.topic = bootstrap, topic
        self.admin = AdminClient({"bootstrap.servers": bootstrap})

    def produce(self, count: int, seed: int) -> None:
        done = starload(
            "produce", "--bootstrap-servers", self.bootstrap, "--topic", self.topic, "--count", str(count),
            "--seed", str(seed), "--partitions", str(PARTITIONS),
        )  # fmt: skip
        assert done.returncode == 0, done.stderr[-2000:]

    def recreate(self) -> None:
        before = topic_id(self.admin, self.topic, 10)
        self.admin.delete_topics([self.topic])[self.topic].result(30)
        deadline = time.monotonic() + 30
        while True:
            try:
                self.admin.create_topics([NewTopic(self.topic, PARTITIONS)])[self.topic].result(30)
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        assert topic_id(self.admin, self.topic, 10) != before

    def load_args(self, path: str, group: str) -> list[str]:
        return [
            "--bootstrap-servers", self.bootstrap, "--topic", self.topic, "--schema", "orders", "--group", group, "--duckdb-path", path,
        ]  # fmt: skip


@pytest.fixture
def cluster(local_broker) -> Iterator[Cluster]:
    yield Cluster(local_broker.bootstrap_servers, f"life-{uuid.uuid4().hex[:8]}")


def test_a_recreated_topic_stops_the_loader_until_the_offsets_are_reset(cluster, tmp_path):
    path, group = str(tmp_path / "star.duckdb"), "g"
    where = cluster.load_args(path, group)
    cluster.produce(400, seed=1)
    first = starload("load", *where, "--until-idle", "2", "--no-dlq")
    assert first.returncode == 0, first.stderr[-2000:]
    assert facts(path) == 400
    old_life = stored(path)
    assert sum(o for o, _ in old_life.values()) == 400
    assert {i for _, i in old_life.values()} == {topic_id(cluster.admin, cluster.topic, 10)}

    # The topic's second life holds more messages than the first: the old offsets lie inside it.
    cluster.recreate()
    cluster.produce(1000, seed=2)
    new_id = topic_id(cluster.admin, cluster.topic, 10)
    again = starload("load", *where, "--until-idle", "2", "--no-dlq")
    assert again.returncode == 3, again.stderr[-2000:]
    line = again.stderr.strip().splitlines()[-1]
    assert line.startswith(f"starload: error: the offsets stored for topic {cluster.topic!r} (group 'g') at partitions 0, 1 ")
    assert f"the topic's ID is now {new_id}: it was deleted and re-created" in line
    assert "starload offsets show" in line and "--on-offset-mismatch" in line
    assert facts(path) == 400 and stored(path) == old_life

    shown = starload("offsets", "show", *where)
    assert shown.returncode == 0, shown.stderr[-2000:]
    assert f"topic ID {new_id}" in shown.stdout
    assert shown.stdout.count("other topic ID") == PARTITIONS

    dry = starload("offsets", "reset", *where, "--to", "earliest")
    assert dry.returncode == 0, dry.stderr[-2000:]
    assert "dry run: nothing changed" in dry.stdout
    assert stored(path) == old_life

    done = starload("offsets", "reset", *where, "--to", "earliest", "--execute")
    assert done.returncode == 0, done.stderr[-2000:]
    assert stored(path) == {p: (0, new_id) for p in range(PARTITIONS)}
    assert starload("offsets", "show", *where).stdout.count(" ok ") == PARTITIONS

    last = starload("load", *where, "--until-idle", "2", "--no-dlq")
    assert last.returncode == 0, last.stderr[-2000:]
    assert facts(path) == 1400
    assert sum(o for o, _ in stored(path).values()) == 1000


def test_on_offset_mismatch_earliest_reloads_a_recreated_topic_by_itself(cluster, tmp_path, caplog):
    path = str(tmp_path / "star.duckdb")

    def load(policy: str) -> int:
        with DuckDBSink(path) as sink:
            loader = StarLoader(
                ORDERS_SCHEMA, sink, bootstrap_servers=cluster.bootstrap, topic=cluster.topic, group="g",
                dlq_topic=None, on_offset_mismatch=policy,
            )  # fmt: skip
            return loader.run(until_idle=2).facts_loaded

    cluster.produce(300, seed=1)
    assert load("stop") == 300
    cluster.recreate()
    cluster.produce(500, seed=2)
    with caplog.at_level(logging.WARNING, logger="starload.engine"):
        assert load("earliest") == 500
    assert "were written for topic ID" in caplog.text and "(--on-offset-mismatch earliest)" in caplog.text
    new_id = topic_id(cluster.admin, cluster.topic, 10)
    assert {i for _, i in stored(path).values()} == {new_id}
    assert sum(o for o, _ in stored(path).values()) == 500


@pytest.fixture
def out_of_range_once(monkeypatch) -> None:
    """Make the broker answer the first assignment's positions as out of range, as librdkafka reports it.

    A Kafka broker answers a fetch before a partition's first message or past its end
    with OFFSET_OUT_OF_RANGE, which librdkafka turns into ``_AUTO_OFFSET_RESET`` under
    ``auto.offset.reset=error`` (librdkafka CONFIGURATION.md). The local broker answers
    such a fetch with no messages and no error, so here the first positions are
    OFFSET_STORED instead: with no offset committed in Kafka, librdkafka raises the same
    ``_AUTO_OFFSET_RESET`` event. From then on everything is real.
    """
    from starload import positions as assigning

    real = assigning.seek_positions
    calls = []

    def first_out_of_range(partitions, offsets):
        calls.append(partitions)
        positions = real(partitions, offsets)
        if len(calls) == 1:
            for tp in positions:
                tp.offset = OFFSET_STORED
        return positions

    monkeypatch.setattr(assigning, "seek_positions", first_out_of_range)


def test_a_position_the_broker_calls_out_of_range_stops_the_loader(cluster, tmp_path, out_of_range_once):
    cluster.produce(50, seed=1)
    with DuckDBSink(str(tmp_path / "star.duckdb")) as sink:
        loader = StarLoader(ORDERS_SCHEMA, sink, bootstrap_servers=cluster.bootstrap, topic=cluster.topic, group="g", dlq_topic=None)
        with pytest.raises(StoredOffsetsError) as raised:
            loader.run(until_idle=2)
        assert sink.stored_offsets("g", cluster.topic) == {}
    message = str(raised.value)
    assert f"of topic {cluster.topic!r} (group 'g'; stored offset None) is out of range" in message
    assert "Retention deleted messages the loader never read" in message and "starload offsets reset" in message


def test_on_offset_mismatch_earliest_resumes_a_partition_out_of_range(cluster, tmp_path, out_of_range_once, caplog):
    cluster.produce(80, seed=1)
    with DuckDBSink(str(tmp_path / "star.duckdb")) as sink:
        loader = StarLoader(
            ORDERS_SCHEMA, sink, bootstrap_servers=cluster.bootstrap, topic=cluster.topic, group="g", dlq_topic=None,
            on_offset_mismatch="earliest",
        )  # fmt: skip
        with caplog.at_level(logging.WARNING, logger="starload.engine"):
            stats = loader.run(until_idle=2)
        assert stats.facts_loaded == 80
        assert sum(sink.stored_offsets("g", cluster.topic).values()) == 80
    assert "is out of range" in caplog.text and "(--on-offset-mismatch earliest)" in caplog.text


def test_offsets_reset_refuses_what_it_cannot_do(cluster, tmp_path):
    cluster.produce(10, seed=1)
    where = cluster.load_args(str(tmp_path / "star.duckdb"), "g")
    for extra, expected in (
        (["--to", "-1"], "argument --to: must be at least 0, got -1"),
        (["--to", "soon"], "argument --to: expected a whole number, got 'soon'"),
        (["--to", "0", "--partition", "7"], f"topic {cluster.topic!r} has no partition 7 (it has 2)"),
    ):
        done = starload("offsets", "reset", *where, *extra, "--execute")
        assert done.returncode == 2, done.stderr[-2000:]
        assert done.stderr.strip().splitlines()[-1].startswith("starload: error: "), done.stderr
        assert expected in done.stderr
    missing = starload("offsets", "reset", *cluster.load_args(str(tmp_path / "s.duckdb"), "g")[:2], "--topic", "nope", "--schema", "orders",
                       "--duckdb-path", str(tmp_path / "s.duckdb"), "--to", "earliest")  # fmt: skip
    assert missing.returncode == 2
    assert "topic 'nope' does not exist" in missing.stderr


def test_one_partition_is_reset_to_an_offset_and_the_others_keep_theirs(cluster, tmp_path):
    path = str(tmp_path / "star.duckdb")
    where = cluster.load_args(path, "g")
    cluster.produce(100, seed=1)
    assert starload("load", *where, "--until-idle", "2", "--no-dlq").returncode == 0
    before = stored(path)
    done = starload("offsets", "reset", *where, "--to", "3", "--partition", "1", "--execute")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "stored the new offsets of 1 partitions in one transaction" in done.stdout
    assert stored(path) == {0: before[0], 1: (3, before[1][1])}


def test_offsets_stored_before_topic_ids_keep_their_place(tmp_path):
    """A warehouse from before topic IDs were stored: prepare adds the column and the offsets stay."""
    path = str(tmp_path / "old.duckdb")
    with duckdb.connect(path) as con:
        con.execute(
            'CREATE TABLE "STARLOAD_OFFSETS" ("GROUP_ID" VARCHAR NOT NULL, "TOPIC" VARCHAR NOT NULL, '
            '"KAFKA_PARTITION" INTEGER NOT NULL, "NEXT_OFFSET" BIGINT NOT NULL, "UPDATED_AT" TIMESTAMPTZ NOT NULL, '
            'PRIMARY KEY ("GROUP_ID", "TOPIC", "KAFKA_PARTITION"))'
        )
        con.execute("INSERT INTO \"STARLOAD_OFFSETS\" VALUES ('g', 'orders', 0, 42, now())")
    with DuckDBSink(path) as sink:
        sink.prepare(ORDERS_SCHEMA)
        assert sink.stored_offsets("g", "orders") == {0: 42}
        assert sink.stored_topic_ids("g", "orders") == {}
