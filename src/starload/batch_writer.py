"""Writes a loader's mapped batches through its sink, one at a time and in order: the writer thread's job.

For each batch: the reject guard judges it (:mod:`starload.guard`), it is fenced on the
offsets this loader last stored (:class:`~starload.positions.Fence`), the sink is
prepared (its tables made, before the first write only), grain values loaded earlier
with other content become rejects, the rejects go to the dead-letter topics, and one
sink write stores the batch with its offsets. A transient error retries the whole
batch (a failed write committed nothing) with backoff, visibly (:mod:`starload.waiting`).
Once a batch failed, every later one fails unwritten: writing it would store offsets
past the failed one.
"""

from __future__ import annotations

import contextlib
import logging
import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

import pyarrow.compute as pc

from starload.deadletter import DeadLetters, Headers
from starload.exceptions import SinkError, StarloadError, TransientSinkError
from starload.guard import RejectGuard
from starload.metrics import LoaderMetrics
from starload.positions import Fence
from starload.sinks.base import Sink, StagedBatch, WriteResult
from starload.spec import StarSchema
from starload.stats import LoadStats

log = logging.getLogger(__name__)
T = TypeVar("T")

#: A mapped batch, with the Kafka headers of its messages (for their dead letters).
Mapped = tuple[StagedBatch, dict[tuple[str, int, int], Headers]]


def _coordinates(batch: StagedBatch) -> str:
    """Where ``batch``'s messages are: ``orders[0] 120-499, orders[1] 98-311`` (topic, partition, first and last offset)."""
    found = []
    for topic, raw in sorted(batch.raw.items()):
        for partition in sorted(set(raw.column("KAFKA_PARTITION").to_pylist())):
            offsets = raw.filter(pc.equal(raw.column("KAFKA_PARTITION"), partition)).column("KAFKA_OFFSET")
            found.append(f"{topic}[{partition}] {pc.min(offsets).as_py()}-{pc.max(offsets).as_py()}")
    return ", ".join(found) or "no messages"


class BatchWriter:
    """Writes the batches of one star through ``sink`` (see the module docstring); ``stop`` ends its retries."""

    def __init__(
        self,
        schema: StarSchema,
        sink: Sink,
        *,
        guard: RejectGuard,
        fence: Fence,
        dead_letters: DeadLetters | None,
        stats: LoadStats,
        metrics: LoaderMetrics,
        stop: threading.Event,
        max_backoff: float,
    ) -> None:
        self.schema = schema
        self.sink = sink
        self.guard = guard
        self.fence = fence
        self.dead_letters = dead_letters
        self.stats = stats
        self.metrics = metrics
        self.max_backoff = max_backoff
        self._stop = stop
        self._failed = threading.Event()
        #: Whether the sink has been prepared (just before the first write).
        self.prepared = False

    def prepare(self) -> None:
        """Prepare the sink (make the star's tables) once, just before it is first written to.

        Only then: a loader stopped before (the reject guard, a missing topic) creates nothing.
        """
        if not self.prepared:
            self.sink.prepare(self.schema)
            self.prepared = True

    def forgive(self) -> None:
        """Write again after a failed batch: every batch after it was dropped, and the loader resumes from the stored offsets."""
        self._failed.clear()

    def write(self, staged: Future[Mapped], *, alone: bool) -> tuple[WriteResult, StagedBatch]:
        """Write the batch ``staged`` maps, once it is mapped; ``alone``: a new star's first batch (the guard judges it alone).

        While the writer waits, the main thread keeps polling (the group membership stays
        alive) and pauses consumption once the next batches are gathered.
        """
        if self._failed.is_set():
            # An earlier batch failed: writing this one would advance the offsets past it.
            msg = "not written: an earlier batch failed"
            raise SinkError(msg)
        try:
            mapped, headers = staged.result()
            self.guard.check(mapped, alone=alone, created=self.prepared)
            with contextlib.ExitStack() as failing:  # once an attempt failed, the loader waits for the warehouse
                return self._retrying(self.fence.apply(mapped), headers, failing)
        except BaseException:
            self._failed.set()
            raise

    def _retrying(
        self, mapped: StagedBatch, headers: dict[tuple[str, int, int], Headers], failing: contextlib.ExitStack
    ) -> tuple[WriteResult, StagedBatch]:
        wait, attempt = None, 0
        while True:
            try:
                self._sink_call(mapped, self.prepare)
                # Grain values loaded earlier with other content become rejects too.
                batch = mapped.with_conflicts(self._sink_call(mapped, self.sink.find_conflicts, mapped))
                if self.dead_letters is not None and batch.rejects.num_rows:
                    self.dead_letters.send(batch.rejects, headers)
                started = time.monotonic()
                result = self._sink_call(batch, self.sink.write, batch)
                self.stats.last_commit = time.monotonic()
                self.stats.first_commit = self.stats.first_commit or self.stats.last_commit
                self.fence.moved_by(batch)
                self.guard.remember(batch)
                self.metrics.write_seconds.observe(self.stats.last_commit - started)
                log.debug(
                    "wrote a batch of %d messages in %.3f s (%d statements)",
                    batch.messages, self.stats.last_commit - started, result.statements,
                )  # fmt: skip
                self.metrics.committed(batch, result)
                return result, batch
            except TransientSinkError as exc:
                self.metrics.retries.inc()
                delay = min(self.max_backoff, 0.5 * 2**attempt) * random.uniform(0.5, 1.0)
                log.warning("sink write failed (attempt %d), retrying in %.1f s: %s", attempt + 1, delay, exc)
                if wait is None:
                    wait = failing.enter_context(self.sink.waits.on(""))
                wait.what = f"{self.sink.location()} to take a batch ({attempt + 1} failed attempts; last: {exc})"
                if self._stop.wait(delay):
                    raise
                attempt += 1

    def _sink_call(self, batch: StagedBatch, call: Callable[..., T], *args: Any) -> T:
        """``call(*args)`` of the sink for ``batch``; an error that is no :class:`StarloadError` (a plugin's ``OSError``)
        becomes a :class:`SinkError` of one line naming the sink, the batch and the error (its traceback logged at debug level)."""
        try:
            return call(*args)
        except StarloadError:
            raise
        except Exception as exc:
            log.debug("the sink's error, whole:", exc_info=True)
            msg = (
                f"{self.sink.location()}: the {type(self.sink).__name__} sink failed on a batch of {batch.messages:,} messages "
                f"({_coordinates(batch)}): {type(exc).__name__}: {exc}"
            )
            raise SinkError(" ".join(msg.split())) from exc
