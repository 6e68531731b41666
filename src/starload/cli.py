"""The ``starload`` command: produce, load, ddl, broker, plugins."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence
from typing import Any

from confluent_kafka import KafkaException
from rich.console import Console
from rich.table import Table

from starload import plugins
from starload.broker import LocalBroker
from starload.engine import DEFAULT_BATCH_ROWS, LoadStats, StarLoader
from starload.exceptions import StarloadError
from starload.produce import produce
from starload.progress import Progress, describe_load, describe_produce
from starload.spec import StarSchema

DEFAULT_BOOTSTRAP = os.environ.get("STARLOAD_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
log = logging.getLogger("starload")


def _key_values(pairs: Sequence[str], what: str) -> dict[str, Any]:
    """``k=v`` pairs as a dict; values that are integers become int."""
    found: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            msg = f"{what} must look like key=value, got {pair!r}"
            raise StarloadError(msg)
        found[key] = int(value) if value.lstrip("-").isdigit() else value
    return found


def resolve_schema(name: str) -> StarSchema:
    """A registered generator's schema by name, or ``package.module:ATTRIBUTE``."""
    if ":" in name:
        module, _, attribute = name.partition(":")
        schema = getattr(importlib.import_module(module), attribute)
        if not isinstance(schema, StarSchema):
            msg = f"{name} is a {type(schema).__name__}, not a StarSchema"
            raise StarloadError(msg)
        return schema
    return plugins.get_generator(name).schema


def load_summary(stats: LoadStats) -> str:
    """The end-of-load summary (one ``name: value`` per line)."""
    return "\n".join(
        [
            f"consumed: {stats.consumed}",
            f"facts loaded: {stats.facts_loaded}",
            f"duplicates skipped: {stats.duplicates}",
            f"rejected: {stats.rejected}",
            f"conflicts (among rejected): {stats.conflicts}",
            f"batches: {stats.batches}",
            f"statements: {stats.statements} ({stats.statements / stats.batches if stats.batches else 0:.0f} per batch)",
            f"dimension rows inserted: {stats.dimension_rows_inserted}",
            f"dimension rows updated: {stats.dimension_rows_updated}",
        ]
    )


def cmd_produce(args: argparse.Namespace) -> int:
    generator = plugins.get_generator(args.generator)
    with Progress(describe_produce) as progress:
        stats = produce(
            args.bootstrap_servers,
            args.topic,
            generator,
            args.count,
            seed=args.seed,
            rate=args.rate or None,
            partitions=args.partitions,
            options=_key_values(args.option, "--option"),
            overrides=_key_values(args.X, "-X"),
            progress=progress,
        )
    print(f"produced {stats.produced} {generator.name} events to {args.topic!r} in {stats.seconds:.1f} s")
    return 0


def sink_options(args: argparse.Namespace) -> dict[str, Any]:
    """Options for the chosen sink from its dedicated flags and ``--sink-option``."""
    options = _key_values(args.sink_option, "--sink-option")
    if args.sink == "duckdb":
        options.setdefault("path", args.duckdb_path)
    elif args.sink == "snowflake" and args.snowflake_connection:
        options.setdefault("connection_name", args.snowflake_connection)
    return options


def cmd_load(args: argparse.Namespace) -> int:
    schema = resolve_schema(args.schema)
    sink = plugins.get_sink_type(args.sink).create(**sink_options(args))
    with sink, Progress(describe_load) as progress:
        loader = StarLoader(
            schema,
            sink,
            bootstrap_servers=args.bootstrap_servers,
            topic=args.topic,
            group=args.group,
            batch_rows=args.batch_rows,
            batch_seconds=args.batch_seconds,
            consumer_overrides={**({"group.instance.id": args.instance_id} if args.instance_id else {}), **_key_values(args.X, "-X")},
            progress=progress,
            dlq_topic=None if args.no_dlq else (args.dlq_topic or ""),
        )
        _stop_on_signals(loader)
        stats = loader.run(until_idle=args.until_idle)
    print(load_summary(stats))
    return 0


