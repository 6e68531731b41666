"""``starload rebuild``: the star's tables dropped and its topics' stored offsets forgotten, so the next load builds it anew."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import duckdb
import pytest
from test_integration import run_cli

from starload import ORDERS_HISTORY_SCHEMA, ORDERS_SCHEMA
from starload.exceptions import TerminalSinkError
from starload.mapping import Mapper
from starload.sinks.snowflake import SnowflakeSink
from starload.testing import sample_orders, write_batches

ROOT = Path(__file__).resolve().parents[1]
SPEC = str(ROOT / "examples" / "orders_history.yaml")
NOW = "2024-06-01T12:00:00+00:00"
STAR_QUERY = """SELECT f.ORDER_ID, c.CUSTOMER_ID, c.CUSTOMER_REGION, c.VALID_FROM, p.PRODUCT_ID, f.TOTAL_AMOUNT, f.DATE_KEY
    FROM FACT_ORDERS f JOIN DIM_CUSTOMER c USING (CUSTOMER_KEY) JOIN DIM_PRODUCT p USING (PRODUCT_KEY) ORDER BY 1"""


def tables(db: Path) -> set[str]:
    with duckdb.connect(str(db), read_only=True) as con:
        return {name for (name,) in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}


def query(db: Path, sql: str) -> list[tuple]:
    with duckdb.connect(str(db), read_only=True) as con:
        return con.execute(sql).fetchall()


def test_rebuild_drops_the_star_and_forgets_its_offsets_and_the_next_load_builds_it_anew(local_broker, tmp_path):
    topic = f"rebuild-{uuid.uuid4().hex[:8]}"
    bootstrap = local_broker.bootstrap_servers
    produced = run_cli("produce", "--bootstrap-servers", bootstrap, "--topic", topic, "--count", "300", "--seed", "5",
                       "--option", f"now={NOW}", "--option", "moves=2")  # fmt: skip
    assert produced.returncode == 0, produced.stderr
    db = tmp_path / "star.duckdb"
    where = ("--spec", SPEC, "--topic", topic, "--duckdb-path", str(db))
    group = f"g-{topic}"  # a group of its own: the broker is shared with other tests

    def load() -> None:
        done = run_cli("load", "--bootstrap-servers", bootstrap, *where, "--group", group, "--until-idle", "2")
        assert done.returncode == 0, done.stderr

    load()
    star = query(db, STAR_QUERY)
    assert len(star) == 300
    star_tables = {*ORDERS_HISTORY_SCHEMA.tables}
    assert "STARLOAD_HISTORY_DIM_CUSTOMER" in star_tables and star_tables <= tables(db)

    dry = run_cli("rebuild", *where)
    assert dry.returncode == 0, dry.stderr
    lines = dry.stdout.splitlines()
    assert f"  forget the stored offsets of group {group!r} on topic {topic!r} (4 partitions): it reads the topic from its start again" in lines
    assert {f"  drop table {t}" for t in star_tables} <= set(lines) and "  drop sequence DIM_CUSTOMER_SEQ" in lines
    assert "  forget the spec recorded for star 'orders_history'" in lines
    assert lines[-1].startswith("dry run: nothing changed; add --execute")
    assert query(db, STAR_QUERY) == star  # nothing changed

    done = run_cli("rebuild", *where, "--execute")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == f"rebuilt: took {len(lines) - 1} steps; the next load builds star 'orders_history' from the start of {topic!r}"
    assert not star_tables & tables(db)
    assert query(db, f"SELECT count(*) FROM STARLOAD_OFFSETS WHERE TOPIC = '{topic}'") == [(0,)]
    again = run_cli("rebuild", *where)
    assert again.returncode == 0 and again.stdout.startswith("nothing to rebuild: ") and again.stdout.strip().endswith("holds nothing of star 'orders_history'")

    load()
    assert query(db, STAR_QUERY) == star  # the same star, built anew from the topic's start


def test_rebuild_is_refused_while_a_loader_loads_the_file(local_broker, tmp_path):
    topic = f"rebuild-busy-{uuid.uuid4().hex[:8]}"
    bootstrap = local_broker.bootstrap_servers
    assert run_cli("produce", "--bootstrap-servers", bootstrap, "--topic", topic, "--count", "50", "--seed", "6").returncode == 0
    db = tmp_path / "busy.duckdb"
    group = ("--group", f"g-{topic}")  # a group of its own: the broker is shared with other tests
    first = run_cli("load", "--bootstrap-servers", bootstrap, "--spec", SPEC, "--topic", topic, "--duckdb-path", str(db), *group, "--until-idle", "2")
    assert first.returncode == 0, first.stderr
    loader = subprocess.Popen(
        [sys.executable, "-m", "starload.cli", "load", "--bootstrap-servers", bootstrap, "--spec", SPEC, "--topic", topic, "--duckdb-path", str(db), *group],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        lock = Path(f"{db}.loader")
        while not (lock.exists() and lock.read_text().strip() == str(loader.pid)) and time.monotonic() < deadline:
            time.sleep(0.2)  # until the loader holds the file
        refused = run_cli("rebuild", "--spec", SPEC, "--topic", topic, "--duckdb-path", str(db), "--execute")
        assert refused.returncode != 0
        [line] = refused.stderr.strip().splitlines()
        assert f"is loaded by another process (PID {loader.pid}" in line
    finally:
        loader.send_signal(signal.SIGTERM)
        loader.wait(60)
    assert query(db, "SELECT count(*) FROM FACT_ORDERS") == [(50,)]  # nothing was dropped


def test_rebuild_on_snowflake_is_refused_while_a_loader_beats_and_then_drops_the_star(snowflake_settings):
    orders = [("orders", 0, n, o) for n, o in enumerate(sample_orders(40))]
    loading = SnowflakeSink(**snowflake_settings)
    loading.prepare(ORDERS_SCHEMA)
    write_batches(loading, Mapper(ORDERS_SCHEMA), orders, 20)  # a loader that has just written: its beat is fresh
    with SnowflakeSink(**snowflake_settings) as rebuilding:
        steps = [s.what for s in rebuilding.rebuilding(ORDERS_SCHEMA, ["orders"])]
        assert "drop table FACT_ORDERS" in steps and "forget the stored offsets of group 'g' on topic 'orders' (1 partitions): it reads the topic from its start again" in steps
        with pytest.raises(TerminalSinkError, match="a loader is running on the star"):
            rebuilding.rebuild(ORDERS_SCHEMA, ["orders"])
        loading.close()  # a loader that stops forgets its beat
        rebuilding.rebuild(ORDERS_SCHEMA, ["orders"])
        assert rebuilding.rebuilding(ORDERS_SCHEMA, ["orders"]) == []
        found = rebuilding.inspect(ORDERS_SCHEMA)
    assert found.tables == {} and found.recorded is None
