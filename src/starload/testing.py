"""Test helpers for starload and its plugin authors (a pytest plugin, loaded automatically).

Fixtures:

* ``local_broker`` (session): a running :class:`~starload.broker.LocalBroker`.
* ``topic``: a fresh topic name with 1 partition on ``local_broker``.
* ``memory_sink``: a prepared-on-use in-memory :class:`~starload.sinks.duckdb.DuckDBSink`.

Helpers: :func:`load_until_idle` runs a :class:`~starload.engine.StarLoader` until
the topic is drained, with settings that are fast on the local broker;
:func:`write_batches` writes messages of any topics in batches, as the engine does;
:class:`Stager` turns raw message values into the staged batches a sink receives;
:class:`ReaderProbe` reads a DuckDB file the way a person does while a loader runs.

The shared sink behaviour suite: :class:`SinkBehaviour`. Subclass it in a test module
as ``Test…``, override the ``make_sink`` fixture and the ``query`` method, and pytest
runs every behaviour test against your sink (exact star, idempotent replay, offsets
that resume and never go backwards, rejects, rollback, set-based statements)::

    import pytest
    from starload.testing import SinkBehaviour
    from my_package import MySink

    class TestMySink(SinkBehaviour):
        @pytest.fixture
        def make_sink(self, tmp_path):
            return lambda: MySink(tmp_path / "star.db")

        def query(self, sink, sql):
            return sink.connection.execute(sql).fetchall()
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, date, datetime
from decimal import Decimal as D
from itertools import islice
from typing import Any, Self

import attrs
import orjson
import pytest
import yaml

from starload.broker import LocalBroker, free_port, stop_process
from starload.drift import fingerprint
from starload.engine import StarLoader
from starload.exceptions import OffsetsMovedError, SinkError, SpecDriftError
from starload.generators.orders import ORDERS_GENERATOR, ORDERS_HISTORY_SCHEMA, ORDERS_SCHEMA
from starload.generators.shop import CUSTOMERS_TOPIC, ORDERS_TOPIC, PAYMENTS_TOPIC, SHOP_SCHEMA
from starload.kafka import ensure_topic
from starload.mapping import Mapper, raw_batch
from starload.sinks.base import OFFSETS_TABLE, REJECTS_TABLE, STARS_TABLE, Sink, StagedBatch, WriteResult
from starload.sinks.duckdb import DuckDBSink
from starload.spec import Check, Decimal, Dimension, Fact, Field, Integer, Measure, StarSchema, String, Timestamp
from starload.stats import LoadStats

#: The fixed "now" of generated test orders, so that a seed gives the same orders every run.
NOW = "2024-06-01T12:00:00+00:00"


@pytest.fixture(scope="session")
def local_broker() -> Iterator[LocalBroker]:
    """A local Tansu broker for the whole test session."""
    with LocalBroker() as broker:
        yield broker


@pytest.fixture
def topic(local_broker: LocalBroker) -> str:
    """A new, empty, single-partition topic."""
    name = f"t-{uuid.uuid4().hex[:12]}"
    ensure_topic(local_broker.bootstrap_servers, name, partitions=1)
    return name


@pytest.fixture
def memory_sink() -> Iterator[DuckDBSink]:
    """An in-memory DuckDB sink."""
    sink = DuckDBSink(":memory:")
    yield sink
    sink.close()


def load_until_idle(
    schema: StarSchema,
    sink: Sink,
    broker: LocalBroker,
    topic: str,
    *,
    group: str = "test",
    idle: float = 1.5,
    **options: Any,
) -> LoadStats:
    """Load ``topic`` into ``sink`` until it has been idle for ``idle`` seconds."""
    loader = StarLoader(schema, sink, bootstrap_servers=broker.bootstrap_servers, topic=topic, group=group, **options)
    return loader.run(until_idle=idle)


# ---- staging batches without Kafka ------------------------------------------------------


def debezium_change(
    op: str, row: dict[str, Any] | None, ts_ms: int, *, before: dict[str, Any] | None = None, wrapped: bool = True
) -> bytes:
    """A Debezium change event of the PostgreSQL connector for table ``public.customers``, in the shape its documentation shows.

    https://debezium.io/documentation/reference/stable/connectors/postgresql.html#postgresql-events
    (``wrapped``: the JSON converter with schemas enabled, the event is the ``payload`` beside a ``schema``).
    """
    payload = {
        "before": before,
        "after": row,
        "source": {
            "version": "2.7.0.Final", "connector": "postgresql", "name": "PostgreSQL_server", "ts_ms": ts_ms - 5,
            "snapshot": "true" if op == "r" else "false", "db": "postgres", "sequence": '["24023119","24023128"]',
            "schema": "public", "table": "customers", "txId": 555, "lsn": 24023128, "xmin": None,
        },
        "op": op,
        "ts_ms": ts_ms,
        "transaction": None,
    }  # fmt: skip
    schema = {"type": "struct", "fields": [], "optional": False, "name": "PostgreSQL_server.public.customers.Envelope", "version": 1}
    return orjson.dumps({"schema": schema, "payload": payload} if wrapped else payload)


def epoch_ms(iso: str) -> int:
    """Milliseconds since 1970-01-01 UTC of an ISO-8601 instant (``Z`` or an offset)."""
    return int(datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() * 1000)


def stage_topics(mapper: Mapper, topics: dict[str, list[bytes | None]], *, start: dict[str, int] | None = None, group: str = "g") -> StagedBatch:
    """One batch of several topics: per topic, its values at partition 0 from offset ``start[topic]`` (0 by default)."""
    start = start or {}
    raws = {t: raw_batch(v, offsets=range(start.get(t, 0), start.get(t, 0) + len(v))) for t, v in topics.items()}
    return mapper.stage_topics(raws, group=group)



def write_batches(sink: Sink, mapper: Mapper, messages: Sequence[tuple[str, int, int, Any]], batch_size: int) -> list[WriteResult]:
    """Write ``messages`` into ``sink`` in batches of ``batch_size``, as the engine does (conflicts found, then written); the results.

    ``messages``: (topic, partition, offset, value) in arrival order, a value a dict (sent
    as JSON), bytes (sent as they are) or None (a tombstone); a batch holds each topic's.
    """
    results = []
    for start in range(0, len(messages), batch_size):
        chunk = messages[start : start + batch_size]
        raws = {}
        for topic in dict.fromkeys(t for t, _, _, _ in chunk):
            mine = [(p, o, v) for t, p, o, v in chunk if t == topic]
            values = [orjson.dumps(v) if isinstance(v, dict) else v for _, _, v in mine]
            raws[topic] = raw_batch(values, partitions=[p for p, _, _ in mine], offsets=[o for _, o, _ in mine])
        batch = mapper.stage_topics(raws, group="g")
        results.append(sink.write(batch.with_conflicts(sink.find_conflicts(batch))))
    return results


class ReaderProbe:
    """A reader of a DuckDB file in a thread: every ``every`` seconds, a plain read-only connect, a count, a close.

    It is what a person or a dashboard does while a loader runs (no retries within a
    try). The tries keep to a fixed schedule (one at each multiple of ``every`` from the
    start; a try that overruns its slot takes the next free one), so a wait is a whole
    number of tries, whatever a try costs on a busy machine. :attr:`waits` are the spans
    from each try that failed after a success (or the first try) to the next try that
    got in: how long a reader waited for its turn.
    """

    def __init__(self, path: str, every: float = 1.0, table: str = "FACT_ORDERS") -> None:
        self.path, self.every, self.table = path, every, table
        #: (time.monotonic(), got in) of every try made once the file existed.
        self.tries: list[tuple[float, bool]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        import duckdb

        start, slot = time.monotonic(), 0
        while True:
            slot = max(slot + 1, math.ceil((time.monotonic() - start) / self.every))
            tried = start + slot * self.every
            if self._stop.wait(max(0.0, tried - time.monotonic())):
                return
            if not os.path.exists(self.path):
                continue
            try:
                with contextlib.closing(duckdb.connect(self.path, read_only=True)) as con:
                    with contextlib.suppress(duckdb.CatalogException):  # in, before the first batch made the table
                        con.execute(f'SELECT count(*) FROM "{self.table}"').fetchall()
                self.tries.append((tried, True))
            except duckdb.IOException:
                self.tries.append((tried, False))

    @property
    def waits(self) -> list[float]:
        spans, failed_since = [], None
        for at, got_in in self.tries:
            if not got_in:
                failed_since = at if failed_since is None else failed_since
            elif failed_since is not None:
                spans.append(round(at - failed_since, 6))  # whole tries: rounded off, float sums of ``every`` are not
                failed_since = None
        if failed_since is not None:  # still shut out at the end
            spans.append(round(self.tries[-1][0] - failed_since + self.every, 6))
        return spans

    def summary(self) -> str:
        got_in = sum(ok for _, ok in self.tries)
        longest = max(self.waits, default=0.0)
        return f"{got_in} of {len(self.tries)} tries got in; longest wait for a turn {longest:.1f} s"


def sample_orders(count: int, seed: int = 1, **options: Any) -> list[dict[str, Any]]:
    """``count`` generated orders (8 customers, 6 products unless ``options`` say otherwise)."""
    options = {"customers": 8, "products": 6, "now": NOW, **options}
    return [event.value for event in islice(ORDERS_GENERATOR.stream(seed, **options), count)]


class Stager:
    """Stages raw message values into :class:`StagedBatch` es exactly as the engine does."""

    def __init__(self, schema: StarSchema = ORDERS_SCHEMA, *, topic: str = "orders", group: str = "g") -> None:
        self.schema, self.topic, self.group = schema, topic, group
        self._mapper = Mapper(schema)

    def batch(
        self,
        values: Sequence[bytes | dict[str, Any] | None],
        *,
        start: int = 0,
        partition: int = 0,
        offsets: Sequence[int] | None = None,
        partitions: Sequence[int] | None = None,
        keys: Sequence[bytes | None] | None = None,
        topic: str | None = None,
        group: str | None = None,
    ) -> StagedBatch:
        """One batch of ``values`` (dicts are JSON-encoded) at ``partition``, offsets ``start``…."""
        raw = [orjson.dumps(v) if isinstance(v, dict) else v for v in values]
        table = raw_batch(
            raw,
            partitions=partitions if partitions is not None else [partition] * len(raw),
            offsets=offsets if offsets is not None else range(start, start + len(raw)),
            keys=keys,
        )
        return self._mapper.stage(table, topic=topic or self.topic, group=group or self.group)

    def close(self) -> None:
        self._mapper.close()


# ---- streams as consumers see them -------------------------------------------------------


def interleave(messages: list[tuple[int, int, dict]], picks: list[int]) -> list[tuple[int, int, dict]]:
    """The messages as one consumer may receive them: each partition in order, partitions interleaved by ``picks`` (each pick chooses among the partitions with messages left)."""
    queues = {p: [m for m in messages if m[0] == p] for p in sorted({m[0] for m in messages})}
    order, picks = [], list(picks)
    while any(queues.values()):
        waiting = [p for p, left in queues.items() if left]
        order.append(queues[waiting[(picks.pop() if picks else 0) % len(waiting)]].pop(0))
    return order


def deliveries(messages: list, again: list[tuple[int, int]]) -> list:
    """``messages`` with redeliveries: at each (place, count), the ``count`` messages before ``place`` come again."""
    out = list(messages)
    for place, count in sorted(again, reverse=True):
        place = min(place, len(messages))
        out[place:place] = messages[max(0, place - count) : place]
    return out


def history_oracle(messages: Sequence[tuple[int, int, dict[str, Any]]]) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """What :data:`~starload.generators.orders.ORDERS_HISTORY_SCHEMA` must hold after ``messages`` (partition, offset, order), by the rules alone.

    Independent of any SQL: each customer's events in (event time, partition, offset)
    order; the state after an instant is the last known region of its events; a
    version starts where a known region changes, never at a NULL, and an unknown
    region takes the first known one in place; the name is the latest known one, on
    every version. A message at a (partition, offset) seen before is a redelivery, and
    each order id must be unique. Returns the versions (customer id, name, region,
    VALID_FROM, VALID_TO, IS_CURRENT) by customer and VALID_FROM, and each order's
    (order id, customer id, VALID_FROM of its version), by order id.
    """
    unique = {(p, o): v for p, o, v in messages}
    versions, facts = [], []
    for customer in sorted({v["customer_id"] for v in unique.values()}):
        mine = sorted((as_instant(v["order_timestamp"]), p, o, v) for (p, o), v in unique.items() if v["customer_id"] == customer)
        name = next((v["customer_name"] for *_, v in reversed(mine) if v["customer_name"] is not None), None)
        starts: list[list[Any]] = []  # [VALID_FROM, region]
        region = None
        for at in sorted({t for t, *_ in mine}):
            for *_, v in (e for e in mine if e[0] == at):
                region = region if v["customer_region"] is None else v["customer_region"]
            if starts and starts[-1][1] is not None and region != starts[-1][1]:
                starts.append([at, region])
            elif starts:
                starts[-1][1] = region
            else:
                starts.append([at, region])
        for n, (at, value) in enumerate(starts):
            until = starts[n + 1][0] if n + 1 < len(starts) else None
            versions.append((customer, name, value, at, until, until is None))
        facts += [(v["order_id"], customer, max(a for a, _ in starts if a <= t)) for t, _, _, v in mine]
    return versions, sorted(facts)


def bookshop_oracle(messages: Sequence[tuple[int, int, Any]]) -> dict[str, Any]:
    """The bookshop star (:data:`~starload.generators.bookshop.BOOKSHOP_SCHEMA`) a sink must hold after loading ``messages``, in pure Python.

    ``messages``: (partition, offset, value) in any order, each value a dict (JSON) of
    the bookshop generator's shapes. Returns ``orders`` (ORDER_ID, PLACED_AT,
    SHIP_COUNTRY, COUPON, CUSTOMER_ID), ``lines`` (ORDER_ID, LINE_NO, QTY, UNIT_PRICE,
    LINE_AMOUNT, ISBN, CUSTOMER_ID), ``books`` (ISBN, TITLE), ``customers``
    (CUSTOMER_ID, CUSTOMER_CITY), ``rejects`` (partition, offset) and ``duplicates``
    (how many valid messages repeat a loaded order). The rules: a message with a bad
    line is rejected whole; the first message of an order id (by partition, then
    offset, as one loader reads one partition) is loaded, a later identical one is a
    duplicate; a dimension attribute takes its value of the latest event by event
    time, then partition, offset and (within a message) element.
    """

    def line_ok(line: Any) -> bool:
        if not isinstance(line, dict) or not isinstance(line.get("isbn"), str) or len(line["isbn"]) > 17:
            return False
        qty, price = line.get("qty"), line.get("unit_price")
        return isinstance(qty, int) and qty > 0 and price is not None and D(str(price)) >= 0 and D(str(price)) == D(str(price)).quantize(D("0.01"))

    ordered = sorted(messages, key=lambda m: (m[0], m[1]))
    orders, lines, books, customers, rejects, seen = {}, [], {}, {}, [], {}
    duplicates = 0
    for partition, offset, value in ordered:
        if not all(line_ok(line) for line in value.get("lines") or []):
            rejects.append((partition, offset))
            continue
        at = as_instant(value["placed_at"])
        customer = value["customer"]
        if customers.get(customer["id"], (None, None))[1] is None or customers[customer["id"]][1] <= (at, partition, offset):
            customers[customer["id"]] = (customer.get("city"), (at, partition, offset))
        for n, line in enumerate(value.get("lines") or []):
            position = (at, partition, offset, n)
            if line.get("title") is not None and (line["isbn"] not in books or books[line["isbn"]][1] <= position):
                books[line["isbn"]] = (line["title"], position)
            books.setdefault(line["isbn"], (None, position))
        if value["order_id"] in seen:
            assert seen[value["order_id"]] == value, "the oracle knows redeliveries, not conflicts"
            duplicates += 1
            continue
        seen[value["order_id"]] = value
        orders[value["order_id"]] = (value["order_id"], at, (value.get("shipping") or {}).get("country"), value.get("coupon"), customer["id"])
        for n, line in enumerate(value.get("lines") or []):
            price = D(str(line["unit_price"])).quantize(D("0.01"))
            lines.append((value["order_id"], n, line["qty"], price, price * line["qty"], line["isbn"], customer["id"]))
    return {
        "orders": sorted(orders.values()),
        "lines": sorted(lines),
        "books": sorted((isbn, title) for isbn, (title, _) in books.items()),
        "customers": sorted((cid, city) for cid, (city, _) in customers.items()),
        "rejects": sorted(rejects),
        "duplicates": duplicates,
    }


def bookshop_progress_oracle(messages: Sequence[tuple[str, int, int, Any]]) -> list[tuple[Any, ...]]:
    """The rows of ``FACT_ORDER_PROGRESS`` (:data:`~starload.generators.bookshop.BOOKSHOP_PROGRESS_SCHEMA`) after ``messages``, in pure Python.

    ``messages``: (topic, partition, offset, value) in any order, redeliveries included,
    of the bookshop-progress generator's shapes. Per order id seen on either topic, by the
    rules of ``changes: latest``: the values of its latest order event by (placed_at,
    partition, offset), unknown (None) while it has none; the status of its latest status
    event by (at, partition, offset); each milestone the earliest ``at`` of its status.
    Returns (ORDER_ID, PLACED_AT, SHIP_COUNTRY, ORDER_TOTAL, CUSTOMER_ID, STATUS,
    STATUS_AT, PAID_AT, SHIPPED_AT, DELIVERED_AT, CANCELLED_AT) by order id.
    """
    from starload.generators.bookshop import ORDERS_TOPIC, STATUSES

    unique = {(t, p, o): v for t, p, o, v in messages}
    rows = []
    for order in sorted({v["order_id"] for v in unique.values()}):
        orders = sorted((as_instant(v["placed_at"]), p, o, v) for (t, p, o), v in unique.items() if t.endswith(ORDERS_TOPIC) and v["order_id"] == order)
        statuses = sorted((as_instant(v["at"]), p, o, v) for (t, p, o), v in unique.items() if not t.endswith(ORDERS_TOPIC) and v["order_id"] == order)
        placed = (None,) * 4
        if orders:
            at, _, _, v = orders[-1]
            placed = (at, (v.get("shipping") or {}).get("country"), D(v["total"]), v["customer"]["id"])
        status = (statuses[-1][3]["status"], statuses[-1][0]) if statuses else (None, None)
        reached = [min((t for t, _, _, v in statuses if v["status"] == s), default=None) for s in STATUSES[1:]]
        rows.append((order, *placed, *status, *reached))
    return rows


def read_history(query: Callable[[str], Sequence[Sequence[Any]]]) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """An :data:`~starload.generators.orders.ORDERS_HISTORY_SCHEMA` star as :func:`history_oracle` spells it, read with ``query``.

    VALID_TO is read only where it is not NULL (the local Snowflake endpoint reads a
    NULL timestamp back as 1970).
    """
    versions = query(
        """SELECT "CUSTOMER_ID", "CUSTOMER_NAME", "CUSTOMER_REGION", "VALID_FROM", "VALID_TO", "IS_CURRENT",
                  CASE WHEN "VALID_TO" IS NULL THEN 1 ELSE 0 END FROM "DIM_CUSTOMER" ORDER BY 1, 4"""
    )
    facts = query(
        """SELECT f."ORDER_ID", d."CUSTOMER_ID", d."VALID_FROM" FROM "FACT_ORDERS" f
           JOIN "DIM_CUSTOMER" d ON d."CUSTOMER_KEY" = f."CUSTOMER_KEY" ORDER BY 1"""
    )
    return (
        [(c, n, r, as_instant(f), None if last else as_instant(t), bool(i)) for c, n, r, f, t, i, last in versions],
        [(o, c, as_instant(f)) for o, c, f in facts],
    )


# ---- normalising what different drivers return --------------------------------------------


def as_instant(value: Any) -> datetime:
    """A UTC datetime from a driver's timestamp (aware, naive UTC, or ISO-8601 text)."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def as_date(value: Any) -> date:
    """A date from a driver's date (date, datetime or ``YYYY-MM-DD`` text)."""
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    return date.fromisoformat(str(value)[:10])


