from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal

import orjson
import pytest

from starload import ORDERS_SCHEMA, Sink
from starload.mapping import Mapper, MappingSQL, raw_batch


@pytest.fixture
def mapper():
    m = Mapper(ORDERS_SCHEMA)
    yield m
    m.close()


def stage(mapper, values, **kw):
    return mapper.stage(raw_batch(values, **kw), topic="orders", group="g")


def one_reason(mapper, value) -> str | None:
    batch = stage(mapper, [value])
    if batch.rejects.num_rows == 0:
        return None
    return batch.rejects.column("REASON")[0].as_py()


def with_(order: dict, **changes) -> bytes:
    return json.dumps({**order, **changes}).encode()


def without(order: dict, field: str) -> bytes:
    return orjson.dumps({k: v for k, v in order.items() if k != field})


def test_valid_order_is_typed(mapper, orders):
    order = orders[0]
    batch = stage(mapper, [orjson.dumps(order)])
    assert batch.rejects.num_rows == 0
    [fact] = batch.facts["FACT_ORDERS"].to_pylist()
    assert fact["ORDER_ID"] == order["order_id"]
    assert fact["QUANTITY"] == order["quantity"]
    assert fact["UNIT_PRICE"] == Decimal(order["price"])
    assert fact["TOTAL_AMOUNT"] == Decimal(order["price"]) * order["quantity"]
    assert fact["ORDER_TIMESTAMP"] == datetime.strptime(order["order_timestamp"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    assert fact["DATE_KEY"] == int(order["order_timestamp"][:10].replace("-", ""))
    assert fact["_SL_NK_DIM_CUSTOMER_CUSTOMER_ID"] == order["customer_id"]
    assert (fact["KAFKA_TOPIC"], fact["KAFKA_PARTITION"], fact["KAFKA_OFFSET"]) == ("orders", 0, 0)
    assert batch.next_offsets == {"orders": {0: 1}}


def test_timestamps_are_converted_to_utc_and_naive_means_utc(mapper, orders):
    batch = stage(
        mapper,
        [
            with_(orders[0], order_id="a", order_timestamp="2024-03-01T01:30:00+02:00"),
            with_(orders[0], order_id="b", order_timestamp="2024-03-01 01:30:00"),
        ],
    )
    got = {r["ORDER_ID"]: (r["ORDER_TIMESTAMP"], r["DATE_KEY"]) for r in batch.facts["FACT_ORDERS"].to_pylist()}
    assert got["a"] == (datetime(2024, 2, 29, 23, 30, tzinfo=UTC), 20240229)
    assert got["b"] == (datetime(2024, 3, 1, 1, 30, tzinfo=UTC), 20240301)


def test_money_is_exact_decimal(mapper, orders):
    batch = stage(mapper, [with_(orders[0], price=19.99, quantity=3), with_(orders[1], price="0.10", quantity=1)])
    totals = sorted(r["TOTAL_AMOUNT"] for r in batch.facts["FACT_ORDERS"].to_pylist())
    assert totals == [Decimal("0.10"), Decimal("59.97")]
    assert all(isinstance(t, Decimal) for t in totals)


@pytest.mark.parametrize(
    ("price", "expected"),
    [
        ("1234567890123456.78", Decimal("1234567890123456.78")),  # 18 digits: more than a double holds
        ("9999999999999999.99", Decimal("9999999999999999.99")),
        ('"1234567890123456.78"', Decimal("1234567890123456.78")),
        ("12.5", Decimal("12.50")),
        ("1.10000000000000000000", Decimal("1.10")),
        ("10000000000000000", None),  # 17 digits before the point
        ("123456789012.345", None),  # would need rounding
        ("0.005", None),
    ],
)
def test_money_is_read_from_the_json_text_never_rounded(mapper, orders, price, expected):
    value = with_(orders[0], price=0, quantity=1).replace(b'"price": 0', b'"price": ' + price.encode())
    batch = stage(mapper, [value])
    if expected is None:
        assert batch.rejects.column("REASON")[0].as_py().startswith("price: expected a number")
    else:
        assert batch.facts["FACT_ORDERS"].column("UNIT_PRICE")[0].as_py() == expected


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b"", "empty message"),
        (None, "empty message"),
        (b"\xff\xfe\x00", "not UTF-8 text"),
        (b"{not json", "not valid JSON"),
        (b"[1, 2]", "not a JSON object"),
        (b'"just a string"', "not a JSON object"),
        (b"null", "not a JSON object"),
        (b"42", "not a JSON object"),
        (b"   ", "not valid JSON"),
    ],
)
def test_bad_documents_are_rejected(mapper, value, reason):
    assert one_reason(mapper, value) == reason


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"quantity": 2.5}, "quantity: expected a 64-bit integer"),
        ({"quantity": "three"}, "quantity: expected a 64-bit integer"),
        ({"quantity": "3"}, "quantity: expected a 64-bit integer"),
        ({"quantity": 0}, "quantity: must be > 0"),
        ({"quantity": -2}, "quantity: must be > 0"),
        ({"quantity": 10**30}, "quantity: expected a 64-bit integer"),
        ({"quantity": True}, "quantity: expected a 64-bit integer"),
        ({"price": -1}, "price: must be >= 0"),
        ({"price": "abc"}, "price: expected a number"),
        ({"price": 1.234}, "price: expected a number"),
        ({"price": [1]}, "price: expected a number"),
        ({"price": 1e300}, "price: expected a number"),
        ({"price": True}, "price: expected a number"),
        ({"price": "1.005"}, "price: expected a number"),
        ({"order_timestamp": "yesterday"}, "order_timestamp: expected an ISO-8601 timestamp"),
        ({"order_timestamp": 1700000000}, "order_timestamp: expected an ISO-8601 timestamp"),
        ({"order_timestamp": "infinity"}, "order_timestamp: expected an ISO-8601 timestamp"),
        ({"order_id": 5}, "order_id: expected a string"),
        ({"order_id": None}, "order_id: missing"),
        ({"customer_name": {"first": "A"}}, "customer_name: expected a string"),
        ({"order_id": "x" * 65}, "order_id: longer than 64 characters"),
    ],
)
def test_bad_fields_are_rejected_with_a_reason(mapper, orders, changes, reason):
    got = one_reason(mapper, with_(orders[0], **changes))
    assert got is not None and got.startswith(reason), got


