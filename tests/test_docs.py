"""The documentation: the site builds with ``mkdocs build --strict`` (a broken link, anchor or reference fails it), and the README's first screen."""

from __future__ import annotations

import html
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def build(root: Path, out: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(out)], cwd=root,
                          capture_output=True, text=True, timeout=300, env=env, check=False)  # fmt: skip


def test_the_documentation_site_builds_strict_with_its_generated_references(tmp_path):
    built = build(ROOT, tmp_path / "site")
    assert built.returncode == 0, built.stderr
    cli = text(tmp_path / "site" / "cli" / "index.html")
    assert "starload rebuild" in cli and "--schema-registry URL" in cli  # written from the parser at build time
    api = text(tmp_path / "site" / "api" / "index.html")
    assert "to finish the batches in hand and return" in api and "SinkBehaviour" in api  # from the docstrings
    guide = text(tmp_path / "site" / "plugins" / "index.html")
    assert "class SQLiteSink(Sink)" in guide and "class TestSQLiteSink(SinkBehaviour)" in guide  # the guide's sink is the real one
    home = text(tmp_path / "site" / "index.html")
    assert "make demo" in home and "starload spec draft --topic payments" in home  # the README's, included


def text(page: Path) -> str:
    """A page's text, without its tags and highlighting spans."""
    return html.unescape(re.sub(r"<[^>]+>", "", page.read_text()))


def test_a_broken_link_or_anchor_fails_the_build(tmp_path):
    copy = tmp_path / "repo"
    shutil.copytree(ROOT / "docs", copy / "docs")
    for name in ("mkdocs.yml", "docs_hooks.py", "README.md"):
        shutil.copy(ROOT / name, copy / name)
    os.symlink(ROOT / "src", copy / "src")
    os.symlink(ROOT / "plugins", copy / "plugins")
    page = copy / "docs" / "rules.md"
    page.write_text(page.read_text() + "\nSee [the spec's keys](spec.md#no-such-heading).\n")
    broken = build(copy, tmp_path / "site")
    assert broken.returncode != 0
    assert "no-such-heading" in broken.stderr


def test_the_readmes_first_screen_gives_the_two_commands():
    first_screen = (ROOT / "README.md").read_text().splitlines()[:24]
    assert any(line.startswith("make demo ") for line in first_screen)
    assert any(line.startswith("make test ") for line in first_screen)
