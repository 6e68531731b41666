"""Rejected messages reach the dead-letter topic byte for byte, before their offsets advance."""

from __future__ import annotations

from itertools import islice

import orjson
from confluent_kafka import Consumer, Producer, TopicPartition

from starload import ORDERS_GENERATOR, ORDERS_SCHEMA, DuckDBSink
from starload.kafka import consumer_config, producer_config
from starload.testing import load_until_idle


def read_all(bootstrap: str, topic: str, expected: int) -> list:
    consumer = Consumer(consumer_config(bootstrap, "dlq-reader"))
    consumer.assign([TopicPartition(topic, 0, 0)])
    found = []
    for _ in range(100):
        found += [m for m in consumer.consume(100, timeout=0.2) if m.error() is None]
        if len(found) >= expected:
            break
    consumer.close()
    return found


def test_rejects_go_to_the_dead_letter_topic_with_their_reason(local_broker, topic):
    good = [e.value for e in islice(ORDERS_GENERATOR.stream(3), 20)]
    bad = [
        (b"k-empty", b"", [("trace", b"\x00\x01")]),
        (None, b"\xff\xfe not utf-8", []),
        (b"k-qty", orjson.dumps({**good[0], "order_id": "Q", "quantity": 2.5}), [("a", b"1"), ("a", b"2")]),
    ]
    producer = Producer(producer_config(local_broker.bootstrap_servers))
    for order in good[:10]:
        producer.produce(topic, orjson.dumps(order), key=order["order_id"].encode())
    for key, value, headers in bad:
        producer.produce(topic, value, key=key, headers=headers)
    for order in good[10:]:
        producer.produce(topic, orjson.dumps(order), key=order["order_id"].encode())
    producer.flush()

    with DuckDBSink(":memory:") as sink:
        stats = load_until_idle(ORDERS_SCHEMA, sink, local_broker, topic, group="dlq")
        assert (stats.facts_loaded, stats.rejected) == (20, 3)
        stored = sink.connection.execute("SELECT KAFKA_OFFSET, REASON FROM STARLOAD_REJECTS ORDER BY 1").fetchall()

    letters = read_all(local_broker.bootstrap_servers, f"{topic}.dlq", 3)
    assert len(letters) == 3
    for letter, (key, value, headers), (offset, reason) in zip(letters, bad, stored):
        assert letter.key() == key
        assert (letter.value() or b"") == value
        got = letter.headers()
        assert got[: len(headers)] == headers
        extra = dict(got[len(headers) :])
        assert extra["starload.reason"] == reason.encode()
        assert extra["starload.topic"] == topic.encode()
        assert extra["starload.partition"] == b"0"
        assert extra["starload.offset"] == str(offset).encode()
        assert extra["starload.version"]
    assert [o for o, _ in stored] == [10, 11, 12]


def test_dead_letter_topic_can_be_disabled(local_broker, topic, orders):
    producer = Producer(producer_config(local_broker.bootstrap_servers))
    producer.produce(topic, orjson.dumps(orders[0]))  # a new star is judged on its first messages: not all rejects
    producer.produce(topic, b"nope")
    producer.flush()
    with DuckDBSink(":memory:") as sink:
        stats = load_until_idle(ORDERS_SCHEMA, sink, local_broker, topic, group="nodlq", dlq_topic=None)
    assert stats.rejected == 1
    from confluent_kafka.admin import AdminClient

    topics = AdminClient({"bootstrap.servers": local_broker.bootstrap_servers}).list_topics(timeout=10).topics
    assert f"{topic}.dlq" not in topics
