"""The reference DDL in sql/ is exactly what `starload ddl` prints (comments aside)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

SQL = Path(__file__).resolve().parents[1] / "sql"


def without_comments(text: str) -> str:
    return "\n".join(line for line in text.splitlines() if not line.startswith("--")).strip()


@pytest.mark.parametrize("sink", ["duckdb", "snowflake"])
@pytest.mark.parametrize(
    ("star", "name", "tables"),
    [
        (["--schema", "orders"], "orders", ()),
        (["--spec", "examples/orders_history.yaml"], "orders_history", ("STARLOAD_HISTORY_DIM_CUSTOMER",)),
    ],
)
def test_reference_ddl_matches_the_sink(sink, star, name, tables):
    printed = subprocess.run(
        [sys.executable, "-m", "starload.cli", "ddl", "--sink", sink, *star],
        capture_output=True, text=True, check=True, timeout=60, cwd=SQL.parent,
    ).stdout
    assert without_comments((SQL / sink / f"{name}.sql").read_text()) == printed.strip()
    for table in ("DIM_CUSTOMER", "DIM_PRODUCT", "DIM_DATE", "FACT_ORDERS", "STARLOAD_OFFSETS", "STARLOAD_REJECTS", *tables):
        assert f'CREATE TABLE IF NOT EXISTS "{table}"' in printed
