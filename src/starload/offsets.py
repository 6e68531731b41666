"""Whether the offsets stored in the warehouse belong to the topic as it is now, and moving them.

A warehouse's ``STARLOAD_OFFSETS`` outlives the topic it was written for: the topic may
be deleted and re-created, the cluster replaced (or a local in-memory broker
restarted), or retention may delete messages the loader never read. Resuming at such an
offset would skip messages without a word. The loader watches for two signs, both
given by the broker:

* **another topic ID.** Kafka (2.8 and later, KIP-516) gives every topic an ID that a
  re-created topic does not share. The sink stores it with the offsets; on every
  partition assignment the loader compares it with the topic's ID now.
* **an offset out of range.** Asked for messages at an offset before a partition's
  first message or past its end, a Kafka broker answers OFFSET_OUT_OF_RANGE. The
  loader's consumer has ``auto.offset.reset=error``, so librdkafka reports that
  (``_AUTO_OFFSET_RESET``) instead of jumping to the beginning by itself.

Then ``--on-offset-mismatch`` decides: ``stop`` (the default) raises
:class:`~starload.exceptions.StoredOffsetsError` (exit code 3) naming the partitions and
the commands that resolve it; ``earliest`` or ``latest`` resets those partitions'
stored offsets in the sink to the partition's first offset or its end, with a warning.
``starload offsets show`` and ``starload offsets reset`` do the same by hand.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import attrs
from confluent_kafka import Consumer, KafkaException
from confluent_kafka.admin import AdminClient

from starload.exceptions import StartupError
from starload.kafka import connection_settings, topic_id, topic_partitions, unreachable, watermarks
from starload.sinks.base import Sink

#: What ``--on-offset-mismatch`` may say.
POLICIES = ("stop", "earliest", "latest")


def foreign(stored_ids: Mapping[int, str], current_id: str | None, partitions: Sequence[int]) -> dict[int, str]:
    """The ``partitions`` whose offset was stored for another topic ID, with that ID (none when the broker gives no ID)."""
    if current_id is None:
        return {}
    return {p: stored_ids[p] for p in sorted(partitions) if p in stored_ids and stored_ids[p] != current_id}


def reset_targets(marks: Mapping[int, tuple[int, int]], to: str | int) -> dict[int, int]:
    """Per partition of ``marks`` (its first offset and end), where ``to`` puts it: ``earliest``, ``latest`` or an offset."""
    if isinstance(to, int):
        return dict.fromkeys(marks, to)
    return {p: low if to == "earliest" else high for p, (low, high) in marks.items()}


def resolution(topic: str, group: str) -> str:
    """What an operator can do about stored offsets that do not belong to the topic."""
    where = f"--topic {topic} --group {group}"
    return (
        f"look with `starload offsets show {where}`, then choose `starload offsets reset {where} "
        "--to earliest|latest|OFFSET --execute`, or load with --on-offset-mismatch earliest|latest"
    )


@attrs.frozen
class TopicNow:
    """The topic as the broker describes it now: partitions (None: no such topic), ID, and each partition's (first offset, end)."""

    partitions: list[int] | None
    topic_id: str | None
    marks: dict[int, tuple[int, int]]

    @classmethod
    def look_up(cls, config: Mapping[str, Any], topic: str, timeout: float) -> TopicNow:
        """Ask the cluster of consumer ``config`` (a client that joins no group); :class:`StartupError` when no broker answers."""
        client = Consumer(config)
        admin = AdminClient(connection_settings(config))
        try:
            partitions = topic_partitions(client, topic, timeout)
            if partitions is None:
                return cls(None, None, {})
            return cls(partitions, topic_id(admin, topic, timeout), watermarks(client, topic, partitions, timeout))
        except KafkaException as exc:
            raise StartupError(unreachable(config["bootstrap.servers"], timeout, exc)) from None
        finally:
            client.close()


@attrs.frozen
class StoredOffset:
    """One partition's stored offset next to the topic as it is now (a row of ``starload offsets show``)."""

    partition: int
    stored: int | None
    stored_topic_id: str | None
    #: The partition's first offset and end now; None when the topic has no such partition.
    marks: tuple[int, int] | None

    def status(self, current_id: str | None) -> str:
        """``ok``, or in a few words what is wrong (docs/command-line.md explains each).

        An offset past the end is not judged here: the end a broker reports can be
        stale (the local broker's is wrong), so the loader relies on the broker's
        answer to a fetch instead. The row still shows both numbers.
        """
        if self.marks is None:
            return "no such partition"
        if self.stored is None:
            return "none stored"
        if current_id is not None and self.stored_topic_id not in (None, current_id):
            return "other topic ID"
        if self.stored < self.marks[0]:
            return "before first message"
        return "ok"

    @classmethod
    def survey(cls, sink: Sink, group: str, topic: str, now: TopicNow) -> list[StoredOffset]:
        """Every partition that has a stored offset or exists now, in order."""
        stored, ids = sink.stored_offsets(group, topic), sink.stored_topic_ids(group, topic)
        partitions = sorted(set(stored) | set(now.partitions or []))
        return [cls(p, stored.get(p), ids.get(p), now.marks.get(p)) for p in partitions]
