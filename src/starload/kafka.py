"""Kafka client configuration, topic creation and description, and seeking to the offsets a sink stored."""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicCollection, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic, TopicMetadata

from starload.exceptions import StartupError
from starload.logs import KAFKA_LOG

#: Group settings that make a first join take ~3 s instead of ~23 s on a local broker.
#: They are the defaults everywhere: 6 s is the smallest session timeout Apache Kafka
#: accepts by default, and heartbeats come from librdkafka's own thread, so a slow
#: warehouse write does not cost the group membership. Override with ``-X``.
LOCAL_CONSUMER_SETTINGS: Mapping[str, Any] = {"session.timeout.ms": 6000, "heartbeat.interval.ms": 1000}


def consumer_config(bootstrap_servers: str, group: str, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A consumer that never commits by itself: the sink's stored offsets are the truth.

    ``enable.auto.offset.store`` is off and offsets are committed explicitly, after
    the sink committed, only as a hint for lag monitoring.

    ``auto.offset.reset`` is ``error``: the loader always seeks explicitly (to the stored
    offset, or the beginning when none is stored), so librdkafka resets a position only
    when the broker answers that it is out of range (retention deleted the messages, or
    the partition is shorter than the stored offset). The loader must decide that, never
    librdkafka silently (see :mod:`starload.offsets`).

    ``fetch.queue.backoff.ms`` is 100 instead of librdkafka's 1000: once a partition's
    local queue passes its thresholds, the next fetch for it waits that long, and with
    the default a consumer that keeps up sits idle for most of every second (a bare
    consumer read 144k msg/s with it and 400k msg/s with 100 ms, on the local broker).
    """
    config: dict[str, Any] = {
        "bootstrap.servers": bootstrap_servers,
        "group.id": group,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "error",
        "enable.partition.eof": False,
        "fetch.max.bytes": 64 * 1024 * 1024,
        "max.partition.fetch.bytes": 16 * 1024 * 1024,
        "queued.max.messages.kbytes": 256 * 1024,
        "fetch.queue.backoff.ms": 100,
        "logger": KAFKA_LOG,
        **LOCAL_CONSUMER_SETTINGS,
    }
    config.update(overrides or {})
    return config


def producer_config(bootstrap_servers: str, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """An idempotent, batching producer (no flush per message)."""
    config: dict[str, Any] = {
        "bootstrap.servers": bootstrap_servers,
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 20,
        "batch.num.messages": 10000,
        "queue.buffering.max.messages": 500000,
        "compression.type": "lz4",
        "message.max.bytes": 16 * 1024 * 1024,
        "logger": KAFKA_LOG,
    }
    config.update(overrides or {})
    return config


#: Setting names (prefixes) that say where and how to reach the cluster, and where to log
#: (``logger``). Every client the loader makes (its admin client, the dead-letter
#: producer) takes these from the consumer's settings, so that ``-X sasl.…`` reaches them
#: all; the consumer-only ones would only draw librdkafka's "consumer property ignored" warnings.
CONNECTION_SETTINGS = (
    "bootstrap.servers", "security.", "sasl.", "ssl.", "ssl_", "enable.ssl.", "https.", "client.", "socket.",
    "broker.", "metadata.", "topic.metadata.", "api.version", "reconnect.", "retry.", "debug", "log",
)  # fmt: skip


def connection_settings(config: Mapping[str, Any]) -> dict[str, Any]:
    """The settings of ``config`` that every client of the cluster needs (:data:`CONNECTION_SETTINGS`)."""
    return {key: value for key, value in config.items() if key.startswith(CONNECTION_SETTINGS)}


def unreachable(bootstrap_servers: str, timeout: float, exc: KafkaException) -> str:
    """The one line that says no broker answered."""
    return (
        f"no Kafka broker answered at {bootstrap_servers} within {timeout:g} s (--startup-timeout): is it "
        f"running, and is the address right? ({exc.args[0].str() if exc.args else exc})"
    )


def ensure_topic(
    bootstrap_servers: str, topic: str, partitions: int = 4, timeout: float = 30.0, overrides: Mapping[str, Any] | None = None
) -> bool:
    """Create ``topic`` with ``partitions`` unless it exists; True when it was created."""
    admin = AdminClient({"bootstrap.servers": bootstrap_servers, "logger": KAFKA_LOG, **(overrides or {})})
    try:
        metadata = admin.list_topics(timeout=timeout)
    except KafkaException as exc:
        raise StartupError(unreachable(bootstrap_servers, timeout, exc)) from None
    if topic in metadata.topics and metadata.topics[topic].error is None:
        return False
    futures = admin.create_topics([NewTopic(topic, num_partitions=partitions)], operation_timeout=timeout)
    try:
        futures[topic].result(timeout)
    except KafkaException as exc:
        if exc.args[0].code() == KafkaError.TOPIC_ALREADY_EXISTS:
            return False
        raise
    return True


def topic_partitions(client: Consumer, topic: str, timeout: float) -> list[int] | None:
    """The partitions of ``topic``, None when it does not exist (KafkaException when no broker answers)."""
    return partitions_of(client.list_topics(topic, timeout=timeout).topics.get(topic))


def partitions_of(found: TopicMetadata | None) -> list[int] | None:
    """The partitions of a topic of a metadata answer, None when the answer has it not, or not ready (an error, no partitions)."""
    if found is None or found.error is not None or not found.partitions:
        return None
    return sorted(found.partitions)


#: How a broker that knows no topic IDs (Kafka before 2.8) answers: the zero UUID.
_NO_TOPIC_ID = "AAAAAAAAAAAAAAAAAAAAAA"


def topic_id(admin: AdminClient, topic: str, timeout: float) -> str | None:
    """The topic's ID (KIP-516; it changes when a topic is deleted and re-created), None when the broker gives none."""
    try:
        found = admin.describe_topics(TopicCollection([topic]), request_timeout=timeout)[topic].result(timeout)
    except KafkaException as exc:
        if exc.args and exc.args[0].code() in (KafkaError._UNSUPPORTED_FEATURE, KafkaError.UNSUPPORTED_VERSION):
            return None
        raise
    identity = str(found.topic_id) if found.topic_id is not None else ""
    return identity if identity and identity != _NO_TOPIC_ID else None


def watermarks(client: Consumer, topic: str, partitions: Iterable[int], timeout: float) -> dict[int, tuple[int, int]]:
    """Per partition, the broker's (earliest, end) offsets, asked now (not the cached ones)."""
    return {p: client.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout) for p in partitions}


