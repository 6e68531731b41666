"""The Sink contract: what the engine hands a sink, and what a sink must do with it.

A sink receives one :class:`StagedBatch` per :meth:`Sink.write` and must apply all of
it in ONE warehouse transaction, in this order:

1. upsert every dimension in ``batch.dimensions`` set-based (surrogate keys are
   assigned by the warehouse, a sequence or identity, never by Python), each
   attribute by event time: the staged value replaces the stored one only when its
   event position (:func:`~starload.spec.position_column`) is later, and a NULL never replaces
   anything, so the result is the same whatever order the batches come in;
2. upsert ``batch.dates`` into the date dimension;
3. insert ``batch.facts`` joined to the dimensions on their natural keys, skipping
   any grain value already present (idempotent: a redelivered message loads once);
   (rows with ``_SL_RANK`` 1 only; the others repeat an earlier row of the batch);
4. insert ``batch.rejects`` into ``STARLOAD_REJECTS``;
5. advance ``STARLOAD_OFFSETS`` for ``(batch.group, batch.topic)`` to
   ``batch.next_offsets`` (never backwards), with ``batch.topic_id`` (the Kafka
   topic ID the offsets belong to, when the broker gives one);

then commit. If anything fails the transaction is rolled back and the error is
raised: the engine then stops without advancing any offset. On start the engine
seeks each partition to :meth:`Sink.stored_offsets`, which is what makes the
warehouse exactly-once even when the loader is killed at any instant.

**The fence.** The engine sets ``batch.expected_offsets``: per partition, the
NEXT_OFFSET this loader believes is stored (None: no row yet). A sink must apply the
batch only if every partition's stored offset is exactly that, checked inside the
transaction after taking the star's write lock, and otherwise write nothing of it
(roll back, or commit nothing) and raise :class:`~starload.exceptions.OffsetsMovedError`. Another loader that took the
partitions over (a rebalance, or this one frozen past its session timeout) has then
written them; the engine resumes from what is stored. A batch without
``expected_offsets`` (written by hand, not by the engine) is not fenced.

**Topic identity.** A sink that stores ``batch.topic_id`` with the offsets and returns
it from :meth:`Sink.stored_topic_ids` lets the engine notice offsets stored for an
earlier life of the topic (deleted and re-created, another cluster) instead of
skipping the new messages below them. :meth:`Sink.reset_offsets` is how an operator
(``starload offsets reset``) or the loader's ``--on-offset-mismatch`` policy moves
stored offsets anywhere, backwards too.

**The recorded star.** :meth:`Sink.prepare` records the spec it made the star for
(:data:`STARS_TABLE`). Before it consumes anything the engine calls
:meth:`Sink.verify`, which changes nothing (it creates no file and no table) and
raises :class:`~starload.exceptions.SpecDriftError` when the warehouse holds the star
otherwise than the spec says (:mod:`starload.drift`); a sink gives it what it finds
(:meth:`Sink.inspect`) and what its DDL would create (:meth:`Sink.expected_columns`).
Until :meth:`Sink.prepare` has run, :meth:`Sink.stored_offsets` answers from what
exists (nothing, on a new star): the engine prepares only just before the first write,
so a loader that stops before it (the reject guard, a missing topic) leaves the
warehouse as it found it.
"""

from __future__ import annotations

import abc
import functools
import hashlib
import logging
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Self

import attrs
import pyarrow as pa

from starload import drift
from starload.drift import Difference, Tables, WarehouseStar
from starload.exceptions import SinkError, TerminalSinkError
from starload.spec import StarSchema, source_name
from starload.waiting import Waits

log = logging.getLogger(__name__)
OFFSETS_TABLE = "STARLOAD_OFFSETS"
#: One row; every write transaction updates it first, so that writers to one star take turns.
LOCK_TABLE = "STARLOAD_LOCK"
#: Columns of the table :meth:`Sink.find_conflicts` returns.
CONFLICT_COLUMNS = ("KAFKA_TOPIC", "KAFKA_PARTITION", "KAFKA_OFFSET", "FIRST_PARTITION", "FIRST_OFFSET")
REJECTS_TABLE = "STARLOAD_REJECTS"
#: The column of a staged fact with a row per element of an array: the element's position (0-based).
ELEMENT_COLUMN = "_SL_ELEMENT"
#: One row per star: STAR (its name), FINGERPRINT, SPEC (the spec file's structure as JSON),
#: STARLOAD_VERSION and RECORDED_AT (see :mod:`starload.drift`).
STARS_TABLE = "STARLOAD_STARS"


