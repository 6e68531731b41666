"""Throughput of starload against its floors and against the seed's per-message loader.

    python benchmarks/throughput.py [--count N] [--sample N] [--batch-rows N]
                                    [--partitions N] [--json PATH]
                                    [--snowflake [--snowflake-count N] [--snowflake-sample N]
                                                 [--snowflake-batch-rows N] [--latency-ms MS]]

One run starts a local broker (needs ``starload[local]``), produces ``--count``
seeded orders and measures, each with a fresh consumer group:

(a) a bare confluent-kafka consumer that only touches every message value;
(b) the same consumer calling ``orjson.loads`` on every value, the floor of any
    Python loader that decodes messages one by one;
(c) ``starload load`` into a DuckDB file, as a subprocess, with its peak RSS, and a
    check that ``FACT_ORDERS`` holds exactly ``--count`` rows;
(d) the seed's loader on ``--sample`` messages: ``json.loads``, get-or-create of the
    customer, the product and the date by natural key, one fact INSERT and a COMMIT
    per message, against another DuckDB file.

Group joins are never timed. (a), (b) and (d) time from the first message received
to the last one handled. (c) is the subprocess's wall time, minus the span from its
start to its "assigned …" log line (start-up and group join), plus the interpreter
and import start-up measured on its own (best of three ``starload load --help``),
minus the time from the sink's last commit to the loader's stop, which it logs
("last commit … s ago"): the writes still in flight when the last message arrived
are counted, only the ``--until-idle`` wait after them is not.

With ``--snowflake`` (needs ``starload[test]``: the connector and fakesnow) the run
also starts the local Snowflake endpoint (``starload.snowflake_endpoint``: fakesnow
held to Snowflake's rules; ``--latency-ms`` holds each request that long, as a remote
warehouse's round trip would), produces
``--snowflake-count`` orders to a second topic and measures, through the real
connector, each in a fresh schema:

(e) ``starload load --sink snowflake`` as a
    subprocess (``SNOWFLAKE_*`` in its environment), with ``--snowflake-batch-rows``,
    and a check through the connector that ``FACT_ORDERS`` holds exactly
    ``--snowflake-count`` rows;
(f) the seed's loader of (d) on the first ``--snowflake-sample`` messages of that
    topic, through the connector (one cursor, ``%s`` binding, no autocommit: one
    transaction and one COMMIT per message); dimension keys are assigned with
    ``SELECT max(key) + 1`` (the endpoint allows no sequence inside a transaction).

(f) is timed like (d), from the first message received to the last one committed.
(e) is timed like (c), except for its end: a second connection polls
``FACT_ORDERS`` every 0.2 s from the first assignment on, and the clock stops when it
first sees every row, which also takes in the time the connector needs to see the
commit. The (c)-style figure is printed too, and so is the rate from the first
assignment to the last commit, without start-up. As in (c) and (d), connecting to the
warehouse and its DDL happen before the first assignment and are not timed. The
endpoint counts the HTTP requests it served to (e)'s loader after its first
assignment (the watcher's polls and the final log-out taken out); divided by the
loader's batches, that is the requests per batch.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb
import orjson
from confluent_kafka import Consumer, KafkaException, Message
from rich.console import Console
from rich.table import Table

from starload.broker import LocalBroker
from starload.engine import DEFAULT_BATCH_ROWS
from starload.generators.orders import ORDERS_GENERATOR
from starload.kafka import consumer_config
from starload.producing import produce
from starload.testing import LocalSnowflake, snowflake_environment

TOPIC = "orders"
SNOWFLAKE_TOPIC = "orders-snowflake"
IDLE_SECONDS = 3.0
#: Give up when a consumer sees nothing for this long (before its first message: group join included).
STALL_SECONDS = 60.0
#: The loader's last log line: how long ago, when it stopped, the sink last committed.
LAST_COMMIT = re.compile(
    r"starload\.engine: stopping after \d+ messages; last commit ([0-9.]+) s ago, ([0-9.]+) s after the first assignment"
)
#: How often (e) polls FACT_ORDERS for the end of the load.
WATCH_INTERVAL = 0.2


def seed_ddl(*, sequences: bool) -> list[str]:
    """The seed's star (its Snowflake tables, which enforce no key constraints).

    With ``sequences`` the dimension keys default to a sequence (DuckDB, (d));
    without, the loader assigns them ((f): the local Snowflake endpoint allows no
    sequence inside a transaction).
    """

    def key(column: str) -> str:
        return f"{column} BIGINT DEFAULT nextval('{column}_SEQ')" if sequences else f"{column} BIGINT"

    return [
        *(["CREATE SEQUENCE CUSTOMER_KEY_SEQ", "CREATE SEQUENCE PRODUCT_KEY_SEQ"] if sequences else []),
        f"""CREATE TABLE DIM_CUSTOMER (
            {key("CUSTOMER_KEY")}, CUSTOMER_ID VARCHAR, CUSTOMER_NAME VARCHAR, CUSTOMER_REGION VARCHAR)""",
        f"""CREATE TABLE DIM_PRODUCT (
            {key("PRODUCT_KEY")}, PRODUCT_ID VARCHAR, PRODUCT_NAME VARCHAR, CATEGORY VARCHAR, PRICE DECIMAL(18, 2))""",
        """CREATE TABLE DIM_DATE (
            DATE_KEY INTEGER, FULL_DATE DATE, DAY INTEGER, MONTH INTEGER, MONTH_NAME VARCHAR, QUARTER INTEGER,
            YEAR INTEGER, DAY_OF_WEEK INTEGER, DAY_NAME VARCHAR, WEEK_OF_YEAR INTEGER, IS_WEEKEND BOOLEAN)""",
        """CREATE TABLE FACT_ORDERS (
            ORDER_ID VARCHAR, ORDER_TIMESTAMP TIMESTAMPTZ, CUSTOMER_KEY BIGINT, PRODUCT_KEY BIGINT,
            DATE_KEY INTEGER, QUANTITY INTEGER, TOTAL_AMOUNT DECIMAL(18, 2), SHIPPING_REGION VARCHAR)""",
    ]


@dataclass
class ConsumeRun:
    """One timed pass of a bare consumer over the topic."""

    messages: int
    seconds: float
    join_seconds: float

    @property
    def rate(self) -> float:
        """Messages per second."""
        return self.messages / self.seconds


@dataclass
class LoaderRun:
    """One timed ``starload load`` subprocess."""

    wall_seconds: float
    pre_assignment_seconds: float
    startup_seconds: float
    idle_seconds: float
    peak_rss_mib: float
    fact_rows: int
    #: From the start to when a watcher first saw every fact (None: not watched).
    loaded_seconds: float | None = None
    #: Batches the loader wrote (its summary).
    batches: int = 0
    #: From the first assignment to the sink's last commit, as the loader measured it (its last log line).
    commit_seconds: float = 0.0

    @property
    def join_seconds(self) -> float:
        """The group join (and anything else between start-up and the first assignment)."""
        return self.pre_assignment_seconds - self.startup_seconds

    @property
    def idle_style_seconds(self) -> float:
        """Wall time without the group join and the wait after the last commit (start-up included): how (c) is timed."""
        return self.wall_seconds - self.join_seconds - self.idle_seconds


    @property
    def seconds(self) -> float:
        """Start-up plus the time from the first assignment until every fact was seen, else ``idle_style_seconds``."""
        if self.loaded_seconds is None:
            return self.idle_style_seconds
        return self.loaded_seconds - self.join_seconds


def loader_json(run: LoaderRun) -> dict[str, float | int | None]:
    """A loader run's figures, flat and prefixed ``starload_``, derived timings included."""
    figures = asdict(run) | {"seconds": run.seconds, "idle_style_seconds": run.idle_style_seconds}
    return {f"starload_{k}": v for k, v in figures.items()}


