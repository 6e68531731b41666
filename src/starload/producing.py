"""Produce generated events, or the lines of a JSON Lines file, to a topic (or each event's own): batched, idempotent, optionally rate-limited."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable, Mapping
from itertools import islice
from pathlib import Path
from typing import Any

import attrs
import orjson
from confluent_kafka import KafkaError, Message, Producer
from confluent_kafka.schema_registry import SchemaRegistryClient, SchemaRegistryError

from starload.exceptions import StarloadError, StartupError
from starload.formats.registry import NO_ANSWER, URL_ENV, shown_url, without_url_secrets
from starload.formats.writing import FramedWriter
from starload.generators.base import Event, Generator
from starload.kafka import connection_settings, ensure_topic, producer_config
from starload.spec import Feed, Format, source_path


@attrs.define
class ProduceStats:
    """Counters of one :func:`produce` run."""

    produced: int = 0
    failed: int = 0
    seconds: float = 0.0
    #: The topics produced to, in the order of their first message.
    topics: list[str] = attrs.Factory(list)

    @property
    def rate(self) -> float:
        return self.produced / self.seconds if self.seconds else 0.0


def produce(
    bootstrap_servers: str,
    topic: str | None,
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
    value_format: Format | None = None,
    schema_registry: Mapping[str, str] | None = None,
) -> ProduceStats:
    """Produce ``count`` events of ``generator`` to ``topic``, or to the event's own (each created if missing), keyed by the event key.

    ``rate`` is messages per second (``None`` or 0: as fast as possible). If no broker
    answers within ``startup_timeout`` seconds, :class:`StartupError` names the address. Returns once
    every message is acknowledged; raises :class:`StarloadError` if any delivery failed.

    ``value_format``: how the values are written (None: each topic's format in the
    generator's star). A framed format registers the topic's schema (made from what the
    star reads of it: :func:`~starload.formats.writing.topic_schema`) in ``schema_registry``
    (the client's settings) and frames each value with its id.
    """
    events = islice(generator.stream(seed, **(options or {})), count)
    values = _Values(generator, value_format, schema_registry)
    messages = (
        (name, event.key, values.encode(name, event.value))
        for event in events
        for name in (_topic_of(event, topic, generator),)
    )
    return _send(bootstrap_servers, messages, rate, partitions, overrides, progress, startup_timeout)


class _Values:
    """Encodes each topic's values: JSON, or framed with a schema registered on the topic's first value."""

    def __init__(self, generator: Generator, value_format: Format | None, registry: Mapping[str, str] | None) -> None:
        self.generator = generator
        self.value_format = value_format
        self.registry = registry
        self._writers: dict[str, FramedWriter | None] = {}

    def _feed(self, topic: str) -> Feed | None:
        """What the generator's star reads of ``topic`` (its ``prefix`` option's topics end in the star's names); None: nothing."""
        schema = self.generator.schema
        with contextlib.suppress(KeyError):
            return schema.feed(topic)
        named = [f for f in schema.feeds() if f.topic and topic.endswith(f.topic)]
        return named[0] if len(named) == 1 else None

    def encode(self, topic: str, value: Any) -> bytes | None:
        if topic not in self._writers:
            self._writers[topic] = self._writer(topic)
        writer = self._writers[topic]
        if writer is None:
            return None if value is None else orjson.dumps(value)
        try:
            return writer.value(value)
        except ValueError as exc:
            msg = f"an event of generator {self.generator.name!r} for topic {topic!r} cannot be written in its format: {exc}"
            raise StarloadError(msg) from None

    def _writer(self, topic: str) -> FramedWriter | None:
        feed = self._feed(topic)
        kind = self.value_format or (feed.format if feed is not None else Format.JSON)
        if not kind.framed:
            return None
        if feed is None:
            msg = f"generator {self.generator.name!r} produces to topic {topic!r}, which its star does not read: no schema for it to write {kind.value} with"
            raise StarloadError(msg)
        if not self.registry:
            msg = f"topic {topic!r} is written as {kind.value}: give the Schema Registry's URL (--schema-registry URL, or {URL_ENV})"
            raise StarloadError(msg)
        client = SchemaRegistryClient({**without_url_secrets(self.registry), "max.retries": 1})
        try:
            return FramedWriter(feed, kind, client, topic)
        except SchemaRegistryError as exc:
            msg = f"the Schema Registry at {shown_url(self.registry['url'])} refused the schema of topic {topic!r}: {exc.error_message} ({exc.http_status_code})"
            raise StarloadError(msg) from None
        except NO_ANSWER as exc:
            msg = f"the Schema Registry at {shown_url(self.registry['url'])} did not answer: {exc}"
            raise StartupError(msg) from None


def _topic_of(event: Event, topic: str | None, generator: Generator) -> str:
    """Where ``event`` goes: its own topic, else ``topic``."""
    if event.topic is not None:
        return event.topic
    if topic is None:
        msg = f"generator {generator.name!r} yields events without a topic: give the topic to produce to (--topic)"
        raise StarloadError(msg)
    return topic


def produce_file(
    bootstrap_servers: str,
    topic: str,
    path: str | Path,
    *,
    key_field: str | None = None,
    keyed: bool = False,
    rate: float | None = None,
    partitions: int = 4,
    overrides: Mapping[str, Any] | None = None,
    progress: Callable[[ProduceStats], None] | None = None,
    startup_timeout: float = 30.0,
) -> ProduceStats:
    """Produce a JSON Lines file to ``topic``: each line that is not blank is one message, its bytes as written.

    With ``keyed``, each line is instead a record ``{"key": …, "value": …}``, as Debezium
    and keyed producers write a topic: the value is sent as its JSON (a ``null`` value is
    a tombstone: no value at all), the key as its text when it is a string, else as its
    JSON (``{"id": 17}``), and no key when it is null or missing. A line that is not such
    an object stops the produce with an error naming the line.

    With ``key_field`` (a path such as ``merchant.id``), the message key is that field's
    value (a string as it is, any other JSON value as its JSON text); a line without it,
    or that is not a JSON object, gets no key. Lines are produced even when they are not
    valid JSON, so a file can hold the rejects one wants to try. The file is read as it
    is produced, so its size does not matter. Otherwise as :func:`produce`.
    """
    path = Path(path)
    try:
        handle = path.open("rb")
    except OSError as exc:
        msg = f"cannot read {path}: {exc.strerror}"
        raise StarloadError(msg) from None
    keys = source_path(key_field) if key_field else None
    with handle:
        lines = (line.rstrip(b"\r\n") for line in handle)
        if keyed:
            messages = (_record(topic, line, n, path) for n, line in enumerate(lines, 1) if line.strip())
        else:
            messages = ((topic, _key_of(line, keys), line) for line in lines if line.strip())
        return _send(bootstrap_servers, messages, rate, partitions, overrides, progress, startup_timeout)


def _record(topic: str, line: bytes, number: int, path: Path) -> tuple[str, bytes | None, bytes | None]:
    """The message of a line ``{"key": …, "value": …}`` (see :func:`produce_file`)."""
    try:
        record: Any = orjson.loads(line)
    except orjson.JSONDecodeError:
        record = None
    if not isinstance(record, dict) or "value" not in record or set(record) - {"key", "value"}:
        msg = f'{path} line {number}: with --keyed each line is {{"key": …, "value": …}} (a null value is a tombstone)'
        raise StarloadError(msg)
    key, value = record.get("key"), record["value"]
    return (
        topic,
        None if key is None else key.encode() if isinstance(key, str) else orjson.dumps(key),
        None if value is None else orjson.dumps(value),
    )


def _key_of(line: bytes, keys: tuple[str, ...] | None) -> bytes | None:
    """The value at ``keys`` in the JSON object ``line`` as a message key (None when there is none)."""
    if keys is None:
        return None
    try:
        value: Any = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    for key in keys:
        value = value.get(key) if isinstance(value, dict) else None
    if value is None:
        return None
    return value.encode() if isinstance(value, str) else orjson.dumps(value)


def _send(
    bootstrap_servers: str,
    messages: Iterable[tuple[str, bytes | str | None, bytes | None]],
    rate: float | None,
    partitions: int,
    overrides: Mapping[str, Any] | None,
    progress: Callable[[ProduceStats], None] | None,
    startup_timeout: float,
) -> ProduceStats:
    """Produce ``(topic, key, value)`` triples (each topic created if missing, before its first message) at ``rate`` per second at most."""
    config = producer_config(bootstrap_servers, overrides)
    stats = ProduceStats()
    errors: list[KafkaError] = []

    def on_error(err: KafkaError | None, _msg: Message) -> None:
        if err is not None:
            errors.append(err)

    config |= {"delivery.report.only.error": True, "on_delivery": on_error}
    producer = Producer(config)
    start = time.monotonic()
    last_report = start
    count = 0
    for i, (to, key, value) in enumerate(messages):
        count = i + 1
        if to not in stats.topics:
            ensure_topic(
                bootstrap_servers, to, partitions, timeout=startup_timeout, overrides=connection_settings(config)
            )
            stats.topics.append(to)
        while True:
            try:
                producer.produce(to, value=value, key=key)
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
        msg = f"{stats.failed} of {count} messages were not delivered to {', '.join(map(repr, stats.topics))}; first error: {first}"
        raise StarloadError(msg)
    return stats
