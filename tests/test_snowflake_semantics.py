"""Snowflake's own semantics: each rule of the strict local endpoint, and the sink keeping to it.

The endpoint (starload.snowflake_endpoint) refuses or does what Snowflake would where
fakesnow alone gives DuckDB's answer; every test here failed on the sink as it was
before it kept to these rules (see the module docstrings for the documentation pages).
"""

from __future__ import annotations

import threading
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
from starload.testing import Stager, as_instant, sample_orders


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
def locked_write(snowflake_settings, stager):
    """``write(holder_name)``: one order loaded, then a second written while a session that never ends
    (a killed loader's) holds a lock on DIM_CUSTOMER; returns the write's error, the sink and the batch.
    """
    [order] = sample_orders(1)
    with SnowflakeSink(**snowflake_settings, lock_timeout=1, stale_transaction=1) as sink:
        sink.prepare(ORDERS_SCHEMA)
        sink.write(stager.batch([order]))
        batch = stager.batch([{**order, "order_id": "second"}], start=1)

        def write(holder_name: str | None) -> tuple[TransientSinkError, SnowflakeSink, object]:
            dead = snowflake.connector.connect(**snowflake_settings, network_timeout=10).cursor()
            dead.execute(f"BEGIN NAME {holder_name}" if holder_name else "BEGIN")
            dead.execute('UPDATE "DIM_CUSTOMER" SET "CUSTOMER_NAME" = \'x\'')
            outcome: list[BaseException | None] = []
            writer = threading.Thread(target=lambda: outcome.append(_raised(sink.write, batch)))
            writer.start()
            writer.join(30)
            assert not writer.is_alive(), "the write waited for the lock without bound"
            [error] = outcome
            assert isinstance(error, TransientSinkError), error
            return error, sink, batch

        yield write


def test_a_lock_held_by_another_transaction_is_a_clear_transient_error(locked_write, reader):
    error, sink, batch = locked_write(None)
    transaction = str(error).split("held by transaction ")[1].split()[0]
    assert "DIM_CUSTOMER" in str(error) and f"SYSTEM$ABORT_TRANSACTION({transaction})" in str(error)
    # Not a starload transaction: left alone, however old; the operator frees it.
    assert any(str(r[0]) == transaction for r in reader.execute("SHOW TRANSACTIONS").fetchall())
    reader.execute(f"SELECT SYSTEM$ABORT_TRANSACTION({transaction})")
    assert sink.write(batch).facts_inserted == 1
    assert reader.execute('SELECT count(*) FROM "FACT_ORDERS"').fetchall() == [(2,)]


def test_a_stale_transaction_of_a_killed_loader_is_aborted_by_the_next(locked_write, reader):
    error, sink, batch = locked_write("STARLOAD")
    transaction = str(error).split("held by transaction ")[1].split()[0]
    # The killed loader's transaction was aborted (other tests' may still be open on this endpoint).
    assert all(str(r[0]) != transaction for r in reader.execute("SHOW TRANSACTIONS").fetchall())
    assert sink.write(batch).facts_inserted == 1
    assert reader.execute('SELECT "CUSTOMER_NAME" FROM "DIM_CUSTOMER"').fetchall() != [("x",)]


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
    arguments = SnowflakeSink(**snowflake_settings, lock_timeout="30").connection_arguments()
    assert arguments["paramstyle"] == "qmark"
    assert arguments["session_parameters"] | {} == {
        "TIMEZONE": "UTC", "LOCK_TIMEOUT": 30, "STATEMENT_TIMEOUT_IN_SECONDS": 900, "QUERY_TAG": "starload",
    }  # fmt: skip
    with pytest.raises(Exception, match="lock_timeout must be a whole number"):
        SnowflakeSink(lock_timeout="soon")


def test_money_survives_the_parquet_round_trip(sink, stager, reader):
    [order] = sample_orders(1)
    sink.write(stager.batch([{**order, "price": "12345678901234.99", "quantity": 3}]))
    [(price, total)] = reader.execute('SELECT CAST("UNIT_PRICE" AS VARCHAR), CAST("TOTAL_AMOUNT" AS VARCHAR) FROM "FACT_ORDERS"').fetchall()
    assert (Decimal(price), Decimal(total)) == (Decimal("12345678901234.99"), Decimal("37037036703704.97"))

