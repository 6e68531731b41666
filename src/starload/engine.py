"""StarLoader: the consume → map → write → commit loop.

The main thread only consumes: it gathers messages into a batch until
``batch_rows`` messages or ``batch_seconds`` have passed, whichever first, then
hands the batch to a two-stage pipeline: mapper threads type it
(:mod:`starload.mapping`; two, each with its own DuckDB connection), a writer thread
writes it (one sink transaction that also stores the offsets). While batch *n* is
written, batches *n + 1* and *n + 2* are mapped and batch *n + 3* gathered; if that
one is full before the writer is done, consumption is paused (not buffered), so the
batches in memory are bounded whatever the stream length. Batches are written and
committed in order.

Kafka offsets are committed only after the sink committed, and only as a hint for
lag monitoring: on every partition assignment the loader seeks to the offsets
stored in the sink, which is what makes the warehouse exactly-once.

Every batch is fenced (:mod:`starload.sinks.base`): it applies only if the stored
offsets of its partitions are still where this loader left them. When another loader
has written them (it took the partitions over while this one was slow, frozen or
cut off from the group), the write fails with
:class:`~starload.exceptions.OffsetsMovedError`; the loader then drops the batches
in flight and what it gathered, and resumes its partitions from the stored offsets.

Stored offsets written for another life of the topic (re-created, another cluster) or
out of the range the broker holds are never resumed from silently: see
:mod:`starload.offsets`.
"""

from __future__ import annotations

import contextlib
import difflib
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from confluent_kafka import Consumer, KafkaException, TopicPartition

from starload.batch_writer import BatchWriter, Mapped
from starload.deadletter import DeadLetters
from starload.exceptions import ConsumerGroupError, OffsetsMovedError, SinkError, StarloadError, StartupError
from starload.formats import Decoding
from starload.formats.registry import URL_ENV, RegistryUnreachable, SchemaRegistry
from starload.gathering import GatheredBatch, OutOfRange, collection_paused
from starload.guard import DEFAULT_MAX_REJECT_RATIO, GUARD_WINDOW, RejectGuard
from starload.health import DEFAULT_HEALTH_TIMEOUT, Health
from starload.kafka import connection_settings, consumer_config, partition_lag, partitions_of, unreachable
from starload.mapping import Mapper
from starload.metrics import LoaderMetrics
from starload.offsets import POLICIES
from starload.positions import Fence, StoredPositions
from starload.sinks.base import Sink, StagedBatch, WriteResult
from starload.spec import StarSchema
from starload.stats import LoadStats
from starload.waiting import Waits

log = logging.getLogger(__name__)

#: Messages per batch unless told otherwise. Each batch pays fixed work (query planning,
#: a dozen statements, the grain-hash look-ups, a DuckDB commit): loading 1M orders into DuckDB
#: with 125,000-row batches took about 30 % less CPU than with 50,000-row ones (peak RSS
#: about 750 MiB instead of 600). ``batch_seconds`` still bounds the latency of a slow stream.
DEFAULT_BATCH_ROWS = 125_000


def _decoding(schema: StarSchema, registry: Mapping[str, str] | None, waits: Waits, topic: str | None) -> Decoding | None:
    """What decodes the star's framed topics, with the registry ``registry`` (its client settings); None when every topic is JSON.

    ``topic``: the loader's, for the fact that names none.

    A framed topic without a registry is a :class:`StartupError` naming it and the option.
    """
    framed = [f"{f.topic or topic} ({f.format.value})" for f in schema.feeds() if f.format.framed]
    if not framed:
        return None
    if not registry or not registry.get("url"):
        msg = f"topic {framed[0]} is in a Schema Registry's wire format: give the registry's URL (--schema-registry URL, or {URL_ENV})"
        raise StartupError(msg)
    return Decoding(SchemaRegistry(registry, waits=waits))


def loader_topics(schema: StarSchema, topic: str | None) -> tuple[str, ...]:
    """The topics a loader of ``schema`` reads: every topic the star names, and ``topic`` for its fact that names none.

    Raises :class:`~starload.exceptions.StarloadError` when the star has a fact that names
    no topic and ``topic`` is None, or when every part names its topic and ``topic`` is another.
    """
    if (named := schema.named_topics) is not None:
        if topic is not None and topic not in named:
            msg = f"star {schema.name!r} names its topics ({', '.join(named)}): topic {topic!r} is none of them"
            raise StarloadError(msg)
        return named
    if topic is None:
        msg = f"star {schema.name!r} has a fact that names no topic: give the topic it reads (--topic)"
        raise StarloadError(msg)
    return (topic, *(f.topic for f in schema.feeds() if f.topic is not None))


