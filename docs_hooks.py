"""MkDocs hooks: the command-line reference (``docs/cli.md``) is written from starload's own argument parser at build time."""

from __future__ import annotations

import argparse
from typing import Any

#: Where ``docs/cli.md`` wants the reference.
PLACEHOLDER = "<!-- the reference, generated from starload.cli.build_parser -->"


def on_page_markdown(markdown: str, page: Any, **_: Any) -> str:
    if PLACEHOLDER not in markdown:
        return markdown
    from starload.cli import build_parser

    return markdown.replace(PLACEHOLDER, "\n".join(_sections(build_parser(), "starload", 2)))


def _sections(parser: argparse.ArgumentParser, name: str, level: int) -> list[str]:
    """A heading and the help text of ``parser`` (as ``starload … --help`` prints it), then one per subcommand."""
    parser.prog = name
    found = [f"{'#' * level} `{name}`", "", "```text", parser.format_help().rstrip(), "```", ""]
    for action in parser._actions:  # argparse keeps its subcommands here, and nowhere public
        if isinstance(action, argparse._SubParsersAction):
            for sub_name, sub in action.choices.items():
                found += _sections(sub, f"{name} {sub_name}", min(level + 1, 4))
    return found
