"""What history costs: the orders star with the customer's region kept as SCD type 2, against the type-1 orders star.

    python benchmarks/history.py [--count N] [--customers N] [--batch-rows N] [--rounds N]
                                 [--late-sizes N,N] [--late-fraction F] [--changing F]
                                 [--snowflake-batch N]

No broker is involved (it would add the same cost to both stars): seeded orders
(``--customers`` customers, each moving region four times over the 30 days, so there
is history to keep) are mapped (:class:`starload.mapping.Mapper`) and written to a
fresh in-memory DuckDB sink, in one process, so the stars are measured under the same
load. Three measurements:

(a) **In order.** ``--count`` orders sorted by event time, in ``--batch-rows``
    batches, into ``ORDERS_SCHEMA`` then ``ORDERS_HISTORY_SCHEMA``, ``--rounds``
    times; microseconds per message (mapping and writing) of the best round, and the
    history/type-1 ratio.
(b) **Late changes.** For each size of ``--late-sizes``: that many orders loaded in
    order into the history star, then one batch of ``--late-fraction`` × size older
    orders (times spread over the whole 30 days), a ``--changing`` share of them with
    a region the customer never had (each splits a version), the rest agreeing with
    the history. Printed: the late batch's seconds, the seconds of a batch of as many
    new, in-order orders on the same star (what lateness adds is the difference), the
    facts loaded before that the late batch re-pointed, and the added microseconds
    per re-pointed fact. Every star is checked with ``Sink.violations`` afterwards.
(c) **Statements per batch on Snowflake.** Through the local Snowflake endpoint and
    the real connector (needs ``starload[test]``), batches of ``--snowflake-batch``
    orders into both stars: three in order, then (history only) one late;
    ``WriteResult.statements`` of all but the first (which also stores the offsets of a
    new partition).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from itertools import islice
from typing import Any

import orjson
from rich.console import Console
from rich.table import Table

from starload import ORDERS_GENERATOR, ORDERS_HISTORY_SCHEMA, ORDERS_SCHEMA, DuckDBSink, StarSchema
from starload.mapping import Mapper, raw_batch
from starload.sinks.base import Sink

#: Each customer moves region this many times over the 30 days of generated orders.
MOVES = 4
#: The region a late, history-changing order carries (no customer ever lives there).
ELSEWHERE = "Elsewhere"


def orders(count: int, *, seed: int, customers: int) -> list[dict[str, Any]]:
    """``count`` seeded orders of ``customers`` customers who move :data:`MOVES` times, sorted by event time."""
    stream = ORDERS_GENERATOR.stream(seed, customers=customers, products=50, moves=MOVES)
    return sorted((e.value for e in islice(stream, count)), key=lambda o: o["order_timestamp"])


class Loader:
    """Maps and writes batches of orders into one sink, counting the time it takes; offsets run on from batch to batch."""

    def __init__(self, schema: StarSchema, sink: Sink) -> None:
        self.schema, self.sink, self.mapper = schema, sink, Mapper(schema)
        sink.prepare(schema)
        self.offset = 0

    def write(self, values: Sequence[dict[str, Any]]) -> tuple[float, int]:
        """Write one batch; (seconds mapping and writing, statements the sink ran)."""
        raw = raw_batch([orjson.dumps(v) for v in values], offsets=range(self.offset, self.offset + len(values)))
        self.offset += len(values)
        began = time.perf_counter()
        result = self.sink.write(self.mapper.stage(raw, topic="orders", group="bench"))
        seconds = time.perf_counter() - began
        assert result.facts_inserted == len(values), result
        return seconds, result.statements

    def load(self, values: Sequence[dict[str, Any]], batch_rows: int) -> float:
        """Write ``values`` in batches of ``batch_rows``; the seconds it took."""
        return sum(self.write(values[i : i + batch_rows])[0] for i in range(0, len(values), batch_rows))

    def close(self) -> None:
        self.mapper.close()
        self.sink.close()


@contextmanager
def duckdb_loader(schema: StarSchema) -> Iterator[Loader]:
    loader = Loader(schema, DuckDBSink(":memory:"))
    try:
        yield loader
    finally:
        loader.close()


def fact_keys(sink: DuckDBSink) -> dict[str, int]:
    """Each order's customer key."""
    return dict(sink.connection.execute('SELECT "ORDER_ID", "CUSTOMER_KEY" FROM "FACT_ORDERS"').fetchall())


def late_orders(count: int, *, customers: int, changing: float) -> list[dict[str, Any]]:
    """``count`` more orders over the same 30 days (another seed); every ``1 / changing``-th carries :data:`ELSEWHERE`."""
    late = orders(count, seed=7, customers=customers)
    every = round(1 / changing) if changing else 0
    return [{**o, "customer_region": ELSEWHERE} if every and n % every == 0 else o for n, o in enumerate(late)]


