"""Snowflake's own semantics: each rule of the strict local endpoint, and the sink keeping to it.

The endpoint (starload.snowflake_endpoint) refuses or does what Snowflake would where
fakesnow alone gives DuckDB's answer; every test here failed on the sink as it was
before it kept to these rules (see the module docstrings for the documentation pages).
"""

from __future__ import annotations

import logging
import re
import threading
import time
from datetime import UTC, datetime
from decimal import Decimal

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import snowflake.connector

from starload import ORDERS_SCHEMA
from starload.exceptions import TransientSinkError
from starload.sinks.base import natural_key_column
from starload.sinks.snowflake import SnowflakeSink
from starload.spec import Dimension, Fact, Field, StarSchema, String, Timestamp
from starload.testing import LocalSnowflake, Stager, as_instant, sample_orders


@pytest.fixture
def stager():
    stager = Stager()
    yield stager
    stager.close()


@pytest.fixture
def reader(snowflake_settings):
    with snowflake.connector.connect(**snowflake_settings, network_timeout=10) as con:
        yield con.cursor()


@pytest.fixture
def sink(snowflake_settings):
    with SnowflakeSink(**snowflake_settings) as sink:
        sink.prepare(ORDERS_SCHEMA)
        yield sink


# ---- the endpoint's rules, on the connector alone ------------------------------------------------


def copy_parquet(cursor, tmp_path, table: pa.Table, file_format: str, *, match_by_name: bool = False) -> None:
    """CREATE a table for ``table``'s columns, PUT it as Parquet and COPY it in."""
    types = {pa.string(): "VARCHAR", pa.binary(): "BINARY", pa.timestamp("us", tz="UTC"): "TIMESTAMP_TZ"}
    cursor.execute(f"CREATE OR REPLACE TABLE T ({', '.join(f'{f.name} {types[f.type]}' for f in table.schema)})")
    pq.write_table(table, tmp_path / "t.parquet")
    cursor.execute(f"PUT 'file://{tmp_path / 't.parquet'}' @%T AUTO_COMPRESS = FALSE")
    if match_by_name:
        cursor.execute(f"COPY INTO T FROM @%T FILE_FORMAT = ({file_format}) MATCH_BY_COLUMN_NAME = CASE_INSENSITIVE")
    else:
        selects = ", ".join(f"$1:{f.name}::{types[f.type]}" for f in table.schema)
        cursor.execute(f"COPY INTO T FROM (SELECT {selects} FROM @%T) FILE_FORMAT = ({file_format})")


def test_the_endpoint_refuses_parquet_timestamps_without_logical_types(reader, tmp_path):
    table = pa.table({"TS": pa.array([datetime(2024, 1, 1, tzinfo=UTC)], pa.timestamp("us", tz="UTC"))})
    with pytest.raises(snowflake.connector.ProgrammingError, match="USE_LOGICAL_TYPE"):
        copy_parquet(reader, tmp_path, table, "TYPE = PARQUET BINARY_AS_TEXT = FALSE")
    copy_parquet(reader, tmp_path, table, "TYPE = PARQUET USE_LOGICAL_TYPE = TRUE")
    assert [as_instant(at) for (at,) in reader.execute("SELECT TS FROM T").fetchall()] == [datetime(2024, 1, 1, tzinfo=UTC)]


def test_the_endpoint_reads_parquet_binary_as_text_by_default(reader, tmp_path):
    table = pa.table({"B": pa.array([b"\xff\xfe"], pa.binary())})
    with pytest.raises(snowflake.connector.ProgrammingError, match="Invalid UTF8"):
        copy_parquet(reader, tmp_path, table, "TYPE = PARQUET USE_LOGICAL_TYPE = TRUE")
    copy_parquet(reader, tmp_path, table, "TYPE = PARQUET USE_LOGICAL_TYPE = TRUE BINARY_AS_TEXT = FALSE")
    assert reader.execute("SELECT B FROM T").fetchall() == [(b"\xff\xfe",)]


def test_the_endpoint_refuses_empty_values_matched_by_column_name(reader, tmp_path):
    table = pa.table({"S": pa.array(["", "x"])})
    with pytest.raises(snowflake.connector.ProgrammingError, match="empty value"):
        copy_parquet(reader, tmp_path, table, "TYPE = PARQUET USE_LOGICAL_TYPE = TRUE", match_by_name=True)


