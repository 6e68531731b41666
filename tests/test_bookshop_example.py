"""The README's order-lines walk-through, over the real local broker: produce ``examples/bookshop.jsonl``,
load it with ``examples/bookshop.yaml`` into DuckDB, and ask revenue by book and by city.
Also ``produce --file --keyed``: records with JSON keys and tombstones, as Debezium writes a topic;
and SIGKILLs on the bookshop star and on its accumulating snapshot (``examples/bookshop_progress.yaml``)."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from decimal import Decimal
from itertools import islice
from pathlib import Path
from typing import Any

import duckdb
import yaml
from confluent_kafka import Consumer, TopicPartition
from test_integration import run_cli
from test_recovery import crash_repeatedly

from starload import BOOKSHOP_SCHEMA
from starload.generators.bookshop import BOOKSHOP_GENERATOR, BOOKSHOP_PROGRESS_GENERATOR, BOOKSHOP_PROGRESS_SCHEMA
from starload.kafka import consumer_config
from starload.testing import SinkBehaviour, bookshop_oracle, bookshop_progress_oracle

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
EVENTS = [json.loads(line) for line in (EXAMPLES / "bookshop.jsonl").read_text().splitlines()]
#: The walk-through's queries, as the README shows them.
REVENUE_BY_BOOK = """
SELECT b.TITLE, sum(l.QTY) AS copies, sum(l.LINE_AMOUNT) AS revenue
FROM FACT_ORDER_LINES l JOIN DIM_BOOK b USING (BOOK_KEY)
GROUP BY b.TITLE ORDER BY revenue DESC
"""
REVENUE_BY_CITY = """
SELECT c.CUSTOMER_CITY, count(DISTINCT l.ORDER_ID) AS orders, sum(l.LINE_AMOUNT) AS revenue
FROM FACT_ORDER_LINES l JOIN DIM_CUSTOMER c USING (CUSTOMER_KEY)
GROUP BY c.CUSTOMER_CITY ORDER BY revenue DESC
"""


def test_the_bookshop_walkthrough_loads_every_line_and_rejects_orders_with_a_bad_one(local_broker, tmp_path):
    expected = bookshop_oracle([(0, n, v) for n, v in enumerate(EVENTS)])
    done = run_cli("produce", "--bootstrap-servers", local_broker.bootstrap_servers, "--topic", "bookshop.orders",
                   "--file", str(EXAMPLES / "bookshop.jsonl"), "--key-field", "order_id", "--partitions", "1")  # fmt: skip
    assert done.returncode == 0, done.stderr
    db = tmp_path / "bookshop.duckdb"
    loaded = run_cli("load", "--bootstrap-servers", local_broker.bootstrap_servers, "--group", "walk",
                     "--spec", str(EXAMPLES / "bookshop.yaml"), "--duckdb-path", str(db), "--until-idle", "2")  # fmt: skip
    assert loaded.returncode == 0, loaded.stderr
    summary = dict(line.split(": ", 1) for line in loaded.stdout.strip().splitlines())
    loaded_orders = len(EVENTS) - len(expected["rejects"]) - expected["duplicates"]
    assert (summary["consumed"], summary["messages loaded"], summary["duplicates skipped"], summary["rejected"]) == (
        str(len(EVENTS)), str(loaded_orders), str(expected["duplicates"]), str(len(expected["rejects"]))
    )
    assert summary["facts loaded"] == str(len(expected["orders"]) + len(expected["lines"]))
    with duckdb.connect(str(db), read_only=True) as con:
        by_book = con.execute(REVENUE_BY_BOOK).fetchall()
        by_city = con.execute(REVENUE_BY_CITY).fetchall()
        reasons = [r for (r,) in con.execute('SELECT "REASON" FROM "STARLOAD_REJECTS" ORDER BY "KAFKA_OFFSET"').fetchall()]
    revenue: dict[str, Decimal] = {}
    titles = dict(expected["books"])
    for _order, _n, _qty, _price, amount, isbn, _customer in expected["lines"]:
        revenue[titles[isbn]] = revenue.get(titles[isbn], Decimal(0)) + amount
    assert {title: total for title, _, total in by_book} == revenue
    assert sum(total for _, _, total in by_city) == sum(revenue.values())
    assert reasons == ["lines[3].unit_price: must be >= 0", "lines[2].unit_price: must be >= 0"]


def test_produce_keyed_records_sends_json_keys_and_tombstones(local_broker, tmp_path):
    records = tmp_path / "customers.jsonl"
    change = {"before": None, "after": {"id": 17, "region": "EU"}, "op": "c", "ts_ms": 1_700_000_000_000}
    records.write_text("\n".join([
        json.dumps({"key": {"id": 17}, "value": change}),
        json.dumps({"key": {"id": 17}, "value": None}),  # the tombstone after a delete
        json.dumps({"key": "plain", "value": {"a": 1}}),
        json.dumps({"value": [1, 2]}),  # no key
    ]))  # fmt: skip
    done = run_cli("produce", "--bootstrap-servers", local_broker.bootstrap_servers, "--topic", "keyed",
                   "--file", str(records), "--keyed", "--partitions", "1")  # fmt: skip
    assert done.returncode == 0, done.stderr
    consumer = Consumer(consumer_config(local_broker.bootstrap_servers, "keyed-reader"))
    consumer.assign([TopicPartition("keyed", 0, 0)])
    got = []
    while len(got) < 4:
        got += [m for m in consumer.consume(10, timeout=5) if m.error() is None]
    consumer.close()
    assert [(m.key(), m.value()) for m in got] == [
        (b'{"id":17}', json.dumps(change, separators=(",", ":")).encode()), (b'{"id":17}', None), (b"plain", b'{"a":1}'), (None, b"[1,2]"),
    ]  # fmt: skip
    records.write_text('{"key": 1, "value": 2}\n{"k": 1}\n')
    bad = run_cli("produce", "--bootstrap-servers", local_broker.bootstrap_servers, "--topic", "keyed", "--file", str(records), "--keyed")
    assert bad.returncode == 2 and f"{records} line 2: with --keyed each line is" in bad.stderr


class _FileReader(SinkBehaviour):
    """The behaviour suite's readout of the bookshop star, from a DuckDB file (the ``sink`` is its path)."""

    def query(self, sink, sql):
        with duckdb.connect(str(sink), read_only=True) as con:
            return con.execute(sql).fetchall()