def in_order(args: argparse.Namespace, console: Console) -> None:
    """(a): the same in-order stream into both stars."""
    values = orders(args.count, seed=1, customers=args.customers)
    stars = {"orders (type 1)": ORDERS_SCHEMA, "orders_history (region type 2)": ORDERS_HISTORY_SCHEMA}
    runs: dict[str, list[float]] = {name: [] for name in stars}
    versions = 0
    for _ in range(args.rounds):
        for name, schema in stars.items():
            with duckdb_loader(schema) as loader:
                runs[name].append(loader.load(values, args.batch_rows) / args.count * 1e6)
                if schema.dimensions[0].keeps_history:
                    assert loader.sink.violations(schema) == []
                    versions = loader.sink.connection.execute('SELECT count(*) FROM "DIM_CUSTOMER"').fetchone()[0]
    table = Table("star", "µs/msg (best)", "µs/msg (median)", "× type 1 (best)",
                  title=f"(a) {args.count:,} orders in event-time order, {args.batch_rows:,} a batch, {args.rounds} rounds; "
                        f"{args.customers:,} customers, {versions:,} versions")  # fmt: skip
    base = min(runs["orders (type 1)"])
    for name, figures in runs.items():
        table.add_row(name, f"{min(figures):.2f}", f"{statistics.median(figures):.2f}", f"{min(figures) / base:.3f}")
    console.print(table)


def late(args: argparse.Namespace, console: Console) -> None:
    """(b): one late batch, with some history-changing orders, on stars of each size."""
    table = Table("facts loaded", "late batch", "of which change history", "late batch s", "in-order batch s",
                  "facts re-pointed", "added µs per re-pointed fact", "versions after",
                  title=f"(b) a late batch of {args.late_fraction:.0%} of the facts, on the history star")  # fmt: skip
    for size in args.late_sizes:
        loaded = orders(size, seed=1, customers=args.customers)
        count = max(1, round(size * args.late_fraction))
        wave = late_orders(2 * count, customers=args.customers, changing=args.changing)
        older, newer = wave[:count], [{**o, "order_id": o["order_id"] + "N", "order_timestamp": "2099-01-01T00:00:00Z"} for o in wave[count:]]
        with duckdb_loader(ORDERS_HISTORY_SCHEMA) as loader:
            assert isinstance(loader.sink, DuckDBSink)
            loader.load(loaded, args.batch_rows)
            before = fact_keys(loader.sink)
            late_seconds, _ = loader.write(older)
            after = fact_keys(loader.sink)
            repointed = sum(after[o] != k for o, k in before.items())
            in_order_seconds, _ = loader.write(newer)
            assert loader.sink.violations(ORDERS_HISTORY_SCHEMA) == []
            versions = loader.sink.connection.execute('SELECT count(*) FROM "DIM_CUSTOMER"').fetchone()[0]
        changing = sum(o["customer_region"] == ELSEWHERE for o in older)
        added = (late_seconds - in_order_seconds) / repointed * 1e6 if repointed else float("nan")
        table.add_row(f"{size:,}", f"{count:,}", f"{changing:,}", f"{late_seconds:.3f}", f"{in_order_seconds:.3f}",
                      f"{repointed:,}", f"{added:.2f}", f"{versions:,}")  # fmt: skip
    console.print(table)


def snowflake_statements(args: argparse.Namespace, console: Console) -> None:
    """(c): statements per batch on the local Snowflake endpoint, type 1 against history."""
    from starload.sinks.snowflake import SnowflakeSink
    from starload.testing import LocalSnowflake

    n = args.snowflake_batch
    values = orders(3 * n, seed=1, customers=args.customers)
    wave = late_orders(n, customers=args.customers, changing=args.changing)
    table = Table("star", "2nd batch (in order)", "3rd batch (in order)", "4th batch (late)", title=f"(c) statements per batch of {n:,} on the local Snowflake endpoint")
    with LocalSnowflake() as endpoint:
        for schema in (ORDERS_SCHEMA, ORDERS_HISTORY_SCHEMA):
            loader = Loader(schema, SnowflakeSink(**endpoint.fresh_schema("bench")))
            try:
                loader.write(values[:n])  # the first: new partitions' offsets, the staging table
                _, second = loader.write(values[n : 2 * n])
                _, third = loader.write(values[2 * n :])
                late_batch = str(loader.write(wave)[1]) if schema.dimensions[0].keeps_history else "-"
            finally:
                loader.close()
            table.add_row(schema.name, str(second), str(third), late_batch)
    console.print(table)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=500_000, help="orders for (a) (default 500000)")
    parser.add_argument("--customers", type=int, default=2_000, help="customers (default 2000)")
    parser.add_argument("--batch-rows", type=int, default=125_000, help="messages per batch (default 125000)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of (a), each type 1 then history (default 3)")
    parser.add_argument("--late-sizes", type=lambda s: [int(x) for x in s.split(",")], default=[100_000, 1_000_000],
                        help="star sizes for (b), comma-separated (default 100000,1000000)")  # fmt: skip
    parser.add_argument("--late-fraction", type=float, default=0.01, help="late batch as a share of the star (default 0.01)")
    parser.add_argument("--changing", type=float, default=0.1, help="share of late orders that change history (default 0.1)")
    parser.add_argument("--snowflake-batch", type=int, default=2_000, help="orders per batch for (c), 0 to skip (default 2000)")
    args = parser.parse_args(argv)
    console = Console(width=160)
    in_order(args, console)
    late(args, console)
    if args.snowflake_batch:
        snowflake_statements(args, console)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