def test_the_endpoint_answers_greatest_and_rowcount_as_snowflake(reader):
    assert reader.execute("SELECT GREATEST(1, NULL), GREATEST_IGNORE_NULLS(1, NULL)").fetchall() == [(None, 1)]
    assert reader.execute("SELECT count(*) FROM (SELECT 1 UNION ALL SELECT 2)").rowcount == 1


def test_ddl_commits_the_open_transaction(snowflake_settings, reader):
    reader.execute("CREATE TABLE K (N NUMBER)")
    reader.execute("BEGIN")
    reader.execute("INSERT INTO K VALUES (1)")
    reader.execute("CREATE TABLE K2 (N NUMBER)")
    reader.execute("ROLLBACK")  # nothing left to roll back: the CREATE committed the insert
    assert reader.execute("SELECT N FROM K").fetchall() == [(1,)]



def test_a_multi_statement_request_runs_its_statements_in_turn_one_answer_each(snowflake_settings, reader):
    reader.execute("CREATE TABLE M (N NUMBER, S VARCHAR)")
    reader.execute("BEGIN NAME STARLOAD_M; INSERT INTO M VALUES (1, 'a;b'), (2, 'c'); UPDATE M SET N = 3 WHERE N = 1; COMMIT", num_statements=4)
    counts = [reader.rowcount]
    while reader.nextset():
        counts.append(reader.rowcount)
    assert counts[1:3] == [2, 1]  # each statement's own answer: rows inserted, rows updated
    assert reader.execute("SELECT N, S FROM M ORDER BY N").fetchall() == [(2, "c"), (3, "a;b")]
    assert not open_transactions(reader)
    with pytest.raises(snowflake.connector.errors.ProgrammingError, match="did not match the desired statement count 3"):
        reader.execute("SELECT 1; SELECT 2", num_statements=3)
    with (
        snowflake.connector.connect(**snowflake_settings, paramstyle="qmark") as binding,
        pytest.raises(snowflake.connector.errors.ProgrammingError, match="Bind variables are not supported"),
    ):
        binding.cursor().execute("SELECT ?; SELECT 2", [1], num_statements=2)


def test_a_failed_statement_ends_its_multi_statement_request_and_its_transaction_stays_open(snowflake_settings, reader):
    reader.execute("CREATE TABLE M2 (N NUMBER)")
    reader.execute("INSERT INTO M2 VALUES (1)")
    with pytest.raises(snowflake.connector.errors.ProgrammingError, match="NOWHERE"):
        reader.execute("BEGIN; UPDATE M2 SET N = 2; SELECT * FROM NOWHERE; UPDATE M2 SET N = 3; COMMIT", num_statements=5)
    with snowflake.connector.connect(**snowflake_settings, session_parameters={"LOCK_TIMEOUT": 1}) as other:
        assert len(open_transactions(other.cursor())) == 1  # neither the last UPDATE nor the COMMIT ran
        with pytest.raises(snowflake.connector.errors.ProgrammingError, match="locked table 'M2'"):
            other.cursor().execute("UPDATE M2 SET N = 4")  # the open transaction holds M2's lock
    reader.execute("ROLLBACK")  # (DuckDB, under the endpoint, refuses anything else in a failed transaction)
    assert reader.execute("SELECT N FROM M2").fetchall() == [(1,)]


def test_a_table_is_never_seen_without_its_text_lengths(snowflake_settings, reader):
    """A loader checking the star while another creates it sees a VARCHAR(64) as VARCHAR(64), never unsized."""
    made = threading.Event()
    unsized: list[tuple] = []

    def create() -> None:
        with snowflake.connector.connect(**snowflake_settings, network_timeout=30) as con:
            for i in range(40):
                con.cursor().execute(f'CREATE TABLE IF NOT EXISTS "T{i}" ("ID" VARCHAR(64) NOT NULL)')
        made.set()

    creator = threading.Thread(target=create)
    creator.start()
    reads = 0
    while not made.is_set():
        rows = reader.execute(
            "SELECT TABLE_NAME, CHARACTER_MAXIMUM_LENGTH FROM INFORMATION_SCHEMA.COLUMNS WHERE TABLE_SCHEMA = CURRENT_SCHEMA()"
        ).fetchall()
        unsized += [row for row in rows if row[1] != 64]
        reads += 1
    creator.join()
    assert reads > 5
    assert unsized == []