@dataclass
class Figures:
    """Everything the benchmark reports (also the ``--json`` document)."""

    count: int
    sample: int
    batch_rows: int
    partitions: int
    produce_rate: float
    bare_rate: float
    orjson_rate: float
    seed_rate: float
    starload: LoaderRun
    snowflake: SnowflakeFigures | None = None

    @property
    def starload_rate(self) -> float:
        """(c): orders per second into DuckDB."""
        return self.count / self.starload.seconds

    @property
    def starload_vs_orjson(self) -> float:
        """c / b: starload's rate as a fraction of the orjson floor."""
        return self.starload_rate / self.orjson_rate

    @property
    def starload_vs_seed(self) -> float:
        """c / d: how many times faster than the seed's per-message loader."""
        return self.starload_rate / self.seed_rate

    def to_json(self) -> dict[str, float | int | None]:
        """The figures and their ratios as one flat JSON object (Snowflake figures prefixed ``snowflake_``)."""
        flat = {k: v for k, v in asdict(self).items() if k not in ("starload", "snowflake")}
        flat |= loader_json(self.starload) | {"starload_rate": self.starload_rate}
        flat |= {"starload_vs_orjson": self.starload_vs_orjson, "starload_vs_seed": self.starload_vs_seed}
        if self.snowflake is not None:
            flat |= {f"snowflake_{k}": v for k, v in self.snowflake.to_json().items()}
        return flat


