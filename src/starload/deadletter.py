"""The dead-letter topic: every rejected message, re-produced with why it was rejected.

A dead letter keeps the original key, value and headers, and adds headers:
``starload.reason``, ``starload.topic``, ``starload.partition``, ``starload.offset``
and ``starload.version``. The engine produces a batch's dead letters and waits for
the broker to acknowledge them *before* the batch (and its offsets) is committed to
the sink, so a crash can never lose a reject. A crash between the two can produce a
dead letter twice: the (topic, partition, offset) headers identify duplicates.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import pyarrow as pa
from confluent_kafka import KafkaError, KafkaException, Message, Producer

from starload.exceptions import TransientSinkError
from starload.identity import VERSION
from starload.kafka import ensure_topic, producer_config

log = logging.getLogger(__name__)

Headers = list[tuple[str, bytes]]


class DeadLetters:
    """Produces rejects, each to its topic's dead-letter topic (``route``: source topic → dead-letter topic), and waits for the acknowledgements."""

    def __init__(self, bootstrap_servers: str, route: Mapping[str, str], overrides: Mapping[str, Any] | None = None) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.route = dict(route)
        self.overrides = dict(overrides or {})
        self._producer: Producer | None = None

    @property
    def topics(self) -> list[str]:
        """The dead-letter topics, sorted."""
        return sorted(set(self.route.values()))

    def ensure_topic(self) -> None:
        """Create the dead-letter topics that are missing (a warning when not allowed)."""
        for topic in self.topics:
            try:
                ensure_topic(self.bootstrap_servers, topic, partitions=1, overrides=self.overrides)
            except KafkaException as exc:
                log.warning("could not create dead-letter topic %r (it must exist): %s", topic, exc)

    def send(self, rejects: pa.Table, headers: Mapping[tuple[str, int, int], Headers], timeout: float = 60.0) -> int:
        """Produce every reject and wait until all are acknowledged; returns how many.

        Raises :class:`TransientSinkError` when any is not acknowledged, so the batch
        is retried and its offsets do not advance.
        """
        if not rejects.num_rows:
            return 0
        producer = self._producer or self._new_producer()
        errors: list[KafkaError] = []

        def on_delivery(err: KafkaError | None, _msg: Message) -> None:
            if err is not None:
                errors.append(err)

        for row in rejects.to_pylist():
            coordinates = (row["KAFKA_TOPIC"], row["KAFKA_PARTITION"], row["KAFKA_OFFSET"])
            extra = [
                ("starload.reason", row["REASON"].encode()),
                ("starload.topic", row["KAFKA_TOPIC"].encode()),
                ("starload.partition", str(row["KAFKA_PARTITION"]).encode()),
                ("starload.offset", str(row["KAFKA_OFFSET"]).encode()),
                ("starload.version", VERSION),
            ]
            producer.produce(
                self.route[row["KAFKA_TOPIC"]],
                value=row["MESSAGE_VALUE"],
                key=row["MESSAGE_KEY"],
                headers=headers.get(coordinates, []) + extra,
                on_delivery=on_delivery,
            )
            producer.poll(0)
        remaining = producer.flush(timeout)
        if errors or remaining:
            if any(e.fatal() for e in errors):
                self._producer = None  # an idempotent producer never recovers from a fatal error
            msg = f"{len(errors) + remaining} dead letters to {', '.join(map(repr, self.topics))} not acknowledged: {errors[:1] or 'timeout'}"
            raise TransientSinkError(msg)
        return rejects.num_rows

    def _new_producer(self) -> Producer:
        config = producer_config(self.bootstrap_servers, {"linger.ms": 5, **self.overrides})
        self._producer = Producer(config)
        return self._producer

    def close(self) -> None:
        if self._producer is not None:
            self._producer.flush(10)
            self._producer = None
