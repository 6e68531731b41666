"""Optional dimension references: a fact without the natural key points at the unknown member (-1)."""

from __future__ import annotations

import json

import attrs
import pytest

from starload import ORDERS_SCHEMA, DuckDBSink, SpecError, StarSchema
from starload.mapping import Mapper, raw_batch
from starload.sinks.snowflake import SnowflakeSink

# The orders star, except that an order may not name its product.
OPTIONAL_PRODUCT = StarSchema(
    name="orders_optional_product",
    dimensions=ORDERS_SCHEMA.dimensions,
    date_dimension=ORDERS_SCHEMA.date_dimension,
    fact=attrs.evolve(ORDERS_SCHEMA.fact, optional_dimensions=["product"]),
)
ORDER = {
    "order_id": "O1", "order_timestamp": "2024-06-01T10:00:00Z", "customer_id": "C1", "customer_name": "Ali",
    "customer_region": "Sindh", "shipping_region": "Sindh", "product_id": "P1", "product_name": "Mouse",
    "category": "Accessories", "price": 2500, "quantity": 2,
}


@pytest.fixture(params=["duckdb", "snowflake"])
def sink_and_query(request):
    if request.param == "duckdb":
        sink = DuckDBSink(":memory:")
        yield sink, lambda sql: sink.connection.execute(sql).fetchall()
    else:
        settings = request.getfixturevalue("snowflake_settings")
        sink = SnowflakeSink(**settings)
        yield sink, lambda sql: [tuple(r) for r in sink._run(sql)]
    sink.close()


def test_missing_optional_natural_key_points_at_the_unknown_member(sink_and_query):
    sink, query = sink_and_query
    sink.prepare(OPTIONAL_PRODUCT)
    sink.prepare(OPTIONAL_PRODUCT)  # idempotent: still one unknown member
    no_product = {k: v for k, v in ORDER.items() if not k.startswith("product_")} | {"order_id": "O2"}
    values = [json.dumps(ORDER).encode(), json.dumps(no_product).encode()]
    mapper = Mapper(OPTIONAL_PRODUCT)
    batch = mapper.stage(raw_batch(values), topic="t", group="g")
    mapper.close()
    assert batch.rejects.num_rows == 0
    result = sink.write(batch)
    assert result.facts_inserted == 2
    keys = dict(query('SELECT ORDER_ID, PRODUCT_KEY FROM FACT_ORDERS ORDER BY 1'))
    assert keys["O2"] == -1 and keys["O1"] > 0
    assert query("SELECT count(*) FROM DIM_PRODUCT WHERE PRODUCT_KEY = -1 AND PRODUCT_ID IS NULL") == [(1,)]
    assert query("SELECT count(*) FROM DIM_PRODUCT") == [(2,)]


def test_mandatory_natural_key_is_still_required():
    mapper = Mapper(ORDERS_SCHEMA)
    no_customer = {k: v for k, v in ORDER.items() if k != "customer_id"}
    batch = mapper.stage(raw_batch([json.dumps(no_customer).encode()]), topic="t", group="g")
    mapper.close()
    assert batch.rejects.column("REASON").to_pylist() == ["customer_id: missing"]


def test_optional_dimension_must_be_referenced():
    with pytest.raises(SpecError, match="optional dimension 'nope'"):
        StarSchema(name="x", dimensions=ORDERS_SCHEMA.dimensions,
                   fact=attrs.evolve(ORDERS_SCHEMA.fact, optional_dimensions=["nope"]))


def test_inferred_member_is_completed_when_its_attributes_arrive():
    sink = DuckDBSink(":memory:")
    sink.prepare(ORDERS_SCHEMA)
    mapper = Mapper(ORDERS_SCHEMA)
    bare = {k: v for k, v in ORDER.items() if k not in ("customer_name", "customer_region")} | {"customer_id": "C9"}
    full = ORDER | {"order_id": "O3", "customer_id": "C9", "customer_name": "Sana", "customer_region": "Punjab"}
    sink.write(mapper.stage(raw_batch([json.dumps(bare).encode()]), topic="t", group="g"))
    inferred = sink.connection.execute("SELECT CUSTOMER_KEY, CUSTOMER_NAME FROM DIM_CUSTOMER WHERE CUSTOMER_ID = 'C9'").fetchall()
    assert [name for _, name in inferred] == [None]
    sink.write(mapper.stage(raw_batch([json.dumps(full).encode()], offsets=[1]), topic="t", group="g"))
    completed = sink.connection.execute(
        "SELECT CUSTOMER_KEY, CUSTOMER_NAME, CUSTOMER_REGION FROM DIM_CUSTOMER WHERE CUSTOMER_ID = 'C9'"
    ).fetchall()
    assert completed == [(inferred[0][0], "Sana", "Punjab")]
    assert sink.connection.execute("SELECT count(DISTINCT CUSTOMER_KEY) FROM FACT_ORDERS").fetchall() == [(1,)]
    mapper.close()
    sink.close()