def _missing_topics(absent: list[str], listed: set[str], servers: str) -> str:
    """The one line that says which topics the broker at ``servers`` does not have, and the nearest it has."""
    shown = sorted(t for t in listed if not t.startswith("__"))  # not the broker's own topics
    guesses = []
    for topic in absent:
        near = difflib.get_close_matches(topic, shown, n=1, cutoff=0.6)
        guesses += [f"did you mean {near[0]!r} for {topic!r}?" if len(absent) > 1 else f"did you mean {near[0]!r}?"] if near else []
    names = ", ".join(map(repr, absent))
    verb = "does" if len(absent) == 1 else "do"
    listing = ", ".join(shown[:10]) + (", …" if len(shown) > 10 else "")
    hint = " ".join(guesses) or f"its topics: {listing or 'none'}"
    return f"topic {names} {verb} not exist on {servers}; {hint} (check --topic or the spec's topics, or create it first: starload produce creates it)"


class StarLoader:
    """Loads the topics of a star schema (see :func:`loader_topics`) through a sink, exactly once, in one consumer group.

    >>> loader = StarLoader(ORDERS_SCHEMA, DuckDBSink("orders.duckdb"),   # doctest: +SKIP
    ...                     bootstrap_servers="127.0.0.1:9092", topic="orders", group="starload")
    >>> stats = loader.run(until_idle=5)                                # doctest: +SKIP

    The reject guard: when more than ``max_reject_ratio`` (default 0.9; 1 turns it
    off) of the last :data:`GUARD_WINDOW` (100) messages or more are rejects, counted
    across batches, the loader stops with :class:`~starload.exceptions.RejectGuardError`
    before the batch that crossed the line is written or dead-lettered, its offsets
    unchanged: that is a loader reading the wrong topic or with the wrong spec, not bad
    data. Fewer messages are judged only on a new star (no offsets stored for the group
    and topic): its first batch gathers 100 messages, whatever ``batch_rows`` and
    ``batch_seconds``, or all there are when the loader catches up with the topic first,
    and is judged whatever its size. The sink is prepared (the star's tables made) just
    before the first write, so a loader stopped by the guard there leaves the
    warehouse as it found it.

    ``loader.metrics`` holds its Prometheus metrics and :meth:`health` says whether it
    makes progress (``health_timeout`` is the bound); :class:`~starload.metrics.MetricsServer`
    serves both.

    ``on_offset_mismatch`` (``stop``, ``earliest`` or ``latest``) is what to do with
    stored offsets that do not belong to the topic as it is now (:mod:`starload.offsets`):
    raise :class:`~starload.exceptions.StoredOffsetsError`, or reset them in the sink.
    """

    def __init__(
        self,
        schema: StarSchema,
        sink: Sink,
        *,
        bootstrap_servers: str,
        topic: str | None = None,
        group: str = "starload",
        batch_rows: int = DEFAULT_BATCH_ROWS,
        batch_seconds: float = 1.0,
        consumer_overrides: Mapping[str, Any] | None = None,
        progress: Callable[[LoadStats], None] | None = None,
        progress_interval: float = 1.0,
        max_backoff: float = 60.0,
        dlq_topic: str | None = "",
        max_reject_ratio: float = DEFAULT_MAX_REJECT_RATIO,
        startup_timeout: float = 30.0,
        on_offset_mismatch: str = "stop",
        health_timeout: float = DEFAULT_HEALTH_TIMEOUT,
        schema_registry: Mapping[str, str] | None = None,
    ) -> None:
        if batch_rows < 1 or batch_seconds <= 0 or not 0 <= max_reject_ratio <= 1 or on_offset_mismatch not in POLICIES:
            msg = (
                f"batch_rows must be >= 1, batch_seconds > 0, max_reject_ratio between 0 and 1 and on_offset_mismatch "
                f"one of {', '.join(POLICIES)} (got {batch_rows}, {batch_seconds}, {max_reject_ratio}, {on_offset_mismatch!r})"
            )
            raise ValueError(msg)
        self.schema = schema
        self.sink = sink
        self.topics = loader_topics(schema, topic)
        #: Decodes the framed topics (None: every topic is JSON); its registry is asked at start-up.
        self.decoding = _decoding(schema, schema_registry, sink.waits, topic)
        self.group = group
        self.batch_rows = batch_rows
        self.batch_seconds = batch_seconds
        self.config = consumer_config(bootstrap_servers, group, consumer_overrides)
        self.progress = progress
        self.progress_interval = progress_interval
        self.startup_timeout = startup_timeout
        self.metrics = LoaderMetrics(self.topics)
        self._health = Health(health_timeout)
        #: ``""`` means ``<topic>.dlq`` for each topic; ``None`` disables the dead-letter topics.
        route = {t: f"{t}.dlq" if dlq_topic == "" else dlq_topic for t in self.topics} if dlq_topic is not None else {}
        connection = connection_settings(self.config)
        self._dead_letters = DeadLetters(bootstrap_servers, route, connection) if route else None
        #: The dead-letter topics (none: disabled).
        self.dlq_topics: list[str] = self._dead_letters.topics if self._dead_letters else []
        self.stats = LoadStats(consumed_by_topic=dict.fromkeys(self.topics, 0), rejected_by_topic=dict.fromkeys(self.topics, 0))
        self._stop = threading.Event()
        self._guard = RejectGuard(max_reject_ratio)
        fence = Fence()
        self._writer = BatchWriter(
            schema, sink, guard=self._guard, fence=fence, dead_letters=self._dead_letters,
            stats=self.stats, metrics=self.metrics, stop=self._stop, max_backoff=max_backoff,
        )  # fmt: skip
        self._positions = StoredPositions(
            sink, group, fence=fence, on_offset_mismatch=on_offset_mismatch, timeout=startup_timeout, prepare=self._writer.prepare
        )
        self._consumer: Consumer | None = None
        self._pending: deque[Future[tuple[WriteResult, StagedBatch]]] = deque()
        self._batch = GatheredBatch()
        self._last_message = 0.0
        self._paused = False
        self._assigned = False
        #: Whether no offset is stored for any assigned partition (a new star for this
        #: group and its topics) and nothing has been written since: the first batch is then
        #: gathered to GUARD_WINDOW messages and judged alone (see the class docstring).
        self._new_star = False
        self._mappers: queue.SimpleQueue[Mapper] = queue.SimpleQueue()
        self._map_threads: ThreadPoolExecutor
        self._write_thread: ThreadPoolExecutor

    def stop(self) -> None:
        """Ask :meth:`run` to finish the batches in hand and return (thread- and signal-safe).

        A batch waiting for something with no end of its own (a lock held elsewhere)
        gives up, unwritten: the load then ends with that error.
        """
        self._stop.set()
        self.sink.waits.stopping.set()

    def run(self, *, until_idle: float | None = None) -> LoadStats:
        """Load until :meth:`stop`, or until ``until_idle`` seconds pass without a message.

        Idle time counts from the first partition assignment, not from start-up, and
        not while consumption is paused because the writer is behind or the loader has
        no partitions (a rebalance, or a broker outage past the session timeout). A
        loader given an empty assignment (the group's other loaders hold every
        partition) is idle. One that has no assignment at all for the start-up timeout
        plus ``until_idle`` seconds, from start-up or from a revoke the group never
        followed with an assignment, raises :class:`ConsumerGroupError` (meanwhile
        :attr:`LoadStats.unassigned_since` and ``/healthz`` show it).

        Raises :class:`StartupError` when no broker answers, or one of the topics does not
        exist, within ``startup_timeout`` seconds (before preparing the sink); no topic
        is created then.
        """
        self.sink.waits.stopping.clear()
        self.sink.verify(self.schema)  # first: a sink's mistakes and a drifted star need no broker to show
        if self.decoding is not None:
            try:
                self.decoding.registry.check()
            except RegistryUnreachable as exc:
                raise StartupError(f"{exc}; check --schema-registry ({URL_ENV}) and that the registry runs") from None
        self._await_topic()
        self._positions.connect(connection_settings(self.config))
        if self._dead_letters is not None:
            self._dead_letters.ensure_topic()
        for _ in range(self.MAPPERS):
            self._mappers.put(Mapper(self.schema, decoding=self.decoding))
        consumer = self._consumer = Consumer(self.config)
        self._map_threads = ThreadPoolExecutor(self.MAPPERS, thread_name_prefix="starload-mapper")
        self._write_thread = ThreadPoolExecutor(1, thread_name_prefix="starload-writer")
        last_progress = self.stats.unassigned_since = time.monotonic()
        try:
            consumer.subscribe(list(self.topics), on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_revoke)
            while not self._stop.is_set():
                fetched = self._fetch(consumer)
                now = self._health.loop_at = time.monotonic()
                if fetched or self._paused or not self._assigned:
                    self._last_message = now
                while self._pending and self._pending[0].done():
                    self._finish_oldest()
                idle = until_idle is not None and self._idle_for(now) >= until_idle
                if until_idle is not None and (overdue := self._assignment_overdue(now, until_idle)):
                    raise ConsumerGroupError(overdue)
                if idle and not self._pending and not self._batch.count:
                    break
                full = self._batch.count >= self._batch_limit()
                if self._judging_first():
                    # A new star: the guard judges the first batch alone, so it gathers all it can see, up to enough to judge.
                    ripe = idle or not fetched or self._stop.is_set()
                else:
                    ripe = idle or now - self._batch.opened >= self.batch_seconds
                if full or (self._batch.count and ripe):
                    if len(self._pending) < self.PIPELINE_DEPTH:
                        self._submit()
                    elif full and not self._paused:
                        # The writer is behind: stop fetching instead of buffering more.
                        consumer.pause(consumer.assignment())
                        self._paused = True
                if now - last_progress >= self.progress_interval:
                    last_progress = now
                    self.sink.waits.remind()
                    self.stats.waiting = self.sink.waits.current()
                    self.stats.lag = self._lag()
                    self.stats.sample()
                    if self.progress:
                        self.progress(self.stats)
            if self._batch.count:
                self._submit()
            while self._pending:
                self._finish_oldest()
            if self.stats.last_commit is not None and self.stats.first_commit is not None:
                since = time.monotonic() - self.stats.last_commit
                assigned = self.stats.first_assignment or self.stats.started
                log.info(
                    "stopping after %d messages; last commit %.3f s ago, %.3f s after the first assignment "
                    "(the first %.3f s after it); waited %.3f s for the star's lock, held it %.3f s",
                    self.stats.consumed, since, self.stats.last_commit - assigned, self.stats.first_commit - assigned,
                    self.stats.lock_waited, self.stats.lock_held,
                )  # fmt: skip
        finally:
            self._health.loop_at = None
            self._map_threads.shutdown(wait=True)
            self._write_thread.shutdown(wait=True)
            # Only left when a batch failed: what follows it was not written, by design.
            self._pending.clear()
            consumer.close()
            while not self._mappers.empty():
                self._mappers.get().close()
            if self._dead_letters is not None:
                self._dead_letters.close()
            self._consumer = None
        self.stats.stopped = True
        if self.progress:
            self.stats.lag = None
            self.progress(self.stats)
        return self.stats

    #: Mapper threads (each with its own DuckDB connection); batches are written in order.
    MAPPERS = 2
    #: Batches in flight: being mapped, or mapped and waiting for (or in) the writer.
    PIPELINE_DEPTH = MAPPERS + 1

    def _batch_limit(self) -> int:
        """Messages the batch being gathered holds at most: ``batch_rows``, or GUARD_WINDOW if more, for a new star's first."""
        return max(self.batch_rows, GUARD_WINDOW) if self._judging_first() else self.batch_rows

    def _judging_first(self) -> bool:
        """Whether the batch being gathered is the first of a new star (see :attr:`_new_star`)."""
        return self._new_star and not self._pending and self.stats.batches == 0

    def _fetch(self, consumer: Consumer) -> bool:
        """Fetch what the batch has room for (up to 10,000 messages) into it; False when nothing came.

        The garbage collector is paused meanwhile: the fetched ``Message`` objects would
        trigger about one collection per 700, each walking them for nothing, as they
        are all freed (by reference counting) once the batch holds their values.
        """
        room = max(1, min(self._batch_limit() - self._batch.count, 10_000))
        with collection_paused():
            messages = consumer.consume(num_messages=room, timeout=0.1)
            try:
                self._batch.add(messages)
            except OutOfRange as event:
                self._out_of_range(consumer, event)
            return bool(messages)

    def _submit(self) -> None:
        """Hand the gathered batch to the pipeline (map, then write) and start gathering the next."""
        assert self._consumer is not None
        staged = self._map_threads.submit(self._stage, self._batch)
        self._pending.append(self._write_thread.submit(self._writer.write, staged, alone=self._judging_first()))
        if self._health.work_since is None:
            self._health.work_since = time.monotonic()
        self._batch = GatheredBatch()
        if self._paused:
            self._consumer.resume(self._consumer.assignment())
            self._paused = False

    def _await_topic(self) -> None:
        """Wait up to ``startup_timeout`` for the broker to answer and every topic to be ready; else StartupError naming the missing ones.

        A topic the broker's answer does not list at all stops the loader at once, with the
        nearest names it does list (a misspelt topic waits for nothing); one it lists
        without partitions yet (just created) is waited for.
        """
        servers = self.config["bootstrap.servers"]
        probe = Consumer(self.config)  # only reads metadata: it never joins the group
        deadline = time.monotonic() + self.startup_timeout
        try:
            while True:
                remaining = deadline - time.monotonic()
                try:
                    listed = probe.list_topics(timeout=max(0.5, min(remaining, 5.0))).topics
                    absent = [t for t in self.topics if t not in listed]
                    if absent:
                        raise StartupError(_missing_topics(absent, set(listed), servers))
                    missing = [t for t in self.topics if partitions_of(listed[t]) is None]
                    if not missing:
                        return
                except KafkaException as exc:
                    if time.monotonic() >= deadline:
                        raise StartupError(unreachable(servers, self.startup_timeout, exc)) from None
                    log.warning("waiting for a Kafka broker at %s: %s", servers, exc.args[0].str() if exc.args else exc)
                    continue
                if time.monotonic() >= deadline:
                    check = "the spec's topics" if len(self.topics) > 1 else "--topic"
                    msg = (
                        f"topic {', '.join(map(repr, missing))} does not exist on {servers} (waited {self.startup_timeout:g} s, "
                        f"--startup-timeout): check {check}, or create it first (starload produce creates it)"
                    )
                    raise StartupError(msg)
                time.sleep(min(1.0, max(remaining, 0.0)))
        finally:
            probe.close()

    def _assignment_overdue(self, now: float, until_idle: float) -> str | None:
        """Why the loader stops, when it has had no assignment for the start-up timeout plus ``until_idle``; else None.

        Counted from start-up until the first assignment, then from each revoke that no
        assignment (not even an empty one) has followed.
        """
        since = self.stats.unassigned_since
        if since is None or now - since < self.startup_timeout + until_idle:
            return None
        bound = f"--startup-timeout {self.startup_timeout:g} + --until-idle {until_idle:g}"
        if self.stats.first_assignment is None:
            return (
                f"the consumer group {self.group!r} gave this loader no assignment (not even an empty one) "
                f"in {now - since:.0f} s ({bound}): the group cannot complete a join; check the broker's group coordinator"
            )
        return (
            f"the consumer group {self.group!r} revoked this loader's partitions {now - since:.0f} s ago and has given it "
            f"no assignment since, not even an empty one ({bound}): the group cannot complete a rebalance; what was "
            f"loaded before the revoke is committed; check the broker's group coordinator, then start the loader again"
        )

    def _idle_for(self, now: float) -> float:
        if self.stats.first_assignment is None:
            return 0.0
        return now - max(self.stats.first_assignment, self._last_message)

    def _stage(self, gathered: GatheredBatch) -> Mapped:
        mapper = self._mappers.get()
        started = time.monotonic()
        try:
            return mapper.stage_topics(gathered.raw(), group=self.group), gathered.headers
        finally:
            self._mappers.put(mapper)
            seconds = time.monotonic() - started
            self.metrics.map_seconds.observe(seconds)
            self.metrics.batch_rows.observe(gathered.count)
            log.debug("mapped a batch of %d messages in %.3f s", gathered.count, seconds)

    def _finish_oldest(self, *, resume: bool = True) -> None:
        """Wait for the oldest batch in flight; count it and commit its offsets to Kafka (a hint).

        If another loader had written its partitions' offsets, drop everything in flight
        and (``resume``) restart the assigned partitions from the stored offsets.
        """
        try:
            result, batch = self._pending.popleft().result()
        except OffsetsMovedError as exc:
            dropped = len(self._pending) + 1
            while self._pending:
                with contextlib.suppress(SinkError):
                    self._pending.popleft().result()
            self._batch = GatheredBatch()
            self._writer.forgive()
            self._health.work_since = None
            log.warning("%s; dropped the %d batches in flight, resuming from the stored offsets", exc, dropped)
            if resume and self._assigned and self._consumer is not None:
                self._seek(self._consumer, self._consumer.assignment())
            return
        self.stats.add(result, batch)
        for topic in batch.conflicts_by_topic:
            self._advise_on_conflicts(topic)
        self._health.work_since = time.monotonic() if self._pending else None
        if batch.next_offsets and self._consumer is not None:
            offsets = [TopicPartition(t, p, o) for t, parts in batch.next_offsets.items() for p, o in parts.items()]
            try:
                self._consumer.commit(offsets=offsets, asynchronous=True)
            except KafkaException as exc:
                log.debug("Kafka commit (a hint only) failed: %s", exc)

    def _advise_on_conflicts(self, topic: str) -> None:
        """Warn once when most of ``topic``'s messages so far were conflicts (:meth:`RejectGuard.advice_on_conflicts`)."""
        conflicts, consumed = self.stats.conflicts_by_topic.get(topic, 0), self.stats.consumed_by_topic.get(topic, 0)
        if (advice := self._guard.advice_on_conflicts(self.schema, topic, conflicts, consumed)) is not None:
            log.warning(advice)
            self.stats.warnings.append(advice)

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        positions = self._seek(consumer, partitions)
        several = len(self.topics) > 1
        log.info("assigned %s", ", ".join(f"{tp.topic + ' ' if several else ''}{tp.partition}@{tp.offset}" for tp in positions))
        self._assigned = True
        self.stats.unassigned_since = None
        self.stats.partitions = len(positions)
        self.metrics.assigned.set(len(positions))
        if self.stats.first_assignment is None:
            self.stats.first_assignment = time.monotonic()

    def _seek(self, consumer: Consumer, partitions: list[TopicPartition]) -> list[TopicPartition]:
        """Assign ``partitions`` at the offsets stored in the sink (:meth:`StoredPositions.seek`); the positions."""
        positions, any_stored = self._positions.seek(consumer, partitions)
        self._paused = False
        self._new_star = bool(partitions) and not any_stored and self.stats.batches == 0
        return positions

    def _out_of_range(self, consumer: Consumer, event: OutOfRange) -> None:
        """The broker said a partition's position is out of range: write what was read before the gap, apply the policy, resume from the stored offsets."""
        while self._pending:
            self._finish_oldest(resume=False)
        self._batch = GatheredBatch()
        self._positions.out_of_range(consumer, event)
        self._seek(consumer, consumer.assignment())

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Finish the write in flight and drop what was gathered: after the rebalance
        # every partition restarts from the offsets stored in the sink.
        while self._pending:
            self._finish_oldest(resume=False)
        self._batch = GatheredBatch()
        consumer.unassign()
        self._assigned = False
        self.stats.unassigned_since = time.monotonic()
        self.stats.partitions = 0
        self.metrics.assigned.set(0)
        self.metrics.set_lag({})

    def _lag(self) -> int | None:
        """Messages behind the high watermark over the assignment (None until known for every partition); sets the lag metric."""
        if self._consumer is None or not self._assigned or (lag := partition_lag(self._consumer)) is None:
            return None
        known = {tp: n for tp, n in lag.items() if n is not None}
        self.metrics.set_lag(known)
        return sum(known.values()) if len(known) == len(lag) else None

    def health(self) -> tuple[bool, dict[str, Any]]:
        """Whether the loader is alive and making progress, and its state (for ``/healthz``; :class:`~starload.health.Health`).

        The state says what the loader is waiting for, and since when (``waiting_for``,
        ``waiting_since``; see :mod:`starload.waiting`).
        """
        return self._health.judge(self.stats, group=self.group, in_flight=len(self._pending), waiting=self.sink.waits.current())
