from __future__ import annotations

import pytest

from starload import (
    ORDERS_SCHEMA,
    Check,
    Decimal,
    Dimension,
    Fact,
    Field,
    Integer,
    Measure,
    SpecError,
    StarSchema,
    String,
    Timestamp,
)


def _fact(**kw) -> Fact:
    args = {
        "table": "F",
        "grain": [Field("ID", "id", required=True)],
        "event_time": Field("TS", "ts", Timestamp(), required=True),
        "dimensions": ["d"],
        "columns": [Field("Q", "q", Integer(), required=True)],
    }
    args.update(kw)
    return Fact(**args)


def _dim(**kw) -> Dimension:
    args = {"name": "d", "table": "DIM_D", "key": "D_KEY", "natural_key": [Field("D_ID", "d_id")]}
    args.update(kw)
    return Dimension(**args)


def test_orders_schema_is_the_seed_model():
    assert ORDERS_SCHEMA.tables == ("DIM_CUSTOMER", "DIM_PRODUCT", "DIM_DATE", "FACT_ORDERS")
    assert ORDERS_SCHEMA.fact_columns(ORDERS_SCHEMA.fact)[:10] == [
        "ORDER_ID", "ORDER_TIMESTAMP", "QUANTITY", "UNIT_PRICE", "SHIPPING_REGION",
        "CUSTOMER_KEY", "PRODUCT_KEY", "DATE_KEY", "TOTAL_AMOUNT", "GRAIN_HASH",
    ]
    [feed] = ORDERS_SCHEMA.feeds()
    assert feed.is_required("customer_id") and not feed.is_required("customer_name")
    assert feed.check_of("quantity") is Check.POSITIVE


def test_field_lists_every_problem():
    with pytest.raises(SpecError) as err:
        Field("bad name", "x..y", Decimal(50, 60), check=Check.POSITIVE)
    problems = err.value.problems
    assert len(problems) == 3
    assert "not a valid identifier" in problems[0]
    assert "empty key" in problems[1]
    assert "Decimal(50, 60)" in problems[2]


def test_check_needs_a_number():
    with pytest.raises(SpecError, match="check POSITIVE needs an Integer, Decimal or Double"):
        Field("NAME", "name", String(), check=Check.POSITIVE)


@pytest.mark.parametrize("name", ["DROP TABLE x", 'a"b', "1abc", "", "x" * 129, "_SL_X", "starload_offsets"])
def test_identifiers_are_validated(name):
    with pytest.raises(SpecError):
        Field(name, "src")


def test_schema_lists_every_cross_problem():
    with pytest.raises(SpecError) as err:
        StarSchema(
            name="s",
            dimensions=[_dim(), _dim(table="DIM_E")],
            fact=_fact(
                dimensions=["d", "missing"],
                columns=[Field("Q", "q", String(), required=True), Field("ID", "other")],
                measures=[Measure("TOTAL", ["Q", "NOPE"])],
            ),
        )
    text = str(err.value)
    assert "dimension name 'd' appears 2 times" in text
    assert "unknown dimension 'missing'" in text
    assert "column 'ID' appears 2 times" in text
    assert "factor 'Q' is not an Integer or Decimal" in text
    assert "factor 'NOPE'" in text
    assert len(err.value.problems) >= 5


def test_event_time_must_be_a_required_timestamp():
    with pytest.raises(SpecError) as err:
        _fact(event_time=Field("TS", "ts", String()))
    assert len(err.value.problems) == 2


def test_source_read_with_two_types_is_rejected():
    with pytest.raises(SpecError, match="read with two types"):
        StarSchema(
            name="s",
            dimensions=[_dim(attributes=[Field("Q2", "q", String())])],
            fact=_fact(),
        )


def test_dimension_needs_a_natural_key():
    with pytest.raises(SpecError) as err:
        Dimension(name="d", table="T", key="K", natural_key=[])
    assert err.value.problems == ["dimension 'd': needs at least one natural key field"]


def test_only_a_dimension_attribute_keeps_history():
    with pytest.raises(SpecError) as err:
        Dimension(name="d", table="T", key="K", natural_key=[Field("ID", "id", history=True)])
    assert err.value.problems == ["dimension 'd': 'ID' cannot keep history (only a dimension attribute can)"]
    with pytest.raises(SpecError) as err:
        Fact(
            table="F",
            grain=[Field("G", "g", required=True)],
            event_time=Field("AT", "at", Timestamp(), required=True, history=True),
            dimensions=[],
            columns=[Field("C", "c", history=True)],
        )
    assert err.value.problems == [
        "fact: 'C' cannot keep history (only a dimension attribute can)",
        "fact: event_time 'AT' cannot keep history",
    ]
    with pytest.raises(SpecError) as err:
        Dimension(name="d", table="T", key="K", natural_key=[Field("ID", "id")], attributes=[Field("VALID_FROM", "v", history=True)])
    assert err.value.problems == ["dimension 'd': column 'VALID_FROM' appears 2 times"]
    dim = Dimension(name="d", table="T", key="K", natural_key=[Field("ID", "id")], attributes=[Field("A", "a"), Field("B", "b", history=True)])
    assert (dim.keeps_history, [f.column for f in dim.history_attributes], [f.column for f in dim.current_attributes]) == (True, ["B"], ["A"])
    assert dim.history_table == "STARLOAD_HISTORY_T"


def test_specs_are_frozen():
    with pytest.raises(AttributeError):
        ORDERS_SCHEMA.name = "x"  # type: ignore[misc]
