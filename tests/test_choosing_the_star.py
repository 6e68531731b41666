"""Which star a loader loads: no silent default for another topic, Python stars by module or file path from the
working directory, and the loader's housekeeping (debug lines, its lock file, listings that are not cut)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from test_integration import run_cli
from test_payments_example import EXAMPLES, produce_sample

STAR_MODULE = f"""
from starload import StarSchema

PAYMENTS = StarSchema.from_file({str(EXAMPLES / "payments.yaml")!r})
"""


def starload(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """The CLI run in ``cwd`` without PYTHONPATH: whatever it finds there, it finds on its own."""
    return run_cli(*args, cwd=cwd, env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})


def test_a_topic_other_than_the_demos_needs_its_star_and_nothing_is_created(local_broker, tmp_path):
    produce_sample(local_broker.bootstrap_servers, "payments-nodefault")
    done = starload("load", "--bootstrap-servers", local_broker.bootstrap_servers, "--topic", "payments-nodefault",
                    "--duckdb-path", "payments.duckdb", "--until-idle", "2", cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    [line] = done.stderr.strip().splitlines()
    assert line.startswith("starload: error: which star does topic 'payments-nodefault' load into? Give --spec FILE")
    assert list(tmp_path.iterdir()) == []


def test_a_python_star_by_module_or_by_file_path_from_the_working_directory(local_broker, tmp_path):
    produce_sample(local_broker.bootstrap_servers, "payments-py")
    (tmp_path / "payments_star.py").write_text(STAR_MODULE)
    (tmp_path / "stars").mkdir()
    (tmp_path / "stars" / "mine.py").write_text(STAR_MODULE)
    for i, schema in enumerate(("payments_star:PAYMENTS", "./stars/mine.py:PAYMENTS", str(tmp_path / "stars" / "mine.py") + ":PAYMENTS")):
        done = starload("load", "--bootstrap-servers", local_broker.bootstrap_servers, "--topic", "payments-py", "--group", f"py{i}",
                        "--schema", schema, "--duckdb-path", f"p{i}.duckdb", "--until-idle", "2", cwd=tmp_path)
        assert done.returncode == 0, (schema, done.stderr)
        assert "facts loaded: 7" in done.stdout, schema


def test_mistakes_in_a_python_star_are_one_line(tmp_path):
    (tmp_path / "broken.py").write_text("from starload import StarSchema\nSTAR = 1 / 0\n")
    (tmp_path / "imports.py").write_text("import not_installed_anywhere\n")
    (tmp_path / "plain.py").write_text("STAR = {'name': 'x'}\n")
    cases = {
        "broken:STAR": f"importing it failed at {tmp_path / 'broken.py'}:2: ZeroDivisionError: division by zero",
        "./broken.py:STAR": f"importing it failed at {tmp_path / 'broken.py'}:2: ZeroDivisionError",
        "imports:STAR": "importing it failed: No module named 'not_installed_anywhere'",
        "plain:STAR": "--schema plain:STAR: not a StarSchema but dict",
        "plain:OTHER": "--schema plain:OTHER: plain has no attribute 'OTHER'",
        "./nowhere.py:STAR": "no such file (relative to the working directory",
    }
    for schema, says in cases.items():
        done = starload("ddl", "--schema", schema, cwd=tmp_path)
        assert done.returncode == 2, (schema, done.stderr)
        [line] = done.stderr.strip().splitlines()
        assert line.startswith("starload: error: ") and says in line, (schema, line)


def test_debug_lines_say_each_batchs_size_and_times_and_the_lock_file_goes_at_exit(local_broker, tmp_path):
    produce_sample(local_broker.bootstrap_servers, "payments-verbose")
    done = starload("load", "-v", "--bootstrap-servers", local_broker.bootstrap_servers, "--topic", "payments-verbose",
                    "--spec", str(EXAMPLES / "payments.yaml"), "--duckdb-path", "p.duckdb", "--until-idle", "2", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "mapped a batch of 12 messages in " in done.stderr
    assert "wrote a batch of 12 messages in " in done.stderr
    assert "took the star's lock in " in done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.duckdb"]  # the .loader lock file is gone


def test_plugins_are_listed_whole_when_the_output_is_not_a_terminal(tmp_path):
    done = starload("plugins", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "Snowflake via PUT + COPY INTO of Parquet (SNOWFLAKE_* environment or --snowflake-connection)" in done.stdout
    assert "starload.sinks.snowflake" in done.stdout
