"""What nesting costs: the orders star read from flat messages, and the same star with every field two objects deep.

    python benchmarks/nesting.py [--count N] [--batch-rows N] [--rounds N]

The same seeded orders are written two ways: as the generator makes them (flat,
``ORDERS_SCHEMA``), and with every field two objects deep (``order.core.order_id``,
``customer.profile.customer_name``, …, the same star with nested sources). Each round
maps the messages in ``--batch-rows`` batches (:class:`starload.mapping.Mapper`) and
writes them to a fresh in-memory DuckDB sink, flat then nested, in one process, so the
two are measured under the same load; no broker is involved (it would add the same
cost to both). The figures are microseconds per message, of mapping alone and of
mapping plus the write, the best round of each, and the nested/flat ratio.
"""

from __future__ import annotations

import argparse
import statistics
import time
from itertools import islice

import attrs
import orjson
from rich.console import Console
from rich.table import Table

from starload import ORDERS_GENERATOR, ORDERS_SCHEMA, DuckDBSink, StarSchema
from starload.mapping import Mapper, raw_batch

#: The two objects each orders field is nested in.
GROUPS = {
    "order_id": ("order", "core"),
    "order_timestamp": ("order", "core"),
    "quantity": ("order", "line"),
    "price": ("order", "line"),
    "shipping_region": ("order", "delivery"),
    "customer_id": ("customer", "profile"),
    "customer_name": ("customer", "profile"),
    "customer_region": ("customer", "address"),
    "product_id": ("product", "info"),
    "product_name": ("product", "info"),
    "category": ("product", "catalog"),
}


def nested_schema() -> StarSchema:
    """``ORDERS_SCHEMA`` with every source two objects deep (see :data:`GROUPS`)."""
    data = ORDERS_SCHEMA.to_dict()

    def deepen(fields: list[dict]) -> None:
        for field in fields:
            field["source"] = ".".join((*GROUPS[field["source"]], field["source"]))

    for dim in data["dimensions"]:
        deepen(dim["natural_key"])
        deepen(dim.get("attributes", []))
    fact = data["fact"]
    deepen(fact["grain"])
    deepen([fact["event_time"]])
    deepen(fact["columns"])
    return attrs.evolve(StarSchema.from_dict(data), name="orders_nested")


def nest(order: dict) -> dict:
    out: dict = {}
    for key, value in order.items():
        outer, inner = GROUPS[key]
        out.setdefault(outer, {}).setdefault(inner, {})[key] = value
    return out


def run(schema: StarSchema, values: list[bytes], batch_rows: int) -> tuple[float, float]:
    """(seconds mapping, seconds mapping and writing) for every message."""
    mapper, sink = Mapper(schema), DuckDBSink(":memory:")
    sink.prepare(schema)
    mapping = total = 0.0
    try:
        for start in range(0, len(values), batch_rows):
            chunk = values[start : start + batch_rows]
            raw = raw_batch(chunk, offsets=range(start, start + len(chunk)))
            began = time.perf_counter()
            batch = mapper.stage(raw, topic="orders", group="bench")
            mapped = time.perf_counter()
            result = sink.write(batch)
            mapping += mapped - began
            total += time.perf_counter() - began
            assert result.facts_inserted == len(chunk), result
    finally:
        mapper.close()
        sink.close()
    return mapping, total


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=500_000, help="orders (default 500000)")
    parser.add_argument("--batch-rows", type=int, default=125_000, help="messages per batch (default 125000)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds, each flat then nested (default 5)")
    args = parser.parse_args(argv)
    orders = [e.value for e in islice(ORDERS_GENERATOR.stream(1), args.count)]
    stars = {"flat": (ORDERS_SCHEMA, [orjson.dumps(o) for o in orders]), "nested two deep": (nested_schema(), [orjson.dumps(nest(o)) for o in orders])}
    figures: dict[str, list[tuple[float, float]]] = {name: [] for name in stars}
    for _ in range(args.rounds):
        for name, (schema, values) in stars.items():
            figures[name].append(run(schema, values, args.batch_rows))
    table = Table("star", "bytes/message", "map µs/msg (best)", "map+write µs/msg (best)", "map+write µs/msg (median)", "× flat (best)", title=f"{args.count:,} orders, {args.rounds} rounds")
    per = {name: [(m / args.count * 1e6, t / args.count * 1e6) for m, t in runs] for name, runs in figures.items()}
    flat_best = min(t for _, t in per["flat"])
    for name, runs in per.items():
        size = sum(map(len, stars[name][1])) / args.count
        best_map, best = min(m for m, _ in runs), min(t for _, t in runs)
        table.add_row(name, f"{size:.0f}", f"{best_map:.2f}", f"{best:.2f}", f"{statistics.median(t for _, t in runs):.2f}", f"{best / flat_best:.3f}")
    Console(width=140).print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