@dataclass
class SnowflakeFigures:
    """(e) and (f): starload and the seed's loader through the local Snowflake endpoint."""

    count: int
    sample: int
    batch_rows: int
    seed_rate: float
    starload: LoaderRun
    latency_ms: float = 0.0
    #: HTTP requests the endpoint served to (e)'s loader after its first assignment.
    requests: int = 0

    @property
    def requests_per_batch(self) -> float:
        """(e)'s requests to the endpoint per batch written."""
        return self.requests / self.starload.batches if self.starload.batches else 0.0

    @property
    def commit_rate(self) -> float:
        """(e): orders per second from the first assignment to the last commit."""
        return self.count / self.starload.commit_seconds

    @property
    def starload_rate(self) -> float:
        """(e): orders per second into the local Snowflake endpoint."""
        return self.count / self.starload.seconds

    @property
    def starload_vs_seed(self) -> float:
        """e / f: how many times faster than the seed's per-message loader, both through the endpoint."""
        return self.starload_rate / self.seed_rate

    def to_json(self) -> dict[str, float | int | None]:
        """The figures and their ratio as one flat JSON object."""
        flat = {k: v for k, v in asdict(self).items() if k != "starload"}
        derived = {
            "starload_rate": self.starload_rate, "starload_vs_seed": self.starload_vs_seed,
            "commit_rate": self.commit_rate, "requests_per_batch": self.requests_per_batch,
        }  # fmt: skip
        return flat | loader_json(self.starload) | derived


def fresh_group(label: str) -> str:
    """A consumer group no earlier measurement used, so every pass reads from the beginning."""
    return f"bench-{label}-{uuid.uuid4().hex[:8]}"


def consume(bootstrap: str, topic: str, limit: int, handle: Callable[[list[Message]], None], label: str) -> ConsumeRun:
    """Read ``limit`` messages with a fresh group, passing each fetched list to ``handle``.

    The clock starts when the first messages arrive (the group join is left out) and
    stops once ``handle`` returned for the message that reached ``limit``.
    """
    # A fresh group has no offsets: read from the beginning (the loader's own "error" is for stored offsets).
    consumer = Consumer(consumer_config(bootstrap, fresh_group(label), {"auto.offset.reset": "earliest"}))
    consumer.subscribe([topic])
    subscribed = last_seen = time.monotonic()
    first: float | None = None
    seen = 0
    try:
        while seen < limit:
            messages = consumer.consume(num_messages=min(10_000, limit - seen), timeout=0.5)
            now = time.monotonic()
            if not messages:
                if now - last_seen > STALL_SECONDS:
                    msg = f"{label}: no message for {STALL_SECONDS:.0f} s after {seen} of {limit}"
                    raise RuntimeError(msg)
                continue
            if first is None:
                first = now
            errors = [m.error() for m in messages if m.error() is not None]
            if errors:
                raise KafkaException(errors[0])
            handle(messages)
            seen += len(messages)
            last_seen = now
        ended = time.monotonic()
    finally:
        consumer.close()
    assert first is not None
    return ConsumeRun(messages=seen, seconds=ended - first, join_seconds=first - subscribed)


def touch_values(messages: list[Message]) -> None:
    """(a): fetch every value from librdkafka into Python bytes, and nothing else."""
    for m in messages:
        m.value()


def parse_values(messages: list[Message]) -> None:
    """(b): decode every value with orjson."""
    for m in messages:
        orjson.loads(m.value())


