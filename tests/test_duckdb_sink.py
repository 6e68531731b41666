from __future__ import annotations

from decimal import Decimal

import attrs
import orjson
import pyarrow as pa
import pytest

from starload import ORDERS_SCHEMA, DuckDBSink, SinkError, TerminalSinkError
from starload.mapping import Mapper, raw_batch
from starload.sinks.sql import DUCKDB, StarSQL
from starload.spec import StarSchema
from starload.testing import Stager, sample_orders


@pytest.fixture
def mapper():
    m = Mapper(ORDERS_SCHEMA)
    yield m
    m.close()


@pytest.fixture
def sink(memory_sink):
    memory_sink.prepare(ORDERS_SCHEMA)
    return memory_sink


def write(sink, mapper, values, start=0, partition=0, group="g"):
    raw = raw_batch(values, partitions=[partition] * len(values), offsets=range(start, start + len(values)))
    return sink.write(mapper.stage(raw, topic="orders", group=group))


def test_write_builds_the_star(sink, mapper, orders):
    result = write(sink, mapper, [orjson.dumps(o) for o in orders])
    assert result.facts_inserted == len(orders) and result.duplicates == 0 and result.rejects == 0
    con = sink.connection
    assert con.execute("SELECT count(*) FROM FACT_ORDERS").fetchall() == [(len(orders),)]
    total = sum(Decimal(o["price"]) * o["quantity"] for o in orders)
    assert con.execute("SELECT CAST(sum(TOTAL_AMOUNT) AS VARCHAR) FROM FACT_ORDERS").fetchall() == [(str(total) + ".00",)]
    joined = con.execute(
        """SELECT f.ORDER_ID, c.CUSTOMER_ID, p.PRODUCT_ID, d.FULL_DATE FROM FACT_ORDERS f
           JOIN DIM_CUSTOMER c USING (CUSTOMER_KEY) JOIN DIM_PRODUCT p USING (PRODUCT_KEY) JOIN DIM_DATE d USING (DATE_KEY)"""
    ).fetchall()
    expected = {o["order_id"]: (o["customer_id"], o["product_id"], o["order_timestamp"][:10]) for o in orders}
    assert {r[0]: (r[1], r[2], r[3].isoformat()) for r in joined} == expected
    keys = con.execute("SELECT CUSTOMER_KEY FROM DIM_CUSTOMER ORDER BY 1").fetchall()
    assert [k for (k,) in keys] == list(range(1, len(keys) + 1))
    assert sink.stored_offsets("g", "orders") == {0: len(orders)}
    # BEGIN, lock, 2 per dimension, dates, any loaded?, facts, 2 for offsets (a new partition), COMMIT; no rejects
    assert result.statements == 12


def test_replay_changes_nothing(sink, mapper, orders):
    values = [orjson.dumps(o) for o in orders]
    write(sink, mapper, values)
    before = sink.connection.execute("SELECT * FROM FACT_ORDERS ORDER BY ORDER_ID").fetchall()
    again = write(sink, mapper, values)
    assert again.facts_inserted == 0 and again.duplicates == len(orders)
    assert sink.connection.execute("SELECT * FROM FACT_ORDERS ORDER BY ORDER_ID").fetchall() == before


def test_offsets_never_go_backwards_and_are_per_group(sink, mapper, orders):
    write(sink, mapper, [orjson.dumps(orders[0])], start=10)
    write(sink, mapper, [orjson.dumps(orders[1])], start=3)
    write(sink, mapper, [orjson.dumps(orders[2])], start=0, partition=1, group="other")
    assert sink.stored_offsets("g", "orders") == {0: 11}
    assert sink.stored_offsets("other", "orders") == {1: 1}
    assert sink.stored_offsets("g", "unknown") == {}


def test_rejects_are_recorded_once(sink, mapper):
    result = write(sink, mapper, [b"nope", b""])
    assert result.rejects == 2
    assert write(sink, mapper, [b"nope", b""]).rejects == 2
    rows = sink.connection.execute("SELECT KAFKA_OFFSET, MESSAGE_VALUE, REASON FROM STARLOAD_REJECTS ORDER BY 1").fetchall()
    assert rows == [(0, b"nope", "not valid JSON"), (1, b"", "empty message")]


