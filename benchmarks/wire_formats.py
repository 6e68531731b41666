"""What a wire format costs: the orders star loaded from Avro (Confluent's wire format) against the same orders as JSON.

    python benchmarks/wire_formats.py [--count N] [--batch-rows N] [--rounds N]

No broker is involved: seeded orders are mapped and written to a fresh in-memory DuckDB
sink in one process (the ``Loader`` of ``several_topics.py``). The Avro messages are
framed with a schema registered in the local Schema Registry (``produce --format avro``'s
writer); the loader fetches it once. Printed: microseconds a message of the whole load
(decode, map, write) for each format, the ratio, and what decoding alone costs.
The target: a message from Avro costs no more than one from JSON (not met yet: see the
README's "Wire formats" for the figures and what decodes Avro faster).
"""

from __future__ import annotations

import argparse
import statistics
import time

import attrs
from confluent_kafka.schema_registry import SchemaRegistryClient
from several_topics import Batch, load, orders_batches

from starload import ORDERS_SCHEMA, Format
from starload.formats import Decoding
from starload.formats.registry import SchemaRegistry
from starload.formats.writing import FramedWriter
from starload.mapping import raw_batch
from starload.testing import LocalSchemaRegistry

AVRO_SCHEMA = attrs.evolve(ORDERS_SCHEMA, fact=attrs.evolve(ORDERS_SCHEMA.fact, format=Format.AVRO))


def avro_batches(batches: list[Batch], url: str) -> list[Batch]:
    """``batches`` (JSON orders) as framed Avro records of a schema registered at ``url``."""
    import orjson

    writer = FramedWriter(AVRO_SCHEMA.feeds()[0], Format.AVRO, SchemaRegistryClient({"url": url}), "orders")
    return [{"orders": [writer.value(orjson.loads(v)) for v in b["orders"] if v is not None]} for b in batches]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=200_000, help="orders (default 200000)")
    parser.add_argument("--batch-rows", type=int, default=50_000, help="messages per batch (default 50000)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds, each format in turn (default 3)")
    args = parser.parse_args(argv)
    json_batches = orders_batches(args.count, args.batch_rows, customers=2_000)
    with LocalSchemaRegistry() as registry:
        framed = avro_batches(json_batches, registry.url)
        decoding = Decoding(SchemaRegistry({"url": registry.url}))
        runs: dict[str, list[float]] = {"json": [], "avro": [], "avro decoding alone": []}
        feed = AVRO_SCHEMA.feeds()[0]
        for _ in range(args.rounds):
            runs["json"].append(load(ORDERS_SCHEMA, json_batches))
            runs["avro"].append(load(AVRO_SCHEMA, framed, decoding))
            began = time.perf_counter()
            for batch in framed:
                decoding.decode(feed, raw_batch(batch["orders"]))
            runs["avro decoding alone"].append(time.perf_counter() - began)
    for name, times in runs.items():
        print(f"{name:>20}: {min(times) / args.count * 1e6:6.2f} µs a message (best of {args.rounds}), {statistics.median(times) / args.count * 1e6:6.2f} (median)")
    print(f"the orders star from Avro costs {min(runs['avro']) / min(runs['json']):.2f}x a message of the star from JSON (the target: 1.00)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
