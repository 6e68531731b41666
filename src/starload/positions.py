"""Where a loader's partitions start, and the fence its batches are written on.

On every partition assignment the loader seeks each partition to the offset stored in
the sink (not Kafka's committed offset, a hint only): that is what makes the warehouse
exactly-once. First each topic's ID now is compared with the one stored with its
offsets; offsets stored for another life of the topic, or out of the range the broker
holds, go to the ``on_offset_mismatch`` policy (:mod:`starload.offsets`).

The offsets sought are the :class:`Fence`: every batch is written only if its
partitions' stored offsets are still where this loader left them
(:meth:`~starload.sinks.base.StagedBatch.fenced`); each write moves the fence on.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

import attrs
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient

from starload.exceptions import StoredOffsetsError
from starload.gathering import OutOfRange
from starload.kafka import seek_positions, topic_id, watermarks
from starload.offsets import foreign, reset_targets, resolution
from starload.sinks.base import Sink, StagedBatch

log = logging.getLogger(__name__)


@attrs.define
class Fence:
    """The stored offsets this loader's next batches are written on.

    Read and moved on by the writer thread; reset (:meth:`StoredPositions.seek`) only
    when no write is in flight.
    """

    #: Per topic, per assigned partition, the offset stored in the sink after the last batch this loader wrote (None: none).
    expected: dict[str, dict[int, int | None]] = attrs.field(factory=dict)
    #: Per topic, its ID at the last assignment (None: the broker gives none), stored with the offsets.
    topic_ids: dict[str, str | None] = attrs.field(factory=dict)

    def apply(self, batch: StagedBatch) -> StagedBatch:
        """``batch``, to be written only on the offsets this fence expects."""
        return batch.fenced(self.expected, self.topic_ids)

    def moved_by(self, batch: StagedBatch) -> None:
        """Move on past ``batch``, which was written."""
        for topic, offsets in batch.next_offsets.items():
            self.expected.setdefault(topic, {}).update(offsets)


class StoredPositions:
    """Positions assigned partitions at the offsets stored in ``sink`` for ``group``, checked against the topics as they are now.

    ``fence``: what the loader's writes are fenced on, set at each :meth:`seek`.
    ``on_offset_mismatch``: ``stop``, ``earliest`` or ``latest`` (:data:`~starload.offsets.POLICIES`).
    ``prepare``: makes the star's tables, before a reset writes offsets into them.
    """

    def __init__(
        self, sink: Sink, group: str, *, fence: Fence, on_offset_mismatch: str, timeout: float, prepare: Callable[[], None]
    ) -> None:
        self.sink = sink
        self.group = group
        self.on_offset_mismatch = on_offset_mismatch
        self.timeout = timeout
        self.prepare = prepare
        self.fence = fence
        #: Asks the topics' IDs; made by :meth:`connect` once the broker answered (a client connects as soon as it is made).
        self._admin: AdminClient | None = None

    def connect(self, settings: Mapping[str, str]) -> None:
        """Make the client that asks the topics' IDs (``settings``: the broker's connection settings)."""
        self._admin = AdminClient(dict(settings))

    def seek(self, consumer: Consumer, partitions: list[TopicPartition]) -> tuple[list[TopicPartition], bool]:
        """Assign ``partitions`` at their stored offsets and fence on them; the positions, and whether any offset was stored."""
        assert self._admin is not None, "connect() first"
        positions: list[TopicPartition] = []
        self.fence.expected, any_stored = {}, False
        for topic in sorted({tp.topic for tp in partitions}):
            mine = [tp for tp in partitions if tp.topic == topic]
            self.fence.topic_ids[topic] = now = topic_id(self._admin, topic, self.timeout)
            stale = foreign(self.sink.stored_topic_ids(self.group, topic), now, [tp.partition for tp in mine])
            if stale:
                problem = (
                    f"the offsets stored for topic {topic!r} (group {self.group!r}) at partitions "
                    f"{', '.join(map(str, stale))} were written for topic ID {next(iter(stale.values()))}, and the topic's "
                    f"ID is now {now}: it was deleted and re-created, or this is another cluster"
                )
                self._mismatched(consumer, topic, list(stale), problem)
            stored = self.sink.stored_offsets(self.group, topic)
            positions += seek_positions(mine, stored)
            self.fence.expected[topic] = {tp.partition: stored.get(tp.partition) for tp in mine}
            any_stored = any_stored or bool(stored)
        consumer.assign(positions)
        # librdkafka keeps a partition's pause flag across a rebalance: one paused while
        # the writer was behind would stay paused for good.
        consumer.resume(positions)
        return positions, any_stored

    def out_of_range(self, consumer: Consumer, event: OutOfRange) -> None:
        """The broker said a partition's position is out of range: apply the policy (the caller then seeks again).

        Called with no write in flight, so the stored offset named is the one in the sink.
        """
        topic, partition = event.topic, event.partition
        marks = watermarks(consumer, topic, [partition], self.timeout)
        low, high = marks[partition]
        position = self.fence.expected.get(topic, {}).get(partition)
        problem = (
            f"the broker says the position of partition {partition} of topic {topic!r} (group {self.group!r}; "
            f"stored offset {position}) is out of range: it now holds offsets {low} to {high}. Retention deleted "
            f"messages the loader never read, or the partition was truncated or re-created ({event})"
        )
        self._mismatched(consumer, topic, [partition], problem, marks)

    def _mismatched(
        self, consumer: Consumer, topic: str, partitions: list[int], problem: str, marks: Mapping[int, tuple[int, int]] | None = None
    ) -> None:
        """Apply ``on_offset_mismatch`` to stored offsets that do not belong to ``topic``: raise, or reset them in the sink.

        ``marks``: the partitions' watermarks when the caller has asked for them already.
        """
        if self.on_offset_mismatch == "stop":
            msg = f"{problem}. Nothing more was loaded from them; {resolution(topic, self.group)}"
            raise StoredOffsetsError(msg)
        if marks is None:
            marks = watermarks(consumer, topic, partitions, self.timeout)
        targets = reset_targets(marks, self.on_offset_mismatch)
        self.prepare()
        self.sink.reset_offsets(self.group, topic, targets, self.fence.topic_ids.get(topic))
        log.warning("%s; reset the stored offsets to %s (--on-offset-mismatch %s)", problem, targets, self.on_offset_mismatch)