def test_scd1_across_batches_follows_event_time(sink, mapper, orders):
    base = {**orders[0], "customer_id": "C77"}
    write(sink, mapper, [orjson.dumps({**base, "order_id": "a", "order_timestamp": "2024-01-02T00:00:00Z", "customer_name": "Two"})])
    write(sink, mapper, [orjson.dumps({**base, "order_id": "b", "order_timestamp": "2024-01-01T00:00:00Z", "customer_name": "One"})], start=1)
    write(sink, mapper, [orjson.dumps({**base, "order_id": "c", "order_timestamp": "2024-01-03T00:00:00Z", "customer_name": None})], start=2)
    rows = sink.connection.execute("SELECT CUSTOMER_KEY, CUSTOMER_NAME FROM DIM_CUSTOMER WHERE CUSTOMER_ID = 'C77'").fetchall()
    assert len(rows) == 1 and rows[0][1] == "Two"  # "One" came later but happened earlier
    keys = sink.connection.execute("SELECT DISTINCT CUSTOMER_KEY FROM FACT_ORDERS WHERE ORDER_ID IN ('a', 'b', 'c')").fetchall()
    assert keys == [(rows[0][0],)]


def test_failed_write_rolls_back_everything(sink, mapper, orders, monkeypatch):
    write(sink, mapper, [orjson.dumps(orders[0])])
    batch = mapper.stage(raw_batch([orjson.dumps(o) for o in orders[1:]], offsets=range(1, len(orders))), topic="orders", group="g")
    # The offsets are the last statement: dimensions and facts ran before it.
    monkeypatch.setattr(StarSQL, "update_offsets", lambda self, staged, fenced: "SELECT * FROM no_such_table")
    with pytest.raises(SinkError, match="no_such_table"):
        sink.write(batch)
    assert sink.connection.execute("SELECT count(*) FROM FACT_ORDERS").fetchall() == [(1,)]
    assert sink.connection.execute("SELECT count(*) FROM DIM_CUSTOMER").fetchall() == [(1,)]
    assert sink.stored_offsets("g", "orders") == {0: 1}


def test_prepare_is_idempotent_and_ddl_does_no_io(tmp_path):
    path = tmp_path / "x.duckdb"
    sink = DuckDBSink(path)
    sql = StarSQL(ORDERS_SCHEMA, DUCKDB)
    assert sink.ddl(ORDERS_SCHEMA) == sql.ddl() + sql.unknown_members()
    assert not path.exists()
    sink.prepare(ORDERS_SCHEMA)
    sink.prepare(ORDERS_SCHEMA)
    sink.close()
    assert path.exists()


def test_use_before_prepare_is_a_clear_error():
    with pytest.raises(SinkError, match="prepare"):
        DuckDBSink(":memory:").stored_offsets("g", "t")


def test_conflicts_across_batches_become_rejects(sink, mapper, orders):
    first = orjson.dumps(orders[0])
    changed = orjson.dumps({**orders[0], "quantity": orders[0]["quantity"] % 5 + 1})
    write(sink, mapper, [first])
    batch = mapper.stage(raw_batch([changed, first], offsets=[1, 2]), topic="orders", group="g")
    conflicts = sink.find_conflicts(batch)
    assert conflicts.to_pylist() == [{"KAFKA_TOPIC": "orders", "KAFKA_PARTITION": 0, "KAFKA_OFFSET": 1, "FIRST_PARTITION": 0, "FIRST_OFFSET": 0}]
    result = sink.write(batch.with_conflicts(conflicts))
    assert (result.facts_inserted, result.duplicates, result.rejects, result.conflicts) == (0, 1, 1, 1)
    [(offset, value, reason)] = sink.connection.execute("SELECT KAFKA_OFFSET, MESSAGE_VALUE, REASON FROM STARLOAD_REJECTS").fetchall()
    assert (offset, value) == (1, changed)
    assert reason == f"conflict: order_id {orders[0]['order_id']} was first seen at partition 0 offset 0 with different content"
    assert sink.connection.execute("SELECT QUANTITY FROM FACT_ORDERS").fetchall() == [(orders[0]["quantity"],)]


def test_memory_and_checkpoint_settings_reach_duckdb(tmp_path):
    defaults = DuckDBSink(tmp_path / "a.duckdb")
    chosen = DuckDBSink(tmp_path / "b.duckdb", memory_limit="300MB", checkpoint_threshold="8MB")
    settings = "SELECT current_setting('memory_limit'), current_setting('checkpoint_threshold')"
    with defaults, chosen:
        defaults.prepare(ORDERS_SCHEMA)
        chosen.prepare(ORDERS_SCHEMA)
        assert defaults.connection.execute(settings).fetchall() == [("488.2 MiB", "61.0 MiB")]
        assert chosen.connection.execute(settings).fetchall() == [("286.1 MiB", "7.6 MiB")]