def as_decimal(value: Any) -> D | None:
    """An exact Decimal from a driver's number or text (``Decimal(str(x))``, so floats compare too)."""
    return None if value is None else D(str(value))


def as_bytes(value: Any) -> bytes | None:
    return None if value is None else bytes(value)


_MONTHS = (
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)
_DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


def date_row(day: date) -> tuple[Any, ...]:
    """The expected DIM_DATE row of ``day`` (DATE_KEY first, then DATE_ATTRIBUTES)."""
    return (
        day.year * 10_000 + day.month * 100 + day.day,
        day,
        day.day,
        day.month,
        _MONTHS[day.month - 1],
        (day.month - 1) // 3 + 1,
        day.year,
        day.isoweekday(),
        _DAYS[day.isoweekday() - 1],
        day.isocalendar().week,
        day.isoweekday() >= 6,
    )


#: A second star, unlike orders: a composite natural key, an integer key and attribute,
#: a composite grain, an integer measure and no date dimension.
READINGS_SCHEMA = StarSchema(
    name="readings",
    dimensions=[
        Dimension(
            name="device",
            table="DIM_DEVICE",
            key="DEVICE_KEY",
            natural_key=[Field("VENDOR", "vendor", String(32)), Field("SERIAL_NO", "serial", Integer())],
            attributes=[Field("FIRMWARE", "firmware", Integer())],
        ),
        Dimension("site", "DIM_SITE", "SITE_KEY", [Field("SITE_ID", "site")], [Field("SITE_NAME", "site_name")]),
    ],
    date_dimension=None,
    fact=Fact(
        table="FACT_READINGS",
        grain=[
            Field("READING_VENDOR", "vendor", String(32), required=True),
            Field("READING_SERIAL", "serial", Integer(), required=True),
            Field("SEQ", "seq", Integer(), required=True),
        ],
        event_time=Field("READ_AT", "read_at", Timestamp(), required=True),
        dimensions=["device", "site"],
        columns=[
            Field("READING", "reading", Decimal(12, 3), required=True),
            Field("SAMPLES", "samples", Integer(), required=True, check=Check.POSITIVE),
        ],
        measures=[Measure("READING_X_SAMPLES", ["READING", "SAMPLES"], Decimal(18, 3))],
    ),
)