@pytest.mark.parametrize("field", ["order_id", "order_timestamp", "customer_id", "product_id", "price", "quantity"])
def test_required_fields(mapper, orders, field):
    assert one_reason(mapper, without(orders[0], field)) == f"{field}: missing"


@pytest.mark.parametrize("field", ["customer_name", "customer_region", "shipping_region", "product_name", "category"])
def test_attributes_are_optional(mapper, orders, field):
    assert one_reason(mapper, without(orders[0], field)) is None


def test_every_problem_is_listed(mapper):
    reason = one_reason(mapper, b'{"order_id": 5, "quantity": 0}')
    assert reason.split("; ") == [
        "order_id: expected a string",
        "order_timestamp: missing",
        "quantity: must be > 0",
        "price: missing",
        "customer_id: missing",
        "product_id: missing",
    ]


def test_poison_inputs_never_stop_the_mapping(mapper, orders):
    deep = b"[" * 100_000 + b"]" * 100_000
    deep_object = b'{"a":' * 5000 + b"1" + b"}" * 5000
    huge = with_(orders[0], customer_name="x" * (4 * 1024 * 1024))
    sql = with_(orders[1], customer_name="Robert'); DROP TABLE FACT_ORDERS;--", product_name='"quoted" \\ back')
    unicode = with_(orders[2], customer_name="Zoë 李 \u0000 🚀")
    values = [deep, deep_object, huge, sql, unicode, bytes(range(256)), b"\x00" * 10]
    batch = stage(mapper, values)
    assert batch.facts["FACT_ORDERS"].num_rows + batch.rejects.num_rows == len(values)
    rejected = dict(zip(batch.rejects.column("KAFKA_OFFSET").to_pylist(), batch.rejects.column("REASON").to_pylist()))
    assert set(rejected) == {0, 1, 5, 6}
    names = {r["ORDER_ID"] for r in batch.facts["FACT_ORDERS"].to_pylist()}
    assert names == {orders[0]["order_id"], orders[1]["order_id"], orders[2]["order_id"]}


def test_strings_load_verbatim(mapper, orders):
    name = "Robert'); DROP TABLE FACT_ORDERS;-- \"q\" \\ Zoë 李 🚀 \n\t\u0001 / \u2028"
    batch = stage(mapper, [with_(orders[0], customer_id="C-weird", customer_name=name)])
    [row] = batch.dimensions["customer"].to_pylist()
    assert row["CUSTOMER_NAME"] == name


def test_rejects_keep_coordinates_and_bytes(mapper):
    batch = stage(mapper, [b"\xffbad", b"[]"], partitions=[3, 3], offsets=[10, 11], keys=[b"k1", None])
    assert batch.rejects.to_pylist() == [
        {"KAFKA_TOPIC": "orders", "KAFKA_PARTITION": 3, "KAFKA_OFFSET": 10, "MESSAGE_KEY": b"k1", "MESSAGE_VALUE": b"\xffbad", "REASON": "not UTF-8 text"},
        {"KAFKA_TOPIC": "orders", "KAFKA_PARTITION": 3, "KAFKA_OFFSET": 11, "MESSAGE_KEY": None, "MESSAGE_VALUE": b"[]", "REASON": "not a JSON object"},
    ]
    assert batch.next_offsets == {"orders": {3: 12}}


