"""``starload plugin new NAME``: a sink plugin package to start from, that installs, registers and passes the sink behaviour suite.

The package is the repository's example sink (``plugins/starload-sqlite``: the star in a
SQLite file, exactly once, in one module) under the new name: its distribution
``starload-NAME``, module ``starload_NAME``, sink class ``<Name>Sink``, sink name ``NAME``
(``--sink NAME``) and entry point. It works as made; replace its SQL with your
warehouse's, and its test (starload's :class:`~starload.testing.SinkBehaviour`, unmodified)
says at each step whether it still keeps the contract.
"""

from __future__ import annotations

import importlib.resources
import re
from pathlib import Path

from starload.exceptions import StarloadError

#: What a plugin name may be: it becomes a module name, a distribution name and ``--sink NAME``.
NAME = re.compile(r"[a-z][a-z0-9_]{0,39}")
#: The example sink, where the package was installed from a checkout of the repository (editable), else inside the wheel.
_CHECKOUT_TEMPLATE = Path(__file__).resolve().parents[2] / "plugins" / "starload-sqlite"
_FILES = ("pyproject.toml", "src/starload_sqlite/__init__.py", "src/starload_sqlite/py.typed", "tests/test_sqlite_sink.py")


def template() -> Path:
    """The example sink's directory: in a checkout, or packaged in the wheel (``starload/plugin_template``)."""
    if _CHECKOUT_TEMPLATE.is_dir():
        return _CHECKOUT_TEMPLATE
    packaged = Path(str(importlib.resources.files("starload") / "plugin_template"))
    if packaged.is_dir():
        return packaged
    msg = "the sink template (plugins/starload-sqlite) is not installed with starload; take it from starload's repository"
    raise StarloadError(msg)


def new_plugin(name: str, where: Path) -> Path:
    """Make the package ``starload-<name>`` in the folder ``where``; its path. StarloadError when the name or the place will not do."""
    if not NAME.fullmatch(name) or name in ("duckdb", "snowflake", "sqlite"):
        msg = f"plugin name {name!r}: lower-case letters, digits and _, starting with a letter, and not a built-in sink's (duckdb, snowflake) nor sqlite"
        raise StarloadError(msg)
    target = where / f"starload-{name}"
    if target.exists():
        msg = f"{target} exists already: give another --dir or name"
        raise StarloadError(msg)
    source = template()
    title = "".join(part.capitalize() for part in name.split("_"))
    renames = [
        ("starload_sqlite", f"starload_{name}"),
        ("starload-sqlite", f"starload-{name}"),
        ("SQLiteSink", f"{title}Sink"),
        ("SQLITE_SINK", f"{name.upper()}_SINK"),
        ('name="sqlite"', f'name="{name}"'),
        ('sqlite = "starload_', f'{name} = "starload_'),
        ("as ``sqlite``", f"as ``{name}``"),
    ]
    for relative in _FILES:
        text = (source / relative).read_text()
        for old, new in renames:
            text = text.replace(old, new)
        path = target / relative.replace("starload_sqlite", f"starload_{name}").replace("test_sqlite_sink", f"test_{name}_sink")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    (target / "README.md").write_text(
        f"# starload-{name}\n\nA starload sink plugin (`--sink {name}`), made by `starload plugin new {name}` from starload's example\n"
        "SQLite sink: it works as made. Replace its SQL with your warehouse's; `python -m pytest` runs starload's\n"
        "sink behaviour suite on it, unmodified, at each step.\n\n"
        f"    pip install -e .\n    starload plugins            # lists the sink {name!r}\n    python -m pytest\n"
    )
    return target
