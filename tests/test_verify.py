"""``starload verify``: the star's invariants in the warehouse, exit 1 listing each violation (0 when sound)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from starload import ORDERS_HISTORY_SCHEMA, ORDERS_SCHEMA, DuckDBSink
from starload.sinks.snowflake import SnowflakeSink
from starload.testing import Stager, sample_orders

HISTORY = str(Path(__file__).resolve().parents[1] / "examples" / "orders_history.yaml")


def verify(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "starload.cli", "verify", *args], capture_output=True, text=True, timeout=120, check=False)


def loaded(sink, schema=ORDERS_HISTORY_SCHEMA):
    sink.prepare(schema)
    stager = Stager(schema)
    orders = sample_orders(60)
    for n, order in enumerate(orders):  # customers move: C1 lives in three regions over the stream
        if order["customer_id"] == "C1":
            order["customer_region"] = ("North", "South", "East")[n * 3 // len(orders)]
    sink.write(stager.batch(orders))
    stager.close()
    return sink


BREAKAGES = [
    ("UPDATE DIM_CUSTOMER SET VALID_TO = NULL WHERE CUSTOMER_ID = 'C1'",
     ["DIM_CUSTOMER: versions of a member that overlap, leave a gap or are empty", "DIM_CUSTOMER: members without exactly one current version"]),
    ("UPDATE DIM_CUSTOMER SET IS_CURRENT = NOT IS_CURRENT WHERE CUSTOMER_ID = 'C1'", ["DIM_CUSTOMER: members without exactly one current version"]),
    ("UPDATE FACT_ORDERS SET CUSTOMER_KEY = 999", ["FACT_ORDERS.CUSTOMER_KEY: facts whose key is no member of DIM_CUSTOMER"]),
    ("UPDATE FACT_ORDERS SET ORDER_TIMESTAMP = ORDER_TIMESTAMP - INTERVAL 400 DAY WHERE ORDER_ID IN (SELECT min(ORDER_ID) FROM FACT_ORDERS)",
     ["FACT_ORDERS.CUSTOMER_KEY: facts pointing at a version not in force at their event time: 1"]),
    ("INSERT INTO FACT_ORDERS SELECT * FROM FACT_ORDERS LIMIT 2", ["FACT_ORDERS: grain values loaded more than once: 2"]),
    ("UPDATE STARLOAD_OFFSETS SET NEXT_OFFSET = 3", ["FACT_ORDERS: partitions with facts at or past the offset stored for them"]),
]


@pytest.mark.parametrize(("breaking", "lines"), BREAKAGES, ids=[b[1][0].split(":")[1].strip()[:30] for b in BREAKAGES])
def test_each_broken_invariant_is_one_line_and_exit_1(tmp_path, breaking, lines):
    path = tmp_path / "star.duckdb"
    loaded(DuckDBSink(path)).close()
    clean = verify("--spec", HISTORY, "--duckdb-path", str(path))
    assert (clean.returncode, clean.stdout.strip()) == (0, f"star 'orders_history' in DuckDB file '{path}': every invariant holds")
    sink = DuckDBSink(path)
    sink.prepare(ORDERS_HISTORY_SCHEMA)
    sink.connection.execute(breaking)
    sink.close()
    broken = verify("--spec", HISTORY, "--duckdb-path", str(path))
    assert broken.returncode == 1
    found = broken.stdout.splitlines()
    assert len(found) == len(lines) and all(line.startswith(want) for line, want in zip(found, lines)), found
    assert "violation(s) of its invariants" in broken.stderr


def test_a_sound_type_1_star_and_a_missing_one(tmp_path):
    path = tmp_path / "orders.duckdb"
    sink = loaded(DuckDBSink(path), ORDERS_SCHEMA)
    assert sink.violations(ORDERS_SCHEMA) == []
    sink.close()
    empty = verify("--schema", "orders", "--duckdb-path", str(tmp_path / "none.duckdb"))
    assert empty.returncode == 1 and "holds no table of star 'orders'" in empty.stdout


def test_on_the_local_snowflake_endpoint(snowflake_settings):
    sink = loaded(SnowflakeSink(**snowflake_settings))
    try:
        assert sink.violations(ORDERS_HISTORY_SCHEMA) == []
        sink._run("UPDATE FACT_ORDERS SET CUSTOMER_KEY = 999")
        [line] = sink.violations(ORDERS_HISTORY_SCHEMA)
        assert line.startswith("FACT_ORDERS.CUSTOMER_KEY: facts whose key is no member of DIM_CUSTOMER: 60")
    finally:
        sink.close()


def test_a_grain_of_several_columns_is_checked_and_shown_whole(tmp_path):
    from starload import BOOKSHOP_SCHEMA
    from starload.generators.bookshop import ORDERS_TOPIC

    path = tmp_path / "bookshop.duckdb"
    sink = DuckDBSink(path)
    sink.prepare(BOOKSHOP_SCHEMA)
    stager = Stager(BOOKSHOP_SCHEMA, topic=ORDERS_TOPIC)
    lines = [{"isbn": "978-0-441-17271-9", "title": "Dune", "qty": 1, "unit_price": "9.99"}] * 3
    sink.write(stager.batch([{"order_id": "B-7", "placed_at": "2024-01-01T00:00:00Z", "customer": {"id": 1}, "lines": lines}]))
    stager.close()
    assert sink.violations(BOOKSHOP_SCHEMA) == []
    sink.connection.execute('INSERT INTO FACT_ORDER_LINES SELECT * FROM FACT_ORDER_LINES WHERE "LINE_NO" = 2')
    assert sink.violations(BOOKSHOP_SCHEMA) == ["FACT_ORDER_LINES: grain values loaded more than once: 1 (e.g. B-7/2)"]
    sink.close()
