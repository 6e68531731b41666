"""The demo: orders through Kafka into a DuckDB star schema, then a short report.

    python examples/run_orders.py [--count N] [--duckdb-path PATH] [--history]
                                  [--bootstrap-servers HOST:PORT] [--topic NAME]

Without --bootstrap-servers a local broker is started (needs `starload[local]`).
With --history the star is the orders star with the customer's region kept as
history (``ORDERS_HISTORY_SCHEMA``, ``examples/orders_history.yaml``), customers move
region four times over the 30 days of orders (which arrive in random time order), and
the report adds revenue by the region the customer lived in when they ordered, next
to the region they live in now.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
import uuid

import duckdb
from rich.console import Console
from rich.table import Table

from starload import ORDERS_GENERATOR, ORDERS_HISTORY_SCHEMA, ORDERS_SCHEMA, DuckDBSink, LocalBroker, StarLoader, produce

REPORTS = {
    "Rows per table": """
        SELECT 'DIM_CUSTOMER' AS "table", count(*) AS "rows" FROM DIM_CUSTOMER
        UNION ALL SELECT 'DIM_PRODUCT', count(*) FROM DIM_PRODUCT
        UNION ALL SELECT 'DIM_DATE', count(*) FROM DIM_DATE
        UNION ALL SELECT 'FACT_ORDERS', count(*) FROM FACT_ORDERS
        UNION ALL SELECT 'STARLOAD_REJECTS', count(*) FROM STARLOAD_REJECTS""",
    "Revenue by customer region": """
        SELECT c.CUSTOMER_REGION AS region, count(*) AS orders, sum(f.TOTAL_AMOUNT) AS revenue
        FROM FACT_ORDERS f JOIN DIM_CUSTOMER c USING (CUSTOMER_KEY) GROUP BY 1 ORDER BY revenue DESC""",
    "Revenue by category": """
        SELECT p.CATEGORY AS category, sum(f.QUANTITY) AS units, sum(f.TOTAL_AMOUNT) AS revenue
        FROM FACT_ORDERS f JOIN DIM_PRODUCT p USING (PRODUCT_KEY) GROUP BY 1 ORDER BY revenue DESC""",
    "Top customers": """
        SELECT c.CUSTOMER_NAME AS customer, count(*) AS orders, sum(f.TOTAL_AMOUNT) AS revenue
        FROM FACT_ORDERS f JOIN DIM_CUSTOMER c USING (CUSTOMER_KEY) GROUP BY 1 ORDER BY revenue DESC LIMIT 5""",
    "Revenue by weekday": """
        SELECT d.DAY_NAME AS day, count(*) AS orders, sum(f.TOTAL_AMOUNT) AS revenue
        FROM FACT_ORDERS f JOIN DIM_DATE d USING (DATE_KEY) GROUP BY d.DAY_OF_WEEK, 1 ORDER BY d.DAY_OF_WEEK""",
}

#: The history star's own report: each version of a customer is a row of DIM_CUSTOMER, the current one has VALID_TO NULL.
HISTORY_REPORTS = {
    "Revenue by region then and now": """
        SELECT v.CUSTOMER_REGION AS region_then, now.CUSTOMER_REGION AS region_now, count(*) AS orders,
               sum(f.TOTAL_AMOUNT) AS revenue
        FROM FACT_ORDERS f
        JOIN DIM_CUSTOMER v ON v.CUSTOMER_KEY = f.CUSTOMER_KEY
        JOIN DIM_CUSTOMER now ON now.CUSTOMER_ID = v.CUSTOMER_ID AND now.VALID_TO IS NULL
        GROUP BY 1, 2 ORDER BY 1, 2""",
}


def report(path: str, console: Console, *, history: bool = False) -> None:
    """Print the star's row counts and a few revenue breakdowns (with ``history``, by the region then and now too)."""
    with duckdb.connect(path, read_only=True) as con:
        for title, sql in (REPORTS | HISTORY_REPORTS if history else REPORTS).items():
            result = con.execute(sql)
            names = [d[0] for d in result.description]
            table = Table(*names, title=title, title_justify="left")
            for row in result.fetchall():
                table.add_row(*(f"{v:,}" if isinstance(v, (int, float)) or hasattr(v, "as_tuple") else str(v) for v in row))
            console.print(table)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=10_000, help="orders to produce (default 10000)")
    parser.add_argument("--duckdb-path", default=None, help="default orders.duckdb, or orders_history.duckdb with --history")
    parser.add_argument("--history", action="store_true", help="keep the customer's region as history (SCD type 2)")
    parser.add_argument("--bootstrap-servers", default=None, help="use this broker instead of starting one")
    parser.add_argument("--topic", default=None, help="topic (default: a new one per run)")
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args(argv)
    # starload logs through Python logging and prints nothing unless told to: warnings and errors to stderr.
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    console = Console()
    schema, options = (ORDERS_HISTORY_SCHEMA, {"moves": 4}) if args.history else (ORDERS_SCHEMA, {})
    path = args.duckdb_path or f"{schema.name}.duckdb"
    topic = args.topic or f"orders-{uuid.uuid4().hex[:8]}"
    with contextlib.ExitStack() as stack:
        if args.bootstrap_servers:
            bootstrap = args.bootstrap_servers
        else:
            bootstrap = stack.enter_context(LocalBroker()).bootstrap_servers
            console.print(f"started a local broker at {bootstrap}")
        stats = produce(bootstrap, topic, ORDERS_GENERATOR, args.count, seed=args.seed, options=options)
        console.print(f"produced {stats.produced:,} orders to {topic!r} in {stats.seconds:.1f} s")
        with DuckDBSink(path) as sink:
            loader = StarLoader(schema, sink, bootstrap_servers=bootstrap, topic=topic, group="run-orders")
            loaded = loader.run(until_idle=2.0)
        console.print(
            f"loaded {loaded.facts_loaded:,} facts ({loaded.duplicates:,} duplicates, {loaded.rejected:,} rejected) "
            f"into {path}"
        )
    report(path, console, history=args.history)
    return 0


if __name__ == "__main__":
    sys.exit(main())