# ---- the sink keeping to them --------------------------------------------------------------------


def test_timestamps_and_dates_are_utc_instants(sink, stager, reader):
    [order] = sample_orders(1)
    sink.write(stager.batch([{**order, "order_id": "east", "order_timestamp": "2024-02-29T23:30:00-05:00"}]))
    [(at, key)] = reader.execute('SELECT "ORDER_TIMESTAMP", "DATE_KEY" FROM "FACT_ORDERS"').fetchall()
    assert (as_instant(at), key) == (datetime(2024, 3, 1, 4, 30, tzinfo=UTC), 20240301)
    [(last_event,)] = reader.execute('SELECT "LAST_EVENT_AT" FROM "DIM_CUSTOMER"').fetchall()
    assert as_instant(last_event) == datetime(2024, 3, 1, 4, 30, tzinfo=UTC)


def test_rejects_keep_their_bytes_even_when_not_utf8(sink, stager, reader):
    result = sink.write(stager.batch([b"\xff\xfe\x00 not text", b"{bad"], keys=[b"\x80", None]))
    assert result.rejects == 2
    rows = reader.execute('SELECT "MESSAGE_KEY", "MESSAGE_VALUE" FROM "STARLOAD_REJECTS" ORDER BY "KAFKA_OFFSET"').fetchall()
    assert [(k and bytes(k), bytes(v)) for k, v in rows] == [(b"\x80", b"\xff\xfe\x00 not text"), (None, b"{bad")]


def test_an_empty_string_is_data(sink, stager, reader):
    [order] = sample_orders(1)
    result = sink.write(stager.batch([{**order, "customer_name": "", "shipping_region": ""}]))
    assert result.facts_inserted == 1
    assert reader.execute('SELECT "CUSTOMER_NAME" FROM "DIM_CUSTOMER"').fetchall() == [("",)]
    assert reader.execute('SELECT "SHIPPING_REGION" FROM "FACT_ORDERS"').fetchall() == [("",)]


def test_a_member_without_last_event_at_gets_one(sink, stager, reader):
    # A member a DBA (or another tool) added without LAST_EVENT_AT: GREATEST would keep it NULL.
    [order] = sample_orders(1)
    reader.execute('INSERT INTO "DIM_CUSTOMER" ("CUSTOMER_ID", "CUSTOMER_NAME") VALUES (%s, %s)', [order["customer_id"], "Old"])
    sink.write(stager.batch([order]))
    rows = reader.execute('SELECT "CUSTOMER_NAME", "LAST_EVENT_AT" IS NULL FROM "DIM_CUSTOMER"').fetchall()
    assert rows == [(order["customer_name"], False)]


def test_a_lost_staged_file_fails_the_batch_instead_of_skipping_it(local_snowflake, sink, stager, reader):
    orders = sample_orders(20)
    sink.write(stager.batch(orders[:10]))
    batch = stager.batch(orders[10:], start=10)
    local_snowflake.inject(r"^COPY INTO", action="lose_file")
    with pytest.raises(TransientSinkError, match="COPY"):
        sink.write(batch)
    assert sink.stored_offsets("g", "orders") == {0: 10}
    assert sink.write(batch).facts_inserted == 10
    assert reader.execute('SELECT count(*) FROM "FACT_ORDERS"').fetchall() == [(20,)]


def test_a_failed_rollback_never_lets_a_later_statement_commit_half_a_batch(local_snowflake, sink, stager, reader):
    orders = sample_orders(20)
    sink.write(stager.batch(orders[:10]))
    batch = stager.batch(orders[10:], start=10)
    local_snowflake.inject(r'^UPDATE "STARLOAD_OFFSETS"', errno=630, message="statement timeout (injected)")
    local_snowflake.inject(r"^ROLLBACK", message="rollback failed (injected)")
    with pytest.raises(TransientSinkError):
        sink.write(batch)
    # The half-done transaction was dropped with its session, not committed by the next DDL.
    assert reader.execute('SELECT count(*) FROM "FACT_ORDERS"').fetchall() == [(10,)]
    result = sink.write(batch)
    assert (result.facts_inserted, result.duplicates) == (10, 0)
    assert sink.stored_offsets("g", "orders") == {0: 20}


