"""What several topics cost: the shop star (three topics, examples/shop.yaml) against the single-topic orders stars.

    python benchmarks/several_topics.py [--count N] [--customers N] [--batch-rows N] [--rounds N]
                                        [--snowflake-batch N]

No broker is involved (it would add the same cost to every star): seeded messages are
mapped (:class:`starload.mapping.Mapper`) and written to a fresh in-memory DuckDB sink,
in one process, so the stars are measured under the same load.

(a) **Per message.** ``--count`` messages in batches of ``--batch-rows``, ``--rounds``
    times, into: the orders star (type 1) and the orders star with the customer's region
    kept as history, one topic each; and the shop star, with a customer of type 1
    (``SHOP_TYPE1_SCHEMA``: set against the orders star) and as ``examples/shop.yaml``
    has it, the region kept as history (set against the history orders star). The
    shop's messages are the shop generator's (customers as Debezium change events,
    orders, payments, invalid orders, redeliveries) on three topics, each batch holding
    every topic's messages as they came. Microseconds per message (mapping, the
    conflict lookup and writing) of the best round, and the ratio to each orders star.
(b) **Statements per batch on Snowflake.** Through the local Snowflake endpoint and the
    real connector (needs ``starload[test]``), batches of ``--snowflake-batch``
    messages of 50 customers (their snapshot fits in the first batch): orders into
    each orders star; then into the shop star, batches of its orders topic alone, of
    its orders and customers topics (the same tables: the customers topic writes the
    dimension the orders already touch), and of all three topics (one more table,
    FACT_PAYMENTS). The conflict lookup then the write, as a loader runs them: the
    statements of each batch after a first one that stores the offsets of new
    partitions, and the tables each writes rows to. A batch costs PUT, COPY, BEGIN,
    the star's lock, COMMIT; per fact table it writes, a conflict lookup and an insert;
    per dimension, two statements (four with history, and when the batch changes a
    member's past, one re-point per fact table that references the dimension, whether
    or not the batch has rows for it, and one to drop collapsed versions); dates,
    rejects, offsets (every topic's in one statement) one each. Topics add nothing of
    their own; the table column leaves out the facts a late change re-points.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Iterator, Sequence
from typing import Any
from itertools import islice

import orjson
from rich.console import Console
from rich.table import Table

from starload import ORDERS_GENERATOR, ORDERS_HISTORY_SCHEMA, ORDERS_SCHEMA, SHOP_SCHEMA, DuckDBSink, StarSchema
from starload.generators.shop import CUSTOMERS_TOPIC, ORDERS_TOPIC, SHOP_GENERATOR, SHOP_TYPE1_SCHEMA
from starload.formats import Decoding
from starload.mapping import Mapper, raw_batch
from starload.sinks.base import Sink, StagedBatch

#: Customers of (b): few, so that the snapshot of the customers topic fits in the first batch.
SNOWFLAKE_CUSTOMERS = 50

#: One batch: per topic, its messages' values (None: a tombstone) in arrival order.
Batch = dict[str, list[bytes | None]]


def orders_batches(count: int, batch_rows: int, *, customers: int) -> list[Batch]:
    """``count`` seeded orders (customers moving region, in event-time order) on one topic, in batches."""
    stream = ORDERS_GENERATOR.stream(1, customers=customers, products=50, moves=4)
    values = sorted((e.value for e in islice(stream, count)), key=lambda o: o["order_timestamp"])
    encoded: list[bytes | None] = [orjson.dumps(v) for v in values]
    return [{"orders": encoded[i : i + batch_rows]} for i in range(0, count, batch_rows)]


def shop_batches(count: int, batch_rows: int, *, customers: int, topics: Sequence[str] | None = None) -> list[Batch]:
    """``count`` seeded shop messages (of ``topics`` only, default all), in batches holding each topic's messages as they came."""
    batches: list[Batch] = []
    events = (e for e in SHOP_GENERATOR.stream(1, customers=customers) if topics is None or e.topic in topics)
    for n, event in enumerate(islice(events, count)):
        if n % batch_rows == 0:
            batches.append({})
        assert event.topic is not None
        batches[-1].setdefault(event.topic, []).append(None if event.value is None else orjson.dumps(event.value))
    return batches


class Loader:
    """Maps and writes batches into one sink, counting the time it takes; each topic's offsets run on from batch to batch."""

    def __init__(self, schema: StarSchema, sink: Sink, decoding: Decoding | None = None) -> None:
        self.sink, self.mapper = sink, Mapper(schema, decoding=decoding)
        sink.prepare(schema)
        self.offsets: dict[str, int] = {}

    def write(self, batch: Batch) -> tuple[float, int, list[str]]:
        """Write one batch; (seconds mapping, looking up conflicts and writing; statements the sink ran; tables it wrote to)."""
        raws = {}
        for topic, values in batch.items():
            start = self.offsets.get(topic, 0)
            raws[topic] = raw_batch(values, offsets=range(start, start + len(values)))
            self.offsets[topic] = start + len(values)
        began = time.perf_counter()
        staged = self.mapper.stage_topics(raws, group="bench")
        staged = staged.with_conflicts(self.sink.find_conflicts(staged))  # as the engine does
        result = self.sink.write(staged)
        return time.perf_counter() - began, result.statements, written(staged)

    def close(self) -> None:
        self.mapper.close()
        self.sink.close()