def test_sigkills_on_the_bookshop_star_lose_double_and_split_no_order(local_broker, tmp_path):
    """``produce --generator bookshop`` (orders of 0 to 5 lines, bad lines, redeliveries); a loader SIGKILLed at random
    instants, then drained, holds exactly the oracle's star: no order without its lines, no line twice, every reject once."""
    prefix = f"k{uuid.uuid4().hex[:8]}-"
    data = BOOKSHOP_SCHEMA.to_dict()
    for fact in data["facts"]:
        fact["topic"] = prefix + fact["topic"]
    spec = tmp_path / "bookshop.yaml"
    spec.write_text(yaml.safe_dump(data))
    produced = subprocess.run(
        [sys.executable, "-m", "starload.cli", "produce", "--bootstrap-servers", local_broker.bootstrap_servers, "--generator", "bookshop",
         "--count", "10000", "--seed", "21", "--partitions", "2", "--option", f"prefix={prefix}"],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert produced.returncode == 0, produced.stderr
    db = tmp_path / "crashed.duckdb"
    crash_repeatedly(local_broker.bootstrap_servers, None, db, kills=3, seed=11, star=("--spec", str(spec)))  # and starload verify
    events = [e.value for e in islice(BOOKSHOP_GENERATOR.stream(21, prefix=prefix), 10_000)]
    expected = bookshop_oracle([(0, n, v) for n, v in enumerate(events)])
    found = _FileReader().bookshop(db)
    assert len(found["rejects"]) == len(expected["rejects"]) and len(expected["lines"]) > 15_000
    assert {k: v for k, v in found.items() if k != "rejects"} == {k: v for k, v in expected.items() if k not in ("rejects", "duplicates")}


def produce_progress(bootstrap: str, spec: Path, *, count: int, seed: int, partitions: int) -> list[tuple[Any, ...]]:
    """``produce --generator bookshop-progress`` on topics of a fresh prefix, its spec written to ``spec``; the oracle's rows."""
    prefix = f"p{uuid.uuid4().hex[:8]}-"
    data = BOOKSHOP_PROGRESS_SCHEMA.to_dict()
    data["fact"]["topic"] = prefix + data["fact"]["topic"]
    data["fact"]["updates"][0]["topic"] = prefix + data["fact"]["updates"][0]["topic"]
    spec.write_text(yaml.safe_dump(data))
    produced = subprocess.run(
        [sys.executable, "-m", "starload.cli", "produce", "--bootstrap-servers", bootstrap, "--generator", "bookshop-progress",
         "--count", str(count), "--seed", str(seed), "--partitions", str(partitions), "--option", f"prefix={prefix}"],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert produced.returncode == 0, produced.stderr
    counts: dict[str, int] = {}
    messages = []
    for event in islice(BOOKSHOP_PROGRESS_GENERATOR.stream(seed, prefix=prefix), count):
        messages.append((event.topic, 0, counts.get(event.topic, 0), event.value))  # one partition's offsets stand in: no two events tie
        counts[event.topic] = counts.get(event.topic, 0) + 1
    return bookshop_progress_oracle(messages)


def test_sigkills_on_the_accumulating_snapshot_lose_double_and_misplace_nothing(local_broker, tmp_path):
    """``produce --generator bookshop-progress`` (orders, and status events late, repeated, before their order) on two topics of
    two partitions; a loader SIGKILLed at random instants, then drained, holds the oracle's FACT_ORDER_PROGRESS, and verify passes."""
    spec = tmp_path / "progress.yaml"
    expected = produce_progress(local_broker.bootstrap_servers, spec, count=12_000, seed=22, partitions=2)
    db = tmp_path / "progress.duckdb"
    crash_repeatedly(local_broker.bootstrap_servers, None, db, kills=3, seed=12, star=("--spec", str(spec)))  # and starload verify
    assert len(expected) > 3_000 and all(row[1] is not None for row in expected)
    assert _FileReader().progress(db) == expected