class SeedLoader:
    """The seed's consumer logic: every message is its own transaction.

    For each message: ``json.loads``; get or create the customer and the product
    (SELECT by natural key, INSERT when missing); get the date key, adding the
    ``DIM_DATE`` row when missing; INSERT the fact; COMMIT. Subclasses hold the
    connection (statements are written with ``?`` placeholders) and say how a new
    dimension member gets its key.
    """

    def execute(self, statement: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        """Run one statement and return its rows."""
        raise NotImplementedError

    def begin(self) -> None:
        """Start the message's transaction."""
        raise NotImplementedError

    def commit(self) -> None:
        """Commit the message's transaction."""
        raise NotImplementedError

    def rollback(self) -> None:
        """Discard the message's transaction."""
        raise NotImplementedError

    def insert_member(self, table: str, key: str, columns: Sequence[str], values: Sequence[object]) -> int:
        """Insert a dimension member and return its surrogate key."""
        raise NotImplementedError

    def close(self) -> None:
        """Close the connection."""
        raise NotImplementedError

    def handle(self, messages: list[Message]) -> None:
        """Process fetched messages one by one, as the seed's poll loop does."""
        for m in messages:
            self.process(m.value())

    def process(self, value: bytes) -> None:
        """Load one order: dimension look-ups and inserts, the fact, and a commit."""
        data = json.loads(value)
        order_date = datetime.fromisoformat(data["order_timestamp"])
        self.begin()
        try:
            customer_key = self._get_or_create(
                "DIM_CUSTOMER",
                "CUSTOMER_KEY",
                ("CUSTOMER_ID", "CUSTOMER_NAME", "CUSTOMER_REGION"),
                [data["customer_id"], data["customer_name"], data["customer_region"]],
            )
            product_key = self._get_or_create(
                "DIM_PRODUCT",
                "PRODUCT_KEY",
                ("PRODUCT_ID", "PRODUCT_NAME", "CATEGORY", "PRICE"),
                [data["product_id"], data["product_name"], data["category"], data["price"]],
            )
            date_key = self._date_key(order_date)
            self.execute(
                "INSERT INTO FACT_ORDERS (ORDER_ID, ORDER_TIMESTAMP, CUSTOMER_KEY, PRODUCT_KEY, DATE_KEY, QUANTITY, "
                "TOTAL_AMOUNT, SHIPPING_REGION) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    data["order_id"],
                    order_date,
                    customer_key,
                    product_key,
                    date_key,
                    data["quantity"],
                    data["price"] * data["quantity"],
                    data["shipping_region"],
                ],
            )
            self.commit()
        except BaseException:
            self.rollback()
            raise

    def _get_or_create(self, table: str, key: str, columns: Sequence[str], values: Sequence[object]) -> int:
        """The key of the member whose natural key (``columns[0]``) is ``values[0]``, inserting it when missing."""
        rows = self.execute(f"SELECT {key} FROM {table} WHERE {columns[0]} = ?", values[:1])
        if rows:
            return int(rows[0][0])
        return self.insert_member(table, key, columns, values)

    def _date_key(self, when: datetime) -> int:
        """``YYYYMMDD`` of ``when``, adding its ``DIM_DATE`` row when missing."""
        day = when.date()
        key = int(day.strftime("%Y%m%d"))
        if not self.execute("SELECT 1 FROM DIM_DATE WHERE DATE_KEY = ?", [key]):
            self.execute(
                "INSERT INTO DIM_DATE VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    key,
                    day,
                    day.day,
                    day.month,
                    day.strftime("%B"),
                    (day.month - 1) // 3 + 1,
                    day.year,
                    day.isoweekday(),
                    day.strftime("%A"),
                    day.isocalendar().week,
                    day.isoweekday() >= 6,
                ],
            )
        return key

    def fact_rows(self) -> int:
        """Rows in FACT_ORDERS."""
        [(rows,)] = self.execute("SELECT count(*) FROM FACT_ORDERS")
        return int(rows)


class DuckDBSeedLoader(SeedLoader):
    """(d): the seed's loader against a DuckDB file; keys from sequences (``INSERT … RETURNING``)."""

    def __init__(self, path: Path) -> None:
        self.con = duckdb.connect(str(path))
        self.con.execute("SET TimeZone = 'UTC'")
        for statement in seed_ddl(sequences=True):
            self.con.execute(statement)

    def execute(self, statement: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        return self.con.execute(statement, list(params)).fetchall()

    def begin(self) -> None:
        self.con.begin()

    def commit(self) -> None:
        self.con.commit()

    def rollback(self) -> None:
        self.con.rollback()

    def insert_member(self, table: str, key: str, columns: Sequence[str], values: Sequence[object]) -> int:
        marks = ", ".join("?" for _ in columns)
        [(new,)] = self.execute(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks}) RETURNING {key}", values)
        return int(new)

    def close(self) -> None:
        self.con.close()


