"""What facts that change cost: the orders star with ``changes: latest`` against the same star insert-only.

    python benchmarks/changing_facts.py [--count N] [--batch-rows N] [--rounds N] [--scale N] [--snowflake-batch N]

No broker is involved: seeded orders are mapped and written to a fresh in-memory DuckDB
sink in one process (the ``Loader`` of ``several_topics.py``), as in ``order_lines.py``.

(a) Per message: the insert-only orders star loads ``--count`` orders; the latest star
loads ``--count`` events of a quarter as many orders, in event-time order, so that three
events in four update a row loaded before (an in-order stream of updates). The target:
at most 1.5 times the insert-only star's cost a message.

(b) The size of the fact table: one batch of ``--batch-rows`` events, 10 % of them updating
rows loaded long before and the rest new orders, written on a latest star holding a tenth
of ``--scale`` facts, then on one holding ``--scale``. A batch should cost what it changes,
not what the table holds.

(c) With ``--snowflake-batch N``: the statements a batch costs each star on the local
Snowflake endpoint (a latest fact adds an UPDATE to a batch that repeats loaded grain values).
"""

from __future__ import annotations

import argparse
import statistics

import attrs
import orjson
from several_topics import Batch, Loader, load, orders_batches, snowflake_batch_statements

from starload import ORDERS_SCHEMA, Changes, DuckDBSink, StarSchema

LATEST_SCHEMA = attrs.evolve(ORDERS_SCHEMA, name="orders_latest", fact=attrs.evolve(ORDERS_SCHEMA.fact, changes=Changes.LATEST))


def updates_of(batches: list[Batch], orders: int) -> list[Batch]:
    """``batches`` with the order ids of ``orders`` orders, reused in turn: each order's events in event-time order."""
    n, found = 0, []
    for batch in batches:
        values = []
        for value in batch["orders"]:
            assert value is not None
            values.append(orjson.dumps(orjson.loads(value) | {"order_id": f"O-{n % orders}"}))
            n += 1
        found.append({"orders": values})
    return found


def per_message(args: argparse.Namespace) -> None:
    """(a)."""
    inserts = orders_batches(args.count, args.batch_rows, customers=2_000)
    updates = updates_of(inserts, args.count // 4)
    runs: dict[str, list[float]] = {"insert": [], "latest": []}
    for _ in range(args.rounds):
        runs["insert"].append(load(ORDERS_SCHEMA, inserts))
        runs["latest"].append(load(LATEST_SCHEMA, updates))
    for name, times in runs.items():
        print(f"{name:>6}: {min(times) / args.count * 1e6:6.2f} µs a message (best of {args.rounds}), {statistics.median(times) / args.count * 1e6:6.2f} (median)")
    print(f"(a) an in-order stream of updates costs {min(runs['latest']) / min(runs['insert']):.2f}x a message of the insert-only star (the target: at most 1.5)")


def batch_on(facts: int, batch: Batch, fill: list[Batch]) -> float:
    """Seconds to write ``batch`` on a latest star already holding the ``facts`` orders of ``fill``."""
    loader = Loader(LATEST_SCHEMA, DuckDBSink(":memory:"))
    try:
        loaded = 0
        for part in fill:
            if loaded >= facts:
                break
            loader.write(part)
            loaded += len(part["orders"])
        return loader.write(batch)[0]
    finally:
        loader.close()


def table_size(args: argparse.Namespace) -> None:
    """(b)."""
    n, small, large = args.batch_rows, args.scale // 10, args.scale
    step = min(100_000, small)
    values = [v for b in orders_batches(args.scale + n, step, customers=2_000) for v in b["orders"]]
    fill, later = [{"orders": values[i : i + step]} for i in range(0, args.scale, step)], values[args.scale :]
    old = [orjson.loads(v)["order_id"] for v in fill[0]["orders"][: n // 10]]  # type: ignore[arg-type]
    batch: Batch = {"orders": [orjson.dumps(orjson.loads(v) | {"order_id": o}) for v, o in zip(later, old)] + later[len(old) :]}  # type: ignore[arg-type]
    times = {size: min(batch_on(size, batch, fill) for _ in range(max(1, args.rounds // 2))) for size in (small, large)}
    print(
        f"(b) a batch of {len(batch['orders']):,} events, {len(old):,} of them updating old rows: {times[small]:.3f} s on {small:,} facts, "
        f"{times[large]:.3f} s on {large:,} ({times[large] / times[small]:.2f}x for {large // small}x the facts)"
    )


def snowflake_statements(n: int) -> None:
    """(c)."""
    from starload.testing import LocalSnowflake

    inserts = orders_batches(3 * n, n, customers=50)
    with LocalSnowflake() as endpoint:
        for name, schema, batches in (("insert-only", ORDERS_SCHEMA, inserts), ("latest, 3 in 4 updates", LATEST_SCHEMA, updates_of(inserts, (3 * n) // 4))):
            counts = snowflake_batch_statements(schema, batches, endpoint)
            print(f"(c) {name}: {', '.join(map(str, counts))} statements a batch of {n:,} messages on the local Snowflake endpoint")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=200_000, help="messages of each star for (a) (default 200000)")
    parser.add_argument("--batch-rows", type=int, default=50_000, help="messages per batch (default 50000)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds (default 5)")
    parser.add_argument("--scale", type=int, default=1_000_000, help="facts the large table of (b) holds (default 1000000)")
    parser.add_argument("--snowflake-batch", type=int, default=2_000, help="messages per batch for (c), 0 to skip (default 2000)")
    args = parser.parse_args(argv)
    per_message(args)
    table_size(args)
    if args.snowflake_batch:
        snowflake_statements(args.snowflake_batch)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