def partition_lag(consumer: Consumer) -> dict[tuple[str, int], int | None] | None:
    """Per assigned partition (topic, partition), messages behind its high watermark (None: not known yet); None when the consumer cannot say.

    Uses the high watermark of the last fetch response: no broker round trip.
    """
    try:
        lag: dict[tuple[str, int], int | None] = {}
        for tp in consumer.position(consumer.assignment()):
            low, high = consumer.get_watermark_offsets(tp, cached=True)
            position = tp.offset if tp.offset >= 0 else low
            lag[(tp.topic, tp.partition)] = max(0, high - position) if high >= 0 and position >= 0 else None
    except KafkaException:
        return None
    return lag


def seek_positions(partitions: list[TopicPartition], stored: Mapping[int, int]) -> list[TopicPartition]:
    """``partitions`` positioned at the sink's stored offsets (the beginning when none)."""
    return [TopicPartition(tp.topic, tp.partition, stored.get(tp.partition, OFFSET_BEGINNING)) for tp in partitions]



def sample_values(bootstrap_servers: str, topic: str, count: int, *, timeout: float, overrides: Mapping[str, Any] | None = None) -> list[bytes | None]:
    """Up to ``count`` message values of ``topic`` from the beginning of each partition (no group joined, no offset committed).

    Reading stops at ``count``, once no message came for a second after the last one (the
    end: a broker's end offsets cannot be trusted for this) or for 5 s from the start (an
    empty topic), or after ``timeout`` seconds. :class:`StartupError` when no broker
    answers or the topic does not exist.
    """
    config = consumer_config(bootstrap_servers, "starload-draft", {"enable.auto.commit": False, **(overrides or {})})
    client = Consumer(config)
    try:
        try:
            partitions = topic_partitions(client, topic, timeout)
        except KafkaException as exc:
            raise StartupError(unreachable(bootstrap_servers, timeout, exc)) from None
        if partitions is None:
            raise StartupError(f"topic {topic!r} does not exist on {bootstrap_servers}")
        client.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        found: list[bytes | None] = []
        deadline = time.monotonic() + timeout
        quiet = time.monotonic() + 5.0
        while len(found) < count and time.monotonic() < min(deadline, quiet):
            messages = client.consume(min(500, count - len(found)), timeout=0.5)
            kept = [m.value() for m in messages if m.error() is None]
            if kept:
                found += kept
                quiet = time.monotonic() + 1.0
        return found
    finally:
        client.close()
