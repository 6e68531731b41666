"""Running it as a service: log routing and formats, the live progress line, help, version, the summary."""

from __future__ import annotations

import argparse
import io
import json
import logging
import re
import signal
import subprocess
import sys
import time
import uuid

import pytest
from confluent_kafka import Consumer, Producer
from rich.console import Console

from starload import ORDERS_SCHEMA, DuckDBSink, LoadStats, SinkError, StarLoader
from starload.broker import free_port
from starload.cli import build_parser
from starload.identity import VERSION
from starload.kafka import consumer_config, ensure_topic, producer_config
from starload.logs import KAFKA_LOG, FoldRepeats, configure
from starload.progress import Progress, describe_load
from starload.testing import sample_orders


def starload(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "starload.cli", *args], capture_output=True, text=True, timeout=timeout, check=False)


def produce_orders(bootstrap: str, topic: str, count: int, bad: int = 0) -> None:
    ensure_topic(bootstrap, topic, partitions=1)
    producer = Producer(producer_config(bootstrap))
    for order in sample_orders(count):
        producer.produce(topic, json.dumps(order).encode())
    for _ in range(bad):
        producer.produce(topic, b"{oops")
    assert producer.flush(30) == 0


def test_version():
    done = starload("--version")
    assert done.returncode == 0
    assert done.stdout.strip() == f"starload {VERSION.decode()}"


def test_every_option_has_help_and_shows_its_default():
    def parsers(parser: argparse.ArgumentParser):
        yield parser
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for child in action.choices.values():
                    yield from parsers(child)

    checked = 0
    for parser in parsers(build_parser()):
        text = re.sub(r"\s+", " ", parser.format_help())
        for action in parser._actions:
            if not action.option_strings or isinstance(action, (argparse._HelpAction, argparse._VersionAction)):
                continue
            assert action.help, f"{parser.prog} {action.option_strings[0]} has no help text"
            if action.default not in (None, False, [], argparse.SUPPRESS) and "default" not in action.help:
                assert f"(default: {action.default})" in text, f"{parser.prog} {action.option_strings[0]}"
            checked += 1
    assert checked > 50


def test_an_unreachable_broker_is_one_clear_line_every_few_seconds(tmp_path):
    started = time.monotonic()
    done = starload(
        "load", "--bootstrap-servers", "127.0.0.1:1", "--startup-timeout", "12", "--duckdb-path", str(tmp_path / "s.duckdb")
    )
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2, done.stderr
    assert not [line for line in lines if line.startswith("%")], done.stderr  # no raw librdkafka lines
    waiting = [line for line in lines if "waiting for a Kafka broker at 127.0.0.1:1" in line]
    assert 1 <= len(waiting) <= 3, lines
    assert lines[-1].startswith("starload: error: no Kafka broker answered at 127.0.0.1:1 within 12 s")
    assert len(lines) <= 5, lines
    assert time.monotonic() - started < 60


def test_librdkafka_lines_go_through_python_logging_folded():
    """A consumer that cannot reach its broker: librdkafka logs a failure about 20 times a second; one line shows."""
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    handler.addFilter(FoldRepeats(window=60))
    KAFKA_LOG.addHandler(handler)
    consumer = Consumer(consumer_config("127.0.0.1:1", "g"))
    try:
        consumer.subscribe(["t"])
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            consumer.poll(0.1)
    finally:
        consumer.close()
        KAFKA_LOG.removeHandler(handler)
    failures = [r for r in records if "Connect to ipv4#127.0.0.1:1 failed" in r.getMessage()]
    assert len(failures) == 1, [r.getMessage() for r in records]
    assert failures[0].levelname == "WARNING" and failures[0].name == "starload.librdkafka"


def test_fold_repeats_says_how_many_it_folded():
    fold = FoldRepeats(window=0.2)
    record = lambda n: logging.LogRecord("x", logging.WARNING, "", 0, "retry %d failed", (n,), None)
    shown = [r.getMessage() for r in map(record, range(5)) if fold.filter(r)]
    time.sleep(0.25)
    last = record(99)
    assert fold.filter(last)
    assert shown == ["retry 0 failed"]
    assert last.getMessage() == "retry 99 failed (and 4 more like it in the last 0 s)"