@pytest.fixture
def holder(snowflake_settings):
    """``hold(name)``: a session begins a transaction (named ``name``), takes the star's lock and changes a
    customer, and never ends it (a killed loader's, or another program's); returns the transaction's id.
    """
    sessions = []

    def hold(name: str | None) -> int:
        con = snowflake.connector.connect(**snowflake_settings, network_timeout=10)
        sessions.append(con)
        cursor = con.cursor()
        before = {r[0] for r in cursor.execute("SHOW TRANSACTIONS").fetchall()}
        cursor.execute(f"BEGIN NAME {name}" if name else "BEGIN")
        cursor.execute("UPDATE \"STARLOAD_LOCK\" SET \"LOCKED_BY\" = 'elsewhere'")
        cursor.execute("UPDATE \"DIM_CUSTOMER\" SET \"CUSTOMER_NAME\" = 'x'")
        [transaction] = {r[0] for r in cursor.execute("SHOW TRANSACTIONS").fetchall()} - before
        return int(transaction)

    yield hold
    for con in sessions:
        con.close()


def open_transactions(reader) -> set[int]:
    return {int(r[0]) for r in reader.execute("SHOW TRANSACTIONS").fetchall()}


@pytest.mark.parametrize("name", ["STARLOAD_DEADBEEFDEADBEEF", "STARLOAD"])
def test_a_killed_loaders_transaction_is_aborted_by_the_next_write(name, snowflake_settings, stager, holder, reader, caplog):
    """No beat of its loader (``STARLOAD``: a loader of a version before heartbeats): the next writer aborts it."""
    caplog.set_level(logging.WARNING)
    [order] = sample_orders(1)
    with SnowflakeSink(**snowflake_settings, lock_timeout=1) as sink:
        sink.prepare(ORDERS_SCHEMA)
        sink.write(stager.batch([order]))
        transaction = holder(name)
        started = time.monotonic()
        assert sink.write(stager.batch([{**order, "order_id": "second"}], start=1)).facts_inserted == 1
    assert time.monotonic() - started < 10
    assert transaction not in open_transactions(reader)
    assert f"aborted transaction {transaction} ({name})" in caplog.text
    assert reader.execute('SELECT "CUSTOMER_NAME" FROM "DIM_CUSTOMER"').fetchall() != [("x",)]
    assert reader.execute('SELECT count(*) FROM "FACT_ORDERS"').fetchall() == [(2,)]


def test_a_loader_whose_last_beat_is_old_is_taken_for_dead(snowflake_settings, stager, holder, reader, caplog):
    caplog.set_level(logging.WARNING)
    [order] = sample_orders(1)
    with SnowflakeSink(**snowflake_settings, lock_timeout=1) as sink:
        sink.prepare(ORDERS_SCHEMA)
        sink.write(stager.batch([order]))  # made STARLOAD_LOADERS
        reader.execute(
            "INSERT INTO \"STARLOAD_LOADERS\" SELECT 'DEADBEEFDEADBEEF', 'gone-host:4242', "
            "DATEADD(second, -60, CURRENT_TIMESTAMP)"
        )
        transaction = holder("STARLOAD_DEADBEEFDEADBEEF")
        assert sink.write(stager.batch([{**order, "order_id": "second"}], start=1)).facts_inserted == 1
    assert transaction not in open_transactions(reader)
    assert re.search(r"its loader gone-host:4242 last beat 6\d s ago \(dead_after 20 s\)", caplog.text)
    assert reader.execute("SELECT count(*) FROM \"STARLOAD_LOADERS\" WHERE LOADER = 'DEADBEEFDEADBEEF'").fetchall() == [(0,)]


