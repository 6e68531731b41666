"""Produce generated events to a topic: batched, idempotent, optionally rate-limited."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from itertools import islice
from typing import Any

import attrs
import orjson
from confluent_kafka import KafkaError, Message, Producer

from starload.exceptions import StarloadError
from starload.generators.base import Generator
from starload.kafka import connection_settings, ensure_topic, producer_config


@attrs.define
class ProduceStats:
    """Counters of one :func:`produce` run."""

    produced: int = 0
    failed: int = 0
    seconds: float = 0.0

    @property
    def rate(self) -> float:
        return self.produced / self.seconds if self.seconds else 0.0


def produce(
    bootstrap_servers: str,
    topic: str,
    generator: Generator,
    count: int,
    *,
    seed: int | None = None,
    rate: float | None = None,
    partitions: int = 4,
    options: Mapping[str, Any] | None = None,
    overrides: Mapping[str, Any] | None = None,
    progress: Callable[[ProduceStats], None] | None = None,
    startup_timeout: float = 30.0,
) -> ProduceStats:
    """Produce ``count`` events of ``generator`` to ``topic`` (created if missing), keyed by the event key.

    ``rate`` is messages per second (``None`` or 0: as fast as possible). If no broker
    answers within ``startup_timeout`` seconds, :class:`StartupError` names the address. Returns once
    every message is acknowledged; raises :class:`StarloadError` if any delivery failed.
    """
    config = producer_config(bootstrap_servers, overrides)
    ensure_topic(bootstrap_servers, topic, partitions, timeout=startup_timeout, overrides=connection_settings(config))
    stats = ProduceStats()
    errors: list[KafkaError] = []

    def on_error(err: KafkaError | None, _msg: Message) -> None:
        if err is not None:
            errors.append(err)

    config |= {"delivery.report.only.error": True, "on_delivery": on_error}
    producer = Producer(config)
    start = time.monotonic()
    last_report = start
    for i, event in enumerate(islice(generator.stream(seed, **(options or {})), count)):
        value = orjson.dumps(event.value)
        while True:
            try:
                producer.produce(topic, value=value, key=event.key)
                break
            except BufferError:
                producer.poll(0.05)
        if rate:
            ahead = start + (i + 1) / rate - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)
        if i % 1000 == 999:
            producer.poll(0)
            now = time.monotonic()
            if progress and now - last_report >= 0.5:
                stats.produced, stats.seconds, last_report = i + 1, now - start, now
                progress(stats)
    pending = producer.flush(60)
    stats.seconds = time.monotonic() - start
    stats.failed = len(errors) + pending
    stats.produced = count - stats.failed
    if progress:
        progress(stats)
    if stats.failed:
        first = errors[0] if errors else f"{pending} messages still queued after 60 s"
        msg = f"{stats.failed} of {count} messages were not delivered to {topic!r}; first error: {first}"
        raise StarloadError(msg)
    return stats