class SnowflakeSeedLoader(SeedLoader):
    """(f): the seed's loader through the Snowflake connector (one cursor, client-side ``%s`` binding, as the seed).

    The connection does not autocommit, so a message's statements form one
    transaction without a BEGIN round trip; a new member's key is ``SELECT max(key) + 1``.
    """

    def __init__(self, settings: dict[str, Any]) -> None:
        import snowflake.connector

        self.con = snowflake.connector.connect(**settings, network_timeout=10, autocommit=False)
        self.cursor = self.con.cursor()
        for statement in seed_ddl(sequences=False):
            self.cursor.execute(statement)
        self.con.commit()

    def execute(self, statement: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        self.cursor.execute(statement.replace("?", "%s"), tuple(params))
        return list(self.cursor.fetchall()) if self.cursor.description else []

    def begin(self) -> None:
        """Nothing to send: without autocommit the first statement opens the transaction."""

    def commit(self) -> None:
        self.con.commit()

    def rollback(self) -> None:
        self.con.rollback()

    def insert_member(self, table: str, key: str, columns: Sequence[str], values: Sequence[object]) -> int:
        [(new,)] = self.execute(f"SELECT COALESCE(MAX({key}), 0) + 1 FROM {table}")
        marks = ", ".join("?" for _ in range(len(columns) + 1))
        self.execute(f"INSERT INTO {table} ({key}, {', '.join(columns)}) VALUES ({marks})", [int(new), *values])
        return int(new)

    def close(self) -> None:
        self.con.close()


def measure_startup(repeats: int = 3) -> float:
    """Seconds to start the interpreter and import the CLI (``starload load --help``), best of ``repeats``."""
    timings = []
    for _ in range(repeats):
        started = time.monotonic()
        subprocess.run(
            [sys.executable, "-m", "starload.cli", "load", "--help"], check=True, stdout=subprocess.DEVNULL
        )
        timings.append(time.monotonic() - started)
    return min(timings)


def run_loader(
    bootstrap: str,
    topic: str,
    batch_rows: int,
    startup_seconds: float,
    sink_args: Sequence[str],
    count_facts: Callable[[], int],
    *,
    env: dict[str, str] | None = None,
    watch_for: int | None = None,
    on_assigned: Callable[[], None] | None = None,
) -> LoaderRun:
    """Run ``starload load`` with ``sink_args`` until idle; time it and take its peak RSS.

    ``on_assigned`` is called when the loader logs its first assignment.

    ``count_facts`` counts the rows of ``FACT_ORDERS`` after the loader exited. With
    ``watch_for`` it is also polled from the first assignment on (it must then be
    usable from another thread while the loader runs), and the first time it returns
    at least ``watch_for`` is recorded as ``loaded_seconds``.
    """
    command = [
        sys.executable, "-m", "starload.cli", "load",
        "--bootstrap-servers", bootstrap,
        "--topic", topic, "--schema", "orders",
        "--group", fresh_group("starload"),
        *sink_args,
        "--until-idle", str(IDLE_SECONDS),
        "--batch-rows", str(batch_rows),
    ]  # fmt: skip
    stderr: list[str] = []
    assigned: list[float] = []
    idle: list[float] = []
    committing: list[float] = []
    is_assigned, exited = threading.Event(), threading.Event()
    loaded: list[float] = []
    watch_errors: list[BaseException] = []

    def watch() -> None:
        while not is_assigned.wait(0.1):
            if exited.is_set():
                return
        while not exited.is_set():
            try:
                if count_facts() >= (watch_for or 0):
                    loaded.append(time.monotonic())
                    return
            except Exception as exc:  # noqa: BLE001 - a failed poll is retried; the last error is reported
                watch_errors.append(exc)
            time.sleep(WATCH_INTERVAL)

    started = time.monotonic()
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) as process:
        assert process.stdout is not None and process.stderr is not None
        err = process.stderr

        def read_stderr() -> None:
            for line in err:
                if not assigned and "starload.engine: assigned" in line:
                    assigned.append(time.monotonic())
                    if on_assigned is not None:
                        on_assigned()
                    is_assigned.set()
                if found := LAST_COMMIT.search(line):
                    idle.append(float(found.group(1)))
                    committing.append(float(found.group(2)))
                stderr.append(line)

        reader = threading.Thread(target=read_stderr, daemon=True)
        reader.start()
        watcher = threading.Thread(target=watch, daemon=True)
        if watch_for is not None:
            watcher.start()
        summary = process.stdout.read()
        # wait4, not wait: it also returns this child's own peak RSS (KiB on Linux).
        _pid, status, usage = os.wait4(process.pid, 0)
        ended = time.monotonic()
        exited.set()
        process.returncode = os.waitstatus_to_exitcode(status)
        reader.join()
        if watch_for is not None:
            watcher.join()
    if process.returncode != 0 or not assigned or not idle:
        msg = f"starload load exited with {process.returncode}:\n{summary}{''.join(stderr[-20:])}"
        raise RuntimeError(msg)
    fact_rows = count_facts()
    if watch_for is not None and not loaded and fact_rows >= watch_for:
        msg = f"the loader finished, but polling FACT_ORDERS never saw {watch_for:,} rows: {watch_errors[-1:]}"
        raise RuntimeError(msg)
    return LoaderRun(
        wall_seconds=ended - started,
        pre_assignment_seconds=assigned[0] - started,
        startup_seconds=startup_seconds,
        idle_seconds=idle[-1],
        commit_seconds=committing[-1],
        peak_rss_mib=usage.ru_maxrss / 1024,
        fact_rows=fact_rows,
        loaded_seconds=loaded[0] - started if loaded else None,
        batches=int(dict(line.split(": ", 1) for line in summary.strip().splitlines()).get("batches", 0)),
    )