#: The longest identifier a warehouse must accept (Snowflake: 255 characters).
MAX_IDENTIFIER = 255


def natural_key_column(table: str, column: str) -> str:
    """Name of a dimension's natural-key column inside the staged fact table.

    ``_SL_NK_<table>_<column>``, unless that is longer than :data:`MAX_IDENTIFIER`
    (spec names have up to 128 characters each): then a digest replaces the names.
    """
    name = f"_SL_NK_{table}_{column}"
    if len(name) <= MAX_IDENTIFIER:
        return name
    return "_SL_NK_" + hashlib.md5(f"{table}.{column}".encode(), usedforsecurity=False).hexdigest()


def conflict_table(*rows: list[tuple[Any, ...]]) -> pa.Table:
    """The table :meth:`Sink.find_conflicts` returns, from lists of rows of :data:`CONFLICT_COLUMNS` values."""
    columns = list(zip(*(row for part in rows for row in part))) or [[] for _ in CONFLICT_COLUMNS]
    types = [pa.string()] + [pa.int64()] * (len(CONFLICT_COLUMNS) - 1)
    return pa.table({name: pa.array(list(values), t) for name, values, t in zip(CONFLICT_COLUMNS, columns, types)})


def seconds_option(name: str, value: Any, *, whole: bool = False, low: float = 0) -> Any:
    """A sink option in seconds, given as a string or a number: at least ``low``, an int with ``whole``.

    Anything else is a :class:`~starload.exceptions.TerminalSinkError` naming the option.
    """
    convert = int if whole else float
    try:
        seconds = convert(value)
    except (TypeError, ValueError):
        seconds = None
    if seconds is None or not seconds >= low:
        msg = f"{name} must be {'a whole number' if whole else 'a number'} of seconds, at least {low:g} (got {value!r})"
        raise TerminalSinkError(msg)
    return seconds


