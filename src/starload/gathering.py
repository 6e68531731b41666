"""The batch the consume loop gathers: fetched messages turned into Arrow columns at once, consumer events sorted out."""

from __future__ import annotations

import contextlib
import gc
import logging
import time
from collections.abc import Iterator

import attrs
import pyarrow as pa
from confluent_kafka import KafkaError, KafkaException, Message

from starload.deadletter import Headers
from starload.mapping import RAW_SCHEMA

log = logging.getLogger(__name__)


@attrs.define
class GatheredBatch:
    """Messages gathered for the next write, in arrival order, as Arrow columns.

    Each fetched list is turned into columns at once and the ``Message`` objects are
    dropped: holding tens of thousands of them until the batch is mapped would make
    every garbage collection walk them. Error events are left out (and logged).
    """

    #: Per topic, the columns of :data:`~starload.mapping.RAW_SCHEMA`, as chunks.
    columns: dict[str, list[list[pa.Array]]] = attrs.field(factory=dict)
    #: Original headers of the messages that have any, by (topic, partition, offset), for dead letters.
    headers: dict[tuple[str, int, int], Headers] = attrs.field(factory=dict)
    count: int = 0
    opened: float = 0.0

    def add(self, messages: list[Message]) -> None:
        if any(map(Message.error, messages)):
            messages = without_errors(messages)
        if not messages:
            return
        if not self.count:
            self.opened = time.monotonic()
        topics = list(map(Message.topic, messages))
        if topics.count(topics[0]) == len(topics):
            self._add(topics[0], messages)
        else:
            by_topic: dict[str, list[Message]] = {}
            for topic, message in zip(topics, messages):
                by_topic.setdefault(topic, []).append(message)
            for topic, some in by_topic.items():
                self._add(topic, some)
        self.count += len(messages)

    def _add(self, topic: str, messages: list[Message]) -> None:
        partitions = list(map(Message.partition, messages))
        offsets = list(map(Message.offset, messages))
        extracted = (partitions, offsets, list(map(Message.key, messages)), list(map(Message.value, messages)))
        columns = self.columns.setdefault(topic, [[] for _ in RAW_SCHEMA])
        for chunks, values, field in zip(columns, extracted, RAW_SCHEMA):
            chunks.append(pa.array(values, field.type))
        headers = list(map(Message.headers, messages))
        if any(headers):
            self.headers.update(((topic, p, o), h) for p, o, h in zip(partitions, offsets, headers) if h)

    def raw(self) -> dict[str, pa.Table]:
        """Per topic, the raw table the mapper reads (:data:`~starload.mapping.RAW_SCHEMA`)."""
        return {
            topic: pa.Table.from_arrays([pa.chunked_array(c, f.type) for c, f in zip(columns, RAW_SCHEMA)], schema=RAW_SCHEMA)
            for topic, columns in self.columns.items()
        }


@contextlib.contextmanager
def collection_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector, if it runs, for the duration of the block."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


class OutOfRange(Exception):
    """The broker said a partition's position is out of range (see :mod:`starload.offsets`)."""

    def __init__(self, message: Message) -> None:
        super().__init__(message.error().str())
        self.topic: str = message.topic()
        self.partition: int = message.partition()


def without_errors(messages: list[Message]) -> list[Message]:
    """``messages`` without consumer error events, which are logged (fatal ones raise, and so does :class:`OutOfRange`)."""
    for m in messages:
        error = m.error()
        if error is not None:
            if error.fatal():
                raise KafkaException(error)
            if error.code() == KafkaError._AUTO_OFFSET_RESET:
                raise OutOfRange(m)
            log.warning("consumer event: %s", error)
    return [m for m in messages if m.error() is None]