def duckdb_facts(path: Path) -> Callable[[], int]:
    """Counts FACT_ORDERS of a DuckDB file (opened read-only: only once its writer has closed it)."""

    def count() -> int:
        with duckdb.connect(str(path), read_only=True) as con:
            (rows,) = con.execute("SELECT count(*) FROM FACT_ORDERS").fetchone() or (0,)
        return int(rows)

    return count


def run_seed(loader: SeedLoader, bootstrap: str, topic: str, sample: int, label: str) -> ConsumeRun:
    """(d), (f): ``loader`` over the first ``sample`` messages; checks every one became a fact; closes it."""
    try:
        run = consume(bootstrap, topic, sample, loader.handle, label)
        rows = loader.fact_rows()
    finally:
        loader.close()
    if rows != sample:
        msg = f"the seed loader ({label}) wrote {rows} facts for {sample} messages"
        raise RuntimeError(msg)
    return run


def describe_loader(label: str, run: LoaderRun, expected: int, console: Console) -> None:
    """The detail lines of (c) or (e): how its time was taken, and its fact count."""
    text = (
        f"{label}: {run.wall_seconds:.2f} s wall, {run.pre_assignment_seconds:.2f} s until assigned "
        f"(of which start-up ≈ {run.startup_seconds:.2f} s), "
    )
    if run.loaded_seconds is None:
        text += f"{run.idle_seconds:.2f} s idle after the last commit → {run.seconds:.2f} s"
    else:
        text += (
            f"every fact seen {run.loaded_seconds:.2f} s after start → {run.seconds:.2f} s "
            f"(minus the {run.idle_seconds:.2f} s idle after the last commit instead, as (c) is timed: "
            f"{run.idle_style_seconds:.2f} s)"
        )
    console.print(text)
    check = "OK" if run.fact_rows == expected else "MISMATCH"
    console.print(f"    FACT_ORDERS rows: {run.fact_rows:,} (expected {expected:,}) {check}")