def test_a_holder_that_is_not_a_loader_is_waited_for_never_aborted(snowflake_settings, stager, holder, reader, caplog):
    """The writer waits (the wait shows in ``sink.waits``) until the holder is freed from outside; no backoff."""
    caplog.set_level(logging.WARNING)
    [order] = sample_orders(1)
    with SnowflakeSink(**snowflake_settings, lock_timeout=1) as sink:
        sink.prepare(ORDERS_SCHEMA)
        sink.write(stager.batch([order]))
        transaction = holder(None)
        batch = stager.batch([{**order, "order_id": "second"}], start=1)
        outcome: list[BaseException | None] = []
        results = []
        writer = threading.Thread(target=lambda: outcome.append(_raised(lambda: results.append(sink.write(batch)))))
        asked = time.monotonic()
        writer.start()
        deadline = time.monotonic() + 10
        while (wait := sink.waits.current(at_least=0)) is None or str(transaction) not in wait.what:
            assert writer.is_alive() and time.monotonic() < deadline, (outcome, wait)
            time.sleep(0.05)
        assert wait.what == f"the star's lock, held by transaction {transaction} (unnamed), not a starload loader's"
        seen = time.monotonic()  # waiting for the lock from now on (what came before, staging and the lookup, is not)
        time.sleep(3)  # three lock waits more: still waiting, the holder left alone
        assert writer.is_alive() and transaction in open_transactions(reader)
        reader.execute(f"SELECT SYSTEM$ABORT_TRANSACTION({transaction})")
        freed = time.monotonic()
        writer.join(30)
        assert outcome == [None]
        assert time.monotonic() - freed < 3  # tried again at once, not after a backoff
        assert sink.waits.current(at_least=0) is None
        # The write reports its wait for the star's lock (its tries that failed on a lock wait, and the pauses), and the
        # request that took it as held (its own wait, up to a lock_timeout of 1 s, is inside it, plus its start).
        [result] = results
        assert freed - seen - 1.5 <= result.lock_waited <= time.monotonic() - asked
        assert 0 < result.lock_held < 1.5 + 1
    assert "aborted transaction" not in caplog.text
    assert f"SELECT SYSTEM$ABORT_TRANSACTION({transaction}) frees it" in caplog.text
    assert reader.execute('SELECT count(*) FROM "FACT_ORDERS"').fetchall() == [(2,)]


def test_a_full_lock_queue_fails_a_statement_at_once_and_the_writer_tries_again(snowflake_settings, stager, holder, reader):
    """Snowflake lets 20 statements wait for one table's lock; the 21st fails at once (000625). A writer tries again."""
    [order] = sample_orders(1)
    with SnowflakeSink(**snowflake_settings, lock_timeout=30) as sink:
        sink.prepare(ORDERS_SCHEMA)
        sink.write(stager.batch([order]))
        transaction = holder(None)
        waiting = [
            snowflake.connector.connect(**snowflake_settings, session_parameters={"LOCK_TIMEOUT": 60}, network_timeout=90)
            for _ in range(20)
        ]
        waits = [
            threading.Thread(target=con.cursor().execute, args=("UPDATE \"STARLOAD_LOCK\" SET \"LOCKED_AT\" = CURRENT_TIMESTAMP",))
            for con in waiting
        ]
        try:
            for wait in waits:
                wait.start()
            time.sleep(2)  # all 20 wait now
            started = time.monotonic()
            with pytest.raises(snowflake.connector.errors.ProgrammingError, match="exceeds the 20 statements limit") as full:
                reader.execute("UPDATE \"STARLOAD_LOCK\" SET \"LOCKED_AT\" = CURRENT_TIMESTAMP")
            assert full.value.errno == 625 and time.monotonic() - started < 2
            assert f"locked table 'STARLOAD_LOCK' in transaction {transaction}" in str(full.value)
            results = []
            writer = threading.Thread(target=lambda: results.append(sink.write(stager.batch([{**order, "order_id": "2"}], start=1))))
            writer.start()
            time.sleep(2.5)  # its lock statement found the queue full, and again a second later
            assert writer.is_alive()
            reader.execute(f"SELECT SYSTEM$ABORT_TRANSACTION({transaction})")
            for wait in waits:
                wait.join(30)
            writer.join(30)
        finally:
            for con in waiting:
                con.close()
        [result] = results
        assert result.facts_inserted == 1 and result.lock_waited >= 2
    assert reader.execute('SELECT count(*) FROM "FACT_ORDERS"').fetchall() == [(2,)]