@attrs.frozen
class StagedBatch:
    """One consumed batch, of one topic or several, mapped to typed columnar tables (Arrow).

    * ``facts``: per fact table of the star, one row per valid message of its topic
      (``_SL_RANK`` 1 is the first of its grain value in the batch, the one to load; of a
      ``latest`` fact the latest, with the fact's position column and milestones; of a
      ``latest`` fact with updates from other topics, one row per grain value, each topic's
      columns and position from its latest event, NULL where the batch has none);
      the fact's own columns by their warehouse names, the natural keys of each
      dimension as ``_SL_NK_<dimension table>_<column>``, ``DATE_KEY``,
      ``GRAIN_HASH`` and ``MESSAGE_HASH`` (63-bit BIGINT hashes of the grain value
      and of the message's mapped content), the Kafka coordinates, and
      ``FIRST_HASH``/``FIRST_PARTITION``/``FIRST_OFFSET`` of the grain value's first row.
    * ``dimensions``: per dimension name, one row per natural key, over every topic
      that carries it, with, for each attribute, the batch's latest non-null value by
      event position and that position (:func:`~starload.spec.position_column`; NULL
      with the value when the batch has none), and ``LAST_EVENT_AT`` (the latest event
      time). Of a dimension that keeps history, only the type-1 attributes, and
      ``FIRST_EVENT_AT`` (the earliest event time). Of a dimension with a topic of its
      own, ``IS_INFERRED``: no record of its topic in the batch (facts only).
    * ``histories``: per dimension that keeps history, its observations for
      :func:`~starload.spec.history_table`: the natural key, ``_SL_EVENT_AT`` (the event
      time), ``_SL_AT`` (its position) and the history attributes, one row per event that
      carries one of them, and each member's earliest event.
    * ``dates``: one row per date with every date-dimension attribute.
    * ``rejects``: KAFKA_TOPIC, KAFKA_PARTITION, KAFKA_OFFSET, MESSAGE_KEY,
      MESSAGE_VALUE (the raw bytes) and REASON.
    * ``next_offsets``: per topic, per partition, the offset after the batch's last message.
    * ``expected_offsets``: per topic, per partition, the stored offset the batch applies
      on (None: no offset stored yet); None altogether: not fenced (see the module docstring).
    * ``topic_ids``: per topic, the Kafka topic ID its messages came from (None or missing: the broker gives none).
    """

    schema: StarSchema
    group: str
    facts: Mapping[str, pa.Table]
    dimensions: Mapping[str, pa.Table]
    dates: pa.Table | None
    rejects: pa.Table
    next_offsets: Mapping[str, Mapping[int, int]]
    #: Messages the batch holds, per topic.
    consumed: Mapping[str, int]
    #: Per dimension topic, its valid messages (records of members, not facts).
    records_by_topic: Mapping[str, int] = attrs.field(factory=dict)
    #: Per topic of change events, its tombstones (null values): acknowledged, neither records nor rejects.
    tombstones_by_topic: Mapping[str, int] = attrs.field(factory=dict)
    #: Per topic, how many of its rejects are conflicts (a grain value seen before with other content), set by :meth:`with_conflicts`.
    conflicts_by_topic: Mapping[str, int] = attrs.field(factory=dict)
    #: Per topic, the raw messages the batch was mapped from (KAFKA_PARTITION, KAFKA_OFFSET, MESSAGE_KEY, MESSAGE_VALUE).
    raw: Mapping[str, pa.Table] = attrs.field(factory=dict, repr=False)
    expected_offsets: Mapping[str, Mapping[int, int | None]] | None = None
    topic_ids: Mapping[str, str | None] = attrs.field(factory=dict)
    histories: Mapping[str, pa.Table] = attrs.field(factory=dict)

    @property
    def conflicts(self) -> int:
        """How many of the rejects are conflicts, over every topic."""
        return sum(self.conflicts_by_topic.values())

    @property
    def messages(self) -> int:
        """Messages the batch holds, over every topic."""
        return sum(self.consumed.values())

    @property
    def partitions(self) -> int:
        """(topic, partition)s whose offsets the batch advances."""
        return sum(len(parts) for parts in self.next_offsets.values())

    @property
    def records(self) -> int:
        """Valid messages of dimension topics, over every topic."""
        return sum(self.records_by_topic.values())

    @property
    def tombstones(self) -> int:
        """Tombstones, over every topic."""
        return sum(self.tombstones_by_topic.values())

    def rejects_by_topic(self) -> dict[str, int]:
        """Per topic of the batch, how many of its messages are rejects (0 for a topic without)."""
        counts = dict.fromkeys(self.consumed, 0)
        for topic in self.rejects.column("KAFKA_TOPIC").to_pylist():
            counts[topic] = counts.get(topic, 0) + 1
        return counts

    def fenced(self, stored: Mapping[str, Mapping[int, int | None]], topic_ids: Mapping[str, str | None] | None = None) -> StagedBatch:
        """This batch, to be applied only on these stored offsets (per topic, each of its partitions; missing: None), from topics with ``topic_ids``."""
        expected = {t: {p: stored.get(t, {}).get(p) for p in parts} for t, parts in self.next_offsets.items()}
        return attrs.evolve(self, expected_offsets=expected, topic_ids=dict(topic_ids or {}))

    @property
    def fact_messages(self) -> int:
        """Valid messages of topics that feed facts (each one loaded or a duplicate), over every topic."""
        counts = self.rejects_by_topic()
        return sum(n - counts[t] for t, n in self.consumed.items() if self.schema.feed(t).facts)

    def counted_rows(self) -> int:
        """Staged fact rows that each stand for one message: the rows of each topic's counting fact
        (:meth:`~starload.spec.Feed.counting_fact`), of its first element when it has a row per element.

        A message's rows are all loaded or all skipped (a grain value loaded with the same
        MESSAGE_HASH was loaded from the same content), so a sink counts duplicate
        messages as these rows staged minus these rows inserted. A topic whose counting
        fact is a ``latest`` one counts none: each of its messages is loaded (folded into its row).
        """
        import pyarrow.compute as pc  # here: only sinks need it, and it takes 0.08 s to import

        total = 0
        for feed in self.schema.feeds():
            fact = feed.counting_fact()
            rows = self.facts.get(fact.table) if fact is not None and not fact.changing else None
            if rows is None:  # no facts, or a latest fact's: every message is loaded
                continue
            if feed.array_of(fact) is None:
                total += rows.num_rows
            else:
                total += pc.sum(pc.equal(rows.column(ELEMENT_COLUMN), 0)).as_py() or 0
        return total

    def with_conflicts(self, conflicts: pa.Table) -> StagedBatch:
        """This batch with the messages of the fact rows in ``conflicts`` (see :meth:`Sink.find_conflicts`) moved to the rejects.

        A message conflicting in one fact (or one element) is rejected whole: none of its rows
        is loaded, in any fact; its reason names the first conflicting grain value.
        """
        if not conflicts.num_rows:
            return self
        first = {
            (t, p, o): (fp, fo) for t, p, o, fp, fo in zip(*(conflicts.column(c).to_pylist() for c in CONFLICT_COLUMNS))
        }
        facts, reasons = dict(self.facts), {}
        for fact in self.schema.all_facts:
            rows = facts[fact.table]
            coordinates = list(zip(rows.column("KAFKA_TOPIC").to_pylist(), rows.column("KAFKA_PARTITION").to_pylist(), rows.column("KAFKA_OFFSET").to_pylist()))
            if not any(c in first for c in coordinates):
                continue
            grain = [f.column for f in fact.grain]
            names = "/".join(source_name(f.source) for f in fact.grain)
            for i, c in enumerate(coordinates):
                if c in first and c not in reasons:
                    values = "/".join(str(rows.column(g)[i].as_py()) for g in grain)
                    reasons.setdefault(c, f"conflict: {names} {values} was first seen at partition {first[c][0]} offset {first[c][1]} with different content")
            facts[fact.table] = rows.filter(pa.array([c not in first for c in coordinates]))
        extra = []
        for topic in sorted({c[0] for c in reasons}):
            raw = self.raw[topic]
            here = [(topic, p, o) in reasons for p, o in zip(raw.column("KAFKA_PARTITION").to_pylist(), raw.column("KAFKA_OFFSET").to_pylist())]
            raw = raw.filter(pa.array(here))
            coordinates = zip([topic] * raw.num_rows, raw.column("KAFKA_PARTITION").to_pylist(), raw.column("KAFKA_OFFSET").to_pylist())
            extra.append(
                pa.table(
                    {
                        "KAFKA_TOPIC": pa.array([topic] * raw.num_rows, pa.string()),
                        "KAFKA_PARTITION": raw.column("KAFKA_PARTITION"),
                        "KAFKA_OFFSET": raw.column("KAFKA_OFFSET"),
                        "MESSAGE_KEY": raw.column("MESSAGE_KEY"),
                        "MESSAGE_VALUE": raw.column("MESSAGE_VALUE"),
                        "REASON": pa.array([reasons[c] for c in coordinates], pa.string()),
                    }
                ).cast(self.rejects.schema)
            )
        order = [("KAFKA_TOPIC", "ascending"), ("KAFKA_PARTITION", "ascending"), ("KAFKA_OFFSET", "ascending")]
        return attrs.evolve(
            self,
            facts=facts,
            rejects=pa.concat_tables([self.rejects, *extra]).sort_by(order),
            conflicts_by_topic=dict(Counter(self.conflicts_by_topic) + Counter(c[0] for c in reasons)),
        )

    def offsets_table(self) -> pa.Table:
        """GROUP_ID, TOPIC, KAFKA_PARTITION, NEXT_OFFSET, TOPIC_ID and EXPECTED_OFFSET (NULL: none stored, or not fenced), a row per topic and partition."""
        rows = [(t, p) for t in sorted(self.next_offsets) for p in sorted(self.next_offsets[t])]
        expected = self.expected_offsets or {}
        return pa.table(
            {
                "GROUP_ID": pa.array([self.group] * len(rows), pa.string()),
                "TOPIC": pa.array([t for t, _ in rows], pa.string()),
                "KAFKA_PARTITION": pa.array([p for _, p in rows], pa.int32()),
                "NEXT_OFFSET": pa.array([self.next_offsets[t][p] for t, p in rows], pa.int64()),
                "TOPIC_ID": pa.array([self.topic_ids.get(t) for t, _ in rows], pa.string()),
                "EXPECTED_OFFSET": pa.array([expected.get(t, {}).get(p) for t, p in rows], pa.int64()),
            }
        )