def measure_snowflake(args: argparse.Namespace, bootstrap: str, startup: float, console: Console) -> SnowflakeFigures:
    """Produce ``--snowflake-count`` orders to their own topic, start the local endpoint, run (e) and (f)."""
    produced = produce(
        bootstrap, SNOWFLAKE_TOPIC, ORDERS_GENERATOR, args.snowflake_count, seed=1, partitions=args.partitions
    )
    console.print(f"produced {produced.produced:,} orders to {SNOWFLAKE_TOPIC!r} in {produced.seconds:.1f} s")
    with LocalSnowflake(latency_ms=args.latency_ms) as endpoint:
        settings = endpoint.fresh_schema("starload")
        with endpoint.connect(settings) as con:
            polls = [0]

            def count_facts() -> int:
                polls[0] += 1
                with con.cursor() as cursor:
                    [(rows,)] = cursor.execute("SELECT count(*) FROM FACT_ORDERS").fetchall()
                return int(rows)

            endpoint.reset()
            # Requests until the first assignment: log-in, the DDL, reading the stored offsets.
            before: list[int] = []

            loaded = run_loader(
                bootstrap,
                SNOWFLAKE_TOPIC,
                args.snowflake_batch_rows,
                startup,
                ["--sink", "snowflake"],
                count_facts,
                env=snowflake_environment(settings),
                watch_for=args.snowflake_count,
                on_assigned=lambda: before.append(endpoint.stats().get("all", 0)),
            )
            # Minus the watcher's polls (it starts after the assignment) and the log-out at the end.
            requests = endpoint.stats().get("all", 0) - polls[0] - before[0] - 1
        describe_loader("(e) starload load → Snowflake", loaded, args.snowflake_count, console)
        console.print(
            f"    {requests:,} requests to the endpoint for {loaded.batches} batches after the first assignment "
            f"({requests / max(loaded.batches, 1):.1f} per batch, each held {args.latency_ms:g} ms); "
            f"first assignment to last commit {loaded.commit_seconds:.2f} s ({args.snowflake_count / loaded.commit_seconds:,.0f} orders/s)"
        )

        loader = SnowflakeSeedLoader(endpoint.fresh_schema("seed"))
        seed = run_seed(loader, bootstrap, SNOWFLAKE_TOPIC, args.snowflake_sample, "seed-snowflake")
        console.print(
            f"(f) seed per-message loader → Snowflake: {seed.seconds:.2f} s after a {seed.join_seconds:.1f} s join"
        )
    return SnowflakeFigures(
        count=args.snowflake_count,
        sample=args.snowflake_sample,
        batch_rows=args.snowflake_batch_rows,
        seed_rate=seed.rate,
        starload=loaded,
        latency_ms=args.latency_ms,
        requests=requests,
    )


def measure(args: argparse.Namespace, console: Console) -> Figures:
    """Produce, then run (a)–(d) (and (e)–(f) with ``--snowflake``) one by one, reporting each as it finishes."""
    with LocalBroker() as broker, tempfile.TemporaryDirectory(prefix="starload-bench-") as tmp:
        bootstrap = broker.bootstrap_servers
        produced = produce(bootstrap, TOPIC, ORDERS_GENERATOR, args.count, seed=1, partitions=args.partitions)
        console.print(f"produced {produced.produced:,} orders in {produced.seconds:.1f} s ({produced.rate:,.0f} msg/s)")

        bare = consume(bootstrap, TOPIC, args.count, touch_values, "bare")
        console.print(f"(a) bare consumer: {bare.seconds:.2f} s after a {bare.join_seconds:.1f} s join")
        parsed = consume(bootstrap, TOPIC, args.count, parse_values, "orjson")
        console.print(f"(b) consumer + orjson.loads: {parsed.seconds:.2f} s after a {parsed.join_seconds:.1f} s join")

        startup = measure_startup()
        path = Path(tmp) / "starload.duckdb"
        sink_args = ["--sink", "duckdb", "--duckdb-path", str(path)]
        loaded = run_loader(bootstrap, TOPIC, args.batch_rows, startup, sink_args, duckdb_facts(path))
        describe_loader("(c) starload load", loaded, args.count, console)

        seed = run_seed(DuckDBSeedLoader(Path(tmp) / "seed.duckdb"), bootstrap, TOPIC, args.sample, "seed")
        console.print(f"(d) seed per-message loader: {seed.seconds:.2f} s after a {seed.join_seconds:.1f} s join")

        snowflake = measure_snowflake(args, bootstrap, startup, console) if args.snowflake else None

    return Figures(
        count=args.count,
        sample=args.sample,
        batch_rows=args.batch_rows,
        partitions=args.partitions,
        produce_rate=produced.rate,
        bare_rate=bare.rate,
        orjson_rate=parsed.rate,
        seed_rate=seed.rate,
        starload=loaded,
        snowflake=snowflake,
    )