def test_json_log_lines_and_the_summary(local_broker, tmp_path):
    topic = f"ops-{uuid.uuid4().hex[:8]}"
    produce_orders(local_broker.bootstrap_servers, topic, 200, bad=3)
    done = starload(
        "load", "--log-format", "json", "--bootstrap-servers", local_broker.bootstrap_servers, "--topic", topic, "--schema", "orders",
        "--duckdb-path", str(tmp_path / "s.duckdb"), "--until-idle", "1",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stderr.strip().splitlines()]
    assert all(set(line) == {"time", "level", "logger", "message"} for line in lines), lines
    assert any(line["message"].startswith("assigned 0@") and line["logger"] == "starload.engine" for line in lines)
    # The stop line says when the loader first and last committed (benchmarks/scale_out.py measures from the first).
    [stop] = [line["message"] for line in lines if line["message"].startswith("stopping after 203 messages")]
    found = re.search(r"last commit [\d.]+ s ago, ([\d.]+) s after the first assignment \(the first ([\d.]+) s after it\)", stop)
    assert found and 0 < float(found.group(2)) <= float(found.group(1)), stop
    summary = dict(line.split(": ", 1) for line in done.stdout.strip().splitlines())
    assert summary["consumed"] == "203" and summary["rejected"] == "3"
    assert summary["rejects went to"] == f"table STARLOAD_REJECTS of DuckDB file {str(tmp_path / 's.duckdb')!r} and topic '{topic}.dlq'"
    assert float(summary["elapsed"].removesuffix(" s")) > 0
    assert summary["throughput"].endswith("messages/s (from the first assignment to the last commit)")
    assert int(summary["throughput"].split()[0].replace(",", "")) > 0


def test_the_live_line_waits_for_partitions_then_tells_the_rate_and_lag(local_broker):
    topic = f"live-{uuid.uuid4().hex[:8]}"
    produce_orders(local_broker.bootstrap_servers, topic, 3_000)
    screen = io.StringIO()
    console = Console(file=screen, force_terminal=True, width=80, color_system=None)
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    configure(verbose=False, json=False, console=console)
    lines: list[str] = []

    def describe(stats):
        lines.append(describe_load(stats))
        return lines[-1]

    try:
        with DuckDBSink(":memory:") as sink, Progress(describe, console=console) as progress:
            StarLoader(
                ORDERS_SCHEMA, sink, bootstrap_servers=local_broker.bootstrap_servers, topic=topic, group="g",
                dlq_topic=None, batch_rows=500, progress=progress, progress_interval=0.05,
            ).run(until_idle=1)  # fmt: skip
    finally:
        root.handlers[:], root.level = saved
    assert lines[0] == "waiting for partitions from the consumer group…"
    assert all(len(line) <= 80 for line in lines), max(lines, key=len)
    assigned = [line for line in lines if "msg/s" in line]
    assert assigned, lines
    assert any(not line.startswith("0 msg/s") for line in assigned), assigned
    assert lines[-1] == "stopped · loaded 3,000 · dup 0 · rejected 0"
    # The log line printed while the live line was up sits whole on its own line of the screen.
    shown = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", screen.getvalue())
    assert re.search(r"^.*INFO +assigned 0@-2\s*$", shown, re.MULTILINE), shown[-3000:]


def test_the_live_line_says_lag_unknown_until_the_broker_told_it():
    stats = LoadStats(partitions=2)
    assert describe_load(stats) == "0 msg/s · loaded 0 · dup 0 · rejected 0 · lag unknown"
    stats.lag = 0
    assert describe_load(stats).endswith("lag 0")


def test_the_live_line_of_several_topics_has_a_line_per_topic_and_logs_as_one(caplog):
    long = "x" * 90
    stats = LoadStats(partitions=6, lag=0, rejected=4, consumed_by_topic={"orders": 1_200, "customers": 0, long: 5},
                      rejected_by_topic={"orders": 4, "customers": 0, long: 0})  # fmt: skip
    lines = describe_load(stats).splitlines()
    assert lines[1:3] == ["  orders: 1,200 consumed · 4 rejected", "  customers: 0 consumed · 0 rejected"]
    assert len(lines) == 4 and all(len(line) <= 80 for line in lines) and lines[3].endswith("…")
    assert "\n" not in describe_load(LoadStats(partitions=1, consumed_by_topic={"orders": 3}))
    caplog.set_level(logging.INFO, logger="starload")
    Progress(describe_load, live=False, log_every=0)(stats)
    assert [r.getMessage() for r in caplog.records] == [" | ".join(line.strip() for line in lines)]


LIBRARY_USE = """
from starload import ORDERS_SCHEMA, DuckDBSink, StarLoader, StartupError
with DuckDBSink(":memory:") as sink:
    loader = StarLoader(ORDERS_SCHEMA, sink, bootstrap_servers="127.0.0.1:1", topic="t", startup_timeout=3)
    try:
        loader.run(until_idle=1)
    except StartupError as exc:
        print("stopped:", exc)
"""


