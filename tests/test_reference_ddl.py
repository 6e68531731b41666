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
def test_reference_ddl_matches_the_sink(sink):
    printed = subprocess.run(
        [sys.executable, "-m", "starload.cli", "ddl", "--sink", sink, "--schema", "orders"],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout
    assert without_comments((SQL / sink / "orders.sql").read_text()) == printed.strip()
    for table in ("DIM_CUSTOMER", "DIM_PRODUCT", "DIM_DATE", "FACT_ORDERS", "STARLOAD_OFFSETS", "STARLOAD_REJECTS"):
        assert f'CREATE TABLE IF NOT EXISTS "{table}"' in printed