#: A third star, declared as a file (YAML): every column type, fields nested up to three levels,
#: a key holding a dot (``[meta, note.text]``) and a composite grain.
EVERY_TYPE_YAML = """\
name: every_type
dimensions:
  - name: device
    table: DIM_DEVICE
    key: DEVICE_KEY
    natural_key:
      - {column: DEVICE_ID, source: device.id, type: string(32)}
    attributes:
      - {column: ONLINE, source: device.status.online, type: boolean}
      - {column: INSTALLED_ON, source: device.installed_on, type: date}
      - {column: FIRMWARE, source: device.firmware, type: integer}
date_dimension: {table: DIM_DATE, key: DATE_KEY}
fact:
  table: FACT_SAMPLES
  grain:
    - {column: SAMPLE_ID, source: sample.id, type: string(64), required: true}
    - {column: SEQ, source: sample.seq, type: integer, required: true}
  event_time: {column: TAKEN_AT, source: taken_at, type: timestamp, required: true}
  dimensions: [device]
  columns:
    - {column: PRICE, source: reading.price, type: "decimal(12,3)", check: non_negative}
    - {column: TEMPERATURE, source: reading.value.celsius, type: double}
    - {column: VALID, source: reading.valid, type: boolean}
    - {column: CALIBRATED_ON, source: calibrated_on, type: date}
    - {column: EPOCH_S, source: epoch.s, type: timestamp(epoch_s)}
    - {column: EPOCH_MS, source: epoch.ms, type: timestamp(epoch_ms)}
    - {column: NOTE, source: [meta, note.text], type: string(40)}
"""
EVERY_TYPE_SCHEMA = StarSchema.from_dict(yaml.safe_load(EVERY_TYPE_YAML))


def every_type_sample(n: int, device_id: str, **more: Any) -> dict[str, Any]:
    """A message of :data:`EVERY_TYPE_SCHEMA` (``more`` replaces top-level parts)."""
    return {
        "sample": {"id": f"S{n}", "seq": n},
        "taken_at": f"2024-05-0{n}T10:00:00+02:00",
        "device": {"id": device_id, "status": {"online": n % 2 == 1}, "installed_on": "2023-12-31", "firmware": n},
        "reading": {"price": f"{n}.125", "value": {"celsius": -12.5 * n}, "valid": True},
        "calibrated_on": "2024-02-29",
        "epoch": {"s": 1714557600 + n, "ms": 1714557600123 + n},
        "meta": {"note.text": f"note {n}"},
        **more,
    }


# ---- the shared sink behaviour suite --------------------------------------------------------


def changed_fact_column(schema: StarSchema, column: str, **changes: Any) -> StarSchema:
    """``schema`` with the fact column ``column`` changed as the spec file would say it (``type="integer"``)."""
    data = schema.to_dict()
    [field] = [f for f in data["fact"]["columns"] if f["column"] == column]
    field.update(changes)
    return StarSchema.from_dict(data)