def print_figures(figures: Figures, console: Console) -> None:
    """The summary table: the rates, their ratios and the loaders' peak memory."""
    table = Table("measurement", "messages", "msg/s", title="starload throughput", title_justify="left")
    table.add_row("produce (starload.produce)", f"{figures.count:,}", f"{figures.produce_rate:,.0f}")
    table.add_row("(a) bare consumer, value()", f"{figures.count:,}", f"{figures.bare_rate:,.0f}")
    table.add_row("(b) consumer + orjson.loads", f"{figures.count:,}", f"{figures.orjson_rate:,.0f}")
    table.add_row("(c) starload load → DuckDB", f"{figures.count:,}", f"{figures.starload_rate:,.0f}")
    table.add_row("(d) seed per-message loader → DuckDB", f"{figures.sample:,}", f"{figures.seed_rate:,.0f}")
    sf = figures.snowflake
    if sf is not None:
        table.add_row("(e) starload load → local Snowflake", f"{sf.count:,}", f"{sf.starload_rate:,.0f}")
        table.add_row("(e) first assignment → last commit", f"{sf.count:,}", f"{sf.commit_rate:,.0f}")
        table.add_row("(f) seed per-message loader → local Snowflake", f"{sf.sample:,}", f"{sf.seed_rate:,.1f}")
    table.add_section()
    table.add_row("c / b", "", f"{figures.starload_vs_orjson:.2f}×")
    table.add_row("c / d", "", f"{figures.starload_vs_seed:,.0f}×")
    if sf is not None:
        table.add_row("e / f", "", f"{sf.starload_vs_seed:,.0f}×")
    table.add_row("(c) peak RSS", "", f"{figures.starload.peak_rss_mib:,.0f} MiB")
    if sf is not None:
        table.add_row("(e) peak RSS", "", f"{sf.starload.peak_rss_mib:,.0f} MiB")
    console.print(table)
    console.print(f"count {figures.count:,} · batch rows {figures.batch_rows:,} · partitions {figures.partitions}")
    if sf is not None:
        console.print(
            f"Snowflake: count {sf.count:,} · batch rows {sf.batch_rows:,} · sample {sf.sample:,} · "
            f"latency {sf.latency_ms:g} ms per request · {sf.requests_per_batch:.1f} requests per batch"
        )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=1_000_000, help="orders to produce (default 1000000)")
    parser.add_argument("--sample", type=int, default=2_000, help="messages for the seed loader (d) (default 2000)")
    parser.add_argument(
        "--batch-rows", type=int, default=DEFAULT_BATCH_ROWS, help=f"starload --batch-rows (default {DEFAULT_BATCH_ROWS})"
    )
    parser.add_argument("--partitions", type=int, default=4, help="topic partitions (default 4)")
    parser.add_argument("--json", type=Path, default=None, metavar="PATH", help="also write the figures here as JSON")
    parser.add_argument(
        "--snowflake", action="store_true", help="also measure (e) and (f) through the local Snowflake endpoint"
    )
    parser.add_argument("--snowflake-count", type=int, default=200_000, help="orders for (e) (default 200000)")
    parser.add_argument(
        "--snowflake-sample", type=int, default=200, help="messages for the seed loader (f) (default 200)"
    )
    parser.add_argument(
        "--snowflake-batch-rows", type=int, default=100_000, help="starload --batch-rows for (e) (default 100000)"
    )
    parser.add_argument(
        "--latency-ms", type=float, default=0.0,
        help="hold each request to the local Snowflake endpoint this long, as a remote warehouse would (default 0)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if not 0 < args.sample <= args.count:
        parser.error("--sample must be between 1 and --count")
    if args.snowflake:
        if not 0 < args.snowflake_sample <= args.snowflake_count:
            parser.error("--snowflake-sample must be between 1 and --snowflake-count")
        missing = [m for m in ("snowflake.connector", "fakesnow") if importlib.util.find_spec(m) is None]
        if missing:
            parser.error(f"--snowflake needs {' and '.join(missing)}: pip install 'starload[test]'")
    return args


def main(argv: list[str] | None = None) -> int:
    """Measure, print the table, optionally write JSON; 1 when a FACT_ORDERS missed rows."""
    args = parse_args(argv)
    console = Console(soft_wrap=True)
    figures = measure(args, console)
    print_figures(figures, console)
    if args.json is not None:
        args.json.write_text(json.dumps(figures.to_json(), indent=2) + "\n")
        console.print(f"figures written to {args.json}")
    complete = figures.starload.fact_rows == figures.count
    if figures.snowflake is not None:
        complete = complete and figures.snowflake.starload.fact_rows == figures.snowflake.count
    return 0 if complete else 1


if __name__ == "__main__":
    sys.exit(main())