@attrs.frozen
class WriteResult:
    """What one committed :meth:`Sink.write` did.

    ``facts_inserted`` counts fact rows (over every fact; a message may make several, or
    none), the others count messages: the batch's consumed messages are the messages
    loaded (:attr:`StagedBatch.fact_messages` minus ``duplicates``), ``duplicates``
    (messages whose grain values are loaded already, in the table or earlier in the
    batch; see :meth:`StagedBatch.counted_rows`), ``records`` (the valid messages of
    topics that feed dimensions only),
    ``tombstones`` the null values of topics of change events, ``rejects`` every
    rejected message of the batch (recorded once, however often it is replayed).
    """

    facts_inserted: int
    duplicates: int
    rejects: int
    #: Fact rows a later event updated (facts with ``changes: latest``).
    facts_updated: int = 0
    records: int = 0
    tombstones: int = 0
    dimension_rows_inserted: int = 0
    dimension_rows_updated: int = 0
    statements: int = 0
    conflicts: int = 0
    #: Seconds the write waited for the star's lock (over its tries), and held it (from taking it to the end of COMMIT).
    #: A sink that sends the locked transaction as one request cannot tell that request's own wait from its run:
    #: it counts as held (the Snowflake sink); the tries that failed on a lock wait, and the pauses, count as waited.
    lock_waited: float = 0.0
    lock_held: float = 0.0


