"""What a loader is waiting for, and since when: shown on the live line, at ``/healthz`` and in the log.

A sink (or the engine) that waits for something outside the loader (the star's lock,
readers of a DuckDB file, the warehouse after an error) says so with
:meth:`Waits.on`; the wait is logged once it has lasted :data:`FIRST_LOG` seconds, and
again at most every :data:`LOG_EVERY` seconds while it lasts (each time
:meth:`Waits.remind` runs: the engine's loop calls it, and so does any waiting loop
of a sink). Short waits (a reader's query, a lock held for a batch) are not logged.

A wait with no end of its own (a lock held by someone else) gives up when the loader
stops: :meth:`StarLoader.stop <starload.engine.StarLoader.stop>` sets
:attr:`Waits.stopping`, and a waiting loop that sees it raises :meth:`Waits.stopped`'s error.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import attrs

from starload.exceptions import TransientSinkError

log = logging.getLogger(__name__)

#: Seconds a wait lasts before it is logged (and shown: shorter ones are routine).
FIRST_LOG = 5.0
#: Seconds between two log lines about the same wait.
LOG_EVERY = 30.0


@attrs.define
class Wait:
    """One wait in progress: ``what`` is waited for (a noun phrase), since ``since`` (``time.time()``)."""

    what: str
    since: float = attrs.field(factory=time.time)
    logged: float | None = attrs.field(default=None, repr=False)

    @property
    def seconds(self) -> float:
        return max(0.0, time.time() - self.since)

    def describe(self) -> str:
        """``the star's lock … (since 14:02:11 UTC, 40 s)``."""
        at = datetime.fromtimestamp(self.since, UTC).strftime("%H:%M:%S UTC")
        return f"{self.what} (since {at}, {self.seconds:.0f} s)"


class Waits:
    """The waits in progress of one sink or loader; thread-safe (a sink waits in the writer thread)."""

    def __init__(self) -> None:
        self._waits: list[Wait] = []
        self._guard = threading.Lock()
        #: Set when the loader stops: a wait with no end of its own gives up.
        self.stopping = threading.Event()

    def stopped(self, wait: Wait) -> TransientSinkError:
        """The error a waiting loop raises when it gives up ``wait`` because the loader stops."""
        return TransientSinkError(f"stopped while waiting for {wait.describe()}; the batch was not written")

    @contextlib.contextmanager
    def on(self, what: str) -> Iterator[Wait]:
        """Wait for ``what`` for the length of the block; change ``wait.what`` as more is known."""
        wait = Wait(what)
        with self._guard:
            self._waits.append(wait)
        try:
            yield wait
        finally:
            with self._guard:
                self._waits.remove(wait)
            if wait.logged is not None:
                log.info("no longer waiting for %s, after %.0f s", wait.what, wait.seconds)

    def current(self, *, at_least: float = FIRST_LOG) -> Wait | None:
        """Of the waits that have lasted ``at_least`` seconds, the one that began first (of nested ones, the outermost)."""
        with self._guard:
            waits = [w for w in self._waits if w.seconds >= at_least]
        return waits[0] if waits else None

    def remind(self) -> None:
        """Log each wait that has lasted FIRST_LOG seconds and was not logged for LOG_EVERY seconds."""
        now = time.time()
        with self._guard:
            due = [w for w in self._waits if now - w.since >= FIRST_LOG and (w.logged is None or now - w.logged >= LOG_EVERY)]
            for wait in due:
                wait.logged = now
        for wait in due:
            log.warning("waiting for %s", wait.describe())
