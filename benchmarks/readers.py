"""Readers of the DuckDB star while it loads: how long they wait for a turn, and what letting them in costs.

    python benchmarks/readers.py [--count N] [--rate R] [--seconds S]

One run starts a local broker (needs ``starload[local]``) and runs ``starload load``
into a DuckDB file as a subprocess, in four ways:

(a) a backlog of ``--count`` orders with ``--sink-option share_every=0`` (the file held
    for the whole load: nobody can read);
(b) the same backlog with the default settings and no reader;
(c) the same backlog with the default settings while a reader tries a plain read-only
    connect once a second (:class:`starload.testing.ReaderProbe`);
(d) a live stream of ``--rate`` orders a second for ``--seconds`` seconds, batches
    closing on ``--batch-seconds 1``, with the same reader.

A backlog's time is the span the loader logs from its first assignment to its last
commit ("last commit … s after the first assignment"), the best of ``--rounds`` runs
(a), (b), (c) interleaved; (b) and (c) are given as a ratio of (a)'s (the target: at
least 0.85). (c)'s reader figures are those of its run with the longest wait. For (c) and (d): how many of the reader's
tries got in, and the longest it waited for a turn (from a try shut out to the next
that got in; the target: at most 3 s).
"""

from __future__ import annotations

import argparse
import contextlib
import re
import subprocess
import sys
import tempfile
import threading
import uuid
from pathlib import Path

from starload.broker import LocalBroker
from starload.generators.orders import ORDERS_GENERATOR
from starload.producing import produce
from starload.testing import ReaderProbe

SPAN = re.compile(r"last commit [\d.]+ s ago, ([\d.]+) s after the first assignment")


def load(bootstrap: str, topic: str, path: str, *options: str, probe: bool = False, feed: threading.Thread | None = None) -> tuple[float, ReaderProbe | None]:
    """Run ``starload load`` until idle; the span from first assignment to last commit, and the probe if any."""
    command = [
        sys.executable, "-m", "starload.cli", "load", "--bootstrap-servers", bootstrap, "--topic", topic,
        "--schema", "orders", "--duckdb-path", path, "--group", f"g-{uuid.uuid4().hex[:8]}", "--until-idle", "3",
        "--no-dlq", *options,
    ]  # fmt: skip
    loader = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    assert loader.stderr is not None
    reader = ReaderProbe(path) if probe else None
    lines: list[str] = []
    with reader or contextlib.nullcontext():
        if feed is not None:
            feed.start()
        lines.extend(loader.stderr)
        loader.wait()
    if loader.returncode != 0:
        raise SystemExit(f"the loader failed ({loader.returncode}):\n{''.join(lines[-20:])}")
    [span] = [float(m[1]) for line in lines if (m := SPAN.search(line))]
    return span, reader


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=600_000, help="orders in the backlog (default 600,000)")
    parser.add_argument("--rate", type=float, default=240.0, help="orders a second of the live stream (default 240)")
    parser.add_argument("--seconds", type=float, default=40.0, help="length of the live stream (default 40)")
    parser.add_argument("--rounds", type=int, default=3, help="backlog runs of each kind, interleaved; the best is shown (default 3)")
    args = parser.parse_args()
    with LocalBroker() as broker, tempfile.TemporaryDirectory() as folder:
        bootstrap = broker.bootstrap_servers
        backlog = f"backlog-{uuid.uuid4().hex[:8]}"
        produce(bootstrap, backlog, ORDERS_GENERATOR, args.count, seed=1)
        runs: dict[str, list[float]] = {"a": [], "b": [], "c": []}
        probes: list[ReaderProbe] = []
        for round_ in range(args.rounds):  # interleaved, so that a slow spell of the machine hits all three
            runs["a"].append(load(bootstrap, backlog, str(Path(folder, f"a{round_}.duckdb")), "--sink-option", "share_every=0")[0])
            runs["b"].append(load(bootstrap, backlog, str(Path(folder, f"b{round_}.duckdb")))[0])
            read, probe = load(bootstrap, backlog, str(Path(folder, f"c{round_}.duckdb")), probe=True)
            assert probe is not None
            runs["c"].append(read)
            probes.append(probe)
        held, alone, read = (min(runs[k]) for k in "abc")
        probe = max(probes, key=lambda p: max(p.waits, default=0.0))
        print(f"(a) backlog of {args.count:,}, share_every=0: {held:.1f} s ({args.count / held:,.0f} msg/s)")
        print(f"(b) default, no reader: {alone:.1f} s, {held / alone:.2f}x the speed of (a)")
        print(f"(c) default, a reader once a second: {read:.1f} s, {held / read:.2f}x the speed of (a); {probe.summary()}")
        live = f"live-{uuid.uuid4().hex[:8]}"
        count = int(args.rate * args.seconds)
        feed = threading.Thread(target=produce, args=(bootstrap, live, ORDERS_GENERATOR, count), kwargs={"seed": 2, "rate": args.rate})
        produce(bootstrap, live, ORDERS_GENERATOR, 1, seed=3)  # the topic exists before the loader starts
        _, probe = load(bootstrap, live, str(Path(folder, "d.duckdb")), "--batch-seconds", "1", probe=True, feed=feed)
        feed.join()
        assert probe is not None
        print(f"(d) live stream of {args.rate:g} orders/s for {args.seconds:g} s: {probe.summary()}")


if __name__ == "__main__":
    main()
