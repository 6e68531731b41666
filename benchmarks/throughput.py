"""Throughput of starload against its floors and against the seed's per-message loader.

    python benchmarks/throughput.py [--count N] [--sample N] [--batch-rows N]
                                    [--partitions N] [--json PATH]

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
minus the ``--until-idle`` wait.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path

import duckdb
import orjson
from confluent_kafka import Consumer, KafkaException, Message
from rich.console import Console
from rich.table import Table

from starload.broker import LocalBroker
from starload.generators.orders import ORDERS_GENERATOR
from starload.kafka import consumer_config
from starload.produce import produce

TOPIC = "orders"
IDLE_SECONDS = 3.0
#: Give up when a consumer sees nothing for this long (before its first message: group join included).
STALL_SECONDS = 60.0

#: The seed's star (its Snowflake tables, which enforce no key constraints), in DuckDB.
SEED_DDL = [
    "CREATE SEQUENCE CUSTOMER_KEY_SEQ",
    "CREATE SEQUENCE PRODUCT_KEY_SEQ",
    """CREATE TABLE DIM_CUSTOMER (
        CUSTOMER_KEY BIGINT DEFAULT nextval('CUSTOMER_KEY_SEQ'), CUSTOMER_ID VARCHAR,
        CUSTOMER_NAME VARCHAR, CUSTOMER_REGION VARCHAR)""",
    """CREATE TABLE DIM_PRODUCT (
        PRODUCT_KEY BIGINT DEFAULT nextval('PRODUCT_KEY_SEQ'), PRODUCT_ID VARCHAR,
        PRODUCT_NAME VARCHAR, CATEGORY VARCHAR, PRICE DECIMAL(18, 2))""",
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

    @property
    def seconds(self) -> float:
        """Wall time without the group join and the idle wait (start-up included)."""
        join = self.pre_assignment_seconds - self.startup_seconds
        return self.wall_seconds - join - self.idle_seconds


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
    starload_rate: float
    seed_rate: float
    starload_peak_rss_mib: float
    starload_fact_rows: int
    starload_wall_seconds: float
    starload_pre_assignment_seconds: float
    starload_startup_seconds: float
    starload_seconds: float

    @property
    def starload_vs_orjson(self) -> float:
        """c / b: starload's rate as a fraction of the orjson floor."""
        return self.starload_rate / self.orjson_rate

    @property
    def starload_vs_seed(self) -> float:
        """c / d: how many times faster than the seed's per-message loader."""
        return self.starload_rate / self.seed_rate

    def to_json(self) -> dict[str, float | int]:
        """The figures and their ratios as one flat JSON object."""
        return asdict(self) | {"starload_vs_orjson": self.starload_vs_orjson, "starload_vs_seed": self.starload_vs_seed}


def fresh_group(label: str) -> str:
    """A consumer group no earlier measurement used, so every pass reads from the beginning."""
    return f"bench-{label}-{uuid.uuid4().hex[:8]}"


