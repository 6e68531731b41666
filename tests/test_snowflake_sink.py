"""The Snowflake sink through the real connector, against the local Snowflake endpoint (fakesnow)."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from decimal import Decimal
from itertools import islice

import orjson
import pytest
import snowflake.connector

from starload import ORDERS_GENERATOR, ORDERS_HISTORY_SCHEMA, ORDERS_SCHEMA, produce
from starload.exceptions import StarloadError, TerminalSinkError, TransientSinkError
from starload.mapping import Mapper, raw_batch
from starload.sinks.snowflake import SnowflakeSink, settings_from_environment
from starload.testing import Stager

NOW = "2024-06-01T12:00:00+00:00"


def orders(count: int, seed: int) -> list[dict]:
    return [e.value for e in islice(ORDERS_GENERATOR.stream(seed, now=NOW), count)]


def query(settings: dict, sql: str) -> list[tuple]:
    with snowflake.connector.connect(**settings, network_timeout=10) as con:
        return con.cursor().execute(sql).fetchall()


def check_star(settings: dict, expected: list[dict]) -> None:
    by_id = {o["order_id"]: o for o in expected}
    assert query(settings, "SELECT count(*) FROM FACT_ORDERS") == [(len(by_id),)]
    # The emulator returns SUM of NUMBER as float: read it as text.
    [(total,)] = query(settings, "SELECT CAST(sum(TOTAL_AMOUNT) AS VARCHAR) FROM FACT_ORDERS")
    assert Decimal(total) == sum(Decimal(o["price"]) * o["quantity"] for o in by_id.values())
    rows = query(
        settings,
        """SELECT f.ORDER_ID, c.CUSTOMER_ID, p.PRODUCT_ID, f.DATE_KEY, f.QUANTITY FROM FACT_ORDERS f
           JOIN DIM_CUSTOMER c ON c.CUSTOMER_KEY = f.CUSTOMER_KEY JOIN DIM_PRODUCT p ON p.PRODUCT_KEY = f.PRODUCT_KEY""",
    )
    assert {r[0]: tuple(r[1:]) for r in rows} == {
        i: (o["customer_id"], o["product_id"], int(o["order_timestamp"][:10].replace("-", "")), o["quantity"])
        for i, o in by_id.items()
    }
    for table, key in (("DIM_CUSTOMER", "CUSTOMER_ID"), ("DIM_PRODUCT", "PRODUCT_ID")):
        assert query(settings, f"SELECT count(*) - count(DISTINCT {key}) FROM {table}") == [(0,)]
    assert query(settings, "SELECT count(*) FROM FACT_ORDERS f WHERE NOT EXISTS (SELECT 1 FROM DIM_DATE d WHERE d.DATE_KEY = f.DATE_KEY)") == [(0,)]


def stage(values: list[bytes], start: int = 0):
    mapper = Mapper(ORDERS_SCHEMA)
    try:
        return mapper.stage(raw_batch(values, offsets=range(start, start + len(values))), topic="orders", group="g")
    finally:
        mapper.close()


def test_batches_load_exactly_once_with_constant_statements(snowflake_settings):
    data = orders(3_000, 21)
    values = [orjson.dumps(o) for o in data[:100]] + [b""] + [orjson.dumps(o) for o in data[100:]] + [b"{bad"]
    with SnowflakeSink(**snowflake_settings) as sink:
        sink.prepare(ORDERS_SCHEMA)
        small = sink.write(stage(values[:101]))
        large = sink.write(stage(values[101:], start=101))
        # PUT, COPY; then one request: BEGIN, lock, 2 per dimension, dates, facts, rejects, offsets (an UPDATE
        # and an INSERT), COMMIT (the staging table was made by prepare; an unfenced batch has no fence).
        assert small.statements == large.statements == 2 + 12
        assert (small.facts_inserted + large.facts_inserted, small.rejects + large.rejects) == (3_000, 2)
        replay = sink.write(stage(values))
        assert (replay.facts_inserted, replay.duplicates, replay.rejects) == (0, 3_000, 2)
        assert sink.stored_offsets("g", "orders") == {0: len(values)}
    check_star(snowflake_settings, data)
    rejects = query(snowflake_settings, "SELECT KAFKA_OFFSET, REASON, MESSAGE_VALUE IS NULL FROM STARLOAD_REJECTS ORDER BY 1")
    assert rejects == [(100, "empty message", False), (3001, "not valid JSON", False)]


def test_a_history_dimension_costs_two_statements_more_late_or_not(snowflake_settings):
    """docs/history.md's cost of history on Snowflake: 16 statements where the type-1 star's batch (above) runs 13 (and its rejects 1).

    The transaction is one request, which can ask nothing on the way: the facts are
    re-pointed and collapsed versions dropped in every batch (changing nothing unless late).
    """
    stream = ORDERS_GENERATOR.stream(22, now=NOW, customers=20, moves=4)
    data = [e.value for e in islice(stream, 1_200)]
    ordered, late = sorted(data[:900], key=lambda o: o["order_timestamp"]), data[900:]
    stager = Stager(ORDERS_HISTORY_SCHEMA)
    try:
        with SnowflakeSink(**snowflake_settings) as sink:
            sink.prepare(ORDERS_HISTORY_SCHEMA)
            sink.write(stager.batch(ordered[:300]))
            # PUT, COPY; BEGIN, lock; customer: log, UPDATE, INSERT, re-point, drop; product: UPDATE, INSERT;
            # dates, facts, offsets (2), COMMIT.
            assert [sink.write(stager.batch(ordered[n : n + 300], start=n)).statements for n in (300, 600)] == [16, 16]
            # Late for its members: the same statements.
            assert sink.write(stager.batch(late, start=900)).statements == 16
            assert sink.violations(ORDERS_HISTORY_SCHEMA) == []
    finally:
        stager.close()
    assert query(snowflake_settings, "SELECT count(*) FROM FACT_ORDERS") == [(1_200,)]


def test_load_through_the_cli(local_broker, topic, snowflake_environment, snowflake_settings):
    produce(local_broker.bootstrap_servers, topic, ORDERS_GENERATOR, 2_000, seed=8, options={"now": NOW})
    env = {**os.environ, **snowflake_environment}
    command = [
        sys.executable, "-m", "starload.cli", "load", "--bootstrap-servers", local_broker.bootstrap_servers,
        "--topic", topic, "--schema", "orders", "--group", "sf", "--sink", "snowflake",
        "--until-idle", "1.5", "--batch-rows", "800",
    ]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    summary = dict(line.split(": ", 1) for line in done.stdout.strip().splitlines())
    assert (summary["facts loaded"], summary["rejected"], summary["duplicates skipped"]) == ("2000", "0", "0")
    # PUT, COPY, conflict lookup; then one request: BEGIN, lock, fence, 2 per dimension, dates, facts, offsets (2), COMMIT.
    batches = int(summary["batches"])
    assert int(summary["statements"].split()[0]) == 15 * batches
    assert snowflake_environment["SNOWFLAKE_PASSWORD"] not in done.stdout + done.stderr
    check_star(snowflake_settings, orders(2_000, 8))
    # A restart resumes from the offsets committed with the data: nothing is loaded twice.
    again = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300, check=False)
    assert again.returncode == 0, again.stderr
    assert "consumed: 0" in again.stdout
    assert query(snowflake_settings, "SELECT count(*) FROM FACT_ORDERS") == [(2_000,)]


def test_unreachable_warehouse_is_transient_and_secret_free(caplog):
    caplog.set_level(logging.DEBUG)
    sink = SnowflakeSink(account="fakesnow", user="u", password="hunter2-secret", host="127.0.0.1", port=1,
                         protocol="http", login_timeout=3, network_timeout=3)
    with pytest.raises(TransientSinkError) as err:
        sink.prepare(ORDERS_SCHEMA)
    assert "hunter2-secret" not in str(err.value) and "hunter2-secret" not in repr(sink)
    assert "hunter2-secret" not in caplog.text


def test_bad_sql_is_terminal(snowflake_settings):
    with SnowflakeSink(**snowflake_settings) as sink:
        sink.prepare(ORDERS_SCHEMA)
        with pytest.raises(TerminalSinkError, match="Snowflake: ProgrammingError"):
            sink._guarded(sink._execute, "SELECT * FROM NO_SUCH_TABLE")


def test_missing_account_is_a_clear_error(monkeypatch):
    for name in list(os.environ):
        if name.startswith("SNOWFLAKE_"):
            monkeypatch.delenv(name)
    with pytest.raises(TerminalSinkError, match="SNOWFLAKE_ACCOUNT"):
        SnowflakeSink().prepare(ORDERS_SCHEMA)


def test_settings_from_environment():
    env = {"SNOWFLAKE_ACCOUNT": "acme", "SNOWFLAKE_USER": "loader", "SNOWFLAKE_PASSWORD": "",
           "SNOWFLAKE_PRIVATE_KEY_FILE": "/keys/rsa.p8", "SNOWFLAKE_PORT": "8080", "SNOWFLAKE_SCHEMA": "RAW"}
    assert settings_from_environment(env) == {
        "account": "acme", "user": "loader", "private_key_file": "/keys/rsa.p8", "port": 8080,
        "warehouse": "COMPUTE_WH", "database": "E_COMMERCE", "schema": "RAW",
    }


def test_ddl_needs_no_connection():
    done = subprocess.run([sys.executable, "-m", "starload.cli", "ddl", "--sink", "snowflake"],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert '"CUSTOMER_KEY" NUMBER(38, 0) IDENTITY(1, 1) NOT NULL' in done.stdout
    assert '"UNIT_PRICE" NUMBER(18, 2) NOT NULL' in done.stdout
    assert '"ORDER_TIMESTAMP" TIMESTAMP_TZ NOT NULL' in done.stdout


def test_every_wait_is_bounded():
    """Lock and statement timeouts for the session, and a bound on the connector's own retries of a request."""
    arguments = SnowflakeSink(account="acme", lock_timeout="30", statement_timeout=600).connection_arguments()
    assert arguments["session_parameters"]["LOCK_TIMEOUT"] == 30
    assert arguments["session_parameters"]["STATEMENT_TIMEOUT_IN_SECONDS"] == 600
    assert arguments["network_timeout"] == 660
    assert SnowflakeSink(account="acme", network_timeout="45").connection_arguments()["network_timeout"] == 45
    with pytest.raises(StarloadError, match="network_timeout must be a whole number"):
        SnowflakeSink(account="acme", network_timeout="soon")
