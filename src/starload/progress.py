"""Live progress for ``starload load`` and ``produce``: a rich live line on a terminal, log lines otherwise."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any, Self

from rich.console import Console
from rich.live import Live

log = logging.getLogger("starload")


class Progress:
    """Shows ``describe(stats)`` live on a terminal; logs it every ``log_every`` s when not a terminal."""

    def __init__(self, describe: Callable[[Any], str], *, log_every: float = 10.0, console: Console | None = None) -> None:
        self.describe = describe
        self.console = console or Console(stderr=True)
        self.log_every = log_every
        self._live: Live | None = None
        self._last_log = time.monotonic()

    @property
    def interactive(self) -> bool:
        return self.console.is_terminal and sys.stderr.isatty()

    def __enter__(self) -> Self:
        if self.interactive:
            self._live = Live("starting…", console=self.console, refresh_per_second=4, transient=False)
            self._live.__enter__()
        return self

    def __call__(self, stats: Any) -> None:
        text = self.describe(stats)
        if self._live is not None:
            self._live.update(text)
        elif time.monotonic() - self._last_log >= self.log_every:
            self._last_log = time.monotonic()
            log.info("%s", text)

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if self._live is not None:
            self._live.__exit__(exc_type, exc, tb)
            self._live = None


def describe_load(stats: Any) -> str:
    """One line of load progress."""
    lag = "?" if stats.lag is None else f"{stats.lag:,}"
    return (
        f"consumed {stats.consumed:,} ({stats.rate:,.0f} msg/s) · loaded {stats.facts_loaded:,} · "
        f"duplicates {stats.duplicates:,} · rejected {stats.rejected:,} · lag {lag}"
    )


def describe_produce(stats: Any) -> str:
    """One line of produce progress."""
    return f"produced {stats.produced:,} ({stats.rate:,.0f} msg/s) · failed {stats.failed:,}"
