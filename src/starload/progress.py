"""Live progress for ``starload load`` and ``produce``: a rich live line on a terminal, log lines otherwise."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any, Self

from rich.console import Console
from rich.live import Live

log = logging.getLogger("starload")

#: The terminal (stderr) the live line and the log lines share, so neither garbles the other.
CONSOLE = Console(stderr=True)


class Progress:
    """Shows ``describe(stats)`` live on a terminal; logs it every ``log_every`` s otherwise (or without ``live``), its lines joined by `` | ``."""

    def __init__(
        self, describe: Callable[[Any], str], *, log_every: float = 10.0, console: Console | None = None, live: bool = True
    ) -> None:
        self.describe = describe
        self.console = console or CONSOLE
        self.log_every = log_every
        self.live = live
        self._live: Live | None = None
        self._last_log = time.monotonic()

    @property
    def interactive(self) -> bool:
        return self.live and self.console.is_terminal

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
            log.info("%s", " | ".join(line.strip() for line in text.splitlines()))

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if self._live is not None:
            self._live.__exit__(exc_type, exc, tb)
            self._live = None


def describe_load(stats: Any) -> str:
    """Load progress: the state, or the rate of the last seconds and the counts; lines of at most 80 characters.

    With several topics, a line per topic follows: its messages and rejects so far.
    """
    topics = stats.consumed_by_topic if len(stats.consumed_by_topic) > 1 else {}
    return "\n".join([_describe_state(stats), *(_fit(f"  {t}: {n:,} consumed · {stats.rejected_by_topic.get(t, 0):,} rejected") for t, n in topics.items())])


def _fit(line: str) -> str:
    return line if len(line) <= 80 else line[:79] + "…"


def _describe_state(stats: Any) -> str:
    counts = f"loaded {stats.loaded:,} · dup {stats.duplicates:,} · rejected {stats.rejected:,}"
    if stats.stopped:
        return f"stopped · {counts}"
    if stats.partitions is None:
        return "waiting for partitions from the consumer group…"
    lag = "unknown" if stats.lag is None else f"{stats.lag:,}"
    if stats.partitions == 0 and stats.unassigned_since is not None:
        return _fit(f"no assignment for {time.monotonic() - stats.unassigned_since:.0f} s (revoked, not yet given again) · {counts}")
    if stats.partitions == 0:
        return f"no partitions (a standby: other loaders hold them) · {counts}"
    if stats.waiting is not None:
        return _fit(f"waiting {stats.waiting.seconds:.0f} s for {stats.waiting.what}")
    return f"{stats.recent_rate:,.0f} msg/s · {counts} · lag {lag}"


def describe_produce(stats: Any) -> str:
    """One line of produce progress."""
    return f"produced {stats.produced:,} ({stats.rate:,.0f} msg/s) · failed {stats.failed:,}"