def test_the_star_lock_is_held_for_one_request_never_across_round_trips(stager):
    """A batch's transaction, BEGIN to COMMIT, is one request: its session sends no request while it holds the star's
    lock (a transaction sent a statement at a time sent about ten), and a fenced batch's offsets still move.

    Counted by the endpoint, not timed: a bound on the milliseconds held failed once on a busy machine.
    """
    orders = sample_orders(30)
    with LocalSnowflake() as endpoint:
        settings = endpoint.fresh_schema("held")
        with SnowflakeSink(**settings) as sink:
            sink.prepare(ORDERS_SCHEMA)
            endpoint.reset()
            stored: dict[int, int | None] = {0: None}
            for start in (0, 10, 20):
                batch = stager.batch(orders[start : start + 10], start=start).fenced({stager.topic: stored})
                result = sink.write(batch)
                assert (result.facts_inserted, result.dimension_rows_inserted > 0) == (10, True)
                stored = {0: start + 10}
            assert sink.stored_offsets(stager.group, stager.topic) == {0: 30}
        stats = endpoint.stats()
    assert stats["multi"] == 3
    assert stats.get("sent_holding:STARLOAD_LOCK", 0) == 0, stats


def test_a_stopping_loader_gives_up_a_wait_that_has_no_end_of_its_own(snowflake_settings, stager, holder, reader):
    """SIGTERM (StarLoader.stop sets ``waits.stopping``) ends a wait for another program's lock within a lock wait."""
    [order] = sample_orders(1)
    with SnowflakeSink(**snowflake_settings, lock_timeout=1) as sink:
        sink.prepare(ORDERS_SCHEMA)
        sink.write(stager.batch([order]))
        transaction = holder(None)
        outcome: list[BaseException | None] = []
        writer = threading.Thread(target=lambda: outcome.append(_raised(sink.write, stager.batch([{**order, "order_id": "2"}], start=1))))
        writer.start()
        time.sleep(2.5)
        assert writer.is_alive()
        sink.waits.stopping.set()
        stopped = time.monotonic()
        writer.join(30)
        assert time.monotonic() - stopped < 3
        [error] = outcome
        assert isinstance(error, TransientSinkError) and "stopped while waiting for the star's lock" in str(error), error
        assert f"held by transaction {transaction}" in str(error)
        assert transaction in open_transactions(reader)  # left alone
    assert reader.execute('SELECT count(*) FROM "FACT_ORDERS"').fetchall() == [(1,)]


def test_prepare_aborts_a_killed_loaders_transaction_too(snowflake_settings, holder, reader, caplog):
    caplog.set_level(logging.WARNING)
    with SnowflakeSink(**snowflake_settings) as sink:
        sink.prepare(ORDERS_SCHEMA)
    reader.execute('DELETE FROM "STARLOAD_STARS"')  # unrecorded: the next prepare records it, under the lock
    transaction = holder("STARLOAD_DEADBEEFDEADBEEF")
    with SnowflakeSink(**snowflake_settings, lock_timeout=1) as sink:
        sink.prepare(ORDERS_SCHEMA)
    assert f"aborted transaction {transaction}" in caplog.text
    assert reader.execute('SELECT "STAR" FROM "STARLOAD_STARS"').fetchall() == [(ORDERS_SCHEMA.name,)]


def test_a_slow_loader_keeps_beating_and_is_never_aborted(local_snowflake, snowflake_settings, stager, reader, caplog):
    """One loader's fact insert is held longer than dead_after + lock_timeout; another waits for it, then writes."""
    caplog.set_level(logging.WARNING)
    orders = sample_orders(2)
    fast = {"lock_timeout": 1, "heartbeat": 0.5, "dead_after": 2}
    with SnowflakeSink(**snowflake_settings, **fast) as slow, SnowflakeSink(**snowflake_settings, **fast) as other:
        slow.prepare(ORDERS_SCHEMA)
        other.prepare(ORDERS_SCHEMA)
        local_snowflake.inject(r'^INSERT INTO "FACT_ORDERS"', action="delay", seconds=5)
        held = local_snowflake.stats().get("held", 0)
        outcome: list[BaseException | None] = []
        writer = threading.Thread(target=lambda: outcome.append(_raised(slow.write, stager.batch(orders[:1]))))
        writer.start()
        while local_snowflake.stats().get("held", 0) == held:
            time.sleep(0.05)
        other_stager = Stager(topic="other")
        try:
            asked = time.monotonic()
            assert other.write(other_stager.batch(orders[1:])).facts_inserted == 1
            assert time.monotonic() - asked > 3  # it waited for the slow one, past dead_after + lock_timeout
        finally:
            other_stager.close()
        writer.join(30)
        assert outcome == [None]
    assert "aborted" not in caplog.text
    assert reader.execute('SELECT count(*) FROM "FACT_ORDERS"').fetchall() == [(2,)]


