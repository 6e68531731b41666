"""The ``starload`` command: produce, load, offsets, ddl, migrate, verify, spec, broker, plugins.

Exit codes: 0 a normal stop; 2 a usage, configuration or environment mistake (or a
sink error); 3 offsets stored in the sink that do not belong to the topic as it is now.
"""

from __future__ import annotations

from starload import stopping

if __name__ == "__main__":  # python -m starload.cli: catch signals before the imports below (about 0.5 s)
    stopping.catch()

import argparse
import contextlib
import importlib
import importlib.util
import inspect
import json
import logging
import math
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn

import orjson
from confluent_kafka import KafkaException
from rich.console import Console
from rich.table import Table
from rich.text import Text

from starload import logs, plugins
from starload.broker import LocalBroker, free_port, port_is_free
from starload.drafting import debezium_rows, draft
from starload.drift import fingerprint
from starload.engine import DEFAULT_BATCH_ROWS, StarLoader, loader_topics
from starload.exceptions import SpecDriftError, StarloadError, StoredOffsetsError
from starload.formats import Decoding
from starload.formats.framing import unframed
from starload.formats.registry import URL_ENV, USER_INFO_ENV, SchemaRegistry, registry_settings
from starload.guard import DEFAULT_MAX_REJECT_RATIO
from starload.health import DEFAULT_HEALTH_TIMEOUT
from starload.identity import VERSION
from starload.kafka import consumer_config, sample_values
from starload.metrics import MetricsServer
from starload.offsets import POLICIES, StoredOffset, TopicNow, reset_targets
from starload.producing import produce, produce_file
from starload.progress import CONSOLE, Progress, describe_load, describe_produce
from starload.scaffold import new_plugin
from starload.spec import (
    DATE_ATTRIBUTES,
    DIMENSION_METADATA,
    FACT_METADATA,
    TOPIC_DIMENSION_METADATA,
    Field,
    Format,
    StarSchema,
    delete_fields,
    source_name,
    type_spelling,
)
from starload.specfile import json_schema
from starload.stats import LoadStats

#: Where ``starload broker`` listens by default, and so where the other commands look.
DEFAULT_BROKER_PORT = 9092
DEFAULT_BOOTSTRAP = os.environ.get("STARLOAD_BOOTSTRAP_SERVERS", f"127.0.0.1:{DEFAULT_BROKER_PORT}")
log = logging.getLogger("starload")


