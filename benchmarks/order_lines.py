"""What order lines cost: the bookshop star (one topic into an order fact and a line fact, examples/bookshop.yaml)
against the flat orders star.

    python benchmarks/order_lines.py [--count N] [--batch-rows N] [--rounds N] [--snowflake-batch N]

No broker is involved: seeded messages are mapped and written to a fresh in-memory
DuckDB sink in one process (the ``Loader`` of ``several_topics.py``: mapping, the
conflict lookup, the write), each star in turn, ``--rounds`` times. It prints the orders
star's microseconds per message and the bookshop star's per line row (the issue's
measure: an order of three lines makes three line rows and one order row, and is
mapped once), per message too, and the ratio of the best rounds.

With ``--snowflake-batch N`` (needs ``starload[test]``), it also prints the statements a
batch of N messages costs each star on the local Snowflake endpoint (the conflict lookup,
then the write, as a loader runs them; the second and third batch, after a first one
that stores the offsets of new partitions).
"""

from __future__ import annotations

import argparse
import statistics
from itertools import islice

import orjson
from rich.console import Console
from rich.table import Table
from several_topics import Batch, load, orders_batches, snowflake_batch_statements

from starload import BOOKSHOP_SCHEMA, ORDERS_SCHEMA
from starload.generators.bookshop import BOOKSHOP_GENERATOR, ORDERS_TOPIC
from starload.testing import bookshop_oracle


def bookshop_batches(count: int, batch_rows: int) -> tuple[list[Batch], int]:
    """``count`` seeded bookshop orders in batches, and how many line rows they load."""
    values = [e.value for e in islice(BOOKSHOP_GENERATOR.stream(1), count)]
    lines = len(bookshop_oracle([(0, n, v) for n, v in enumerate(values)])["lines"])
    encoded: list[bytes | None] = [orjson.dumps(v) for v in values]
    return [{ORDERS_TOPIC: encoded[i : i + batch_rows]} for i in range(0, count, batch_rows)], lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=200_000, help="messages of each star (default 200000)")
    parser.add_argument("--batch-rows", type=int, default=50_000, help="messages per batch (default 50000)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds, each star in turn (default 5)")
    parser.add_argument("--snowflake-batch", type=int, default=2_000, help="messages per batch on Snowflake, 0 to skip (default 2000)")
    args = parser.parse_args(argv)
    orders = orders_batches(args.count, args.batch_rows, customers=2_000)
    bookshop, lines = bookshop_batches(args.count, args.batch_rows)
    runs: dict[str, list[float]] = {"orders": [], "bookshop": []}
    for _ in range(args.rounds):
        runs["orders"].append(load(ORDERS_SCHEMA, orders))
        runs["bookshop"].append(load(BOOKSHOP_SCHEMA, bookshop))
    best_orders, best_books = min(runs["orders"]) / args.count * 1e6, min(runs["bookshop"]) / lines * 1e6
    table = Table("star", "rows measured", "µs (best)", "µs (median)", "× orders a message (best)",
                  title=f"{args.count:,} messages a star, {args.batch_rows:,} a batch, {args.rounds} rounds; "
                        f"the bookshop's make {lines:,} line rows ({lines / args.count:.2f} a message)")  # fmt: skip
    table.add_row("orders, a message", f"{args.count:,}", f"{best_orders:.2f}", f"{statistics.median(runs['orders']) / args.count * 1e6:.2f}", "1.000")
    for name, rows in (("bookshop, a line row", lines), ("bookshop, a message", args.count)):
        best = min(runs["bookshop"]) / rows * 1e6
        table.add_row(name, f"{rows:,}", f"{best:.2f}", f"{statistics.median(runs['bookshop']) / rows * 1e6:.2f}", f"{best / best_orders:.3f}")
    Console(width=150).print(table)
    print(f"per-line cost ratio: {best_books / best_orders:.2f} (the target: at most 1.3)")
    if args.snowflake_batch:
        snowflake_statements(args.snowflake_batch)
    return 0


def snowflake_statements(n: int) -> None:
    """Statements per batch of ``n`` messages of each star on the local Snowflake endpoint."""
    from starload.testing import LocalSnowflake

    with LocalSnowflake() as endpoint:
        for name, schema, batches in (("orders", ORDERS_SCHEMA, orders_batches(3 * n, n, customers=50)), ("bookshop", BOOKSHOP_SCHEMA, bookshop_batches(3 * n, n)[0])):
            counts = snowflake_batch_statements(schema, batches, endpoint)
            print(f"{name}: {', '.join(map(str, counts))} statements a batch of {n:,} messages on the local Snowflake endpoint")


if __name__ == "__main__":
    raise SystemExit(main())