def consume(bootstrap: str, topic: str, limit: int, handle: Callable[[list[Message]], None], label: str) -> ConsumeRun:
    """Read ``limit`` messages with a fresh group, passing each fetched list to ``handle``.

    The clock starts when the first messages arrive (the group join is left out) and
    stops once ``handle`` returned for the message that reached ``limit``.
    """
    consumer = Consumer(consumer_config(bootstrap, fresh_group(label)))
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
    """The seed's consumer logic against DuckDB: every message is its own transaction.

    For each message: ``json.loads``; get or create the customer and the product
    (SELECT by natural key, INSERT when missing); get the date key, adding the
    ``DIM_DATE`` row when missing; INSERT the fact; COMMIT.
    """

    def __init__(self, path: Path) -> None:
        self.con = duckdb.connect(str(path))
        self.con.execute("SET TimeZone = 'UTC'")
        for statement in SEED_DDL:
            self.con.execute(statement)

    def handle(self, messages: list[Message]) -> None:
        """Process fetched messages one by one, as the seed's poll loop does."""
        for m in messages:
            self.process(m.value())

    def process(self, value: bytes) -> None:
        """Load one order: dimension look-ups and inserts, the fact, and a commit."""
        data = json.loads(value)
        order_date = datetime.fromisoformat(data["order_timestamp"])
        con = self.con
        con.begin()
        try:
            customer_key = self._get_or_create(
                "SELECT CUSTOMER_KEY FROM DIM_CUSTOMER WHERE CUSTOMER_ID = ?",
                "INSERT INTO DIM_CUSTOMER (CUSTOMER_ID, CUSTOMER_NAME, CUSTOMER_REGION) VALUES (?, ?, ?) "
                "RETURNING CUSTOMER_KEY",
                [data["customer_id"], data["customer_name"], data["customer_region"]],
            )
            product_key = self._get_or_create(
                "SELECT PRODUCT_KEY FROM DIM_PRODUCT WHERE PRODUCT_ID = ?",
                "INSERT INTO DIM_PRODUCT (PRODUCT_ID, PRODUCT_NAME, CATEGORY, PRICE) VALUES (?, ?, ?, ?) "
                "RETURNING PRODUCT_KEY",
                [data["product_id"], data["product_name"], data["category"], data["price"]],
            )
            date_key = self._date_key(order_date)
            con.execute(
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
            con.commit()
        except BaseException:
            con.rollback()
            raise

    def _get_or_create(self, select: str, insert: str, values: list[object]) -> int:
        """The key of the row whose natural key is ``values[0]``, inserting the row when missing."""
        row = self.con.execute(select, values[:1]).fetchone()
        if row is None:
            row = self.con.execute(insert, values).fetchone()
        assert row is not None
        return int(row[0])

    def _date_key(self, when: datetime) -> int:
        """``YYYYMMDD`` of ``when``, adding its ``DIM_DATE`` row when missing."""
        day = when.date()
        key = int(day.strftime("%Y%m%d"))
        if self.con.execute("SELECT 1 FROM DIM_DATE WHERE DATE_KEY = ?", [key]).fetchone() is None:
            self.con.execute(
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
        (rows,) = self.con.execute("SELECT count(*) FROM FACT_ORDERS").fetchone() or (0,)
        return int(rows)

    def close(self) -> None:
        """Close the connection."""
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


def run_loader(bootstrap: str, topic: str, batch_rows: int, path: Path, startup_seconds: float) -> LoaderRun:
    """Run ``starload load`` into a new DuckDB file until idle; time it and take its peak RSS."""
    command = [
        sys.executable, "-m", "starload.cli", "load",
        "--bootstrap-servers", bootstrap,
        "--topic", topic,
        "--group", fresh_group("starload"),
        "--sink", "duckdb",
        "--duckdb-path", str(path),
        "--until-idle", str(IDLE_SECONDS),
        "--batch-rows", str(batch_rows),
    ]  # fmt: skip
    stderr: list[str] = []
    assigned: list[float] = []

    started = time.monotonic()
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as process:
        assert process.stdout is not None and process.stderr is not None
        err = process.stderr

        def read_stderr() -> None:
            for line in err:
                if not assigned and "starload.engine: assigned" in line:
                    assigned.append(time.monotonic())
                stderr.append(line)

        reader = threading.Thread(target=read_stderr, daemon=True)
        reader.start()
        summary = process.stdout.read()
        # wait4, not wait: it also returns this child's own peak RSS (KiB on Linux).
        _pid, status, usage = os.wait4(process.pid, 0)
        ended = time.monotonic()
        process.returncode = os.waitstatus_to_exitcode(status)
        reader.join()
    if process.returncode != 0 or not assigned:
        msg = f"starload load exited with {process.returncode}:\n{summary}{''.join(stderr[-20:])}"
        raise RuntimeError(msg)
    with duckdb.connect(str(path), read_only=True) as con:
        (fact_rows,) = con.execute("SELECT count(*) FROM FACT_ORDERS").fetchone() or (0,)
    return LoaderRun(
        wall_seconds=ended - started,
        pre_assignment_seconds=assigned[0] - started,
        startup_seconds=startup_seconds,
        idle_seconds=IDLE_SECONDS,
        peak_rss_mib=usage.ru_maxrss / 1024,
        fact_rows=int(fact_rows),
    )


def run_seed(bootstrap: str, topic: str, sample: int, path: Path) -> ConsumeRun:
    """(d): the seed's loader over the first ``sample`` messages; checks every one became a fact."""
    loader = SeedLoader(path)
    try:
        run = consume(bootstrap, topic, sample, loader.handle, "seed")
        rows = loader.fact_rows()
    finally:
        loader.close()
    if rows != sample:
        msg = f"the seed loader wrote {rows} facts for {sample} messages"
        raise RuntimeError(msg)
    return run


def measure(args: argparse.Namespace, console: Console) -> Figures:
    """Produce, then run (a)–(d) one after the other, reporting each as it finishes."""
    with LocalBroker() as broker, tempfile.TemporaryDirectory(prefix="starload-bench-") as tmp:
        bootstrap = broker.bootstrap_servers
        produced = produce(bootstrap, TOPIC, ORDERS_GENERATOR, args.count, seed=1, partitions=args.partitions)
        console.print(f"produced {produced.produced:,} orders in {produced.seconds:.1f} s ({produced.rate:,.0f} msg/s)")

        bare = consume(bootstrap, TOPIC, args.count, touch_values, "bare")
        console.print(f"(a) bare consumer: {bare.seconds:.2f} s after a {bare.join_seconds:.1f} s join")
        parsed = consume(bootstrap, TOPIC, args.count, parse_values, "orjson")
        console.print(f"(b) consumer + orjson.loads: {parsed.seconds:.2f} s after a {parsed.join_seconds:.1f} s join")

        startup = measure_startup()
        loaded = run_loader(bootstrap, TOPIC, args.batch_rows, Path(tmp) / "starload.duckdb", startup)
        console.print(
            f"(c) starload load: {loaded.wall_seconds:.2f} s wall, {loaded.pre_assignment_seconds:.2f} s until "
            f"assigned (of which start-up ≈ {loaded.startup_seconds:.2f} s), {loaded.idle_seconds:.0f} s idle "
            f"→ {loaded.seconds:.2f} s"
        )
        check = "OK" if loaded.fact_rows == args.count else "MISMATCH"
        console.print(f"    FACT_ORDERS rows: {loaded.fact_rows:,} (expected {args.count:,}) {check}")

        seed = run_seed(bootstrap, TOPIC, args.sample, Path(tmp) / "seed.duckdb")
        console.print(f"(d) seed per-message loader: {seed.seconds:.2f} s after a {seed.join_seconds:.1f} s join")

    return Figures(
        count=args.count,
        sample=args.sample,
        batch_rows=args.batch_rows,
        partitions=args.partitions,
        produce_rate=produced.rate,
        bare_rate=bare.rate,
        orjson_rate=parsed.rate,
        starload_rate=args.count / loaded.seconds,
        seed_rate=seed.rate,
        starload_peak_rss_mib=loaded.peak_rss_mib,
        starload_fact_rows=loaded.fact_rows,
        starload_wall_seconds=loaded.wall_seconds,
        starload_pre_assignment_seconds=loaded.pre_assignment_seconds,
        starload_startup_seconds=loaded.startup_seconds,
        starload_seconds=loaded.seconds,
    )


def print_figures(figures: Figures, console: Console) -> None:
    """The summary table: the four rates, the two ratios and (c)'s peak memory."""
    table = Table("measurement", "messages", "msg/s", title="starload throughput", title_justify="left")
    table.add_row("produce (starload.produce)", f"{figures.count:,}", f"{figures.produce_rate:,.0f}")
    table.add_row("(a) bare consumer, value()", f"{figures.count:,}", f"{figures.bare_rate:,.0f}")
    table.add_row("(b) consumer + orjson.loads", f"{figures.count:,}", f"{figures.orjson_rate:,.0f}")
    table.add_row("(c) starload load → DuckDB", f"{figures.count:,}", f"{figures.starload_rate:,.0f}")
    table.add_row("(d) seed per-message loader → DuckDB", f"{figures.sample:,}", f"{figures.seed_rate:,.0f}")
    table.add_section()
    table.add_row("c / b", "", f"{figures.starload_vs_orjson:.2f}×")
    table.add_row("c / d", "", f"{figures.starload_vs_seed:,.0f}×")
    table.add_row("(c) peak RSS", "", f"{figures.starload_peak_rss_mib:,.0f} MiB")
    console.print(table)
    console.print(f"count {figures.count:,} · batch rows {figures.batch_rows:,} · partitions {figures.partitions}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=1_000_000, help="orders to produce (default 1000000)")
    parser.add_argument("--sample", type=int, default=2_000, help="messages for the seed loader (d) (default 2000)")
    parser.add_argument("--batch-rows", type=int, default=50_000, help="starload --batch-rows (default 50000)")
    parser.add_argument("--partitions", type=int, default=4, help="topic partitions (default 4)")
    parser.add_argument("--json", type=Path, default=None, metavar="PATH", help="also write the figures here as JSON")
    args = parser.parse_args(argv)
    if not 0 < args.sample <= args.count:
        parser.error("--sample must be between 1 and --count")
    return args


def main(argv: list[str] | None = None) -> int:
    """Measure, print the table, optionally write JSON; 1 when FACT_ORDERS missed rows."""
    args = parse_args(argv)
    console = Console(soft_wrap=True)
    figures = measure(args, console)
    print_figures(figures, console)
    if args.json is not None:
        args.json.write_text(json.dumps(figures.to_json(), indent=2) + "\n")
        console.print(f"figures written to {args.json}")
    return 0 if figures.starload_fact_rows == figures.count else 1


if __name__ == "__main__":
    sys.exit(main())
