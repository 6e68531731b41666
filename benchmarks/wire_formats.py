"""What a wire format costs: the orders star loaded from Avro (Confluent's wire format) against the same orders as JSON.

    python benchmarks/wire_formats.py [--count N] [--batch-rows N] [--rounds N]

No broker is involved: seeded orders are mapped and written to a fresh in-memory DuckDB
sink in one process (the ``Loader`` of ``several_topics.py``). The Avro messages are
framed with a schema registered in the local Schema Registry (``produce --format avro``'s
writer); the loader fetches it once. Printed: microseconds a message of the whole load
(decode, map, write) for each format, the ratio, and what decoding alone costs; Avro
both as a loader with rugo decodes it (a batch at once, into typed columns) and as one
without it (a message at a time). The target: a message from Avro costs no more than
one from JSON.
"""

from __future__ import annotations

import argparse
import statistics
import time
from unittest import mock

import attrs
from confluent_kafka.schema_registry import SchemaRegistryClient
from several_topics import Batch, load, orders_batches

from starload import ORDERS_SCHEMA, Format
from starload.formats import Decoding, columnar
from starload.formats.registry import SchemaRegistry
from starload.formats.writing import FramedWriter
from starload.mapping import raw_batch
from starload.spec import Feed
from starload.testing import LocalSchemaRegistry

AVRO_SCHEMA = attrs.evolve(ORDERS_SCHEMA, fact=attrs.evolve(ORDERS_SCHEMA.fact, format=Format.AVRO))


def avro_batches(batches: list[Batch], url: str) -> list[Batch]:
    """``batches`` (JSON orders) as framed Avro records of a schema registered at ``url``."""
    import orjson

    writer = FramedWriter(AVRO_SCHEMA.feeds()[0], Format.AVRO, SchemaRegistryClient({"url": url}), "orders")
    return [{"orders": [writer.value(orjson.loads(v)) for v in b["orders"] if v is not None]} for b in batches]


def decoding_alone(decoding: Decoding, feed: Feed, batches: list[Batch]) -> float:
    """Seconds ``decoding`` takes to decode ``batches`` (of framed orders)."""
    began = time.perf_counter()
    for batch in batches:
        decoding.decode(feed, raw_batch(batch["orders"]))
    return time.perf_counter() - began


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
        runs: dict[str, list[float]] = {"json": [], "avro": [], "avro: decoding alone": [], "avro without rugo": [], "without rugo: decoding alone": []}
        feed = AVRO_SCHEMA.feeds()[0]
        for _ in range(args.rounds):
            runs["json"].append(load(ORDERS_SCHEMA, json_batches))
            runs["avro"].append(load(AVRO_SCHEMA, framed, decoding))
            runs["avro: decoding alone"].append(decoding_alone(decoding, feed, framed))
            with mock.patch.object(columnar, "rugo_avro", None):  # as installed without the extra starload[rugo]
                slow = Decoding(SchemaRegistry({"url": registry.url}))
                runs["avro without rugo"].append(load(AVRO_SCHEMA, framed, slow))
                runs["without rugo: decoding alone"].append(decoding_alone(slow, feed, framed))
    for name, times in runs.items():
        print(f"{name:>28}: {min(times) / args.count * 1e6:6.2f} µs a message (best of {args.rounds}), {statistics.median(times) / args.count * 1e6:6.2f} (median)")
    print(f"the orders star from Avro costs {min(runs['avro']) / min(runs['json']):.2f}x a message of the star from JSON (the target: 1.00); "
          f"{min(runs['avro without rugo']) / min(runs['json']):.2f}x without rugo")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