class _Parser(argparse.ArgumentParser):
    """argparse, except that a usage mistake is one line (``starload: error: …``) and exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"starload: error: {message} (see {self.prog} --help)\n")


def _bounded(convert: type[int | float], low: float, *, above: bool = False, high: float | None = None) -> Callable[[str], Any]:
    """An argparse type: ``convert(text)`` at least ``low`` (more than ``low`` with ``above``), at most ``high``."""

    def parse(text: str) -> Any:
        try:
            value = convert(text)
        except ValueError:
            msg = f"expected {'a whole number' if convert is int else 'a number'}, got {text!r}"
            raise argparse.ArgumentTypeError(msg) from None
        if math.isnan(value) or value < low or (above and value == low):
            msg = f"must be {'more than' if above else 'at least'} {low:g}, got {text}"
            raise argparse.ArgumentTypeError(msg)
        if high is not None and value > high:
            msg = f"must be at most {high:g}, got {text}"
            raise argparse.ArgumentTypeError(msg)
        return value

    return parse


def _offset_target(text: str) -> str | int:
    """An argparse type: ``earliest``, ``latest`` or an offset (a whole number, at least 0)."""
    if text in ("earliest", "latest"):
        return text
    parsed: int = _bounded(int, 0)(text)
    return parsed


def _key_values(pairs: Sequence[str], what: str, *, integers: bool = False) -> dict[str, Any]:
    """``k=v`` pairs as a dict of strings (``0123`` stays ``'0123'``); with ``integers``, integer values become int."""
    found: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            msg = f"{what} must look like key=value, got {pair!r}"
            raise StarloadError(msg)
        found[key] = int(value) if integers and value.lstrip("-").isdigit() else value
    return found


def _check_options(function: Callable[..., Any], options: Mapping[str, Any], what: str, *, skip: int = 0) -> None:
    """Raise a one-line error naming the ``options`` that ``function`` takes no keyword for.

    ``skip``: leading parameters that are not options (a generator's random source).
    """
    parameters = list(inspect.signature(function).parameters.values())[skip:]
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return
    keywords = [p.name for p in parameters if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if unknown := [name for name in options if name not in keywords]:
        msg = f"unknown {what}: {', '.join(sorted(unknown))} (known: {', '.join(keywords) or 'none'})"
        raise StarloadError(msg)


def resolve_schema(name: str) -> StarSchema:
    """A registered generator's star by name, or ``module:ATTRIBUTE`` / ``path/to/file.py:ATTRIBUTE``.

    A module is found in the working directory first, then among the installed
    packages (as ``python -m`` finds it); a file path is relative to the working
    directory. Every mistake is a one-line :class:`StarloadError`.
    """
    if ":" not in name:
        return plugins.get_generator(name).schema
    where, _, attribute = name.rpartition(":")
    namespace = _star_module(where)
    if not attribute or not hasattr(namespace, attribute):
        stars = sorted(k for k, v in vars(namespace).items() if isinstance(v, StarSchema))
        msg = f"--schema {name}: {where} has no attribute {attribute!r} (its StarSchema attributes: {', '.join(stars) or 'none'})"
        raise StarloadError(msg)
    schema = getattr(namespace, attribute)
    if not isinstance(schema, StarSchema):
        msg = f"--schema {name}: not a StarSchema but {type(schema).__name__} {schema!r:.60}"
        raise StarloadError(msg)
    return schema


def _star_module(where: str) -> Any:
    """The module ``where`` names: a file path (ends in ``.py`` or holds a slash) or a module name."""
    by_path = where.endswith(".py") or "/" in where or os.sep in where
    try:
        if by_path:
            path = os.path.abspath(where)
            if not os.path.isfile(path):
                msg = f"--schema {where}:…: no such file (relative to the working directory {os.getcwd()})"
                raise StarloadError(msg)
            loader_spec = importlib.util.spec_from_file_location(f"_starload_star_{abs(hash(path))}", path)
            assert loader_spec is not None and loader_spec.loader is not None
            module = importlib.util.module_from_spec(loader_spec)
            loader_spec.loader.exec_module(module)
            return module
        if os.getcwd() not in sys.path and "" not in sys.path:
            sys.path.insert(0, os.getcwd())
        return importlib.import_module(where)
    except StarloadError:
        raise
    except ModuleNotFoundError as exc:
        if exc.name == where or where.startswith(f"{exc.name}."):
            msg = f"--schema {where}:…: no module {where!r} in the working directory {os.getcwd()} or the installed packages"
            raise StarloadError(msg) from None
        msg = f"--schema {where}:…: importing it failed: {exc}"
        raise StarloadError(msg) from None
    except Exception as exc:  # noqa: BLE001 - whatever the user's module raises is reported in one line
        frames = traceback.extract_tb(exc.__traceback__)
        at = f" at {frames[-1].filename}:{frames[-1].lineno}" if frames else ""
        detail = str(exc).splitlines()[0] if str(exc) else ""
        msg = f"--schema {where}:…: importing it failed{at}: {type(exc).__name__}: {detail}"
        raise StarloadError(msg) from None


def spec_of(args: argparse.Namespace, topic: str | None = None) -> StarSchema:
    """The star of ``--spec FILE``, else of ``--schema``, else of the generator named like ``topic`` (the demo's own topic).

    Any other topic has no default star: the error says what to give.
    """
    if args.spec:
        return StarSchema.from_file(args.spec)
    if args.schema:
        return resolve_schema(args.schema)
    generators = plugins.generators()
    if topic in generators:
        return generators[topic].schema
    msg = (
        f"which star {'does topic ' + repr(topic) + ' load into' if topic else 'is it'}? Give --spec FILE (a star declared "
        f"in YAML or TOML), --schema NAME (the star of a generator: {', '.join(sorted(generators))}) or --schema "
        "module:ATTRIBUTE (a StarSchema in Python)"
    )
    raise StarloadError(msg)


#: The topic when ``--topic`` is not given: the demo's (a star whose spec names every topic it reads needs none).
DEFAULT_TOPIC = "orders"


def topic_of(args: argparse.Namespace, schema: StarSchema | None = None) -> str | None:
    """``--topic``, else :data:`DEFAULT_TOPIC`; for a star that names every topic it reads (``schema``), None."""
    if args.topic is not None:
        return str(args.topic)
    if schema is not None and schema.named_topics is not None:
        return None
    return DEFAULT_TOPIC


def table_console() -> Console:
    """A console for tables: the terminal's width, or unbounded when the output is not a terminal (no cut names)."""
    console = Console()
    return console if console.is_terminal else Console(width=10_000)


def load_summary(stats: LoadStats, rejects_to: str) -> str:
    """The end-of-load summary (one ``name: value`` per line; with several topics, a line per topic); ``rejects_to`` says where the rejects went."""
    return "\n".join(
        [
            f"elapsed: {time.monotonic() - stats.started:.1f} s",
            f"throughput: {stats.throughput:,.0f} messages/s (from the first assignment to the last commit)",
            f"consumed: {stats.consumed}",
            f"messages loaded: {stats.loaded}",
            f"facts loaded: {stats.facts_loaded}",
            f"facts updated: {stats.facts_updated}",
            f"duplicates skipped: {stats.duplicates}",
            f"records (of dimension topics): {stats.records}",
            f"tombstones (acknowledged): {stats.tombstones}",
            f"rejected: {stats.rejected}",
            f"conflicts (among rejected): {stats.conflicts}",
            f"rejects went to: {rejects_to}",
            f"batches: {stats.batches}",
            f"statements: {stats.statements} ({stats.statements / stats.batches if stats.batches else 0:.0f} per batch)",
            f"star's lock: waited {stats.lock_waited:.1f} s, held {stats.lock_held:.1f} s",
            f"dimension rows inserted: {stats.dimension_rows_inserted}",
            f"dimension rows updated: {stats.dimension_rows_updated}",
            *(
                f"topic {topic}: {consumed} consumed, {stats.rejected_by_topic.get(topic, 0)} rejected"
                for topic, consumed in (stats.consumed_by_topic.items() if len(stats.consumed_by_topic) > 1 else ())
            ),
            *(f"warning: {warning}" for warning in stats.warnings),
        ]
    )


def cmd_produce(args: argparse.Namespace) -> int:
    if args.file:
        return _produce_file(args)
    if args.count is None:
        msg = "produce needs --count (events to generate) or --file (a JSON Lines file to produce)"
        raise StarloadError(msg)
    generator = plugins.get_generator(args.generator)
    options = _key_values(args.option, "--option", integers=True)
    _check_options(generator.events, options, f"--option for generator {generator.name!r}", skip=1)
    topic = topic_of(args, generator.schema)
    if args.topic is not None and (named := generator.schema.named_topics) is not None:
        msg = f"generator {generator.name!r} produces to its own topics ({', '.join(named)}): --topic does not apply (see its options)"
        raise StarloadError(msg)
    with Progress(describe_produce) as progress:
        stats = produce(
            args.bootstrap_servers,
            topic,
            generator,
            args.count,
            seed=args.seed,
            rate=args.rate or None,
            partitions=args.partitions,
            options=options,
            overrides=_key_values(args.X, "-X"),
            progress=progress,
            startup_timeout=args.startup_timeout,
            value_format=Format(args.format) if args.format else None,
            schema_registry=registry_settings(args.schema_registry, _key_values(args.registry_option, "--registry-option")),
        )
    print(f"produced {stats.produced} {generator.name} events to {', '.join(map(repr, stats.topics))} in {stats.seconds:.1f} s")
    return 0


def _produce_file(args: argparse.Namespace) -> int:
    """``produce --file``: the lines of a JSON Lines file, one message each."""
    given = [flag for flag, value in (("--count", args.count), ("--seed", args.seed), ("--option", args.option)) if value]
    if given or args.generator != "orders":
        msg = f"--file produces the file's lines as they are; {', '.join(given) or '--generator'} does not apply to it"
        raise StarloadError(msg)
    if args.keyed and args.key_field:
        msg = "--keyed lines carry their own key: --key-field does not apply"
        raise StarloadError(msg)
    topic = topic_of(args)
    with Progress(describe_produce) as progress:
        stats = produce_file(
            args.bootstrap_servers,
            topic,
            args.file,
            key_field=args.key_field,
            keyed=args.keyed,
            rate=args.rate or None,
            partitions=args.partitions,
            overrides=_key_values(args.X, "-X"),
            progress=progress,
            startup_timeout=args.startup_timeout,
        )
    print(f"produced {stats.produced} messages from {args.file} to {topic!r} in {stats.seconds:.1f} s")
    return 0


def sink_options(args: argparse.Namespace) -> dict[str, Any]:
    """Options for the chosen sink from its dedicated flags and ``--sink-option`` (values stay strings)."""
    options = _key_values(args.sink_option, "--sink-option")
    if args.sink == "duckdb":
        options.setdefault("path", args.duckdb_path)
    elif args.sink == "snowflake" and args.snowflake_connection:
        options.setdefault("connection_name", args.snowflake_connection)
    return options


def create_sink(args: argparse.Namespace) -> Any:
    """The chosen sink, after checking that it takes every option given."""
    sink_type = plugins.get_sink_type(args.sink)
    options = sink_options(args)
    _check_options(sink_type.factory, options, f"--sink-option for sink {sink_type.name!r}")
    return sink_type.create(**options)


def cmd_load(args: argparse.Namespace) -> int:
    schema = spec_of(args, topic_of(args))
    sink = create_sink(args)
    with sink, Progress(describe_load, live=args.log_format == "text") as progress:
        loader = StarLoader(
            schema,
            sink,
            bootstrap_servers=args.bootstrap_servers,
            topic=topic_of(args, schema),
            group=args.group,
            batch_rows=args.batch_rows,
            batch_seconds=args.batch_seconds,
            consumer_overrides={**({"group.instance.id": args.instance_id} if args.instance_id else {}), **_key_values(args.X, "-X")},
            progress=progress,
            dlq_topic=None if args.no_dlq else (args.dlq_topic or ""),
            max_reject_ratio=args.max_reject_ratio,
            startup_timeout=args.startup_timeout,
            on_offset_mismatch=args.on_offset_mismatch,
            health_timeout=args.health_timeout,
            schema_registry=registry_settings(args.schema_registry, _key_values(args.registry_option, "--registry-option")),
        )
        if stopping.stop_with(loader.stop):
            return 0  # a signal came before the load began: nothing was loaded
        with _serving(loader, args.metrics_host, args.metrics_port):
            stats = loader.run(until_idle=args.until_idle)
    dead_letters = "".join(f" and topic {t!r}" for t in loader.dlq_topics)
    print(load_summary(stats, f"{loader.sink.rejects_location()}{dead_letters}"))
    return 0


def _serving(loader: StarLoader, host: str, port: int | None) -> contextlib.AbstractContextManager[Any]:
    """The loader's ``/metrics`` and ``/healthz`` on ``host:port`` while it runs (nothing when ``port`` is None)."""
    if port is None:
        return contextlib.nullcontext()
    try:
        server = MetricsServer(loader.metrics.registry, loader.health, host, port)
    except OSError as exc:
        msg = f"cannot serve metrics on {host}:{port} (--metrics-host, --metrics-port): {exc.strerror}"
        raise StarloadError(msg) from None
    log.info("metrics at http://%s:%d/metrics, health at /healthz", host, server.port)
    return server


def cmd_offsets(args: argparse.Namespace) -> int:
    """``offsets show`` and ``offsets reset``: the stored offsets next to the topic as it is now, and moving them.

    Without ``--topic``, ``show`` shows every topic of the star; ``reset`` takes one topic at a time.
    """
    schema = spec_of(args, topic_of(args))
    read = loader_topics(schema, topic_of(args, schema))  # refuses a --topic the star does not read
    topics = (args.topic,) if args.topic is not None else read
    if args.action == "reset" and len(topics) > 1:
        msg = f"star {schema.name!r} reads topics {', '.join(topics)}: reset one at a time (--topic TOPIC)"
        raise StarloadError(msg)
    sink = create_sink(args)
    config = consumer_config(args.bootstrap_servers, args.group, _key_values(args.X, "-X"))
    with sink:
        sink.verify(schema)
        for topic in topics:
            now = TopicNow.look_up(config, topic, args.startup_timeout)
            rows = StoredOffset.survey(sink, args.group, topic, now)
            where = f"topic {topic!r} on {args.bootstrap_servers}, group {args.group!r}"
            if now.partitions is None:
                print(f"{where}: the topic does not exist now")
            else:
                print(f"{where}: topic ID {now.topic_id or '(the broker gives none)'}")
            if args.action == "show":
                _print_offsets(rows, now, {})
        if args.action == "show":
            return 0
        (topic,) = topics
        if now.partitions is None:
            msg = f"topic {topic!r} does not exist on {args.bootstrap_servers}: there is nothing to reset its offsets to"
            raise StarloadError(msg)
        chosen = args.partition or now.partitions
        if missing := sorted(set(chosen) - set(now.partitions)):
            msg = f"topic {topic!r} has no partition {', '.join(map(str, missing))} (it has {len(now.partitions)})"
            raise StarloadError(msg)
        targets = reset_targets({p: now.marks[p] for p in chosen}, args.to)
        _print_offsets([r for r in rows if r.partition in targets], now, targets)
        if not args.execute:
            print("dry run: nothing changed; add --execute to store these offsets")
            return 0
        sink.prepare(schema)
        sink.reset_offsets(args.group, topic, targets, now.topic_id)
        print(f"stored the new offsets of {len(targets)} partitions in one transaction")
    return 0


def _print_offsets(rows: list[StoredOffset], now: TopicNow, targets: Mapping[int, int]) -> None:
    """One row per partition; with ``targets`` (a reset), the new offset instead of the stored topic ID."""
    table = Table("partition", "stored", "first", "end", "status", "new offset" if targets else "stored topic ID")
    for r in rows:
        low, high = r.marks if r.marks is not None else ("", "")
        last = str(targets[r.partition]) if targets else r.stored_topic_id or ""
        table.add_row(str(r.partition), "" if r.stored is None else str(r.stored), str(low), str(high), r.status(now.topic_id), last)
    table_console().print(table)


def cmd_ddl(args: argparse.Namespace) -> int:
    schema = spec_of(args, "orders")
    sink = create_sink(args)
    print(";\n\n".join(sink.ddl(schema)) + ";")
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    """``migrate``: the additive differences between the warehouse's star and the spec, as DDL; run with ``--execute``."""
    schema = spec_of(args)
    with create_sink(args) as sink:
        diffs, statements = sink.migration(schema)
        if not diffs:
            print(f"nothing to migrate: {sink.location()} holds star {schema.name!r} as the spec says, or none of it yet")
            return 0
        if any(d.change is None for d in diffs):
            raise SpecDriftError(schema.name, sink.location(), diffs)
        for d in diffs:
            print(f"  {d}")
        print(";\n".join(statements) + ";" if statements else "(no DDL: only the recorded spec changes)")
        at_once = getattr(getattr(sink, "dialect", None), "transactional_ddl", True)
        how = "in one transaction" if at_once else "one by one (each DDL statement commits; each is idempotent: run again if interrupted)"
        if not args.execute:
            print(f"dry run: nothing changed; add --execute to run these {len(statements)} statements {how} and record the spec")
            return 0
        sink.migrate(schema)
    print(f"migrated star {schema.name!r}: ran {len(statements)} statements {how} and recorded the spec ({fingerprint(schema)})")
    return 0


def cmd_rebuild(args: argparse.Namespace) -> int:
    """``rebuild``: drop the star's tables and forget its topics' stored offsets, so the next load builds it anew; a dry run without ``--execute``."""
    schema = spec_of(args)
    topics = loader_topics(schema, topic_of(args, schema))
    with create_sink(args) as sink:
        steps = sink.rebuilding(schema, topics, args.group)
        if not steps:
            print(f"nothing to rebuild: {sink.location()} holds nothing of star {schema.name!r}")
            return 0
        for step in steps:
            print(f"  {step.what}")
        if not args.execute:
            print(f"dry run: nothing changed; add --execute to take these {len(steps)} steps (a loader must not be running on the star)")
            return 0
        done = sink.rebuild(schema, topics, args.group)
    print(f"rebuilt: took {len(done)} steps; the next load builds star {schema.name!r} from the start of {', '.join(map(repr, topics))}")
    return 0


def cmd_plugin_new(args: argparse.Namespace) -> int:
    """``plugin new NAME``: a sink plugin package to start from (:mod:`starload.scaffold`)."""
    made = new_plugin(args.name, Path(args.dir))
    print(f"made {made}: a sink plugin that works as made (the example SQLite sink, renamed {args.name!r})")
    print(f"next: pip install -e {made}; starload plugins; cd {made} && python -m pytest (starload's sink behaviour suite)")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    """``verify``: check the star's invariants in the warehouse; exit 1 listing each violation, 0 when it is sound."""
    schema = spec_of(args)
    with create_sink(args) as sink:
        found = sink.violations(schema)
        where = sink.location()
    for line in found:
        print(line)
    if found:
        print(f"star {schema.name!r} in {where}: {len(found)} violation(s) of its invariants", file=sys.stderr)
        return 1
    print(f"star {schema.name!r} in {where}: every invariant holds")
    return 0


def cmd_spec_check(args: argparse.Namespace) -> int:
    """``spec check FILE``: validate a spec file and show the tables and columns it declares."""
    schema = StarSchema.from_file(args.file)
    console = table_console()
    for table, rows in spec_tables(schema):
        listing = Table("column", "type", "null", "from the message", title=table, title_justify="left")
        for row in rows:
            listing.add_row(*map(Text, row))  # Text, not markup: a source like lines[#] is no style
        console.print(listing)
    print(f"{args.file}: a valid star spec ({schema.name!r}, {len(schema.tables)} tables)")
    return 0


def spec_tables(schema: StarSchema) -> list[tuple[str, list[tuple[str, str, str, str]]]]:
    """Per table of the star: (column, type, 'NULL' or 'NOT NULL', where it comes from) for each column."""

    def field(f: Field, *, not_null: bool) -> tuple[str, str, str, str]:
        return (f.column, type_spelling(f.type), "NOT NULL" if not_null else "NULL", source_name(f.source) + (" (required)" if f.required else ""))

    tables = []
    for dim in schema.dimensions:
        rows = [(dim.key, "integer", "NOT NULL", "surrogate key, assigned by the warehouse")]
        rows += [field(f, not_null=not schema.is_optional(dim)) for f in dim.natural_key]
        rows += [field(f, not_null=False) for f in dim.attributes]
        rows += [(c, "timestamp", "NULL", "starload") for c in DIMENSION_METADATA]
        rows += [(c, "boolean", "NULL", "starload: known from facts only so far") for c in (TOPIC_DIMENSION_METADATA if dim.topic else ())]
        rows += [(f.column, type_spelling(f.type), "NULL", _DELETE_MEANINGS[f.column][0]) for f in (delete_fields() if dim.envelope else ())]
        tables.append((f"{dim.table} (dimension {dim.name!r}{', topic ' + dim.topic if dim.topic else ''})", rows))
    if schema.date_dimension:
        dd = schema.date_dimension
        tables.append((f"{dd.table} (date dimension)", [(dd.key, "integer", "NOT NULL", "YYYYMMDD of the event time, UTC"), *((c, _DATE_TYPES.get(c, "integer"), "NULL", "starload") for c in DATE_ATTRIBUTES)]))
    for fact in schema.all_facts:
        waits = fact.rows_may_wait
        rows = [field(f, not_null=f in fact.grain or (f.required and not waits)) for f in fact.fields]
        for part in fact.parts:
            for f in part.fields[len(part.grain) :]:
                column, kind, null, source = field(f, not_null=False)
                rows.append((column, kind, null, f"{source}, topic {part.topic}"))
        rows += [(schema.dimension(n).key, "integer", "NOT NULL", f"key of dimension {n!r}") for n in fact.dimensions]
        if schema.date_dimension:
            rows.append((schema.date_dimension.key, "integer", "NULL" if waits else "NOT NULL", f"the date of {fact.dating.column}"))
        rows += [(m.column, type_spelling(m.type), "NULL", " × ".join(m.factors)) for m in fact.measures]
        for m in fact.all_milestones:
            rows.append((m.column, "timestamp", "NULL", f"starload: first time {source_name(m.source)} = {m.equals!r}"))
            rows += [(m.date_key_column, "integer", "NULL", f"the date of {m.column}")] if schema.date_dimension else []
        rows += [(f.column, type_spelling(f.type), "NULL", _DELETE_MEANINGS[f.column][1]) for f in fact.deletes]
        rows += [(c, "", "", "starload: load metadata") for c in FACT_METADATA]
        rows += [(c, "string", "NULL" if waits else "NOT NULL", "starload: event position of the values it holds") for c in fact.position_columns]
        tables.append((f"{fact.table} (fact{', topic ' + fact.topic if fact.topic else ''})", rows))
    return tables


#: Per delete marker: what it means on a dimension, what it means on a fact.
_DELETE_MEANINGS = {
    "IS_DELETED": ("starload: deleted in the source (op d)", "starload: its latest change is a delete (op d)"),
    "DELETED_AT": ("starload: its latest delete", "starload: the time of that delete"),
}
_DATE_TYPES = {"FULL_DATE": "date", "MONTH_NAME": "string", "DAY_NAME": "string", "IS_WEEKEND": "boolean"}


def cmd_spec_draft(args: argparse.Namespace) -> int:
    """``spec draft --topic T``: a first spec from the topic's messages, as YAML on stdout (framed ones read with their writer schema)."""
    if not args.topic:
        msg = "spec draft needs --topic (the topic to draft a spec from)"
        raise StarloadError(msg)
    values = [v for v in sample_values(args.bootstrap_servers, args.topic, args.samples, timeout=args.startup_timeout, overrides=_key_values(args.X, "-X")) if v]
    if not values:
        msg = f"topic {args.topic!r} holds no message to draft a spec from"
        raise StarloadError(msg)
    records, value_format, writer = _decoded_samples(args, values)
    if not records:
        msg = f"none of the {len(values)} messages sampled from topic {args.topic!r} is a {value_format.value} record"
        raise StarloadError(msg)
    rows = debezium_rows(records)
    print(draft(args.topic, rows if rows is not None else records, value_format=value_format, writer_schema=writer, envelope=rows is not None), end="")
    return 0


def _decoded_samples(args: argparse.Namespace, values: list[bytes]) -> tuple[list[Any], Format, Any]:
    """The sampled values as records, their format (framed when every one starts with the zero byte; the registry says which), and the latest writer schema (Avro's)."""
    if any(v[:1] != b"\x00" for v in values):
        return [r for r in map(_json_or_none, values) if isinstance(r, dict)], Format.JSON, None
    settings = registry_settings(args.schema_registry, _key_values(args.registry_option, "--registry-option"))
    if settings is None:
        msg = f"topic {args.topic!r} is in a Schema Registry's wire format: give the registry's URL (--schema-registry URL, or {URL_ENV})"
        raise StarloadError(msg)
    decoding, records, writer, value_format = Decoding(SchemaRegistry(settings)), [], None, Format.AVRO
    for value in values:
        try:
            schema_id, payload = unframed(value)
        except ValueError:
            continue  # not framed: a reject to the loader, nothing to draft from
        schema = decoding.registry.schema(schema_id)
        value_format = {"JSON": Format.JSON_SCHEMA, "PROTOBUF": Format.PROTOBUF}.get(schema.schema_type if schema else "", Format.AVRO)
        reader = decoding.reader(value_format, schema_id)
        if isinstance(reader, str):
            continue
        with contextlib.suppress(ValueError):
            records.append(orjson.loads(reader.text(payload)))
            writer = getattr(reader, "writer", None)
    return records, value_format, writer


def _json_or_none(value: bytes) -> Any:
    try:
        return orjson.loads(value)
    except orjson.JSONDecodeError:
        return None


def cmd_spec_schema(_args: argparse.Namespace) -> int:
    """``spec schema``: the JSON Schema of the spec file format."""
    print(json.dumps(json_schema(), indent=2))
    return 0


def cmd_broker(args: argparse.Namespace) -> int:
    """A local broker on ``--port``; by default on 9092, where the other commands look, when that is free."""
    port = args.port
    if port is None:
        port = DEFAULT_BROKER_PORT if port_is_free(DEFAULT_BROKER_PORT) else free_port()
        if port != DEFAULT_BROKER_PORT:
            print(
                f"127.0.0.1:{DEFAULT_BROKER_PORT} is in use; pass --bootstrap-servers 127.0.0.1:{port} to the other commands",
                file=sys.stderr,
            )
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    with LocalBroker(port) as broker:
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
    table_console().print(table)
    return 0


class _Help(argparse.RawDescriptionHelpFormatter):
    """Help that shows each option's default, unless it is empty or the help text says it already."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        empty = action.default in (None, False, [], argparse.SUPPRESS)
        if "default" in text or empty or not action.option_strings:
            return text
        return f"{text} (default: %(default)s)"


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="starload", description="Kafka events → star schema (DuckDB, Snowflake).", formatter_class=_Help)
    parser.add_argument("--version", action="version", version=f"starload {VERSION.decode()}")
    sub = parser.add_subparsers(dest="command", required=True)
    logging_args = _Parser(add_help=False)
    logging_args.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    logging_args.add_argument("--log-format", choices=("text", "json"), default="text", help="log lines for people (text) or machines (one JSON object a line)")

    def command(name: str, text: str, parent: Any = sub) -> argparse.ArgumentParser:
        return parent.add_parser(name, help=text, description=text, formatter_class=_Help, parents=[logging_args])

    def kafka_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("--bootstrap-servers", default=DEFAULT_BOOTSTRAP, help="Kafka bootstrap servers (env STARLOAD_BOOTSTRAP_SERVERS)")
        p.add_argument("--topic", default=None, help=f"the topic (default: {DEFAULT_TOPIC}; a star whose spec names its topics needs none)")
        p.add_argument("-X", action="append", default=[], metavar="KEY=VALUE", help="a librdkafka client setting, passed as the string given (repeatable)")
        p.add_argument(
            "--startup-timeout", type=_bounded(float, 0, above=True), default=30.0, metavar="SECONDS",
            help="give up, exit code 2, when no broker answers or the topic does not exist by then",
        )

    def registry_args(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--schema-registry", default=None, metavar="URL",
            help=f"the Schema Registry of topics in its wire format (avro, protobuf, json_schema) (env {URL_ENV}; its user:password in {USER_INFO_ENV})",
        )  # fmt: skip
        p.add_argument(
            "--registry-option", action="append", default=[], metavar="KEY=VALUE",
            help="a setting of confluent-kafka's SchemaRegistryClient (bearer.auth.*, ssl.ca.location, …), as the string given (repeatable)",
        )  # fmt: skip

    def sink_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("--sink", default="duckdb", help="registered sink name (see `starload plugins`)")
        p.add_argument("--duckdb-path", default="starload.duckdb", help="DuckDB database file")
        p.add_argument("--snowflake-connection", default=None, metavar="NAME", help="a connection of the Snowflake connector's connections.toml (default: the SNOWFLAKE_* variables)")
        p.add_argument("--sink-option", action="append", default=[], metavar="KEY=VALUE", help="an option passed to the sink, as the string given (repeatable)")
        star = p.add_mutually_exclusive_group()
        star.add_argument("--spec", default=None, metavar="FILE", help="the star, declared in a YAML or TOML file (see `starload spec check`)")
        star.add_argument(
            "--schema", default=None,
            help="instead of --spec: a generator's star by name, module:ATTRIBUTE or path/to/file.py:ATTRIBUTE "
            "(default: the generator named like --topic, for the demo's own topic; any other topic needs one of the two)",
        )

    p = command("produce", "produce generated events and exit")
    kafka_args(p)
    p.add_argument("--count", type=_bounded(int, 1), default=None, help="events to generate (needed without --file)")
    p.add_argument("--file", default=None, metavar="FILE", help="produce this JSON Lines file instead, one message a line, as written")
    p.add_argument("--key-field", default=None, metavar="PATH", help="with --file: the message key is this field of each line (a path such as merchant.id)")
    p.add_argument(
        "--keyed",
        action="store_true",
        help='with --file: each line is {"key": ..., "value": ...}; a null value is a tombstone, a key that is not a string is sent as its JSON',
    )
    p.add_argument("--seed", type=int, default=None, help="random seed: the same seed gives the same events on any day (default: a random one)")
    p.add_argument("--rate", type=_bounded(float, 0), default=0, help="messages per second; 0 = as fast as possible")
    p.add_argument("--generator", default="orders", help="registered generator name (see `starload plugins`)")
    p.add_argument("--partitions", type=_bounded(int, 1), default=4, help="partitions when the topic is created")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE", help="generator option, e.g. customers=50 (repeatable)")
    p.add_argument(
        "--format", choices=[f.value for f in Format], default=None,
        help="write the generator's events in this format (default: each topic's in its star's spec; the framed ones register their schema)",
    )  # fmt: skip
    registry_args(p)
    p.set_defaults(func=cmd_produce)

    p = command("load", "load a topic into the star schema")
    kafka_args(p)
    sink_args(p)
    registry_args(p)
    p.add_argument("--group", default="starload", help="consumer group (offsets are stored per group in the sink)")
    p.add_argument(
        "--instance-id", default=None, metavar="ID",
        help="static group membership (group.instance.id): a restarted loader gets its partitions back "
        "without a rebalance; give each loader of the group its own id (default: none)",
    )
    p.add_argument("--until-idle", type=_bounded(float, 0, above=True), default=None, metavar="SECONDS", help="exit after this long without messages (default: run until stopped)")
    p.add_argument("--batch-rows", type=_bounded(int, 1), default=DEFAULT_BATCH_ROWS, help="messages per batch at most")
    p.add_argument("--batch-seconds", type=_bounded(float, 0, above=True), default=1.0, help="seconds a batch gathers at most")
    p.add_argument("--dlq-topic", default=None, metavar="TOPIC", help="dead-letter topic for rejects (default: <topic>.dlq)")
    p.add_argument("--no-dlq", action="store_true", help="record rejects only in the sink (STARLOAD_REJECTS of the built-in sinks)")
    p.add_argument(
        "--max-reject-ratio", type=_bounded(float, 0, high=1), default=DEFAULT_MAX_REJECT_RATIO, metavar="R",
        help="stop, writing nothing, at a batch of 100 messages or more with a larger share of rejects (1 turns the guard off)",
    )
    p.add_argument(
        "--on-offset-mismatch", choices=POLICIES, default="stop",
        help="when offsets stored in the sink do not belong to the topic as it is now (re-created, or out of the "
        "range the broker holds): stop with exit code 3, or reset them to the partition's first offset or its end and go on",
    )
    p.add_argument(
        "--metrics-port", type=_bounded(int, 0, high=65535), default=None, metavar="PORT",
        help="serve Prometheus metrics at /metrics and the health check at /healthz on this port (default: off; 0: any free port)",
    )
    p.add_argument("--metrics-host", default="0.0.0.0", metavar="ADDRESS", help="address the metrics server listens on")
    p.add_argument(
        "--health-timeout", type=_bounded(float, 0, above=True), default=DEFAULT_HEALTH_TIMEOUT, metavar="SECONDS",
        help="/healthz answers 503 after this long without an assignment, or with batches waiting for the sink without a commit",
    )
    p.set_defaults(func=cmd_load)

    p = command("offsets", "show or reset the offsets stored in the sink")
    actions = p.add_subparsers(dest="action", required=True)
    for action, text in (("show", "the stored offsets next to the topic as it is now"), ("reset", "store other offsets (a dry run without --execute)")):
        a = command(action, text, actions)
        kafka_args(a)
        sink_args(a)
        a.add_argument("--group", default="starload", help="consumer group")
        a.set_defaults(func=cmd_offsets)
        if action == "reset":
            a.add_argument("--to", type=_offset_target, required=True, metavar="earliest|latest|OFFSET", help="each partition's first offset, its end, or this offset")
            a.add_argument("--partition", type=_bounded(int, 0), action="append", default=[], metavar="N", help="only this partition (repeatable; default: every partition)")
            a.add_argument("--execute", action="store_true", help="store the new offsets (without it, only show them)")

    p = command("ddl", "print the DDL the sink would run")
    sink_args(p)
    p.set_defaults(func=cmd_ddl)

    p = command("migrate", "apply additive changes of the spec to the warehouse's star (a dry run without --execute)")
    sink_args(p)
    p.add_argument("--execute", action="store_true", help="run the DDL and record the spec (without it, only show them)")
    p.set_defaults(func=cmd_migrate)

    p = command("rebuild", "drop the star's tables and forget its topics' stored offsets, so that the next load builds it anew")
    sink_args(p)
    p.add_argument("--topic", default=None, help="the topic, for a star whose spec names none")
    p.add_argument("--group", default=None, help="forget only this consumer group's stored offsets (default: every group's on the star's topics)")
    p.add_argument("--execute", action="store_true", help="take the steps (without it, only show them)")
    p.set_defaults(func=cmd_rebuild)

    p = command("verify", "check the star's invariants in the warehouse (exit 1 listing each violation)")
    sink_args(p)
    p.set_defaults(func=cmd_verify)

    p = command("spec", "check a spec file, draft one from a topic, or print the JSON Schema of the format")
    actions = p.add_subparsers(dest="action", required=True)
    a = command("draft", "print a first spec for a topic, drafted from a sample of its messages (any format)", actions)
    kafka_args(a)
    registry_args(a)
    a.add_argument("--samples", type=_bounded(int, 1), default=1000, help="messages read from the beginning of the topic at most")
    a.set_defaults(func=cmd_spec_draft)
    a = command("check", "validate a spec file and print the tables and columns it declares", actions)
    a.add_argument("file", metavar="FILE", help="a .yaml, .yml or .toml spec file")
    a.set_defaults(func=cmd_spec_check)
    a = command("schema", "print the JSON Schema of the spec file format (for editors)", actions)
    a.set_defaults(func=cmd_spec_schema)

    p = command("broker", "run a local Kafka-protocol broker until Ctrl-C")
    p.add_argument(
        "--port", type=_bounded(int, 1, high=65535), default=None,
        help=f"loopback port (default: {DEFAULT_BROKER_PORT}, where the other commands look, else any free port)",
    )
    p.set_defaults(func=cmd_broker)

    p = command("plugins", "list registered sinks and generators")
    p.set_defaults(func=cmd_plugins)

    p = command("plugin", "make a plugin package")
    actions = p.add_subparsers(dest="action", required=True)
    a = command("new", "make the package starload-NAME of a sink plugin that works as made (the example SQLite sink, renamed)", actions)
    a.add_argument("name", metavar="NAME", help="the sink's name (--sink NAME): lower-case letters, digits and _")
    a.add_argument("--dir", default=".", metavar="FOLDER", help="where to make the package's folder")
    a.set_defaults(func=cmd_plugin_new)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.func is not cmd_load:
        stopping.default()  # only a load stops cleanly on a signal; the others end as programs do
    logs.configure(verbose=args.verbose, json=args.log_format == "json", console=CONSOLE)
    try:
        return int(args.func(args))
    except StoredOffsetsError as exc:
        print(f"starload: error: {exc}", file=sys.stderr)
        return 3
    except (StarloadError, KafkaException, ImportError) as exc:
        print(f"starload: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
