"""An end-to-end load of edge data, on the local endpoint and (opt-in) on a real Snowflake account.

Set ``STARLOAD_SNOWFLAKE_TEST_CONNECTION`` to the name of a connection of the
connector's ``connections.toml`` (a role that may create and drop a schema in the
connection's database): this test and the sink behaviour suite (test_sink_suite.py)
then also run there, each in a schema ``STARLOAD_TEST_<random>`` created for it and
dropped after it (the ``warehouse`` fixture of conftest.py). Without the variable
those runs are reported as skipped, with that reason.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import orjson
from confluent_kafka import Producer
from conftest import snowflake_reader

from starload import ORDERS_SCHEMA, StarLoader
from starload.kafka import ensure_topic, producer_config
from starload.sinks.snowflake import SnowflakeSink
from starload.testing import as_bytes, as_decimal, as_instant, sample_orders


def test_edge_data_loads_exactly(warehouse, local_broker, topic):
    """Empty strings, unicode, offsets in timestamps, 18-digit money and invalid-UTF-8 rejects, through a real load."""
    base = sample_orders(4)
    orders = [
        {**base[0], "order_id": "empty", "customer_name": "", "shipping_region": ""},
        # A product of its own: P4 is also in base[0], whose later event time would win its name.
        {**base[1], "order_id": "unicode", "customer_name": "Zoë Ñandú 山田 🚀", "product_id": "P-café", "product_name": "Café ☕"},
        {**base[2], "order_id": "offset", "order_timestamp": "2024-02-29T23:30:00-05:00"},
        {**base[3], "order_id": "money", "price": "1234567890123456.78", "quantity": 1},
    ]
    rejects = [(b"\x80\x81", b"\xff\xfe\x00 not text"), (None, b"{bad")]
    ensure_topic(local_broker.bootstrap_servers, topic, partitions=1)
    producer = Producer(producer_config(local_broker.bootstrap_servers))
    for order in orders:
        producer.produce(topic, orjson.dumps(order), key=order["order_id"].encode())
    for key, value in rejects:
        producer.produce(topic, value, key=key)
    producer.flush()
    with SnowflakeSink(**warehouse) as sink:
        stats = StarLoader(
            ORDERS_SCHEMA, sink, bootstrap_servers=local_broker.bootstrap_servers, topic=topic, group="edge", dlq_topic=None
        ).run(until_idle=2)
    assert (stats.facts_loaded, stats.rejected) == (4, 2)
    with snowflake_reader(warehouse) as reader:
        cursor = reader.cursor()
        facts = cursor.execute(
            'SELECT f."ORDER_ID", c."CUSTOMER_NAME", p."PRODUCT_NAME", f."SHIPPING_REGION", f."ORDER_TIMESTAMP", '
            'f."DATE_KEY", f."UNIT_PRICE" FROM "FACT_ORDERS" f JOIN "DIM_CUSTOMER" c ON c."CUSTOMER_KEY" = f."CUSTOMER_KEY" '
            'JOIN "DIM_PRODUCT" p ON p."PRODUCT_KEY" = f."PRODUCT_KEY"'
        ).fetchall()
        got = {row[0]: row[1:] for row in facts}
        assert got["empty"][0] == "" and got["empty"][2] == ""
        assert got["unicode"][:2] == ("Zoë Ñandú 山田 🚀", "Café ☕")
        assert (as_instant(got["offset"][3]), got["offset"][4]) == (datetime(2024, 3, 1, 4, 30, tzinfo=UTC), 20240301)
        assert as_decimal(got["money"][5]) == Decimal("1234567890123456.78")
        stored = cursor.execute('SELECT "MESSAGE_KEY", "MESSAGE_VALUE" FROM "STARLOAD_REJECTS" ORDER BY "KAFKA_OFFSET"').fetchall()
        assert [(as_bytes(k), as_bytes(v)) for k, v in stored] == rejects