def test_a_library_that_is_not_told_where_to_log_prints_nothing(tmp_path):
    """A NullHandler on the ``starload`` logger: no warnings through Python's last-resort handler, librdkafka's included."""
    done = subprocess.run([sys.executable, "-c", LIBRARY_USE], capture_output=True, text=True, timeout=60, cwd=tmp_path, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("stopped: no Kafka broker answered at 127.0.0.1:1")
    assert done.stderr == ""
    routed = subprocess.run(
        [sys.executable, "-c", "import logging; logging.basicConfig(level=logging.WARNING)\n" + LIBRARY_USE],
        capture_output=True, text=True, timeout=60, cwd=tmp_path, check=False,
    )  # fmt: skip
    assert "WARNING:starload" in routed.stderr  # configured, the same lines arrive


@pytest.mark.parametrize("program", [["-m", "starload.cli"], ["-m", "starload"]])
def test_a_sigterm_at_any_instant_of_the_start_stops_cleanly(local_broker, tmp_path, program):
    # Before, a SIGTERM in the first half second (the imports) killed the loader: exit -15.
    topic = f"early-{uuid.uuid4().hex[:8]}"
    produce_orders(local_broker.bootstrap_servers, topic, 50)
    for delay in (0.15, 0.3, 0.6, 1.2):
        path = tmp_path / f"star-{delay}.duckdb"
        proc = subprocess.Popen(
            [sys.executable, *program, "load", "--bootstrap-servers", local_broker.bootstrap_servers, "--topic", topic,
             "--schema", "orders", "--duckdb-path", str(path), "--until-idle", "30", "--no-dlq",
             # a group of its own: on the local broker, a group whose members just left makes the next join wait minutes
             "--group", f"early-{uuid.uuid4().hex[:8]}"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        time.sleep(delay)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, (delay, proc.returncode, err[-2000:])
        assert "Traceback" not in err, err
        assert "received SIGTERM" in err, (delay, err)


def test_other_commands_still_end_on_a_sigterm(local_broker):
    # Signals are caught from the first instant, for the load; every other command gets the default back.
    producing = [sys.executable, "-m", "starload", "produce", "--bootstrap-servers", local_broker.bootstrap_servers,
                 "--topic", f"slow-{uuid.uuid4().hex[:8]}", "--count", "1000000", "--rate", "50"]  # fmt: skip
    proc = subprocess.Popen(producing, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    time.sleep(3)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == -signal.SIGTERM
    command = [sys.executable, "-m", "starload.cli", "broker", "--port", str(free_port())]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None and "listening" in proc.stdout.readline()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0  # the broker command stops its broker first


def test_import_starload_is_light_and_every_public_name_is_there():
    code = "import sys, starload; print(sorted(m for m in ('starload.engine', 'confluent_kafka', 'pyarrow', 'duckdb') if m in sys.modules))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "[]"
    import importlib

    import starload as package

    assert sorted(package._HOMES) == sorted(package.__all__)
    for name in package.__all__:
        assert getattr(package, name) is getattr(importlib.import_module(package._HOMES[name]), name)
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        package.Nope  # noqa: B018


def test_a_sinks_own_error_is_one_line_naming_the_sink_and_the_batch(local_broker, tmp_path):
    """A plugin's sink raising what it raises (an OSError): one line with the sink, the batch's coordinates and the error; nothing written."""

    class Cramped(DuckDBSink):
        def write(self, batch):
            raise OSError(36, "File name too long")

    topic = f"cramped-{uuid.uuid4().hex[:8]}"
    ensure_topic(local_broker.bootstrap_servers, topic, partitions=1)
    producer = Producer(producer_config(local_broker.bootstrap_servers))
    for order in sample_orders(20, seed=4):
        producer.produce(topic, json.dumps(order).encode())
    producer.flush()
    sink = Cramped(str(tmp_path / "s.duckdb"))
    loader = StarLoader(ORDERS_SCHEMA, sink, bootstrap_servers=local_broker.bootstrap_servers, topic=topic, group=topic, dlq_topic=None)
    with pytest.raises(SinkError) as failed:
        loader.run(until_idle=2)
    message = str(failed.value)
    assert "\n" not in message and isinstance(failed.value.__cause__, OSError)
    assert message == (
        f"DuckDB file {str(tmp_path / 's.duckdb')!r}: the Cramped sink failed on a batch of 20 messages ({topic}[0] 0-19): "
        "OSError: [Errno 36] File name too long"
    )
    assert sink.stored_offsets(topic, topic) == {}
