"""Aggregate throughput of several loaders sharing one star on the local Snowflake endpoint.

    python benchmarks/scale_out.py [--count N] [--partitions N] [--batch-rows N]
                                   [--latency-ms MS] [--loaders 1,2,4]

For each number of loaders k: a fresh topic of ``--count`` seeded orders over
``--partitions`` partitions and a fresh schema; k ``starload load --sink snowflake``
processes in one consumer group, started together and run as a service is (no
``--until-idle``: a loader that ran out of messages would leave the group, and the
rebalance would hold up the others' last batches), stopped with SIGTERM once
FACT_ORDERS holds ``--count`` rows. The figure is the throughput from the first
stored offset to the last (issue #37's measure): the orders after the first commit
(``--count`` less the first batch, which holds ``--batch-rows`` as the topic is
written before the loaders start) over the span from the first commit of any loader
to the last commit of any (each logs, as it stops, when it first and last committed).
The span from the first assignment is printed too: it adds the loaders' first batch
and preparing the sink (the star's tables, made or checked by each loader). Every run
checks that FACT_ORDERS holds exactly ``--count`` rows.

The profile of each run, to show what caps the figure: how long after the first
loader's first assignment the last loader had its first, the CPU seconds of the loaders
(all of them) and of the local endpoint (one process: fakesnow and DuckDB run every
statement in it), the requests and the milliseconds the endpoint took to answer one
(the latency held and the waits for the star's lock left out: what grows with more
loaders is time queued in the endpoint), and from the endpoint, how long statements
waited for the star's lock (``STARLOAD_LOCK``) and how long transactions held it.
With a held lock for most of the span, the write path is what caps; with the
endpoint's CPU near the span (one core), or its answers slowing as loaders are added,
the endpoint is.

Needs ``starload[test]`` (the connector and fakesnow) and ``starload[local]``.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from snowflake.connector.errors import ProgrammingError
from throughput import LAST_COMMIT

from starload import ORDERS_GENERATOR, LocalBroker
from starload.producing import produce
from starload.testing import LocalSnowflake, snowflake_environment

#: In a loader's stop line, when it first committed.
FIRST_COMMIT = re.compile(r"after the first assignment \(the first ([0-9.]+) s after it\)")


def cpu_seconds(pid: int) -> float:
    """User and system CPU seconds a running process has used (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run(
    bootstrap: str, endpoint: LocalSnowflake, loaders: int, args: argparse.Namespace
) -> tuple[dict[str, float], int, dict[str, float]]:
    """Load a fresh topic with ``loaders`` loaders; (seconds to the last commit from the first assignment and from the
    first commit, facts, profile)."""
    topic = f"scale-{loaders}"
    produce(bootstrap, topic, ORDERS_GENERATOR, args.count, seed=1, partitions=args.partitions)
    settings = endpoint.fresh_schema(f"scale{loaders}")
    env = snowflake_environment(settings)
    command = [
        sys.executable, "-m", "starload.cli", "load", "--bootstrap-servers", bootstrap, "--topic", topic, "--schema", "orders",
        "--group", topic, "--sink", "snowflake", "--batch-rows", str(args.batch_rows),
    ]  # fmt: skip
    assigned: dict[int, float] = {}  # per loader's PID, its first assignment
    commits: list[tuple[float, float]] = []  # per loader, (first commit, last commit)
    lock = threading.Lock()

    def follow(process: subprocess.Popen[str]) -> None:
        assert process.stderr is not None
        for line in process.stderr:
            now = time.monotonic()
            with lock:
                if "starload.engine: assigned" in line:
                    assigned.setdefault(process.pid, now)
                elif found := LAST_COMMIT.search(line):
                    last = now - float(found.group(1))
                    first = last - float(found.group(2)) + float(FIRST_COMMIT.search(line).group(1))
                    commits.append((first, last))

    # The loaders run as a service would, until stopped once the star is whole: this connection
    # polls FACT_ORDERS, and is made before the counts are reset so its requests are known (the polls).
    with endpoint.connect(settings) as con:
        endpoint.reset()
        assert endpoint.process is not None
        endpoint_cpu = cpu_seconds(endpoint.process.pid)
        processes = [
            subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            for _ in range(loaders)
        ]
        readers = [threading.Thread(target=follow, args=(p,), daemon=True) for p in processes]
        for reader in readers:
            reader.start()
        polls = 1
        while facts(con) < args.count:
            if any(p.poll() is not None for p in processes):
                msg = "a loader exited before the star was whole"
                raise RuntimeError(msg)
            time.sleep(1)
            polls += 1
        for process in processes:
            process.send_signal(signal.SIGTERM)
        loaders_cpu = 0.0
        for process in processes:
            _, status, usage = os.wait4(process.pid, 0)
            process.returncode = os.waitstatus_to_exitcode(status)
            loaders_cpu += usage.ru_utime + usage.ru_stime
            if process.returncode != 0:
                msg = f"a loader exited with {process.returncode}"
                raise RuntimeError(msg)
        for reader in readers:
            reader.join()
        stats = endpoint.stats()
        profile = {
            "loaders_cpu": loaders_cpu,
            "endpoint_cpu": cpu_seconds(endpoint.process.pid) - endpoint_cpu,
            "requests": stats.get("all", 0) - polls,
            "lock_waited": stats.get("lock_wait_ms:STARLOAD_LOCK", 0) / 1000,
            "lock_held": stats.get("lock_held_ms:STARLOAD_LOCK", 0) / 1000,
            "serving": (stats.get("served_ms", 0) - stats.get("lock_wait_ms:STARLOAD_LOCK", 0)) / 1000,
            "joined": max(assigned.values()) - min(assigned.values()),
        }
        last = max(c[1] for c in commits)
        spans = {"assigned": last - min(assigned.values()), "committed": last - min(c[0] for c in commits)}
        return spans, facts(con), profile


def facts(con: Any) -> int:
    """Rows in FACT_ORDERS (0 before the first loader made it)."""
    try:
        [(count,)] = con.cursor().execute("SELECT count(*) FROM FACT_ORDERS").fetchall()
    except ProgrammingError:  # the table is made with the first write
        return 0
    return int(count)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    # The defaults are issue #37's configuration.
    parser.add_argument("--count", type=int, default=960_000, help="orders per run (default 960,000)")
    parser.add_argument("--partitions", type=int, default=8, help="partitions of each topic (default 8)")
    parser.add_argument("--batch-rows", type=int, default=20_000, help="starload --batch-rows (default 20,000)")
    parser.add_argument("--latency-ms", type=float, default=100.0, help="held per request by the endpoint (default 100)")
    parser.add_argument("--loaders", default="1,2,4", help="loader counts to run, comma-separated (default 1,2,4)")
    args = parser.parse_args(argv)
    console = Console(width=190)
    table = Table(
        "loaders", "orders", "s from assignment", "s from 1st commit", "orders/s", "× one loader", "last joined s",
        "requests", "ms a request", "lock held s", "lock waits s", "loaders' CPU s", "endpoint CPU s", title="scale-out",
    )  # fmt: skip
    with LocalBroker() as broker, LocalSnowflake(latency_ms=args.latency_ms) as endpoint:
        first: float | None = None
        for loaders in (int(k) for k in args.loaders.split(",")):
            spans, facts, profile = run(broker.bootstrap_servers, endpoint, loaders, args)
            check = "OK" if facts == args.count else f"MISMATCH: {facts:,} facts"
            rate = (args.count - args.batch_rows) / spans["committed"]  # the first commit's batch is before the span
            first = first or rate
            console.print(f"{loaders} loader(s): {spans['assigned']:.2f} s from first assignment to last commit, {check}")
            table.add_row(
                str(loaders), f"{facts:,}", f"{spans['assigned']:.2f}", f"{spans['committed']:.2f}", f"{rate:,.0f}",
                f"{rate / first:.2f}", f"{profile['joined']:.1f}",
                f"{profile['requests']:,.0f}", f"{1000 * profile['serving'] / max(profile['requests'], 1):.0f}",
                f"{profile['lock_held']:.1f}", f"{profile['lock_waited']:.1f}", f"{profile['loaders_cpu']:.1f}",
                f"{profile['endpoint_cpu']:.1f}",
            )  # fmt: skip
    console.print(table)
    console.print(
        f"count {args.count:,} · partitions {args.partitions} · batch rows {args.batch_rows:,} · "
        f"latency {args.latency_ms:g} ms per request"
    )


if __name__ == "__main__":
    main()