def _raised(fn, *args) -> BaseException | None:
    try:
        fn(*args)
    except BaseException as exc:  # noqa: BLE001 - handed to the test thread
        return exc
    return None


def test_long_spec_names_stay_within_snowflakes_identifier_limit(snowflake_settings, reader):
    table, column = "D" * 128, "K" * 128
    schema = StarSchema(
        name="long",
        dimensions=[Dimension("thing", table, "THING_KEY", [Field(column, "thing")], [])],
        date_dimension=None,
        fact=Fact(
            table="FACT_LONG",
            grain=[Field("EVENT_ID", "id", String(), required=True)],
            event_time=Field("AT", "at", Timestamp(), required=True),
            dimensions=["thing"],
        ),
    )
    assert len(natural_key_column(table, column)) <= 255
    stager = Stager(schema, topic="long")
    try:
        with SnowflakeSink(**snowflake_settings) as sink:
            sink.prepare(schema)
            batch = stager.batch([{"id": "e1", "at": "2024-01-01T00:00:00Z", "thing": "t1"}])
            assert sink.write(batch).facts_inserted == 1
    finally:
        stager.close()
    assert reader.execute(f'SELECT "{column}" FROM "{table}"').fetchall() == [("t1",)]


def test_the_session_is_utc_with_bounded_waits_and_server_side_binding(snowflake_settings):
    assert SnowflakeSink(**snowflake_settings).connection_arguments()["session_parameters"]["LOCK_TIMEOUT"] == 10
    arguments = SnowflakeSink(**snowflake_settings, lock_timeout="30").connection_arguments()
    assert arguments["paramstyle"] == "qmark"
    assert arguments["session_parameters"] | {} == {
        "TIMEZONE": "UTC", "LOCK_TIMEOUT": 30, "STATEMENT_TIMEOUT_IN_SECONDS": 900, "QUERY_TAG": "starload",
    }  # fmt: skip
    with pytest.raises(Exception, match="lock_timeout must be a whole number"):
        SnowflakeSink(lock_timeout="soon")
    with pytest.raises(Exception, match="dead_after must be a number of seconds, at least 10"):
        SnowflakeSink(heartbeat=5, dead_after=6)


def test_money_survives_the_parquet_round_trip(sink, stager, reader):
    [order] = sample_orders(1)
    sink.write(stager.batch([{**order, "price": "12345678901234.99", "quantity": 3}]))
    [(price, total)] = reader.execute('SELECT CAST("UNIT_PRICE" AS VARCHAR), CAST("TOTAL_AMOUNT" AS VARCHAR) FROM "FACT_ORDERS"').fetchall()
    assert (Decimal(price), Decimal(total)) == (Decimal("12345678901234.99"), Decimal("37037036703704.97"))



def test_the_endpoint_counts_the_time_it_took_to_answer_without_the_latency_it_holds():
    """``served_ms`` (benchmarks/scale_out.py's "ms a request") leaves out the round trip the endpoint holds each request."""
    with LocalSnowflake(latency_ms=500) as endpoint:
        settings = endpoint.fresh_schema("served")
        with endpoint.connect(settings) as con:
            endpoint.reset()
            began = time.monotonic()
            for _ in range(3):
                con.cursor().execute("SELECT 1").fetchall()
            elapsed = time.monotonic() - began
        stats = endpoint.stats()
    assert stats["queries"] == 3 and elapsed >= 1.5
    assert 0 < stats["served_ms"] < 1500, stats