class Sink(abc.ABC):
    """A warehouse the engine loads into. See the module docstring for the contract."""

    @abc.abstractmethod
    def prepare(self, schema: StarSchema) -> None:
        """Create what is missing of the star (tables, sequences, offsets, rejects) and record its spec; idempotent.

        Raises :class:`~starload.exceptions.SpecDriftError` as :meth:`verify` does when
        what exists differs from ``schema`` (checked again once the tables are there:
        another loader may have made them meanwhile).
        """

    def inspect(self, schema: StarSchema) -> WarehouseStar | None:
        """What the warehouse holds of ``schema``'s star, changing nothing (see :class:`~starload.drift.WarehouseStar`).

        The spec recorded under the star's name (None: none) and, for each of the
        star's tables that exists, its columns with their types spelt as the sink's DDL
        spells them. None (this default): the sink cannot tell, and the star is not checked.
        """
        return None

    def expected_columns(self, schema: StarSchema) -> Tables:
        """Per table of the star, the columns :meth:`prepare` creates (as :meth:`inspect` reports them)."""
        return {}

    def verify(self, schema: StarSchema) -> WarehouseStar | None:
        """Check, changing nothing, that the warehouse holds ``schema``'s star as it says, or none of it; return what was found.

        Raises :class:`~starload.exceptions.SpecDriftError` with one line per difference.
        A sink without :meth:`inspect` is prepared at once instead (as before the
        check existed), with a warning that its tables are not checked, and None is returned.
        """
        found = self.inspect(schema)
        if found is None:
            log.warning("the %s sink does not implement Sink.inspect: its tables are not checked against the spec", type(self).__name__)
            self.prepare(schema)
            return None
        drift.check(schema, found, self.expected_columns(schema), sink=self.location())
        return found

    def migration(self, schema: StarSchema) -> tuple[list[Difference], list[str]]:
        """The differences from ``schema`` (:mod:`starload.drift`) and the statements :meth:`migrate` would run."""
        msg = f"the {type(self).__name__} sink cannot migrate a star (it does not implement Sink.migration)"
        raise SinkError(msg)

    def rebuilding(self, schema: StarSchema, topics: Sequence[str], group: str | None = None) -> list[Any]:
        """The steps :meth:`rebuild` would take, each with a ``what`` for a person (``starload rebuild`` without ``--execute``)."""
        msg = f"the {type(self).__name__} sink cannot rebuild a star: drop its tables and its stored offsets by hand"
        raise SinkError(msg)

    def rebuild(self, schema: StarSchema, topics: Sequence[str], group: str | None = None) -> list[Any]:
        """Drop every table of the star (its history logs and recorded spec too) and forget the stored offsets and rejects
        of ``topics`` (of ``group`` only, if given), so that the next load builds it from the topics' start; the steps
        taken. Refused (:class:`TerminalSinkError`) while a loader loads the star."""
        msg = f"the {type(self).__name__} sink cannot rebuild a star: drop its tables and its stored offsets by hand"
        raise SinkError(msg)

    def migrate(self, schema: StarSchema) -> None:
        """Apply the additive differences from ``schema`` and record it; raise SpecDriftError if any cannot be migrated."""
        msg = f"the {type(self).__name__} sink cannot migrate a star (it does not implement Sink.migrate)"
        raise SinkError(msg)

    def violations(self, schema: StarSchema) -> list[str]:
        """Every broken invariant of ``schema``'s star in the warehouse, one line each; [] when it is sound (``starload verify``).

        The invariants: each member's versions neither overlap nor leave a gap, and
        exactly one is current; a dimension without history holds a natural key once;
        every fact key resolves to a member, at the version in force at the fact's
        event time; no grain value is loaded twice; every fact's Kafka coordinates are
        below the offset stored for its partition. The default raises :class:`SinkError`.
        """
        msg = f"the {type(self).__name__} sink cannot check a star's invariants (it does not implement Sink.violations)"
        raise SinkError(msg)

    @functools.cached_property
    def waits(self) -> Waits:
        """What the sink is waiting for now (a lock, readers, the warehouse): the engine shows and logs it."""
        return Waits()

    def location(self) -> str:
        """Where the sink loads, for messages (``DuckDB file 'orders.duckdb'``); never a secret."""
        return f"the {type(self).__name__} warehouse"

    def rejects_location(self) -> str:
        """Where :meth:`write` records the rejects, for the load's summary (``table STARLOAD_REJECTS of DuckDB file 'orders.duckdb'``).

        The default says only that the sink keeps them; a sink that knows the place names it.
        """
        return f"the {type(self).__name__} sink (it names no place: Sink.rejects_location)"

    @abc.abstractmethod
    def ddl(self, schema: StarSchema) -> list[str]:
        """The statements :meth:`prepare` runs, for ``starload ddl``."""

    @abc.abstractmethod
    def stored_offsets(self, group: str, topic: str) -> dict[int, int]:
        """Per partition, the next offset to consume, as committed in the warehouse."""

    @abc.abstractmethod
    def write(self, batch: StagedBatch) -> WriteResult:
        """Apply the whole batch and its offsets in one transaction."""

    def stored_topic_ids(self, group: str, topic: str) -> dict[int, str]:
        """Per partition, the topic ID stored with its offset (partitions stored without one are left out).

        This default stores none: the engine then cannot tell offsets of a re-created
        topic from its own (it still stops on offsets the broker says are out of range).
        """
        return {}

    def reset_offsets(self, group: str, topic: str, offsets: Mapping[int, int], topic_id: str | None) -> None:
        """Store exactly ``offsets`` (backwards too) with ``topic_id`` for these partitions, in one transaction.

        Other partitions keep theirs. A loader writing meanwhile finds its offsets
        moved (the fence) and resumes from the reset ones.
        """
        msg = f"the {type(self).__name__} sink cannot reset stored offsets (it does not implement Sink.reset_offsets)"
        raise SinkError(msg)

    def find_conflicts(self, batch: StagedBatch) -> pa.Table:
        """Staged fact rows whose content differs from the first version of their grain value.

        The first version is the loaded one when the grain value is in the warehouse
        already, else the batch's first (``FIRST_HASH``). Returns
        :data:`CONFLICT_COLUMNS` (:func:`conflict_table`): each conflicting row's topic, partition and offset, and
        those of the first version. The engine calls it before :meth:`write` and
        moves these rows to the rejects (and the dead-letter topic). This default
        compares within the batch only; SQL sinks also compare with the warehouse.
        """
        import pyarrow.compute as pc  # here: only sinks without their own need it, and it takes 0.08 s to import

        found = [
            facts.filter(pc.not_equal(facts.column("MESSAGE_HASH"), facts.column("FIRST_HASH"))).select(list(CONFLICT_COLUMNS))
            for facts in batch.facts.values()
        ]
        return conflict_table(*(list(zip(*(t.column(c).to_pylist() for c in CONFLICT_COLUMNS))) for t in found))

    def close(self) -> None:
        """Release connections."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@attrs.frozen
class SinkType:
    """A registered sink: its name, a factory taking string options, and help text.

    ``factory(**options)`` builds the sink; options come from the CLI (for example
    ``--duckdb-path`` becomes ``path=…``; ``--sink-option key=value`` for any sink).
    """

    name: str
    factory: Callable[..., Sink]
    description: str = ""
    options: Mapping[str, str] = attrs.field(factory=dict)

    def create(self, **options: Any) -> Sink:
        """Build the sink with ``options``."""
        return self.factory(**options)
