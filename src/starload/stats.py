"""What a load did so far: the counters, rates and state the summary, the live line and health show."""

from __future__ import annotations

import time
from collections import deque

import attrs

from starload.sinks.base import StagedBatch, WriteResult
from starload.waiting import Wait


@attrs.define
class LoadStats:
    """Running counters of a load; every consumed message is loaded, a duplicate, a record (of a dimension topic), a tombstone or a reject.

    ``conflicts`` counts the rejects that repeat a loaded grain value with different content.
    """

    consumed: int = 0
    #: Messages whose facts were loaded (new grain values).
    loaded: int = 0
    #: Fact rows inserted, over every fact (a message with an array may make several).
    facts_loaded: int = 0
    duplicates: int = 0
    records: int = 0
    tombstones: int = 0
    rejected: int = 0
    conflicts: int = 0
    batches: int = 0
    statements: int = 0
    #: Seconds the writes waited for the star's lock, and held it (see :class:`~starload.sinks.base.WriteResult`).
    lock_waited: float = 0.0
    lock_held: float = 0.0
    dimension_rows_inserted: int = 0
    dimension_rows_updated: int = 0
    #: Per topic, messages in written batches (the loader starts each of its topics at 0).
    consumed_by_topic: dict[str, int] = attrs.field(factory=dict)
    #: Per topic, rejects among them.
    rejected_by_topic: dict[str, int] = attrs.field(factory=dict)
    #: Per topic, conflicts among the rejects.
    conflicts_by_topic: dict[str, int] = attrs.field(factory=dict)
    #: Fact rows updated by later events (facts with ``changes: latest``).
    facts_updated: int = 0
    #: What the loader warned about (once each), for the summary.
    warnings: list[str] = attrs.field(factory=list)
    #: Messages behind the end over the assigned partitions; None while unknown.
    lag: int | None = None
    #: Partitions assigned now; None until the group first answers (0: none, or a rebalance).
    partitions: int | None = None
    #: Whether the load has ended.
    stopped: bool = False
    #: What the loader has waited for, for seconds now (a lock, readers, the warehouse), and since when; None: nothing.
    waiting: Wait | None = None
    started: float = attrs.field(factory=time.monotonic)
    first_assignment: float | None = None
    #: Since when the loader has had no assignment, not even an empty one (from start-up, or a revoke); None: it has one.
    unassigned_since: float | None = None
    #: When the sink first and last committed a batch (``time.monotonic()``).
    first_commit: float | None = None
    last_commit: float | None = None
    #: (time, consumed) readings of the last RATE_WINDOW seconds, for :attr:`recent_rate`.
    _readings: deque[tuple[float, int]] = attrs.field(factory=deque, repr=False)

    #: Seconds the :attr:`recent_rate` looks back.
    RATE_WINDOW = 5.0

    @property
    def seconds(self) -> float:
        """Seconds since the first partition assignment (since start before that)."""
        return time.monotonic() - (self.first_assignment or self.started)

    @property
    def rate(self) -> float:
        """Consumed messages per second since the first partition assignment."""
        return self.consumed / self.seconds if self.seconds > 0 else 0.0

    @property
    def throughput(self) -> float:
        """Consumed messages per second from the first partition assignment to the last commit (0 before one)."""
        if self.first_assignment is None or self.last_commit is None or self.last_commit <= self.first_assignment:
            return 0.0
        return self.consumed / (self.last_commit - self.first_assignment)

    @property
    def recent_rate(self) -> float:
        """Consumed messages per second over the last :attr:`RATE_WINDOW` seconds (as of the last :meth:`sample`)."""
        if len(self._readings) < 2:
            return 0.0
        (t0, c0), (t1, c1) = self._readings[0], self._readings[-1]
        return (c1 - c0) / (t1 - t0) if t1 > t0 else 0.0

    def sample(self) -> None:
        """Take a reading for :attr:`recent_rate`; the loader does, at every progress tick."""
        now = time.monotonic()
        self._readings.append((now, self.consumed))
        while len(self._readings) > 2 and now - self._readings[1][0] >= self.RATE_WINDOW:
            self._readings.popleft()

    def add(self, result: WriteResult, batch: StagedBatch) -> None:
        """Count a written batch (``result``: what the sink wrote of it)."""
        self.consumed += batch.messages
        for topic, rejects in batch.rejects_by_topic().items():
            self.consumed_by_topic[topic] = self.consumed_by_topic.get(topic, 0) + batch.consumed.get(topic, 0)
            self.rejected_by_topic[topic] = self.rejected_by_topic.get(topic, 0) + rejects
        self.loaded += batch.fact_messages - result.duplicates
        self.facts_loaded += result.facts_inserted
        self.facts_updated += result.facts_updated
        for topic, conflicts in batch.conflicts_by_topic.items():
            self.conflicts_by_topic[topic] = self.conflicts_by_topic.get(topic, 0) + conflicts
        self.duplicates += result.duplicates
        self.records += result.records
        self.tombstones += result.tombstones
        self.rejected += result.rejects
        self.conflicts += result.conflicts
        self.batches += 1
        self.statements += result.statements
        self.lock_waited += result.lock_waited
        self.lock_held += result.lock_held
        self.dimension_rows_inserted += result.dimension_rows_inserted
        self.dimension_rows_updated += result.dimension_rows_updated
