"""Facts at the grain of an array's elements (order lines), and one topic feeding several parts of a star.

The bookshop star (``examples/bookshop.yaml``, twin of ``BOOKSHOP_SCHEMA``) loads on
every sink through the behaviour suite (``test_order_lines_load_whole_or_are_rejected_whole``);
these tests hold the spec rules and the reasons a message is rejected for.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from starload import BOOKSHOP_SCHEMA, SpecError, StarSchema
from starload.generators.bookshop import BOOKS
from starload.mapping import Mapper, raw_batch
from starload.sinks.duckdb import DuckDBSink
from starload.testing import SinkBehaviour, Stager, bookshop_oracle

EXAMPLE = Path(__file__).parents[1] / "examples" / "bookshop.yaml"
TOPIC = "bookshop.orders"


def stage(schema: StarSchema, *messages: Any, topic: str = TOPIC):
    mapper = Mapper(schema)
    try:
        return mapper.stage(raw_batch([orjson.dumps(m) if not isinstance(m, bytes) else m for m in messages]), topic=topic, group="g")
    finally:
        mapper.close()


def order(**changes: Any) -> dict[str, Any]:
    lines = [{"isbn": "978-0-441-17271-9", "title": "Dune", "qty": 2, "unit_price": "12.50"},
             {"isbn": "978-0-14-143951-8", "title": "Emma", "qty": 1, "unit_price": 7}]  # fmt: skip
    return {"order_id": "B-1001", "placed_at": "2026-11-02T10:11:12.345+01:00", "customer": {"id": 17, "city": "Lahore"},
            "shipping": {"country": "PK", "method": "courier"}, "coupon": None, "lines": lines, **changes}  # fmt: skip


def reasons(batch) -> list[str]:
    return batch.rejects.column("REASON").to_pylist()


def test_the_example_file_is_the_twin_of_the_schema_and_reads_one_topic_into_two_facts():
    assert StarSchema.from_file(EXAMPLE) == BOOKSHOP_SCHEMA
    assert StarSchema.from_dict(BOOKSHOP_SCHEMA.to_dict()) == BOOKSHOP_SCHEMA
    [feed] = BOOKSHOP_SCHEMA.feeds()
    assert [f.table for f in feed.facts] == ["FACT_ORDERS", "FACT_ORDER_LINES"]
    assert feed.arrays == (("lines",),) and [feed.array_of(f) for f in feed.facts] == [None, ("lines",)]
    assert BOOKSHOP_SCHEMA.named_topics == (TOPIC,) and not BOOKSHOP_SCHEMA.several_topics


def test_a_row_per_element_and_the_same_outer_fields_on_each():
    batch = stage(BOOKSHOP_SCHEMA, order())
    [header] = batch.facts["FACT_ORDERS"].to_pylist()
    lines = sorted(batch.facts["FACT_ORDER_LINES"].to_pylist(), key=lambda r: r["LINE_NO"])
    assert header["ORDER_ID"] == "B-1001" and header["SHIP_COUNTRY"] == "PK"
    assert [(r["ORDER_ID"], r["LINE_NO"], r["QTY"], str(r["UNIT_PRICE"]), str(r["LINE_AMOUNT"])) for r in lines] == [
        ("B-1001", 0, 2, "12.50", "25.00"), ("B-1001", 1, 1, "7.00", "7.00"),
    ]  # fmt: skip
    assert {r["PLACED_AT"] for r in lines} == {header["PLACED_AT"]} and {r["_SL_NK_DIM_CUSTOMER_CUSTOMER_ID"] for r in lines} == {17}
    assert {r["MESSAGE_HASH"] for r in lines} == {header["MESSAGE_HASH"]}  # one fingerprint: the whole message
    assert sorted(batch.dimensions["book"].column("TITLE").to_pylist()) == ["Dune", "Emma"]


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        ([], 0),  # an empty array: no line, the header loads
        (None, 0),  # a null array is an empty one
        ("missing", 0),  # so is a missing one
        ([{"isbn": "X", "qty": 1, "unit_price": "1"}], 1),
    ],
)
def test_empty_null_and_missing_arrays_give_no_lines_but_the_header_loads(lines, expected):
    message = order(lines=lines)
    if lines == "missing":
        del message["lines"]
    batch = stage(BOOKSHOP_SCHEMA, message)
    assert (batch.facts["FACT_ORDERS"].num_rows, batch.facts["FACT_ORDER_LINES"].num_rows, reasons(batch)) == (1, expected, [])


@pytest.mark.parametrize(
    ("lines", "reason"),
    [
        ([{"isbn": "A", "qty": 1, "unit_price": 1}, {"isbn": "B", "qty": 0, "unit_price": 1}], "lines[1].qty: must be > 0"),
        ([{"qty": 1, "unit_price": 1}], "lines[0].isbn: missing"),
        ([{"isbn": "A", "qty": 1, "unit_price": 1}, 5], "lines[1]: expected an object, got a number"),
        ([None], "lines[0]: expected an object, got null"),
        ([[1]], "lines[0]: expected an object, got an array"),
        ({"isbn": "A"}, "lines: expected an array, got an object"),
        ("A", "lines: expected an array, got a string"),
        ([{"isbn": "A", "qty": 1.5, "unit_price": 1}], "lines[0].qty: expected a 64-bit integer"),
        ([{"isbn": "A", "qty": 1, "unit_price": "1.005"}], "lines[0].unit_price: expected a number with at most 8 digits before and 2 after the decimal point"),
    ],
)
def test_a_bad_element_rejects_the_whole_message_naming_the_element(lines, reason):
    batch = stage(BOOKSHOP_SCHEMA, order(lines=lines))
    assert reasons(batch) == [reason]
    assert (batch.facts["FACT_ORDERS"].num_rows, batch.facts["FACT_ORDER_LINES"].num_rows) == (0, 0)
    assert batch.dimensions["customer"].num_rows == 0 and batch.dimensions["book"].num_rows == 0


def test_reading_an_array_as_an_object_says_how_to_read_each_element():
    schema = StarSchema.from_dict({**BOOKSHOP_SCHEMA.to_dict(), "dimensions": [BOOKSHOP_SCHEMA.to_dict()["dimensions"][0]], "facts": [
        {**BOOKSHOP_SCHEMA.to_dict()["facts"][0], "columns": [{"column": "FIRST_ISBN", "source": "lines.isbn"}]}]})  # fmt: skip
    assert reasons(stage(schema, order())) == ["lines: expected an object, got an array (write lines[].isbn to read each element)"]


#: A grain field of each element's position.
LINE_NO = {"column": "N", "source": "lines[#]", "type": "integer"}


def spec(**fact: Any) -> dict[str, Any]:
    base = {"table": "F", "topic": "t", "grain": [{"column": "ID", "source": "id", "required": True}],
            "event_time": {"column": "AT", "source": "at", "type": "timestamp", "required": True}, "dimensions": []}  # fmt: skip
    return {"name": "s", "dimensions": [], "facts": [{**base, **fact}]}


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (spec(columns=[{"column": "D", "source": "lines[].discounts[].amount"}]), "reads an array inside an array: one array level per fact"),
        (spec(columns=[{"column": "Q", "source": "lines[].qty"}]), "its grain reads nothing of the elements: add lines[#]"),
        (spec(columns=[{"column": "N", "source": "lines[#].x"}]), "nothing can follow it"),
        (spec(columns=[{"column": "N", "source": "[]"}]), "follow the name of an array"),
        (spec(grain=[{"column": "ID", "source": "id"}, {"column": "N", "source": "lines[#]", "type": "string"}]), "its type is integer"),
        (
            spec(grain=[{"column": "ID", "source": "id"}, LINE_NO], columns=[{"column": "P", "source": "payments[].amount"}]),
            "reads several arrays (lines[], payments[])",
        ),
        (
            spec(grain=[{"column": "ID", "source": "id"}, LINE_NO], columns=[{"column": "C", "source": "lines.count"}]),
            "reads 'lines' as an object or a value, but 'lines[#]' reads it as an array",
        ),
        (spec(event_time={"column": "AT", "source": "lines[].at", "type": "timestamp", "required": True}), "a message has one event time"),
    ],
)
def test_arrays_a_spec_cannot_read_are_spec_errors_that_say_why(data, problem):
    with pytest.raises(SpecError, match=problem.replace("[", r"\[").replace("]", r"\]").replace("(", r"\(").replace(")", r"\)")):
        StarSchema.from_dict(data)


def test_a_fact_of_a_row_per_message_cannot_point_at_a_member_of_each_element():
    data = BOOKSHOP_SCHEMA.to_dict()
    data["facts"][0]["dimensions"] = ["customer", "book"]
    with pytest.raises(SpecError, match="refers to dimension 'book', whose natural key is read from each element of lines"):
        StarSchema.from_dict(data)


def test_an_attribute_of_each_element_needs_a_natural_key_of_each_element():
    data = BOOKSHOP_SCHEMA.to_dict()
    data["dimensions"][0]["attributes"] = [{"column": "FIRST_TITLE", "source": "lines[].title"}]
    with pytest.raises(SpecError, match="FIRST_TITLE is read from each element of lines.*natural key at one place per message"):
        StarSchema.from_dict(data)


def test_two_elements_with_one_grain_value_reject_their_message():
    data = BOOKSHOP_SCHEMA.to_dict()
    data["facts"][1]["grain"] = [data["facts"][1]["grain"][0], {"column": "ISBN", "source": "lines[].isbn", "type": "string(17)"}]
    schema = StarSchema.from_dict(data)
    twice = order(lines=[order()["lines"][0], {**order()["lines"][0], "qty": 5}])
    assert reasons(stage(schema, twice, order(order_id="B-2"))) == [
        "lines: two elements have the same lines[].isbn, a grain value of FACT_ORDER_LINES (add lines[#] to its grain if both are rows)"
    ]


def test_scalar_elements_and_objects_inside_elements():
    data = spec(
        grain=[{"column": "ID", "source": "id", "required": True}, {"column": "N", "source": "items[#]", "type": "integer"}],
        columns=[{"column": "AMOUNT", "source": "items[].price.amount", "type": "decimal(10,2)", "required": True}],
    )
    schema = StarSchema.from_dict(data)
    good = {"id": "1", "at": "2024-01-01T00:00:00Z", "items": [{"price": {"amount": "1.50"}}, {"price": {"amount": 2}}]}
    bad = {"id": "2", "at": "2024-01-01T00:00:00Z", "items": [{"price": {"amount": "1.50"}}, {"price": 2}]}
    batch = stage(schema, good, bad, topic="t")
    assert sorted(str(a) for a in batch.facts["F"].column("AMOUNT").to_pylist()) == ["1.50", "2.00"]
    assert reasons(batch) == ["items[1].price: expected an object; items[1].price.amount: missing"]
    tags = StarSchema.from_dict(spec(grain=[{"column": "ID", "source": "id", "required": True}, {"column": "TAG", "source": "tags[]", "required": True}]))
    batch = stage(tags, {"id": "1", "at": "2024-01-01T00:00:00Z", "tags": ["a", "b"]}, {"id": "2", "at": "2024-01-01T00:00:00Z", "tags": ["a", 3]}, topic="t")
    assert sorted(batch.facts["F"].column("TAG").to_pylist()) == ["a", "b"]
    assert reasons(batch) == ["tags[1]: expected a string"]


def test_a_topic_feeds_a_fact_and_a_dimension_of_its_own():
    """A status topic as a dimension (history of each order's status) and as a fact (one row per status event)."""
    data = {
        "name": "statuses",
        "dimensions": [{"name": "order", "table": "DIM_ORDER", "key": "ORDER_KEY", "topic": "status",
                        "event_time": {"source": "at"}, "natural_key": [{"column": "ORDER_ID", "source": "order_id"}],
                        "attributes": [{"column": "STATUS", "source": "status", "history": True}]}],
        "facts": [{"table": "FACT_STATUS", "topic": "status", "grain": [{"column": "EVENT_ID", "source": "event_id", "required": True}],
                   "event_time": {"column": "AT", "source": "at", "type": "timestamp", "required": True}, "dimensions": ["order"]}],
    }  # fmt: skip
    schema = StarSchema.from_dict(data)
    [feed] = schema.feeds()
    assert feed.dimension is not None and [f.table for f in feed.facts] == ["FACT_STATUS"]
    events = [{"event_id": "e1", "order_id": "B-1", "status": "placed", "at": "2024-01-01T00:00:00Z"},
              {"event_id": "e2", "order_id": "B-1", "status": "shipped", "at": "2024-01-02T00:00:00Z"}]  # fmt: skip
    batch = stage(schema, *events, topic="status")
    assert batch.facts["FACT_STATUS"].num_rows == 2 and batch.records == 0  # a message of a fact's topic is a fact, counted once
    assert sorted(batch.histories["order"].column("STATUS").to_pylist()) == ["placed", "shipped"]
    data["facts"][0]["event_time"]["source"] = "logged_at"
    with pytest.raises(SpecError, match="a message has one event time"):
        StarSchema.from_dict(data)


# ---- the property: the bookshop star equals the pure-Python oracle, whatever the batches -------------------------------


class _Reader(SinkBehaviour):
    """The behaviour suite's readout of the bookshop star, on a DuckDB sink."""

    def query(self, sink, sql):
        return sink.connection.execute(sql).fetchall()


good_lines = st.builds(
    lambda book, title, qty, cents: {"isbn": book[0], "title": title, "qty": qty, "unit_price": f"{cents / 100:.2f}"},
    st.sampled_from(BOOKS[:3]), st.sampled_from(["A", "B", "C"]), st.integers(1, 3), st.integers(0, 5_000),
)  # fmt: skip
bad_lines = st.sampled_from([5, None, {"isbn": "978-0-441-17271-9", "qty": 0, "unit_price": "1"}, {"qty": 1, "unit_price": "1"}])


@st.composite
def bookshop_streams(draw: st.DrawFn) -> tuple[list[tuple[int, int, dict]], list[int]]:
    """Orders of 0 to 5 lines (a bad one at any position, now and then), some redelivered, on two partitions; and batch cuts."""
    orders = []
    for n in range(draw(st.integers(1, 14))):
        lines = draw(st.lists(good_lines, max_size=5))
        if lines and draw(st.integers(0, 5)) == 0:
            lines[draw(st.integers(0, len(lines) - 1))] = draw(bad_lines)
        at = f"2024-01-0{draw(st.integers(1, 3))}T00:00:00Z"  # few instants: ties go to partition, offset, element
        orders.append({"order_id": f"B-{n}", "placed_at": at, "customer": {"id": draw(st.integers(1, 3)), "city": draw(st.sampled_from(["X", "Y"]))},
                       "lines": lines if lines or draw(st.booleans()) else None})  # fmt: skip
    orders += draw(st.lists(st.sampled_from(orders), max_size=4))  # redeliveries, unchanged
    partitions = draw(st.lists(st.integers(0, 1), min_size=len(orders), max_size=len(orders)))
    placed, next_offset = [], {0: 0, 1: 0}
    for value, p in zip(orders, partitions):
        placed.append((p, next_offset[p], value))
        next_offset[p] += 1
    cuts = sorted(set(draw(st.lists(st.integers(1, max(1, len(placed) - 1)), max_size=3))))
    return placed, cuts


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(bookshop_streams())
def test_the_bookshop_star_equals_the_oracle_whatever_the_batches(stream):
    placed, cuts = stream
    expected = bookshop_oracle(placed)
    sink, stager = DuckDBSink(":memory:"), Stager(BOOKSHOP_SCHEMA, topic=TOPIC)
    try:
        sink.prepare(BOOKSHOP_SCHEMA)
        duplicates = 0
        for lo, hi in zip([0, *cuts], [*cuts, len(placed)]):
            part = placed[lo:hi]
            batch = stager.batch([v for *_, v in part], partitions=[p for p, _, _ in part], offsets=[o for _, o, _ in part])
            duplicates += sink.write(batch.with_conflicts(sink.find_conflicts(batch))).duplicates
        found = _Reader().bookshop(sink)
        assert found == {k: v for k, v in expected.items() if k != "duplicates"}
        assert duplicates == expected["duplicates"]
    finally:
        stager.close()
        sink.close()


def test_two_facts_of_one_topic_read_one_event_time():
    data = BOOKSHOP_SCHEMA.to_dict()
    data["facts"][1]["event_time"]["source"] = "shipped_at"
    with pytest.raises(SpecError, match="fact 'FACT_ORDERS' reads the event time at 'placed_at', fact 'FACT_ORDER_LINES' at 'shipped_at'"):
        StarSchema.from_dict(data)


def test_spec_check_shows_array_paths_as_written():
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "starload.cli", "spec", "check", str(EXAMPLE)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert "lines[#]" in done.stdout and "lines[].unit_price (required)" in done.stdout  # not read as console markup


def test_in_a_star_of_one_fact_a_dimension_it_does_not_refer_to_still_needs_its_key():
    """As before one topic could feed several parts: its messages feed every dimension without a topic, each key required."""
    data = spec(dimensions=["d"])
    data["dimensions"] = [
        {"name": "d", "table": "DIM_D", "key": "D_KEY", "natural_key": [{"column": "D_ID", "source": "d"}]},
        {"name": "x", "table": "DIM_X", "key": "X_KEY", "natural_key": [{"column": "X_ID", "source": "x"}]},
    ]
    del data["facts"][0]["topic"]
    data["fact"] = data.pop("facts")[0]
    batch = stage(StarSchema.from_dict(data), {"id": "1", "at": "2024-01-01T00:00:00Z", "d": "a"}, topic="t")
    assert reasons(batch) == ["x: missing"]