def written(batch: StagedBatch) -> list[str]:
    """The tables a staged batch writes rows to (besides re-pointed facts: see (b))."""
    schema = batch.schema
    tables = [d.table for d in schema.dimensions if batch.dimensions[d.name].num_rows]
    tables += ["DIM_DATE"] if batch.dates is not None and batch.dates.num_rows else []
    tables += [f.table for f in schema.all_facts if batch.facts[f.table].num_rows]
    return tables + (["STARLOAD_REJECTS"] if batch.rejects.num_rows else []) + ["STARLOAD_OFFSETS"]


def snowflake_batch_statements(schema: StarSchema, batches: list[Batch], endpoint: Any) -> list[int]:
    """Statements each of ``batches`` but the first costs ``schema`` on a fresh schema of the local Snowflake ``endpoint`` (the first stores new partitions' offsets)."""
    from starload.sinks.snowflake import SnowflakeSink

    loader = Loader(schema, SnowflakeSink(**endpoint.fresh_schema("bench")))
    try:
        loader.write(batches[0])
        return [loader.write(batch)[1] for batch in batches[1:]]
    finally:
        loader.close()


def load(schema: StarSchema, batches: list[Batch], decoding: Decoding | None = None) -> float:
    """Seconds to map and write ``batches`` into a fresh in-memory DuckDB star of ``schema`` (its framed topics read with ``decoding``)."""
    loader = Loader(schema, DuckDBSink(":memory:"), decoding)
    try:
        return sum(loader.write(batch)[0] for batch in batches)
    finally:
        loader.close()


def per_message(args: argparse.Namespace, console: Console) -> None:
    """(a): microseconds per message of each star."""
    orders = orders_batches(args.count, args.batch_rows, customers=args.customers)
    shop = shop_batches(args.count, args.batch_rows, customers=args.customers)
    stars: dict[str, tuple[StarSchema, list[Batch]]] = {
        "orders (one topic, type 1)": (ORDERS_SCHEMA, orders),
        "orders_history (one topic, region type 2)": (ORDERS_HISTORY_SCHEMA, orders),
        "shop (three topics, type 1)": (SHOP_TYPE1_SCHEMA, shop),
        "shop (three topics, region type 2)": (SHOP_SCHEMA, shop),
    }
    runs: dict[str, list[float]] = {name: [] for name in stars}
    for _ in range(args.rounds):
        for name, (schema, batches) in stars.items():
            runs[name].append(load(schema, batches) / args.count * 1e6)
    mix = {topic: sum(len(b.get(topic, ())) for b in shop) for topic in sorted({t for b in shop for t in b})}
    table = Table("star", "µs/msg (best)", "µs/msg (median)", "× orders (best)", "× orders_history (best)",
                  title=f"(a) {args.count:,} messages, {args.batch_rows:,} a batch, {args.rounds} rounds, {args.customers:,} customers; "
                        f"shop messages per topic: {', '.join(f'{t} {n:,}' for t, n in mix.items())}")  # fmt: skip
    base, like = min(runs["orders (one topic, type 1)"]), min(runs["orders_history (one topic, region type 2)"])
    for name, figures in runs.items():
        best = min(figures)
        table.add_row(name, f"{best:.2f}", f"{statistics.median(figures):.2f}", f"{best / base:.3f}", f"{best / like:.3f}")
    console.print(table)


def snowflake_statements(args: argparse.Namespace, console: Console) -> None:
    """(b): statements per batch on the local Snowflake endpoint, by the topics and tables a batch touches."""
    from starload.sinks.snowflake import SnowflakeSink
    from starload.testing import LocalSnowflake

    n, customers = args.snowflake_batch, SNOWFLAKE_CUSTOMERS
    kinds: dict[str, tuple[StarSchema, Iterator[Batch]]] = {
        "orders star: orders": (ORDERS_SCHEMA, iter(orders_batches(3 * n, n, customers=customers))),
        "orders_history star: orders": (ORDERS_HISTORY_SCHEMA, iter(orders_batches(3 * n, n, customers=customers))),
        "shop star: orders topic": (SHOP_SCHEMA, iter(shop_batches(3 * n, n, customers=customers, topics=[ORDERS_TOPIC]))),
        "shop star: orders + customers topics": (
            SHOP_SCHEMA, iter(shop_batches(3 * n, n, customers=customers, topics=[ORDERS_TOPIC, CUSTOMERS_TOPIC])),
        ),
        "shop star: all three topics": (SHOP_SCHEMA, iter(shop_batches(3 * n, n, customers=customers))),
    }  # fmt: skip
    table = Table("batches of", "batch", "topics", "tables written", "statements",
                  title=f"(b) statements per batch of {n:,} messages on the local Snowflake endpoint")  # fmt: skip
    with LocalSnowflake() as endpoint:
        for name, (schema, batches) in kinds.items():
            loader = Loader(schema, SnowflakeSink(**endpoint.fresh_schema("bench")))
            try:
                loader.write(next(batches))  # the first: new partitions' offsets, the staging tables
                for ordinal, batch in (("2nd", next(batches)), ("3rd", next(batches))):
                    _, statements, tables = loader.write(batch)
                    table.add_row(name, ordinal, str(len(batch)), f"{len(tables)}: {' '.join(tables)}", str(statements))
            finally:
                loader.close()
    console.print(table)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=300_000, help="messages for (a) (default 300000)")
    parser.add_argument("--customers", type=int, default=2_000, help="customers (default 2000)")
    parser.add_argument("--batch-rows", type=int, default=50_000, help="messages per batch for (a) (default 50000)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of (a), each star in turn (default 5)")
    parser.add_argument("--snowflake-batch", type=int, default=2_000, help="messages per batch for (b), 0 to skip (default 2000)")
    args = parser.parse_args(argv)
    console = Console(width=170)
    per_message(args, console)
    if args.snowflake_batch:
        snowflake_statements(args, console)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
