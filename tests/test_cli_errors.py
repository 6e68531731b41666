"""Ordinary mistakes on the command line: one line on stderr, exit code 2, never a traceback.

Nothing listens at the bootstrap address these commands get: each mistake must be
found before the command needs the broker.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from starload.cli import _key_values, build_parser, create_sink, sink_options

NOWHERE = ["--bootstrap-servers", "127.0.0.1:1"]
SHOP_YAML = str(Path(__file__).resolve().parents[1] / "examples" / "shop.yaml")


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["load", "--batch-rows", "0"], "argument --batch-rows: must be at least 1, got 0"),
        (["load", "--batch-seconds", "-1"], "argument --batch-seconds: must be more than 0, got -1"),
        (["load", "--until-idle", "soon"], "argument --until-idle: expected a number, got 'soon'"),
        (["load", "--max-reject-ratio", "2"], "argument --max-reject-ratio: must be at most 1, got 2"),
        (["produce", "--count", "1", "--rate", "-1"], "argument --rate: must be at least 0, got -1"),
        (["produce", "--count", "-5"], "argument --count: must be at least 1, got -5"),
        (["produce", "--count", "1", "--partitions", "0"], "argument --partitions: must be at least 1, got 0"),
        (["load", "--sink-option", "nope=1"], "unknown --sink-option for sink 'duckdb': nope (known: path, memory_limit"),
        (["produce", "--count", "1", "--option", "nope=1"], "unknown --option for generator 'orders': nope (known: products"),
        (["load", "--duckdb-path", "{tmp}/missing/star.duckdb"], "DuckDB sink '{tmp}/missing/star.duckdb': the folder {tmp}/missing does not exist"),
        (["load", "--topic", "payments"], "which star does topic 'payments' load into? Give --spec FILE"),
        (["offsets", "show", "--topic", "payments"], "which star does topic 'payments' load into?"),
        (["load", "--schema", "no_such_module:STAR"], "--schema no_such_module:…: no module 'no_such_module' in the working directory"),
        (["load", "--schema", "{tmp}/missing.py:STAR"], "--schema {tmp}/missing.py:…: no such file"),
        (["load", "--schema", "starload.generators.orders:NOPE"], "has no attribute 'NOPE' (its StarSchema attributes: ORDERS_HISTORY_SCHEMA, ORDERS_SCHEMA)"),
        (["load", "--schema", "starload.generators.orders:ORDERS_GENERATOR"], "not a StarSchema but Generator"),
        (["load", "--duckdb-path", "{tmp}/star.duckdb", "--sink-option", "memory_limit=lots"], "Memory must have a number"),
        (["load", "--sink", "snowflake", "--sink-option", "lock_timeout=soon"], "lock_timeout must be a whole number"),
        (["load", "--sink", "nope"], "unknown sink 'nope'; registered: duckdb"),
        (["produce"], "produce needs --count (events to generate) or --file"),
        (["produce", "--generator", "shop", "--count", "1", "--topic", "x"], "generator 'shop' produces to its own topics (shop.orders, shop.payments, shop.customers): --topic does not apply"),
        (["load", "--spec", SHOP_YAML, "--topic", "orders"], "star 'shop' names its topics (shop.orders, shop.payments, shop.customers): topic 'orders' is none of them"),
        (["produce", "--file", "{tmp}/events.jsonl", "--count", "5"], "--file produces the file's lines as they are; --count does not apply"),
        (["produce", "--file", "{tmp}/missing.jsonl"], "cannot read {tmp}/missing.jsonl: No such file or directory"),
        (["load", "--spec", "{tmp}/missing.yaml"], "cannot read it"),
    ],
)
def test_an_ordinary_mistake_is_one_line_and_exit_2(args, says, tmp_path):
    command = [sys.executable, "-m", "starload.cli", *(a.format(tmp=tmp_path) for a in args), *NOWHERE]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2, done.stderr
    [line] = done.stderr.strip().splitlines()
    assert line.startswith("starload: error: ") and says.format(tmp=tmp_path) in line, line


def test_migrate_needs_its_star_named():
    done = subprocess.run([sys.executable, "-m", "starload.cli", "migrate"], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2
    [line] = done.stderr.strip().splitlines()
    assert line.startswith("starload: error: which star is it? Give --spec FILE"), line


def test_values_of_X_and_sink_options_stay_strings():
    args = build_parser().parse_args(
        ["load", "-X", "sasl.password=0123", "--sink", "snowflake", "--sink-option", "password=0123"]
    )
    assert _key_values(args.X, "-X") == {"sasl.password": "0123"}
    assert sink_options(args)["password"] == "0123"
    assert create_sink(args).connection_arguments()["password"] == "0123"


def test_generator_options_that_are_integers_become_int():
    args = build_parser().parse_args(["produce", "--count", "1", "--option", "customers=50", "--option", "now=2024-06-01"])
    assert _key_values(args.option, "--option", integers=True) == {"customers": 50, "now": "2024-06-01"}