class SinkBehaviour:
    """Every behaviour the Sink contract asks for, as tests. Subclass as ``Test…`` and override:

    * the ``make_sink`` fixture: returns a factory; each call opens a new, unprepared sink
      on one warehouse that is empty when the test starts (a file under ``tmp_path``, a
      fresh schema, …). Tests call it more than once to check that what one sink
      committed, the next one sees (offsets resume after a restart);
    * ``query(sink, sql)``: runs ``sql`` on the sink's warehouse and returns the rows as
      tuples. The SQL is portable: quoted upper-case identifiers, as the DDL creates them.

    Values are compared after normalising what drivers return: money as
    ``Decimal(str(value))`` (a backend without decimals may store text), timestamps as
    UTC instants (aware, naive UTC or ISO-8601 text), dates as dates (or text), bytes as
    bytes. Override the ``batch_size`` fixture to change the batch sizes of the exact-star
    test.
    """

    #: Whether the sink keeps history (SCD type 2); one that does not must refuse such a star at prepare.
    keeps_history = True
    #: Whether the sink loads a star of several topics; one that does not must refuse such a star at prepare.
    reads_several_topics = True
    #: Whether the sink loads facts with a row per element of an array; one that does not must refuse such a star at prepare.
    loads_arrays = True
    #: Whether the sink loads facts that change (``changes: latest``); one that does not must refuse them at prepare.
    loads_changing_facts = True

    # ---- what the sink author provides ----
    @pytest.fixture
    def make_sink(self) -> Callable[[], Sink]:
        msg = f"{type(self).__name__} must override the make_sink fixture (a factory of unprepared sinks)"
        raise NotImplementedError(msg)

    def query(self, sink: Sink, sql: str) -> list[tuple[Any, ...]]:
        """The rows of ``sql`` run on ``sink``'s warehouse."""
        msg = f"{type(self).__name__} must override query(sink, sql)"
        raise NotImplementedError(msg)

    # ---- fixtures ----
    @pytest.fixture
    def sink(self, make_sink: Callable[[], Sink]) -> Iterator[Sink]:
        """A sink prepared for the orders star."""
        sink = make_sink()
        sink.prepare(ORDERS_SCHEMA)
        yield sink
        sink.close()

    @pytest.fixture
    def stager(self) -> Iterator[Stager]:
        stager = Stager()
        yield stager
        stager.close()

    @pytest.fixture(params=[1, 17, 10_000], ids=lambda n: f"batch{n}")
    def batch_size(self, request: pytest.FixtureRequest) -> int:
        return int(request.param)

    # ---- helpers ----
    def rows(self, sink: Sink, sql: str) -> list[tuple[Any, ...]]:
        return [tuple(row) for row in self.query(sink, sql)]

    def snapshot(self, sink: Sink, schema: StarSchema = ORDERS_SCHEMA) -> dict[str, list[tuple[Any, ...]]]:
        """Every table as stored (offsets without their UPDATED_AT)."""
        found = {table: self.rows(sink, f'SELECT * FROM "{table}" ORDER BY 1') for table in schema.tables}
        found[REJECTS_TABLE] = self.rows(sink, f'SELECT * FROM "{REJECTS_TABLE}" ORDER BY 1, 2, 3')
        found[OFFSETS_TABLE] = self.rows(
            sink,
            f'SELECT "GROUP_ID", "TOPIC", "KAFKA_PARTITION", "NEXT_OFFSET" FROM "{OFFSETS_TABLE}" ORDER BY 1, 2, 3',
        )
        return found

    @staticmethod
    def assert_refused(sink: Sink, schema: StarSchema, match: str) -> None:
        """``sink`` refuses ``schema`` at prepare with a :class:`SinkError` matching ``match`` (a star it cannot load); then it is closed."""
        try:
            with pytest.raises(SinkError, match=match):
                sink.prepare(schema)
        finally:
            sink.close()

    def count(self, sink: Sink, table: str) -> int:
        [(n,)] = self.rows(sink, f'SELECT count(*) FROM "{table}"')
        return int(n)

    # ---- the tests ----
    def test_prepare_is_idempotent_and_ddl_names_every_table(self, make_sink: Callable[[], Sink]) -> None:
        first = make_sink()
        statements = first.ddl(ORDERS_SCHEMA)
        assert statements and all(isinstance(s, str) for s in statements)
        for table in (*ORDERS_SCHEMA.tables, OFFSETS_TABLE, REJECTS_TABLE):
            assert any(table in s for s in statements), f"ddl() creates no table {table}"
        first.prepare(ORDERS_SCHEMA)
        first.prepare(ORDERS_SCHEMA)
        second = make_sink()
        try:
            second.prepare(ORDERS_SCHEMA)
            for table in (*ORDERS_SCHEMA.tables, OFFSETS_TABLE, REJECTS_TABLE):
                assert self.count(second, table) == 0
            assert second.stored_offsets("g", "orders") == {}
        finally:
            second.close()
            first.close()

    def test_loads_the_exact_star(self, sink: Sink, stager: Stager, batch_size: int) -> None:
        orders = sample_orders(40)
        bad = [b"not json", b"", None, b"\xff\xfe", b"[1, 2]", orjson.dumps({**orders[0], "quantity": 2.5})]
        # (key, value) in production order: orders, some redelivered, some invalid in between.
        stream: list[tuple[bytes | None, bytes | None]] = [(o["order_id"].encode(), orjson.dumps(o)) for o in orders]
        stream += [(o["order_id"].encode(), orjson.dumps(o)) for o in orders[5:13]]
        for i, value in enumerate(bad):
            stream.insert(3 + 8 * i, (None, value))
        # Kafka puts a key on one partition; offsets count per partition.
        next_offset = {0: 0, 1: 0}
        placed = []
        for key, value in stream:
            partition = sum(key) % 2 if key else 0
            placed.append((partition, next_offset[partition], key, value))
            next_offset[partition] += 1
        results: list[WriteResult] = []
        for start in range(0, len(placed), batch_size):
            chunk = placed[start : start + batch_size]
            batch = stager.batch(
                [m[3] for m in chunk],
                partitions=[m[0] for m in chunk],
                offsets=[m[1] for m in chunk],
                keys=[m[2] for m in chunk],
            )
            result = sink.write(batch)
            assert result.facts_inserted + result.duplicates + result.records + result.rejects == batch.messages
            results.append(result)
        assert sum(r.facts_inserted for r in results) == len(orders)
        assert sum(r.duplicates for r in results) == 8
        assert sum(r.rejects for r in results) == len(bad)

        first: dict[str, tuple[int, int]] = {}
        for partition, offset, key, _ in placed:
            if key:
                first.setdefault(key.decode(), (partition, offset))
        facts = self.rows(
            sink,
            """SELECT f."ORDER_ID", f."ORDER_TIMESTAMP", c."CUSTOMER_ID", p."PRODUCT_ID", f."DATE_KEY",
                      f."QUANTITY", f."UNIT_PRICE", f."TOTAL_AMOUNT", f."SHIPPING_REGION",
                      f."KAFKA_TOPIC", f."KAFKA_PARTITION", f."KAFKA_OFFSET"
               FROM "FACT_ORDERS" f
               JOIN "DIM_CUSTOMER" c ON c."CUSTOMER_KEY" = f."CUSTOMER_KEY"
               JOIN "DIM_PRODUCT" p ON p."PRODUCT_KEY" = f."PRODUCT_KEY"
               ORDER BY 1""",
        )
        got = [
            (
                r[0],
                as_instant(r[1]),
                r[2],
                r[3],
                int(r[4]),
                int(r[5]),
                as_decimal(r[6]),
                as_decimal(r[7]),
                r[8],
                r[9],
                int(r[10]),
                int(r[11]),
            )
            for r in facts
        ]
        expected = sorted(
            (
                o["order_id"],
                as_instant(o["order_timestamp"]),
                o["customer_id"],
                o["product_id"],
                int(o["order_timestamp"][:10].replace("-", "")),
                o["quantity"],
                D(str(o["price"])),
                D(str(o["price"])) * o["quantity"],
                o["shipping_region"],
                "orders",
                *first[o["order_id"]],
            )
            for o in orders
        )
        assert got == expected
        assert self.count(sink, "FACT_ORDERS") == len(orders)
        [(loaded_at_missing,)] = self.rows(sink, 'SELECT count(*) FROM "FACT_ORDERS" WHERE "LOADED_AT" IS NULL')
        assert int(loaded_at_missing) == 0

        customers = self.rows(
            sink,
            """SELECT "CUSTOMER_ID", "CUSTOMER_NAME", "CUSTOMER_REGION", "LAST_EVENT_AT", "CUSTOMER_KEY"
               FROM "DIM_CUSTOMER" ORDER BY 1""",
        )
        last_event: dict[str, datetime] = {}
        for o in orders:
            at = as_instant(o["order_timestamp"])
            last_event[o["customer_id"]] = max(last_event.get(o["customer_id"], at), at)
        assert sorted((r[0], r[1], r[2], as_instant(r[3])) for r in customers) == sorted(
            {(o["customer_id"], o["customer_name"], o["customer_region"], last_event[o["customer_id"]]) for o in orders}
        )
        products = self.rows(
            sink, 'SELECT "PRODUCT_ID", "PRODUCT_NAME", "CATEGORY", "PRICE", "PRODUCT_KEY" FROM "DIM_PRODUCT"'
        )
        assert sorted((r[0], r[1], r[2], as_decimal(r[3])) for r in products) == sorted(
            {(o["product_id"], o["product_name"], o["category"], D(str(o["price"]))) for o in orders}
        )
        for rows in (customers, products):
            keys = [r[-1] for r in rows]
            assert all(isinstance(k, int) for k in keys) and len(set(keys)) == len(keys), (
                "surrogate keys must be unique integers"
            )

        dates = self.rows(
            sink,
            """SELECT "DATE_KEY", "FULL_DATE", "DAY", "MONTH", "MONTH_NAME", "QUARTER", "YEAR", "DAY_OF_WEEK",
                      "DAY_NAME", "WEEK_OF_YEAR", "IS_WEEKEND" FROM "DIM_DATE" ORDER BY 1""",
        )
        got_dates = [
            (int(r[0]), as_date(r[1]), *map(int, r[2:4]), r[4], *map(int, r[5:8]), r[8], int(r[9]), bool(r[10]))
            for r in dates
        ]
        assert got_dates == [date_row(d) for d in sorted({as_instant(o["order_timestamp"]).date() for o in orders})]

        rejects = self.rows(
            sink, f'SELECT "KAFKA_PARTITION", "KAFKA_OFFSET", "MESSAGE_VALUE" FROM "{REJECTS_TABLE}" ORDER BY 1, 2'
        )
        assert [(int(p), int(o), as_bytes(v)) for p, o, v in rejects] == sorted(
            (p, o, v) for p, o, k, v in placed if k is None
        )
        assert sink.stored_offsets("g", "orders") == {p: n for p, n in next_offset.items() if n}

    def test_replaying_changes_nothing(self, sink: Sink, stager: Stager) -> None:
        values: list[Any] = [*sample_orders(40), b"{broken", None]
        batches = [stager.batch(values[i : i + 15], start=i) for i in range(0, len(values), 15)]
        for batch in batches:
            sink.write(batch)
        before = self.snapshot(sink)
        for batches_again in (batches, [stager.batch(values)]):
            results = [sink.write(batch) for batch in batches_again]
            assert sum(r.facts_inserted for r in results) == 0
            assert sum(r.duplicates for r in results) == 40
            assert sum(r.rejects for r in results) == 2
            assert sum(r.dimension_rows_inserted + r.dimension_rows_updated for r in results) == 0
            assert self.snapshot(sink) == before

    def test_a_redelivered_grain_value_keeps_the_first_version(self, sink: Sink, stager: Stager) -> None:
        [order] = sample_orders(1)
        result = sink.write(stager.batch([order, order]))
        assert (result.facts_inserted, result.duplicates) == (1, 1)
        # A later batch with other content for the same grain value: write() keeps the first.
        result = sink.write(stager.batch([{**order, "quantity": 5}], start=2))
        assert (result.facts_inserted, result.duplicates) == (0, 1)
        assert self.rows(sink, 'SELECT "QUANTITY", "KAFKA_OFFSET" FROM "FACT_ORDERS"') == [(order["quantity"], 0)]

    def test_a_fenced_batch_applies_only_on_the_offsets_it_expects(self, sink: Sink, stager: Stager) -> None:
        orders = sample_orders(30, customers=30, products=30)
        sink.write(stager.batch(orders[:10]).fenced({}))  # no offset stored yet: expected None
        before = self.snapshot(sink)
        stale = stager.batch(orders[10:20], start=10, partitions=[0] * 5 + [1] * 5)
        # Another loader moved partition 0 on (the loader expected 5), or stored one for partition 1.
        for expected in ({0: 5}, {0: 10, 1: 0}, {}):
            with pytest.raises(OffsetsMovedError):
                sink.write(stale.fenced({"orders": expected}))
            assert self.snapshot(sink) == before
        sink.write(stale.fenced({"orders": {0: 10}}))
        assert sink.stored_offsets("g", "orders") == {0: 15, 1: 20}
        assert self.count(sink, "FACT_ORDERS") == 20

    def test_offsets_keep_their_topic_id_and_reset_anywhere_in_one_transaction(self, sink: Sink, stager: Stager) -> None:
        orders = sample_orders(12)
        sink.write(stager.batch(orders[:4], partitions=[0, 0, 1, 1]).fenced({}, {"orders": "old-life"}))
        sink.write(stager.batch(orders[4:6], start=2).fenced({"orders": {0: 2}}))  # a broker that gives no ID keeps the stored one
        sink.write(stager.batch(orders[6:7], start=9, topic="elsewhere").fenced({}, {"elsewhere": "other"}))
        assert sink.stored_offsets("g", "orders") == {0: 4, 1: 4}
        assert sink.stored_topic_ids("g", "orders") == {0: "old-life", 1: "old-life"}
        before = self.snapshot(sink)
        # Backwards, forwards and a partition never stored; partition 1 is not named, so it keeps its offset.
        sink.reset_offsets("g", "orders", {0: 1, 2: 30}, "new-life")
        assert sink.stored_offsets("g", "orders") == {0: 1, 1: 4, 2: 30}
        assert sink.stored_topic_ids("g", "orders") == {0: "new-life", 1: "old-life", 2: "new-life"}
        assert sink.stored_offsets("g", "elsewhere") == {0: 10}
        for table in (*ORDERS_SCHEMA.tables, REJECTS_TABLE):  # nothing but the offsets moved
            assert self.snapshot(sink)[table] == before[table]
        # A loader that expected the old offset finds it moved; one that read the reset applies.
        stale = stager.batch(orders[7:9], start=4)
        with pytest.raises(OffsetsMovedError):
            sink.write(stale.fenced({"orders": {0: 4}}, {"orders": "new-life"}))
        sink.write(stager.batch(orders[7:9], start=1).fenced({"orders": {0: 1}}, {"orders": "new-life"}))
        assert sink.stored_offsets("g", "orders") == {0: 3, 1: 4, 2: 30}
        sink.reset_offsets("g", "orders", {0: 0, 1: 0}, None)
        assert sink.stored_offsets("g", "orders") == {0: 0, 1: 0, 2: 30}
        assert sink.stored_topic_ids("g", "orders") == {2: "new-life"}

    def test_offsets_resume_and_never_go_backwards(
        self, sink: Sink, stager: Stager, make_sink: Callable[[], Sink]
    ) -> None:
        orders = sample_orders(6)
        assert sink.stored_offsets("g", "orders") == {}
        sink.write(stager.batch(orders[0:2], start=10))
        assert sink.stored_offsets("g", "orders") == {0: 12}
        sink.write(stager.batch(orders[2:3], start=3))  # a replay from an older position
        assert sink.stored_offsets("g", "orders") == {0: 12}
        sink.write(stager.batch(orders[3:4], partition=1, start=0))
        sink.write(stager.batch(orders[4:5], partition=2, start=7, group="other"))
        sink.write(stager.batch(orders[5:6], start=100, topic="elsewhere"))
        assert sink.stored_offsets("g", "orders") == {0: 12, 1: 1}
        assert sink.stored_offsets("other", "orders") == {2: 8}
        assert sink.stored_offsets("g", "elsewhere") == {0: 101}
        assert sink.stored_offsets("nobody", "orders") == {}
        sink.close()
        restarted = make_sink()
        try:
            restarted.prepare(ORDERS_SCHEMA)
            assert restarted.stored_offsets("g", "orders") == {0: 12, 1: 1}
            restarted.write(stager.batch(sample_orders(2, seed=2), start=12))
            assert restarted.stored_offsets("g", "orders") == {0: 14, 1: 1}
        finally:
            restarted.close()

    def test_rejects_are_recorded_once_with_their_bytes_and_reason(self, sink: Sink, stager: Stager) -> None:
        [order] = sample_orders(1)
        values: list[Any] = [
            b"nope",
            b"",
            None,
            b"\xff\xfe\x00",
            b'"text"',
            order,
            {**order, "order_id": "Q", "quantity": 0},
        ]
        keys = [b"k0", None, b"k2", b"\x00\x01", None, b"k5", b"k6"]
        batch = stager.batch(values, keys=keys)
        for _ in range(2):
            result = sink.write(batch)
            assert result.rejects == 6
        assert result.facts_inserted == 0 and result.duplicates == 1
        stored = self.rows(
            sink,
            f"""SELECT "KAFKA_TOPIC", "KAFKA_PARTITION", "KAFKA_OFFSET", "MESSAGE_KEY", "MESSAGE_VALUE", "REASON"
                FROM "{REJECTS_TABLE}" ORDER BY 3""",
        )
        got = [(t, int(p), int(o), as_bytes(k), as_bytes(v), r) for t, p, o, k, v, r in stored]
        expected = [tuple(row.values()) for row in batch.rejects.to_pylist()]
        assert got == expected
        assert [r[2] for r in got] == [0, 1, 2, 3, 4, 6]
        assert [r[5] for r in got][:3] == ["not valid JSON", "empty message", "empty message"]
        [(missing,)] = self.rows(sink, f'SELECT count(*) FROM "{REJECTS_TABLE}" WHERE "REJECTED_AT" IS NULL')
        assert int(missing) == 0
        assert sink.stored_offsets("g", "orders") == {0: 7}

    def test_dimension_members_follow_scd_type_1_by_event_time(self, sink: Sink, stager: Stager) -> None:
        """Each attribute holds the value of its latest event by event time (ties: partition, then offset), whatever order batches come in; a NULL erases nothing."""
        [order] = sample_orders(1)
        base = {**order, "customer_id": "C77"}
        strange = "Zoë O'Brien 李; DROP TABLE x"  # values are data, never SQL

        def event(order_id: str, at: str, name: str | None, region: str | None) -> dict[str, Any]:
            return {**base, "order_id": order_id, "order_timestamp": at, "customer_name": name, "customer_region": region}

        def member() -> list[tuple[Any, ...]]:
            rows = self.rows(
                sink,
                """SELECT "CUSTOMER_KEY", "CUSTOMER_NAME", "CUSTOMER_REGION", "LAST_EVENT_AT" FROM "DIM_CUSTOMER"
                   WHERE "CUSTOMER_ID" = 'C77'""",
            )
            return [(key, name, region, as_instant(at)) for key, name, region, at in rows]

        day2 = as_instant("2024-01-02T00:00:00Z")
        sink.write(stager.batch([event("a", "2024-01-02T00:00:00Z", "One", "North")], partition=1, start=3))
        # Loaded later: older (b), or at the same instant at a lower offset (e), changes
        # nothing; at the same instant on a later partition (c), the region changes.
        sink.write(
            stager.batch(
                [
                    event("b", "2024-01-01T00:00:00Z", "Two", "West"),
                    event("c", "2024-01-02T00:00:00Z", None, "East"),
                    event("e", "2024-01-02T00:00:00Z", "Three", "South"),
                ],
                partitions=[0, 2, 1],
                offsets=[5, 0, 1],
            )
        )
        [(key, *values)] = member()
        assert values == ["One", "East", day2]
        # Newer: the name changes; the NULL region erases nothing.
        sink.write(stager.batch([event("d", "2024-01-03T00:00:00Z", strange, None)], partition=0, start=6))
        assert member() == [(key, strange, "East", as_instant("2024-01-03T00:00:00Z"))]
        # The same events again, oldest last: nothing changes.
        sink.write(stager.batch([event("b", "2024-01-01T00:00:00Z", "Two", "West")], partition=0, start=5))
        assert member() == [(key, strange, "East", as_instant("2024-01-03T00:00:00Z"))]
        keys = self.rows(
            sink, """SELECT DISTINCT "CUSTOMER_KEY" FROM "FACT_ORDERS" WHERE "ORDER_ID" IN ('a', 'b', 'c', 'd', 'e')"""
        )
        assert keys == [(key,)]

    def history(self, sink: Sink) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
        """The history star as :func:`history_oracle` spells it."""
        return read_history(lambda sql: self.rows(sink, sql))

    def test_history_follows_event_time_and_a_late_wave_rewrites_it(self, make_sink: Callable[[], Sink]) -> None:
        """SCD type 2 by event time: shuffled events in small batches, then a late wave of older ones in a second run, give the oracle's star.

        A sink that cannot keep history (``keeps_history = False``) must refuse the star at prepare.
        """
        sink = make_sink()
        if not self.keeps_history:
            self.assert_refused(sink, ORDERS_HISTORY_SCHEMA, "history")
            return
        rng = random.Random(19)
        regions = ["North", "South", None, "East"]
        orders = []
        for n, (customer, day) in enumerate((c, d) for d in range(1, 21) for c in ("C1", "C2", "C3") if rng.random() < 0.7):
            region = regions[(day // 6 + int(customer[1])) % len(regions)]
            orders.append({**sample_orders(1)[0], "order_id": f"H{n}", "customer_id": customer, "customer_name": f"{customer} as of {day}",
                           "customer_region": region, "order_timestamp": f"2024-03-{day:02d}T{rng.randrange(24):02d}:00:00Z"})
        late = [o for o in orders if rng.random() < 0.3]
        # The late wave: older events, some with another region in the middle of a version.
        for o in late:
            if rng.random() < 0.4:
                o["customer_region"] = "West"
        first = [o for o in orders if o not in late]
        rng.shuffle(first)
        placed, offsets = [], {0: 0, 1: 0, 2: 0}
        for o in first + late:
            p = rng.randrange(3)
            placed.append((p, offsets[p], o))
            offsets[p] += 1
        stager = Stager(ORDERS_HISTORY_SCHEMA)
        try:
            sink.prepare(ORDERS_HISTORY_SCHEMA)
            for start in range(0, len(first), 5):
                chunk = placed[start : start + 5]
                sink.write(stager.batch([v for *_, v in chunk], partitions=[p for p, _, _ in chunk], offsets=[o for _, o, _ in chunk]))
            assert self.history(sink) == history_oracle(placed[: len(first)])
            sink.close()
            sink = make_sink()  # a second run
            sink.prepare(ORDERS_HISTORY_SCHEMA)
            wave = placed[len(first) :]
            sink.write(stager.batch([v for *_, v in wave], partitions=[p for p, _, _ in wave], offsets=[o for _, o, _ in wave]))
            versions, facts = self.history(sink)
            assert (versions, facts) == history_oracle(placed)
            assert len(versions) > 6 and len({f for *_, f in facts}) > 6  # the stream did make history
            # Redelivered, the whole stream changes nothing.
            sink.write(stager.batch([v for *_, v in placed], partitions=[p for p, _, _ in placed], offsets=[o for _, o, _ in placed]))
            assert self.history(sink) == (versions, facts)
        finally:
            stager.close()
            sink.close()

    def test_a_star_of_several_topics_shares_its_members_and_commits_every_topic_at_once(self, make_sink: Callable[[], Sink]) -> None:
        """The shop star: an order and a payment point at one inferred customer, which its CDC record completes in place, until a delete.

        A sink that cannot load several topics (``reads_several_topics = False``) must refuse the star at prepare.
        """
        sink = make_sink()
        if not self.reads_several_topics:
            self.assert_refused(sink, SHOP_SCHEMA, "topics")
            return
        mapper = Mapper(SHOP_SCHEMA)

        def row(id_: int, region: str, first_name: str = "Anne") -> dict[str, Any]:
            return {"id": id_, "first_name": first_name, "last_name": "Kretchmar", "email": "annek@noanswer.org", "region": region}

        order = {"order_id": "O1", "order_timestamp": "2024-05-01T10:00:00Z", "customer_id": 1, "product_id": "P1",
                 "product_name": "Mouse", "category": "Accessories", "quantity": 2, "unit_price": "12.50"}  # fmt: skip
        payment = {"payment_id": "Y1", "paid_at": "2024-05-01T10:05:00Z", "payer": {"customer_id": 1}, "order_id": "O1", "amount": "25.00"}
        customers = 'SELECT "CUSTOMER_KEY", "IS_INFERRED", "FIRST_NAME", "REGION", "IS_CURRENT" FROM "DIM_CUSTOMER" WHERE "CUSTOMER_KEY" <> -1 ORDER BY "VALID_FROM"'
        try:
            sink.prepare(SHOP_SCHEMA)
            first = stage_topics(mapper, {ORDERS_TOPIC: [orjson.dumps(order)], PAYMENTS_TOPIC: [orjson.dumps(payment), b"{}"]})
            result = sink.write(first.fenced({}))
            assert (result.facts_inserted, result.records, result.rejects) == (2, 0, 1)
            [(key, inferred, name, region, _)] = self.rows(sink, customers)
            assert (bool(inferred), name, region) == (True, None, None)
            refs = 'SELECT "CUSTOMER_KEY" FROM "FACT_ORDERS" UNION ALL SELECT "CUSTOMER_KEY" FROM "FACT_PAYMENTS"'
            assert self.rows(sink, refs) == [(key,), (key,)]
            record = debezium_change("c", row(1, "EU"), epoch_ms("2024-05-01T11:00:00Z"))
            sink.write(stage_topics(mapper, {CUSTOMERS_TOPIC: [record]}).fenced({}))
            assert [(k, bool(i), n, r) for k, i, n, r, _ in self.rows(sink, customers)] == [(key, False, "Anne", "EU")]
            # A loader that thinks one of the two topics of its batch is elsewhere writes nothing at all.
            moved = debezium_change("u", row(1, "US", "Anne Marie"), epoch_ms("2024-06-01T00:00:00Z"), before=row(1, "EU"))
            later = {**order, "order_id": "O2", "order_timestamp": "2024-06-02T00:00:00Z"}
            second = stage_topics(mapper, {CUSTOMERS_TOPIC: [moved], ORDERS_TOPIC: [orjson.dumps(later)]}, start={CUSTOMERS_TOPIC: 1, ORDERS_TOPIC: 1})
            before = self.snapshot(sink, SHOP_SCHEMA)
            with pytest.raises(OffsetsMovedError):
                sink.write(second.fenced({ORDERS_TOPIC: {0: 1}, CUSTOMERS_TOPIC: {0: 0}}))
            assert self.snapshot(sink, SHOP_SCHEMA) == before
            sink.write(second.fenced({ORDERS_TOPIC: {0: 1}, CUSTOMERS_TOPIC: {0: 1}}))
            assert [(bool(i), n, r, bool(c)) for _, i, n, r, c in self.rows(sink, customers)] == [
                (False, "Anne Marie", "EU", False), (False, "Anne Marie", "US", True),
            ]  # fmt: skip
            by_order = 'SELECT f."ORDER_ID", d."REGION" FROM "FACT_ORDERS" f JOIN "DIM_CUSTOMER" d ON d."CUSTOMER_KEY" = f."CUSTOMER_KEY" ORDER BY 1'
            assert self.rows(sink, by_order) == [("O1", "EU"), ("O2", "US")]
            offsets = {t: sink.stored_offsets("g", t) for t in (ORDERS_TOPIC, PAYMENTS_TOPIC, CUSTOMERS_TOPIC)}
            assert offsets == {ORDERS_TOPIC: {0: 2}, PAYMENTS_TOPIC: {0: 2}, CUSTOMERS_TOPIC: {0: 2}}
            # The row is deleted in the source: the version in force closes, a deleted one begins; the tombstone is counted.
            deleted = debezium_change("d", None, epoch_ms("2024-07-01T00:00:00Z"), before={"id": 1})
            result = sink.write(stage_topics(mapper, {CUSTOMERS_TOPIC: [deleted, None]}, start={CUSTOMERS_TOPIC: 2}))
            assert (result.records, result.tombstones, result.rejects) == (1, 1, 0)
            current = 'SELECT "REGION", "IS_DELETED", "DELETED_AT" FROM "DIM_CUSTOMER" WHERE "IS_CURRENT"'
            assert [(r, bool(d), as_instant(t)) for r, d, t in self.rows(sink, current)] == [("US", True, datetime(2024, 7, 1, tzinfo=UTC))]
        finally:
            mapper.close()
            sink.close()

    def bookshop(self, sink: Sink) -> dict[str, Any]:
        """What ``sink`` holds of the bookshop star, in :func:`bookshop_oracle`'s form (but ``duplicates``)."""
        orders = self.rows(sink, 'SELECT f."ORDER_ID", f."PLACED_AT", f."SHIP_COUNTRY", f."COUPON", c."CUSTOMER_ID" FROM "FACT_ORDERS" f '
                                 'JOIN "DIM_CUSTOMER" c ON c."CUSTOMER_KEY" = f."CUSTOMER_KEY"')  # fmt: skip
        lines = self.rows(sink, 'SELECT f."ORDER_ID", f."LINE_NO", f."QTY", f."UNIT_PRICE", f."LINE_AMOUNT", b."ISBN", c."CUSTOMER_ID" '
                                'FROM "FACT_ORDER_LINES" f JOIN "DIM_BOOK" b ON b."BOOK_KEY" = f."BOOK_KEY" '
                                'JOIN "DIM_CUSTOMER" c ON c."CUSTOMER_KEY" = f."CUSTOMER_KEY"')  # fmt: skip
        rejects = self.rows(sink, f'SELECT "KAFKA_PARTITION", "KAFKA_OFFSET" FROM "{REJECTS_TABLE}"')
        return {
            "orders": sorted((o, as_instant(t), s, c, int(k)) for o, t, s, c, k in orders),
            "lines": sorted((o, int(n), int(q), as_decimal(p), as_decimal(a), i, int(k)) for o, n, q, p, a, i, k in lines),
            "books": sorted(self.rows(sink, 'SELECT "ISBN", "TITLE" FROM "DIM_BOOK" WHERE "BOOK_KEY" <> -1')),
            "customers": sorted((int(k), c) for k, c in self.rows(sink, 'SELECT "CUSTOMER_ID", "CUSTOMER_CITY" FROM "DIM_CUSTOMER" WHERE "CUSTOMER_KEY" <> -1')),
            "rejects": sorted((int(p), int(o)) for p, o in rejects),
        }

    def progress(self, sink: Sink) -> list[tuple[Any, ...]]:
        """What ``sink`` holds of ``FACT_ORDER_PROGRESS``, in :func:`bookshop_progress_oracle`'s form."""
        times = ["PLACED_AT", "STATUS_AT", "PAID_AT", "SHIPPED_AT", "DELIVERED_AT", "CANCELLED_AT"]
        # Each timestamp with whether it is NULL: the local Snowflake endpoint reads a NULL timestamp back as 1970.
        read = ", ".join(f'f."{t}", f."{t}" IS NULL' for t in times)
        rows = self.rows(
            sink,
            f'SELECT f."ORDER_ID", f."SHIP_COUNTRY", f."ORDER_TOTAL", c."CUSTOMER_ID", f."STATUS", {read} '
            'FROM "FACT_ORDER_PROGRESS" f JOIN "DIM_CUSTOMER" c ON c."CUSTOMER_KEY" = f."CUSTOMER_KEY"',
        )
        found = []
        for order, country, total, customer, status, *flagged in rows:
            at = dict(zip(times, (None if null else as_instant(t) for t, null in zip(flagged[::2], flagged[1::2]))))
            customer = int(customer) if customer is not None else None
            found.append((order, at["PLACED_AT"], country, as_decimal(total), customer, status, *(at[t] for t in times[1:])))
        return sorted(found)

    @pytest.mark.parametrize("size", [13, 1_000])
    def test_an_accumulating_snapshot_follows_both_topics_by_event_time(self, make_sink: Callable[[], Sink], size: int) -> None:
        """The bookshop's orders make a row per order, its status events fill the status and the milestones; ``changes: latest``.

        The status events come late, out of order, repeated, a few before their order, on
        two partitions; loaded in batches of ``size`` (each batch a mix of both topics) and
        then replayed, ``FACT_ORDER_PROGRESS`` equals :func:`bookshop_progress_oracle`. No
        event is a duplicate or a conflict. A sink that loads no changing facts
        (``loads_changing_facts = False``) must refuse the star at prepare.
        """
        from starload.generators.bookshop import BOOKSHOP_PROGRESS_GENERATOR, STATUS_TOPIC
        from starload.generators.bookshop import BOOKSHOP_PROGRESS_SCHEMA as SCHEMA

        sink = make_sink()
        if not self.loads_changing_facts:
            self.assert_refused(sink, SCHEMA, "changes: latest")
            return
        counts: dict[tuple[str, int], int] = {}
        messages = []
        for event in islice(BOOKSHOP_PROGRESS_GENERATOR.stream(5), 400):
            where = (event.topic, event.key[-1] % 2)
            messages.append((*where, counts.get(where, 0), event.value))
            counts[where] = counts.get(where, 0) + 1
        expected = bookshop_progress_oracle(messages)
        first = {}
        for topic, _, _, value in messages:
            first.setdefault(value["order_id"], topic)
        assert STATUS_TOPIC in first.values() and any(r[9] for r in expected)  # a status before its order, a delivery
        mapper = Mapper(SCHEMA)
        try:
            sink.prepare(SCHEMA)

            results = write_batches(sink, mapper, messages, size)
            assert self.progress(sink) == expected
            assert sum(r.facts_inserted for r in results) == len(expected)
            assert sum(r.duplicates + r.rejects + r.conflicts for r in results) == 0
            assert sink.violations(SCHEMA) == []
            [again] = write_batches(sink, mapper, messages, len(messages))  # replayed whole: nothing changes
            assert (again.facts_inserted, again.facts_updated, again.duplicates) == (0, 0, 0)
            assert self.progress(sink) == expected
        finally:
            mapper.close()
            sink.close()

    @pytest.mark.parametrize("size", [7, 1_000])
    def test_order_lines_load_whole_or_are_rejected_whole(self, make_sink: Callable[[], Sink], size: int) -> None:
        """The bookshop star: one topic feeds an order fact and a line fact, a row per element of ``lines``; a bad line rejects its order whole.

        Its orders have 0 to 5 lines, some redelivered, some with a bad line; loaded in
        batches of ``size`` and then replayed, the star equals :func:`bookshop_oracle`. An
        order repeated with a changed line is a conflict: rejected whole, in both facts.
        A sink that loads no arrays (``loads_arrays = False``) must refuse the star at prepare.
        """
        from starload.generators.bookshop import BOOKSHOP_GENERATOR, BOOKSHOP_SCHEMA
        from starload.generators.bookshop import ORDERS_TOPIC as TOPIC

        sink = make_sink()
        if not self.loads_arrays:
            self.assert_refused(sink, BOOKSHOP_SCHEMA, "elements of lines")
            return
        events = [e.value for e in islice(BOOKSHOP_GENERATOR.stream(7), 150)]
        events.append({**events[2], "order_id": "B-empty", "lines": None})  # a null array: no line, the order loads
        expected = bookshop_oracle([(0, n, v) for n, v in enumerate(events)])
        assert expected["rejects"] and expected["duplicates"] and len(expected["lines"]) > len(expected["orders"])  # the stream has them all
        stager = Stager(BOOKSHOP_SCHEMA, topic=TOPIC)
        try:
            sink.prepare(BOOKSHOP_SCHEMA)
            results = []
            for start in range(0, len(events), size):
                batch = stager.batch(events[start : start + size], start=start)
                results.append(sink.write(batch.with_conflicts(sink.find_conflicts(batch)).fenced({TOPIC: {0: start or None}})))
            assert self.bookshop(sink) == {k: v for k, v in expected.items() if k != "duplicates"}
            assert sum(r.facts_inserted for r in results) == len(expected["orders"]) + len(expected["lines"])
            assert sum(r.duplicates for r in results) == expected["duplicates"]
            assert sum(r.rejects for r in results) == len(expected["rejects"])
            [(reason,)] = self.rows(sink, f'SELECT "REASON" FROM "{REJECTS_TABLE}" WHERE "KAFKA_OFFSET" = {expected["rejects"][0][1]}')
            assert reason.startswith("lines[")  # names the element
            # Replayed from the start: every order a duplicate, every reject recorded once, nothing changes.
            before = self.snapshot(sink, BOOKSHOP_SCHEMA)
            again = sink.write(stager.batch(events))
            assert (again.facts_inserted, again.duplicates) == (0, len(events) - len(expected["rejects"]))
            assert {k: v for k, v in self.snapshot(sink, BOOKSHOP_SCHEMA).items() if k != OFFSETS_TABLE} == {
                k: v for k, v in before.items() if k != OFFSETS_TABLE
            }
            # A loaded order with one line changed: a conflict, rejected whole (its other lines and its header too).
            changed = {**events[0], "lines": [*events[0]["lines"][:-1], {**events[0]["lines"][-1], "qty": 9}], "coupon": "NEW"}
            fresh = {**changed, "order_id": "B-new"}
            batch = stager.batch([changed, fresh], start=len(events))
            result = sink.write(batch.with_conflicts(sink.find_conflicts(batch)))
            assert (result.conflicts, result.rejects, result.facts_inserted) == (1, 1, 1 + len(changed["lines"]))
            assert self.rows(sink, 'SELECT count(*) FROM "FACT_ORDER_LINES" WHERE "QTY" = 9') == [(len(fresh["lines"]) and 1,)]
        finally:
            stager.close()
            sink.close()

    def test_timestamps_are_stored_in_utc_and_dated_by_the_utc_day(self, sink: Sink, stager: Stager) -> None:
        [order] = sample_orders(1)
        sink.write(
            stager.batch(
                [
                    {**order, "order_id": "east", "order_timestamp": "2024-02-29T23:30:00-05:00"},
                    {**order, "order_id": "naive", "order_timestamp": "2024-03-02 10:00:00.250"},
                ]
            )
        )
        rows = self.rows(sink, 'SELECT "ORDER_ID", "ORDER_TIMESTAMP", "DATE_KEY" FROM "FACT_ORDERS" ORDER BY 1')
        assert [(i, as_instant(t), int(k)) for i, t, k in rows] == [
            ("east", datetime(2024, 3, 1, 4, 30, tzinfo=UTC), 20240301),
            ("naive", datetime(2024, 3, 2, 10, 0, 0, 250_000, tzinfo=UTC), 20240302),
        ]
        weekend = self.rows(sink, 'SELECT "DATE_KEY", "DAY_NAME", "IS_WEEKEND" FROM "DIM_DATE" ORDER BY 1')
        assert [(int(k), n, bool(w)) for k, n, w in weekend] == [
            (20240301, "Friday", False),
            (20240302, "Saturday", True),
        ]

    def test_statements_do_not_grow_with_the_batch(self, sink: Sink, stager: Stager) -> None:
        orders = sample_orders(810, customers=300, products=40)
        # A first batch may run more (the offsets row of a new partition, a staging table).
        sink.write(stager.batch(orders[:5]))
        small = sink.write(stager.batch(orders[5:10], start=5))
        large = sink.write(stager.batch(orders[10:], start=10))
        assert large.facts_inserted == 800
        assert small.statements > 0, "WriteResult.statements should count the statements the sink ran"
        assert large.statements == small.statements, "a sink must be set-based: no statement per row"

    def test_a_failed_write_leaves_nothing_behind(self, sink: Sink, stager: Stager) -> None:
        orders = sample_orders(30)
        sink.write(stager.batch(orders[:10]))
        before = self.snapshot(sink)
        fresh = [{**o, "customer_id": f"NEW{i}", "product_id": f"NEW{i}"} for i, o in enumerate(orders[10:])]
        good = stager.batch([*fresh, b"bad"], start=10)
        # A batch whose facts lack a column the sink needs fails after the dimensions are staged.
        broken = attrs.evolve(good, facts={"FACT_ORDERS": good.facts["FACT_ORDERS"].drop_columns(["KAFKA_OFFSET"])})
        with pytest.raises(SinkError):
            sink.write(broken)
        assert self.snapshot(sink) == before
        assert sink.stored_offsets("g", "orders") == {0: 10}
        result = sink.write(good)  # the sink is still usable, and nothing of the failed write lingers
        assert (result.facts_inserted, result.duplicates, result.rejects) == (20, 0, 1)
        assert (self.count(sink, "DIM_CUSTOMER"), self.count(sink, "DIM_PRODUCT")) == (
            len(before["DIM_CUSTOMER"]) + 20,
            len(before["DIM_PRODUCT"]) + 20,
        )
        assert sink.stored_offsets("g", "orders") == {0: 31}

    def test_any_star_schema(self, make_sink: Callable[[], Sink]) -> None:
        def reading(vendor: str, seq: int, day: int, value: Any, samples: int, **more: Any) -> dict[str, Any]:
            at = f"2024-05-0{day}T00:0{seq}:00Z"
            return {
                "vendor": vendor,
                "serial": 1,
                "seq": seq,
                "read_at": at,
                "reading": value,
                "samples": samples,
                **more,
            }

        events = [
            reading("acme", 1, 1, "1.250", 4, site="s1", site_name="North", firmware=3),
            reading("acme", 2, 1, 2, 1, site="s1", firmware=4),
            reading("zeta", 1, 1, "-0.5", 3, site="s2", site_name="South"),
        ]
        events += [events[1], reading("acme", 3, 2, 1, 0, site="s1")]  # a redelivery; a reject (samples > 0)
        sink = make_sink()
        stager = Stager(READINGS_SCHEMA, topic="readings")
        try:
            sink.prepare(READINGS_SCHEMA)
            first = sink.write(stager.batch(events[:2]))
            second = sink.write(stager.batch(events[2:], start=2))
            assert (first.facts_inserted + second.facts_inserted, second.duplicates, second.rejects) == (3, 1, 1)
            again = sink.write(stager.batch(events))
            assert (again.facts_inserted, again.duplicates, again.rejects) == (0, 4, 1)  # the redelivery twice
            facts = self.rows(
                sink,
                """SELECT d."VENDOR", d."SERIAL_NO", f."SEQ", s."SITE_ID",
                          f."READING", f."SAMPLES", f."READING_X_SAMPLES"
                   FROM "FACT_READINGS" f
                   JOIN "DIM_DEVICE" d ON d."DEVICE_KEY" = f."DEVICE_KEY"
                   JOIN "DIM_SITE" s ON s."SITE_KEY" = f."SITE_KEY" ORDER BY 1, 3""",
            )
            assert [(v, int(n), int(q), s, as_decimal(r), int(c), as_decimal(m)) for v, n, q, s, r, c, m in facts] == [
                ("acme", 1, 1, "s1", D("1.25"), 4, D(5)),
                ("acme", 1, 2, "s1", D(2), 1, D(2)),
                ("zeta", 1, 1, "s2", D("-0.5"), 3, D("-1.5")),
            ]
            devices = self.rows(sink, 'SELECT "VENDOR", "SERIAL_NO", "FIRMWARE" FROM "DIM_DEVICE" ORDER BY 1')
            assert [(v, int(n), f if f is None else int(f)) for v, n, f in devices] == [
                ("acme", 1, 4),
                ("zeta", 1, None),
            ]
            assert self.rows(sink, 'SELECT "SITE_ID", "SITE_NAME" FROM "DIM_SITE" ORDER BY 1') == [
                ("s1", "North"),
                ("s2", "South"),
            ]
            assert sink.stored_offsets("g", "readings") == {0: 5}
        finally:
            stager.close()
            sink.close()


    def test_the_star_is_recorded_and_a_changed_spec_or_table_is_refused(self, make_sink: Callable[[], Sink]) -> None:
        """``prepare`` records the spec; ``verify`` (creating nothing) and ``prepare`` refuse a spec or a table that differs."""
        sink = make_sink()
        try:
            sink.verify(ORDERS_SCHEMA)  # an empty warehouse holds nothing that could differ
            found = sink.inspect(ORDERS_SCHEMA)
            assert found is not None and (found.recorded, dict(found.tables)) == (None, {}), "verify created something"
            sink.prepare(ORDERS_SCHEMA)
            [(star, digest, spec)] = self.rows(sink, f'SELECT "STAR", "FINGERPRINT", "SPEC" FROM "{STARS_TABLE}"')
            assert (star, digest) == ("orders", fingerprint(ORDERS_SCHEMA))
            assert StarSchema.from_dict(orjson.loads(spec)) == ORDERS_SCHEMA
            changed = changed_fact_column(ORDERS_SCHEMA, "SHIPPING_REGION", type="integer", source="ship.region")
            for call in (sink.verify, sink.prepare):
                with pytest.raises(SpecDriftError) as caught:
                    call(changed)
                lines = str(caught.value).splitlines()
                assert any(
                    line.startswith("  FACT_ORDERS.SHIPPING_REGION: ") and " in the warehouse, " in line and line.endswith("in the spec (cannot be migrated)")
                    for line in lines
                ), lines
                assert "  FACT_ORDERS.SHIPPING_REGION: source 'shipping_region' in the recorded spec, 'ship.region' in this one (cannot be migrated)" in lines
            assert self.rows(sink, f'SELECT "FINGERPRINT" FROM "{STARS_TABLE}"') == [(digest,)]
            sink.verify(ORDERS_SCHEMA)
            sink.prepare(ORDERS_SCHEMA)  # the recorded star passes, again and again
            self.query(sink, 'ALTER TABLE "DIM_CUSTOMER" ADD COLUMN "EXTRA" VARCHAR(10)')
            with pytest.raises(SpecDriftError, match=r"\n  DIM_CUSTOMER\.EXTRA: \S+ in the warehouse, not in the spec"):
                sink.verify(ORDERS_SCHEMA)
        finally:
            sink.close()

    def test_a_file_declared_star_with_every_type(self, make_sink: Callable[[], Sink]) -> None:
        events = [
            every_type_sample(1, "d1"),
            every_type_sample(2, "d1", reading={"price": 0, "value": {}, "valid": False}, meta={}),
            every_type_sample(3, "d2", epoch={"s": 1.5, "ms": -1}, calibrated_on=None, device={"id": "d2", "status": None}),
        ]
        bad = [
            every_type_sample(4, "d1", reading={"valid": "yes"}),  # a boolean is true or false only
            every_type_sample(5, "d1", device="d1"),  # a scalar where an object is expected
            every_type_sample(6, "d1", calibrated_on="2024-2-29"),
        ]
        sink = make_sink()
        stager = Stager(EVERY_TYPE_SCHEMA, topic="samples")
        try:
            sink.prepare(EVERY_TYPE_SCHEMA)
            first = sink.write(stager.batch(events[:2] + bad[:1]))
            second = sink.write(stager.batch([events[1], events[2], *bad[1:]], start=3))  # with a redelivery
            assert (first.facts_inserted + second.facts_inserted, second.duplicates, first.rejects + second.rejects) == (3, 1, 3)
            facts = self.rows(
                sink,
                """SELECT f."SAMPLE_ID", f."SEQ", d."DEVICE_ID", f."TAKEN_AT", f."PRICE", f."TEMPERATURE", f."VALID",
                          f."CALIBRATED_ON", f."EPOCH_S", f."EPOCH_MS", f."NOTE", f."DATE_KEY"
                   FROM "FACT_SAMPLES" f JOIN "DIM_DEVICE" d ON d."DEVICE_KEY" = f."DEVICE_KEY" ORDER BY 2""",
            )
            norm = [
                (i, int(q), d, as_instant(t), as_decimal(p), None if x is None else float(x), None if v is None else bool(v),
                 None if c is None else as_date(c), None if s is None else as_instant(s), as_instant(ms), n, int(k))
                for i, q, d, t, p, x, v, c, s, ms, n, k in facts
            ]
            at = lambda day, hour, second=0, micro=0: datetime(2024, 5, day, hour, 0, second, micro, tzinfo=UTC)  # noqa: E731
            assert norm == [
                ("S1", 1, "d1", at(1, 8), D("1.125"), -12.5, True, date(2024, 2, 29), at(1, 10, 1), at(1, 10, 0, 124000), "note 1", 20240501),
                ("S2", 2, "d1", at(2, 8), D(0), None, False, date(2024, 2, 29), at(1, 10, 2), at(1, 10, 0, 125000), None, 20240502),
                ("S3", 3, "d2", at(3, 8), D("3.125"), -37.5, True, None, datetime(1970, 1, 1, 0, 0, 1, 500000, tzinfo=UTC),
                 datetime(1969, 12, 31, 23, 59, 59, 999000, tzinfo=UTC), "note 3", 20240503),
            ]
            devices = self.rows(sink, 'SELECT "DEVICE_ID", "ONLINE", "INSTALLED_ON", "FIRMWARE" FROM "DIM_DEVICE" ORDER BY 1')
            assert [(d, None if o is None else bool(o), i and as_date(i), f and int(f)) for d, o, i, f in devices] == [
                ("d1", False, date(2023, 12, 31), 2),  # the later message's values; a null never erases
                ("d2", None, None, None),
            ]
            reasons = [r for (r,) in self.rows(sink, f'SELECT "REASON" FROM "{REJECTS_TABLE}" ORDER BY "KAFKA_OFFSET"')]
            assert reasons == [
                "reading.valid: expected true or false",
                "device: expected an object; device.id: missing",
                "calibrated_on: expected an ISO date string (YYYY-MM-DD)",
            ]
        finally:
            stager.close()
            sink.close()


class LocalEndpoint:
    """A local stand-in service of the tests, run as ``python -m <module> --port P …`` for the life of a ``with`` block."""

    #: The module that serves it, and what it is called in errors.
    module = ""
    what = ""

    def __init__(self) -> None:
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self._log: Any = None

    def arguments(self) -> list[str]:
        """Its command-line arguments besides ``--port``."""
        return []

    def __enter__(self) -> Self:
        self._log = tempfile.TemporaryFile()
        command = [sys.executable, "-m", self.module, "--port", str(self.port), *self.arguments()]
        self.process = subprocess.Popen(command, stdout=self._log, stderr=self._log)
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return self
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self._log.seek(0)
                    tail = self._log.read().decode(errors="replace")[-2000:]
                    self.__exit__()
                    msg = f"the {self.what} did not start: {tail}"
                    raise RuntimeError(msg) from None
                time.sleep(0.1)

    def __exit__(self, *_exc: object) -> None:
        if self.process is not None:
            stop_process(self.process, grace=10)
            self.process = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def _control(self, path: str, payload: Any = None) -> dict[str, Any]:
        import urllib.request

        data = orjson.dumps(payload if payload is not None else {})
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}/starload/{path}", data=data, method="POST")
        with urllib.request.urlopen(request, timeout=10) as response:
            return dict(orjson.loads(response.read()))


class LocalSchemaRegistry(LocalEndpoint):
    """The local Schema Registry (:mod:`starload.schema_registry_endpoint`: Confluent's API and its Avro compatibility rule, in memory)."""

    module = "starload.schema_registry_endpoint"
    what = "local Schema Registry"

    @property
    def url(self) -> str:
        """Its URL, for ``SchemaRegistryClient({"url": …})`` and ``--schema-registry``."""
        return f"http://127.0.0.1:{self.port}"

    def fail_next(self, times: int = 1, status: int = 500) -> None:
        """Make the next ``times`` API calls answer ``status`` (error code 50001)."""
        self._control("faults", {"status": status, "times": times})

    def requests(self) -> int:
        """API calls served since start or :meth:`reset`."""
        return int(self._control("stats")["requests"])

    def reset(self) -> None:
        """Forget faults not yet used, and the count of calls."""
        self._control("reset")


class RemoteSchemaRegistry:
    """A real Schema Registry at ``url`` standing in for :class:`LocalSchemaRegistry` (the opt-in suite: ``STARLOAD_SCHEMA_REGISTRY_TEST_URL``).

    It has no fault injection nor request counts: a test that needs them is skipped on it.
    The subjects the tests register are left there (each test names its own).
    """

    def __init__(self, url: str) -> None:
        self.url = url

    def fail_next(self, times: int = 1, status: int = 500) -> None:
        pytest.skip("injects registry faults: the local Schema Registry only")

    def requests(self) -> int:
        pytest.skip("counts registry requests: the local Schema Registry only")

    def reset(self) -> None:
        """Nothing to forget."""


class LocalSnowflake(LocalEndpoint):
    """The local Snowflake endpoint (:mod:`starload.snowflake_endpoint`: fakesnow held to Snowflake's rules).

    Runs for the life of a ``with`` block. Every measurement gets a fresh schema of one
    database (the endpoint keeps all of them in one in-memory database);
    :meth:`fresh_schema` returns connector settings. ``latency_ms`` holds each request
    that long, as a remote warehouse would; :meth:`inject` and :meth:`stats` reach the
    endpoint's fault injection and request counts.
    """

    DATABASE = "E_COMMERCE"
    module = "starload.snowflake_endpoint"
    what = "local Snowflake endpoint"

    def __init__(self, *, latency_ms: float = 0) -> None:
        super().__init__()
        self.latency_ms = latency_ms

    def arguments(self) -> list[str]:
        return ["--latency-ms", str(self.latency_ms)]

    @property
    def endpoint(self) -> dict[str, Any]:
        """Connector arguments for the endpoint itself (no database or schema)."""
        return {
            "host": "localhost", "port": self.port, "protocol": "http",
            "account": "fakesnow", "user": "starload", "password": "not-a-real-secret-42",
        }  # fmt: skip

    def inject(
        self,
        match: str,
        *,
        action: str = "error",
        times: int = 1,
        errno: int = 990002,
        message: str = "injected failure",
        seconds: float = 0.0,
    ) -> None:
        """Make the next ``times`` statements matching the regular expression ``match`` fail, or be held (see the endpoint module)."""
        fault = {"match": match, "action": action, "times": times, "errno": errno, "message": message, "seconds": seconds}
        self._control("faults", [fault])

    def stats(self) -> dict[str, int]:
        """Requests served since start or :meth:`reset` (``all``, ``queries``, ``multi``), and lock times (module docstring)."""
        return dict(self._control("stats")["requests"])

    def reset(self) -> None:
        """Clear the request counts and the faults not yet used."""
        self._control("reset")

    def connect(self, settings: dict[str, Any]) -> Any:
        """A connector connection with ``settings``."""
        import snowflake.connector

        return snowflake.connector.connect(**settings, network_timeout=10)

    def fresh_schema(self, label: str) -> dict[str, Any]:
        """Create a new schema; the connector settings to use it."""
        schema = f"{label.upper()}_{uuid.uuid4().hex[:8].upper()}"
        with self.connect(self.endpoint) as con:
            con.cursor().execute(f"CREATE DATABASE IF NOT EXISTS {self.DATABASE}")
            con.cursor().execute(f"CREATE SCHEMA IF NOT EXISTS {self.DATABASE}.{schema}")
        return {**self.endpoint, "database": self.DATABASE, "schema": schema}


def snowflake_environment(settings: dict[str, Any]) -> dict[str, str]:
    """This process's environment without its own ``SNOWFLAKE_*`` variables, plus ``settings`` as ``SNOWFLAKE_*``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SNOWFLAKE_")}
    return env | {f"SNOWFLAKE_{k.upper()}": str(v) for k, v in settings.items()}
