"""``starload plugin new NAME``: a package that installs, registers its sink and passes the sink behaviour suite, as made."""

from __future__ import annotations

import os
import subprocess
import sys

from test_integration import run_cli


def test_a_new_plugin_installs_registers_and_passes_the_sink_behaviour_suite(tmp_path):
    made = run_cli("plugin", "new", "acme_dw", "--dir", str(tmp_path))
    assert made.returncode == 0, made.stderr
    package = tmp_path / "starload-acme_dw"
    assert made.stdout.startswith(f"made {package}: ")
    site = tmp_path / "site"
    installed = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(site), str(package)],
                               capture_output=True, text=True, timeout=300, check=False)  # fmt: skip
    assert installed.returncode == 0, installed.stderr
    env = {**os.environ, "PYTHONPATH": str(site)}
    listed = run_cli("plugins", env=env)
    assert listed.returncode == 0, listed.stderr
    assert any("acme_dw" in line and "starload-acme_dw 0.1.0" in line for line in listed.stdout.splitlines())  # found by its entry point
    suite = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist"], cwd=package, env=env,
                           capture_output=True, text=True, timeout=600, check=False)  # fmt: skip
    assert suite.returncode == 0, suite.stdout[-3000:]
    assert " passed" in suite.stdout.splitlines()[-1] and "failed" not in suite.stdout.splitlines()[-1]


def test_a_plugin_name_that_will_not_do_is_refused_in_one_line(tmp_path):
    for name in ("Acme", "snowflake", "2fast", "acme-dw"):
        refused = run_cli("plugin", "new", name, "--dir", str(tmp_path))
        assert refused.returncode == 2, refused.stderr
        [line] = refused.stderr.strip().splitlines()
        assert line.startswith(f"starload: error: plugin name {name!r}: lower-case letters")
    assert not list(tmp_path.iterdir())
