"""Several loaders on one star: nothing lost, nothing doubled, zombies fenced, lost COMMITs resolved.

The loaders share a consumer group over the real local broker and write through the
real connector to the strict local Snowflake endpoint, which holds UPDATE locks the
way Snowflake does (starload.snowflake_endpoint).
"""

from __future__ import annotations

import logging
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import snowflake.connector
import yaml
from test_bookshop_example import produce_progress
from test_recovery import HISTORY, ORDERS, assert_exact, duckdb_query, loader_command, produce_stream
from test_several_topics import shop_on, view

from starload import ORDERS_SCHEMA, StarLoader
from starload.sinks.snowflake import SnowflakeSink
from starload.testing import SinkBehaviour


def snowflake_query(settings: dict):
    def query(sql: str) -> list[tuple]:
        with snowflake.connector.connect(**settings, network_timeout=30) as con:
            return [tuple(r) for r in con.cursor().execute(sql).fetchall()]

    return query


class Loader:
    """``starload load --sink snowflake`` as a subprocess, its stderr kept in a file."""

    def __init__(self, bootstrap: str, topic: str | None, log: Path, *extra: str, star: tuple[str, ...] = ORDERS,
                 group: str | None = None) -> None:
        """``topic``: the one to read (None: the star's own topics); ``group``: the consumer group, ``topic`` by default."""
        command = [
            sys.executable, "-m", "starload.cli", "load", "--bootstrap-servers", bootstrap, *(["--topic", topic] if topic else []),
            *star, "--group", group or topic, "--sink", "snowflake", "--batch-rows", "1500", "--batch-seconds", "0.3",
            # Default sink options: a killed or frozen loader's transaction, which holds the lock,
            # is aborted once its loader has not beaten for dead_after (20 s).
            # The local broker waits a whole rebalance timeout (max.poll.interval.ms, 300 s by
            # default) for members that left before it completes a join: keep it short here.
            "-X", "max.poll.interval.ms=15000", *extra,
        ]  # fmt: skip
        self.log = log
        self._file = log.open("w")
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=self._file, text=True)

    def wait_for(self, text: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.log.read_text():
            assert self.process.poll() is None, f"the loader exited: {self.log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"no {text!r} after {timeout} s: {self.log.read_text()[-3000:]}"
            time.sleep(0.1)

    def finish(self, timeout: float = 180) -> str:
        out, _ = self.process.communicate(timeout=timeout)
        self._file.close()
        assert self.process.returncode == 0, self.log.read_text()[-3000:]
        return out

    def kill(self) -> None:
        self.process.kill()
        self.process.wait()
        self._file.close()


def wait_until_held(local_snowflake, held: int, loader: Loader, timeout: float = 60) -> None:
    """Until the endpoint holds one more statement (a ``delay`` fault) than the ``held`` counted before."""
    deadline = time.monotonic() + timeout
    while local_snowflake.stats().get("held", 0) <= held:
        assert loader.process.poll() is None and time.monotonic() < deadline, loader.log.read_text()[-3000:]
        time.sleep(0.05)


def finish_at(query: Callable[[str], list[tuple]], loaders: list[Loader], end: int) -> None:
    """Wait until the stored offsets add up to ``end`` (every message loaded), then stop ``loaders`` cleanly."""
    deadline = time.monotonic() + 300
    while query("SELECT coalesce(sum(NEXT_OFFSET), 0) FROM STARLOAD_OFFSETS") != [(end,)]:
        assert time.monotonic() < deadline, [loader.log.read_text()[-1500:] for loader in loaders]
        time.sleep(0.5)
    for loader in loaders:
        loader.process.send_signal(signal.SIGTERM)
    for loader in loaders:
        loader.finish()


def verify_on_snowflake(star: tuple[str, ...]) -> None:
    """``starload verify`` of ``star`` on the Snowflake sink passes."""
    verified = subprocess.run([sys.executable, "-m", "starload.cli", "verify", *star, "--sink", "snowflake"],
                              capture_output=True, text=True, timeout=120, check=False)  # fmt: skip
    assert verified.returncode == 0, verified.stdout + verified.stderr


@pytest.fixture
def spawn(local_broker, tmp_path) -> Iterator[Callable[..., Loader]]:
    """Starts loaders (``spawn(topic, name, *extra, star=..., group=...)``); any still running at the end of the test is killed."""
    started: list[Loader] = []

    def start(topic: str | None, name: str, *extra: str, star: tuple[str, ...] = ORDERS, group: str | None = None) -> Loader:
        started.append(Loader(local_broker.bootstrap_servers, topic, tmp_path / f"{name}.log", *extra, star=star, group=group))
        return started[-1]

    yield start
    for loader in started:
        if loader.process.poll() is None:
            loader.process.send_signal(signal.SIGCONT)
            loader.kill()


def test_three_loaders_killed_and_replaced_at_random_build_the_exact_star(
    local_broker, snowflake_environment, snowflake_settings, spawn
):
    """Three loaders share six partitions; one is SIGKILLed and replaced, three times; rebalances all along.

    On the history star, whose customers move: their versions come out of batches that
    several loaders wrote, in whatever order the partitions were read.
    """
    topic = "scale-out"
    orders, bad = produce_stream(local_broker.bootstrap_servers, topic, 30_000, seed=41, partitions=6, moves=4)
    rng = random.Random(7)
    names = iter(f"loader-{i}" for i in range(100))
    loaders = [spawn(topic, next(names), star=HISTORY) for _ in range(3)]
    for loader in loaders:
        loader.wait_for("assigned")
    for _ in range(3):
        time.sleep(rng.uniform(0.2, 2.0))
        victim = loaders.pop(rng.randrange(len(loaders)))
        victim.kill()
        loaders.append(spawn(topic, next(names), star=HISTORY))
        # Once it has partitions (after a rebalance) it also stops cleanly on SIGTERM.
        loaders[-1].wait_for("assigned")
    # The three left finish the topic (a fresh loader joining a group that all members just
    # left can wait minutes for its first assignment on the local broker), then stop cleanly.
    query = snowflake_query(snowflake_settings)
    finish_at(query, loaders, len(orders) + len(orders[::50]) + bad)
    assert_exact(query, orders, bad, history=True)


def test_loaders_sharing_the_shop_topics_killed_and_replaced_build_the_star_of_one_load(
    local_broker, snowflake_environment, snowflake_settings, spawn, tmp_path
):
    """Three topics of three partitions, two loaders in one group, one SIGKILLed and replaced twice: one DuckDB loader's star.

    Customers' records, orders and payments of one customer are read by different loaders,
    in batches committed in whatever order; the members, their versions and every fact's
    member version come out as one uninterrupted load builds them.
    """
    prefix = f"f{uuid.uuid4().hex[:8]}-"
    spec = tmp_path / "shop.yaml"
    spec.write_text(yaml.safe_dump(shop_on(prefix).to_dict()))
    star = ("--spec", str(spec))
    count = 6_000
    produced = subprocess.run(
        [sys.executable, "-m", "starload.cli", "produce", "--bootstrap-servers", local_broker.bootstrap_servers, "--generator", "shop",
         "--count", str(count), "--seed", "22", "--partitions", "3", "--option", f"prefix={prefix}", "--option", "customers=30"],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert produced.returncode == 0, produced.stderr
    calm = tmp_path / "calm.duckdb"
    once = subprocess.run(loader_command(local_broker.bootstrap_servers, None, calm, "--until-idle", "3", "--group", "calm", star=star),
                          capture_output=True, text=True, timeout=600, check=False)  # fmt: skip
    assert once.returncode == 0, once.stderr
    rng = random.Random(8)
    names = iter(f"shop-loader-{i}" for i in range(100))
    loaders = [spawn(None, next(names), star=star, group="fleet") for _ in range(2)]
    for loader in loaders:
        loader.wait_for("assigned")
    for _ in range(2):
        time.sleep(rng.uniform(0.5, 2.0))
        loaders.pop(rng.randrange(len(loaders))).kill()
        loaders.append(spawn(None, next(names), star=star, group="fleet"))
        loaders[-1].wait_for("assigned")
    query = snowflake_query(snowflake_settings)
    finish_at(query, loaders, count)
    verify_on_snowflake(star)
    expected = view(duckdb_query(calm))
    assert view(query) == expected
    versions, orders, payments = expected
    assert any(deleted for *_, deleted, _, _, _ in versions) and len(orders) > 2_000 and len(payments) > 500


def test_a_zombie_loader_cannot_commit(local_broker, local_snowflake, snowflake_environment, snowflake_settings, spawn):
    """A loader frozen inside its transaction past its session timeout; another takes its partitions; then it resumes.

    A batch's transaction is one request, which Snowflake runs to its COMMIT whatever
    the client does meanwhile; a transaction stays open when a statement of it failed,
    until the loader rolls it back. So the zombie's first fact insert fails, and its
    ROLLBACK is held: frozen then, it holds the star's lock and stops beating.
    """
    topic = "zombie"
    orders, bad = produce_stream(local_broker.bootstrap_servers, topic, 6_000, seed=42, partitions=2)
    # The count is the endpoint's since it started: earlier tests held statements too.
    held = local_snowflake.stats().get("held", 0)
    local_snowflake.inject(r'^INSERT INTO "FACT_ORDERS"', errno=630, message="injected: a statement of the transaction timed out")
    local_snowflake.inject(r"^ROLLBACK", action="delay", seconds=60)
    zombie = spawn(topic, "zombie", "--until-idle", "4")
    wait_until_held(local_snowflake, held, zombie)
    zombie.process.send_signal(signal.SIGSTOP)
    try:
        # The other loader gets every partition once the zombie's session times out (6 s),
        # waits for the zombie's lock, finds that the zombie stopped beating (dead_after), aborts it and loads all.
        heir = spawn(topic, "heir", "--until-idle", "3")
        heir.finish(timeout=300)
    finally:
        zombie.process.send_signal(signal.SIGCONT)
    assert "aborted transaction" in heir.log.read_text()
    zombie.finish(timeout=300)
    assert "not where this loader left them" in zombie.log.read_text()
    assert_exact(snowflake_query(snowflake_settings), orders, bad)


@pytest.mark.parametrize("action", ["error_after", "error"])
def test_a_lost_commit_is_resolved_from_the_stored_offsets(
    action, local_broker, local_snowflake, snowflake_settings, topic, caplog
):
    """``error_after``: the COMMIT ran but its answer was lost; ``error``: it never ran. Either way, exactly once."""
    orders, bad = produce_stream(local_broker.bootstrap_servers, topic, 3_000, seed=43, partitions=1)
    caplog.set_level(logging.WARNING)
    with SnowflakeSink(**snowflake_settings) as sink:
        sink.prepare(ORDERS_SCHEMA)  # the star exists: the faults below hit the batches' COMMITs, not prepare's
    # 604: the statement was canceled (a transient error); the COMMIT is the last statement of each batch's request.
    local_snowflake.inject(r"^COMMIT", action=action, times=2, errno=604)
    with SnowflakeSink(**snowflake_settings) as sink:
        loader = StarLoader(
            ORDERS_SCHEMA, sink, bootstrap_servers=local_broker.bootstrap_servers, topic=topic, group="lost",
            batch_rows=1_000, max_backoff=0.5, dlq_topic=None,
        )  # fmt: skip
        stats = loader.run(until_idle=2)
    assert stats.rejected == bad
    if action == "error":
        assert stats.facts_loaded == len(orders)
    else:  # a lost answer loses the batch's row counts: its redelivered messages are counted as loaded too
        assert len(orders) <= stats.facts_loaded <= stats.consumed - bad
        assert "its answer was lost: its messages are counted as loaded" in caplog.text
    committed_anyway = "stored offsets show the batch committed" in caplog.text
    written_again = "the batch did not commit; it is written again" in caplog.text
    assert (committed_anyway, written_again) == (action == "error_after", action == "error")
    assert_exact(snowflake_query(snowflake_settings), orders, bad)


def test_a_second_loader_on_one_duckdb_file_stops_at_once(local_broker, topic, tmp_path):
    produce_stream(local_broker.bootstrap_servers, topic, 100, seed=44, partitions=1)
    db = tmp_path / "one.duckdb"
    command = [
        sys.executable, "-m", "starload.cli", "load", "--bootstrap-servers", local_broker.bootstrap_servers,
        "--topic", topic, "--schema", "orders", "--duckdb-path", str(db),
    ]  # fmt: skip
    first = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        assert first.stderr is not None
        for line in first.stderr:
            if "assigned" in line:
                break
        threading.Thread(target=first.stderr.read, daemon=True).start()
        second = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    finally:
        first.send_signal(signal.SIGTERM)
        first.wait(timeout=60)
    assert second.returncode == 2
    [line] = second.stderr.strip().splitlines()
    assert line.startswith("starload: error: DuckDB file") and "is loaded by another process" in line
    assert f"PID {first.pid}" in line


def test_loaders_sharing_an_accumulating_snapshot_killed_and_replaced_build_the_oracles_rows(
    local_broker, snowflake_environment, snowflake_settings, spawn, tmp_path
):
    """The bookshop's orders and status events (two topics of three partitions) into one ``changes: latest`` fact, by two
    loaders in one group, one SIGKILLed and replaced: every row the oracle's, whichever loader wrote which of its events."""
    spec, count = tmp_path / "progress.yaml", 6_000
    expected = produce_progress(local_broker.bootstrap_servers, spec, count=count, seed=23, partitions=3)
    star = ("--spec", str(spec))
    loaders = [spawn(None, f"progress-{i}", star=star, group="progress") for i in range(2)]
    for loader in loaders:
        loader.wait_for("assigned")
    time.sleep(random.Random(9).uniform(0.5, 2.0))
    loaders.pop(0).kill()
    loaders.append(spawn(None, "progress-2", star=star, group="progress"))
    loaders[-1].wait_for("assigned")
    query = snowflake_query(snowflake_settings)
    finish_at(query, loaders, count)
    verify_on_snowflake(star)

    class Reader(SinkBehaviour):
        def query(self, sink, sql):
            return query(sql)

    assert Reader().progress(None) == expected