def test_in_a_batch_the_first_wins_duplicates_are_counted_conflicts_rejected(mapper, orders):
    first = orjson.dumps(orders[0])
    reordered = json.dumps(dict(reversed(list(orders[0].items())))).encode()  # same content, other bytes
    changed = with_(orders[0], quantity=5 if orders[0]["quantity"] != 5 else 4)
    batch = stage(mapper, [first, changed, reordered])
    ranks = [(r["KAFKA_OFFSET"], r["_SL_RANK"], r["MESSAGE_HASH"] == r["FIRST_HASH"]) for r in batch.facts["FACT_ORDERS"].to_pylist()]
    assert sorted(ranks) == [(0, 1, True), (1, 2, False), (2, 3, True)]
    # The base Sink compares within the batch: the changed copy is a conflict, the reordered one a duplicate.
    resolved = batch.with_conflicts(Sink.find_conflicts(None, batch))  # type: ignore[arg-type]
    assert resolved.conflicts == 1
    assert sorted(resolved.facts["FACT_ORDERS"].column("KAFKA_OFFSET").to_pylist()) == [0, 2]
    [reject] = resolved.rejects.to_pylist()
    assert reject["KAFKA_OFFSET"] == 1 and reject["MESSAGE_VALUE"] == changed
    assert reject["REASON"] == (
        f"conflict: order_id {orders[0]['order_id']} was first seen at partition 0 offset 0 with different content"
    )


def test_dimension_latest_event_by_event_time_wins_and_null_never_erases(mapper, orders):
    base = {**orders[0], "customer_id": "C9"}
    values = [
        with_(base, order_id="1", order_timestamp="2024-01-02T00:00:00Z", customer_name="Old", customer_region="Sindh"),
        with_(base, order_id="2", order_timestamp="2024-01-01T00:00:00Z", customer_name="New", customer_region=None),
        with_(base, order_id="3", order_timestamp="2024-01-03T00:00:00Z", customer_name=None, customer_region=None),
    ]
    batch = stage(mapper, values)
    [row] = batch.dimensions["customer"].to_pylist()
    assert (row["CUSTOMER_NAME"], row["CUSTOMER_REGION"]) == ("Old", "Sindh")  # "New" is older; "3" has none
    assert row["_SL_AT_CUSTOMER_NAME"] == row["_SL_AT_CUSTOMER_REGION"] == "2024-01-02T00:00:00.000000Z 00000 000000000000000"
    assert row["LAST_EVENT_AT"] == datetime(2024, 1, 3, tzinfo=UTC)


def test_date_dimension_attributes(mapper, orders):
    batch = stage(mapper, [with_(orders[0], order_timestamp="2024-12-29T23:59:59Z")])
    [row] = batch.dates.to_pylist()
    assert row == {
        "DATE_KEY": 20241229, "FULL_DATE": datetime(2024, 12, 29).date(), "DAY": 29, "MONTH": 12,
        "MONTH_NAME": "December", "QUARTER": 4, "YEAR": 2024, "DAY_OF_WEEK": 7, "DAY_NAME": "Sunday",
        "WEEK_OF_YEAR": 52, "IS_WEEKEND": True,
    }


def test_sql_is_built_once_per_schema_with_quoted_identifiers():
    sql = MappingSQL.build(ORDERS_SCHEMA)
    [feed] = sql.feeds
    assert len(feed.parse) == 1  # no array: one statement
    _, facts_unique, facts_ranked = feed.facts["FACT_ORDERS"]
    assert '"TOTAL_AMOUNT"' in facts_unique
    assert '"_SL_NK_DIM_CUSTOMER_CUSTOMER_ID"' in facts_unique and '"_SL_NK_DIM_CUSTOMER_CUSTOMER_ID"' in facts_ranked
    assert set(sql.dimensions) == {"customer", "product"}


def test_fingerprint_is_the_mapped_content(mapper, orders):
    order = orders[0]
    same = [
        json.dumps(order).encode(),
        json.dumps(dict(reversed(order.items())), indent=2).encode(),  # key order, whitespace
        with_(order, unmapped={"anything": [1, 2]}),
    ]
    price = json.dumps({**order, "price": 0, "quantity": 1})
    different = [
        with_(order, quantity=order["quantity"] + 1),
        with_(order, customer_name=order["customer_name"] + " "),
        with_({k: v for k, v in order.items() if k != "shipping_region"}),  # an optional field missing
        price.replace('"price": 0', '"price": 1234567890123456.78').encode(),
        price.replace('"price": 0', '"price": 1234567890123456.79').encode(),  # the same double
    ]
    batch = stage(mapper, same + different)
    hashes = dict(zip(batch.facts["FACT_ORDERS"].column("KAFKA_OFFSET").to_pylist(), batch.facts["FACT_ORDERS"].column("MESSAGE_HASH").to_pylist()))
    assert len(hashes) == len(same) + len(different)
    assert len({hashes[i] for i in range(len(same))}) == 1
    assert len(set(hashes.values())) == 1 + len(different)