def _stop_on_signals(loader: StarLoader) -> None:
    """SIGINT/SIGTERM finish the current batch and stop the loader (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        return

    def handler(signum: int, _frame: object) -> None:
        log.info("received %s: finishing the current batch", signal.Signals(signum).name)
        loader.stop()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)


def cmd_ddl(args: argparse.Namespace) -> int:
    schema = resolve_schema(args.schema)
    sink = plugins.get_sink_type(args.sink).create(**sink_options(args))
    print(";\n\n".join(sink.ddl(schema)) + ";")
    return 0


def cmd_broker(args: argparse.Namespace) -> int:
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    with LocalBroker(args.port) as broker:
        print(f"local broker listening; bootstrap servers: {broker.bootstrap_servers}", flush=True)
        try:
            while not stopped.wait(0.5):
                if broker.process is None or broker.process.poll() is not None:
                    print("broker exited", file=sys.stderr)
                    return 1
        except KeyboardInterrupt:
            pass
    return 0


def cmd_plugins(_args: argparse.Namespace) -> int:
    table = Table("kind", "name", "plugin", "distribution", "description")
    for r in plugins.registrations():
        table.add_row(r.kind, r.name, r.plugin, f"{r.distribution} {r.version}", r.description)
    Console().print(table)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="starload", description="Kafka events → star schema (DuckDB, Snowflake).")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    def kafka_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("--bootstrap-servers", default=DEFAULT_BOOTSTRAP, help="Kafka bootstrap servers (env STARLOAD_BOOTSTRAP_SERVERS)")
        p.add_argument("--topic", default="orders")
        p.add_argument("-X", action="append", default=[], metavar="KEY=VALUE", help="librdkafka client setting")

    def sink_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("--sink", default="duckdb", help="registered sink name (see `starload plugins`)")
        p.add_argument("--duckdb-path", default="starload.duckdb", help="DuckDB database file")
        p.add_argument("--snowflake-connection", default=None, metavar="NAME", help="a connection of the Snowflake connector's connections.toml (else SNOWFLAKE_* variables)")
        p.add_argument("--sink-option", action="append", default=[], metavar="KEY=VALUE", help="option passed to the sink")
        p.add_argument("--schema", default="orders", help="generator name whose schema to use, or module:ATTRIBUTE")

    p = sub.add_parser("produce", help="produce generated events and exit")
    kafka_args(p)
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--rate", type=float, default=0, help="messages per second; 0 = as fast as possible")
    p.add_argument("--generator", default="orders")
    p.add_argument("--partitions", type=int, default=4, help="partitions when the topic is created")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE", help="generator option, e.g. customers=50")
    p.set_defaults(func=cmd_produce)

    p = sub.add_parser("load", help="load a topic into the star schema")
    kafka_args(p)
    sink_args(p)
    p.add_argument("--group", default="starload", help="consumer group (offsets are stored per group in the sink)")
    p.add_argument(
        "--instance-id", default=None, metavar="ID",
        help="static group membership (group.instance.id): a restarted loader gets its partitions back "
        "without a rebalance; give each loader of the group its own id",
    )
    p.add_argument("--until-idle", type=float, default=None, metavar="SECONDS", help="exit after this long without messages")
    p.add_argument("--batch-rows", type=int, default=DEFAULT_BATCH_ROWS, help=f"messages per batch (default {DEFAULT_BATCH_ROWS})")
    p.add_argument("--batch-seconds", type=float, default=1.0)
    p.add_argument("--dlq-topic", default=None, metavar="TOPIC", help="dead-letter topic for rejects (default: <topic>.dlq)")
    p.add_argument("--no-dlq", action="store_true", help="record rejects only in STARLOAD_REJECTS")
    p.set_defaults(func=cmd_load)

    p = sub.add_parser("ddl", help="print the DDL the sink would run")
    sink_args(p)
    p.set_defaults(func=cmd_ddl)

    p = sub.add_parser("broker", help="run a local Kafka-protocol broker until Ctrl-C")
    p.add_argument("--port", type=int, default=None)
    p.set_defaults(func=cmd_broker)

    p = sub.add_parser("plugins", help="list registered sinks and generators")
    p.set_defaults(func=cmd_plugins)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        return int(args.func(args))
    except (StarloadError, KafkaException, ImportError) as exc:
        print(f"starload: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
