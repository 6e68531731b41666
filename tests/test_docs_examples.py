"""Every shell and Python example of the README and the docs runs as written, or says, just before it, why it is not run.

A runnable example runs in a fresh folder holding a copy of ``examples/``, with this
environment's ``bin`` first on the ``PATH`` and its own local broker as the default
bootstrap servers (``STARLOAD_BOOTSTRAP_SERVERS``; a ``starload broker &`` of the example
starts beside it and is stopped at the end). It passes when every command exits 0
(``set -e``). An example that cannot run here is preceded by
``<!-- example not run: REASON -->``. A block that includes a file (``--8<--``) is that
file, tested where it lives.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import attrs
import pytest

from starload.broker import LocalBroker

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"^```(python|bash|console|sh)\n(.*?)^```", re.MULTILINE | re.DOTALL)
NOT_RUN = re.compile(r"<!-- example not run: (.*?) -->\n\Z")


@attrs.frozen
class Example:
    page: str
    line: int
    language: str
    code: str
    not_run: str | None

    def script(self) -> str:
        """The shell script (a console example: its ``$`` lines)."""
        if self.language == "console":
            return "\n".join(line[2:] for line in self.code.splitlines() if line.startswith("$ "))
        return self.code


def examples() -> list[Example]:
    found = []
    for page in PAGES:
        text = page.read_text()
        for m in BLOCK.finditer(text):
            if m.group(2).lstrip().startswith("--8<--"):
                continue
            before = text[: m.start()]
            reason = NOT_RUN.search(before[-500:])
            found.append(Example(page.relative_to(ROOT).as_posix(), before.count("\n") + 1, m.group(1), m.group(2), reason.group(1) if reason else None))
    return found


RUNNABLE = [e for e in examples() if e.not_run is None]


def test_every_example_runs_or_says_why_not():
    every = examples()
    assert len(every) >= 20 and len(RUNNABLE) >= 5
    assert all(e.not_run.strip() for e in every if e.not_run is not None)


@pytest.mark.parametrize("example", RUNNABLE, ids=[f"{e.page}:{e.line}" for e in RUNNABLE])
def test_the_example_runs_as_written(example: Example, tmp_path: Path) -> None:
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    with LocalBroker() as broker:
        env = {
            **os.environ,
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
            "STARLOAD_BOOTSTRAP_SERVERS": broker.bootstrap_servers,
            "PYTHONUNBUFFERED": "1",
        }
        if example.language == "python":
            command = [sys.executable, "-c", example.code]
        else:
            script = "set -e\ntrap 'kill $(jobs -p) 2>/dev/null || true' EXIT\n" + example.script()
            command = ["bash", "-c", script]
        done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, f"{example.page}:{example.line} failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