def test_a_grain_hash_match_is_only_a_hint(sink, mapper, orders):
    """A new order whose GRAIN_HASH equals a loaded one (a collision) is still loaded."""
    write(sink, mapper, [orjson.dumps(orders[0])])
    [(loaded_hash,)] = sink.connection.execute("SELECT GRAIN_HASH FROM FACT_ORDERS").fetchall()
    batch = mapper.stage(raw_batch([orjson.dumps(orders[1])], offsets=[1]), topic="orders", group="g")
    collided = batch.facts["FACT_ORDERS"].set_column(
        batch.facts["FACT_ORDERS"].schema.get_field_index("GRAIN_HASH"), "GRAIN_HASH", pa.array([loaded_hash], pa.int64())
    )
    batch = attrs.evolve(batch, facts={"FACT_ORDERS": collided})
    assert batch.with_conflicts(sink.find_conflicts(batch)).conflicts == 0
    result = sink.write(batch)
    assert (result.facts_inserted, result.duplicates) == (1, 0)
    assert sink.connection.execute("SELECT count(*) FROM FACT_ORDERS").fetchall() == [(2,)]


def test_a_fact_table_from_an_earlier_version_is_a_clear_error(tmp_path):
    path = tmp_path / "old.duckdb"
    with DuckDBSink(path) as sink:
        sink.prepare(ORDERS_SCHEMA)
        sink.connection.execute("ALTER TABLE FACT_ORDERS DROP COLUMN GRAIN_HASH")
    with DuckDBSink(path) as sink, pytest.raises(TerminalSinkError, match=r"FACT_ORDERS.GRAIN_HASH: not in the warehouse, BIGINT NOT NULL in the spec \(cannot be migrated\)"):
        sink.prepare(ORDERS_SCHEMA)


def test_a_sink_that_lets_the_file_go_often_keeps_its_transactions_whole(tmp_path, orders):
    """prepare and migrate inspect the star inside their transaction: only the outermost call may let the file go."""
    path = tmp_path / "often.duckdb"
    with DuckDBSink(path, share_every="0.001") as sink:
        sink.prepare(ORDERS_SCHEMA)
        result = sink.write(Stager().batch(orders[:10]))
        assert result.facts_inserted == 10
        data = ORDERS_SCHEMA.to_dict()
        data["fact"]["columns"].append({"column": "NOTE", "source": "note"})
        grown = StarSchema.from_dict(data)
        sink.migrate(grown)
    with DuckDBSink(path) as sink:
        sink.verify(grown)
        assert sink.connection.execute('SELECT count(*), count("NOTE") FROM "FACT_ORDERS"').fetchall() == [(10, 0)]


@pytest.mark.parametrize("arrival", ["early first, one batch", "late first, one batch", "early first, two batches", "late first, two batches"])
def test_a_conflict_is_refused_as_a_fact_but_observed_by_its_dimensions(arrival):
    """Which of two messages of one order id comes first decides the fact row (the other is a conflict), never the customer."""
    [order] = sample_orders(1)
    early = {**order, "customer_name": "Early Name", "order_timestamp": "2024-03-01T10:00:00Z"}
    late = {**order, "customer_name": "Late Name", "order_timestamp": "2024-03-02T10:00:00Z"}
    first, second = (early, late) if arrival.startswith("early") else (late, early)
    batches = [[first, second]] if arrival.endswith("one batch") else [[first], [second]]
    stager, sink = Stager(), DuckDBSink(":memory:")
    try:
        sink.prepare(ORDERS_SCHEMA)
        start = 0
        for values in batches:
            batch = stager.batch(values, start=start)
            sink.write(batch.with_conflicts(sink.find_conflicts(batch)))
            start += len(values)
        con = sink.connection
        assert con.execute("SELECT CUSTOMER_NAME FROM DIM_CUSTOMER").fetchall() == [("Late Name",)]
        assert con.execute("SELECT count(*), min(KAFKA_OFFSET) FROM FACT_ORDERS").fetchall() == [(1, 0)]
        assert con.execute("SELECT KAFKA_OFFSET, REASON LIKE 'conflict:%' FROM STARLOAD_REJECTS").fetchall() == [(1, True)]
    finally:
        stager.close()
        sink.close()
