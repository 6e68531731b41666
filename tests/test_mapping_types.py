"""The column types and nested paths of the mapping: what each accepts, and the reason for what it refuses."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from decimal import Decimal as D

import pytest

from starload import Boolean, Date, Decimal, Dimension, Double, Fact, Field, Integer, StarSchema, String, Timestamp
from starload.mapping import Mapper, raw_batch


def star(column_type, source="v.x", required=False) -> StarSchema:
    """A star whose fact has one column V of ``column_type``, read from ``source``."""
    return StarSchema(
        name="t",
        dimensions=[Dimension("d", "DIM_D", "D_KEY", [Field("D_ID", "d")])],
        date_dimension=None,
        fact=Fact(
            table="F",
            grain=[Field("ID", "id", Integer(), required=True)],
            event_time=Field("AT", "at", Timestamp(), required=True),
            dimensions=["d"],
            columns=[Field("V", source, column_type, required=required)],
        ),
    )


def staged(schema: StarSchema, *messages: dict | bytes):
    mapper = Mapper(schema)
    try:
        values = [m if isinstance(m, bytes) else json.dumps({"id": i, "at": "2024-01-01T00:00:00Z", "d": "x", **m}).encode() for i, m in enumerate(messages)]
        return mapper.stage(raw_batch(values), topic="t", group="g")
    finally:
        mapper.close()


def outcome(column_type, value, **kw):
    """("value", typed value) when accepted, ("reason", reason) when rejected."""
    batch = staged(star(column_type, **kw), {"v": {"x": value}})
    if batch.rejects.num_rows:
        return "reason", batch.rejects.column("REASON")[0].as_py()
    return "value", batch.facts["F"].column("V")[0].as_py()


@pytest.mark.parametrize(
    ("column_type", "value", "expected"),
    [
        (Boolean(), True, ("value", True)),
        (Boolean(), False, ("value", False)),
        (Boolean(), "yes", ("reason", "v.x: expected true or false")),
        (Boolean(), 1, ("reason", "v.x: expected true or false")),
        (Boolean(), "true", ("reason", "v.x: expected true or false")),
        (Date(), "2024-02-29", ("value", date(2024, 2, 29))),
        (Date(), "2023-02-29", ("reason", "v.x: expected an ISO date string (YYYY-MM-DD)")),
        (Date(), "2024-2-9", ("reason", "v.x: expected an ISO date string (YYYY-MM-DD)")),
        (Date(), "2024-02-09T00:00:00", ("reason", "v.x: expected an ISO date string (YYYY-MM-DD)")),
        (Date(), "0000-01-01", ("reason", "v.x: expected an ISO date string (YYYY-MM-DD)")),
        (Date(), 20240209, ("reason", "v.x: expected an ISO date string (YYYY-MM-DD)")),
        (Double(), 1.25, ("value", 1.25)),
        (Double(), -3, ("value", -3.0)),
        (Double(), 1e300, ("value", 1e300)),
        (Double(), "1.5", ("reason", "v.x: expected a finite JSON number, not a string")),
        (Double(), True, ("reason", "v.x: expected a finite JSON number, not a string")),
        (Timestamp("epoch_s"), 1714557600, ("value", datetime(2024, 5, 1, 10, 0, tzinfo=UTC))),
        (Timestamp("epoch_s"), 1714557600.25, ("value", datetime(2024, 5, 1, 10, 0, 0, 250000, tzinfo=UTC))),
        (Timestamp("epoch_s"), "1714557600", ("reason", "v.x: expected a JSON number of seconds since 1970-01-01 UTC (years 1 to 9999)")),
        (Timestamp("epoch_s"), 1e20, ("reason", "v.x: expected a JSON number of seconds since 1970-01-01 UTC (years 1 to 9999)")),
        (Timestamp("epoch_ms"), 1714557600123, ("value", datetime(2024, 5, 1, 10, 0, 0, 123000, tzinfo=UTC))),
        (Timestamp("epoch_ms"), -1, ("value", datetime(1969, 12, 31, 23, 59, 59, 999000, tzinfo=UTC))),
        (Timestamp("epoch_ms"), False, ("reason", "v.x: expected a JSON number of milliseconds since 1970-01-01 UTC (years 1 to 9999)")),
        (Timestamp(), "2024-05-01T12:00:00+02:00", ("value", datetime(2024, 5, 1, 10, 0, tzinfo=UTC))),
        (Decimal(12, 2), "12.50", ("value", D("12.50"))),
        (Decimal(12, 2), 12.505, ("reason", "v.x: expected a number with at most 10 digits before and 2 after the decimal point")),
        (Integer(), 7, ("value", 7)),
        (String(3), "abcd", ("reason", "v.x: longer than 3 characters")),
        (String(), {"a": 1}, ("reason", "v.x: expected a string, got an object")),
        (Integer(), [1], ("reason", "v.x: expected a 64-bit integer, got an array")),
    ],
)
def test_each_type_takes_only_its_own_values(column_type, value, expected):
    assert outcome(column_type, value) == expected


def test_nested_paths_missing_null_and_wrong_shapes():
    schema = star(String(), source="a.b.c", required=True)
    batch = staged(
        schema,
        {"a": {"b": {"c": "deep"}}},
        {"a": {"b": {"c": None}}},  # null: missing
        {"a": None},  # a null object on the way: missing
        {},  # missing
        {"a": "flat"},  # a scalar where an object is expected
        {"a": {"b": [1, 2]}},  # an array where an object is expected
        {"a": {"b": {"c": {"d": 1}}}},  # an object where a value is expected
        {"a": {"b": {}}},  # an empty object: missing, not a wrong shape
    )
    assert batch.facts["F"].column("V").to_pylist() == ["deep"]
    assert batch.rejects.column("REASON").to_pylist() == [
        "a.b.c: missing",
        "a.b.c: missing",
        "a.b.c: missing",
        "a: expected an object; a.b.c: missing",
        "a.b: expected an object, got an array (write a.b[].c to read each element); a.b.c: missing",
        "a.b.c: expected a string, got an object",
        "a.b.c: missing",
    ]


def test_an_optional_nested_field_is_null_when_missing_but_a_wrong_shape_is_still_a_reject():
    batch = staged(star(Double(), source="fx.rate"), {"fx": {"rate": 1.5}}, {"fx": None}, {}, {"fx": 3})
    assert batch.facts["F"].column("V").to_pylist() == [1.5, None, None]
    assert batch.rejects.column("REASON").to_pylist() == ["fx: expected an object"]


def test_a_key_holding_a_dot_is_read_as_one_key():
    batch = staged(star(String(), source=("meta", "trace.id")), {"meta": {"trace.id": "t1", "trace": {"id": "no"}}}, {"meta": {"trace": {"id": "no"}}})
    assert batch.facts["F"].column("V").to_pylist() == ["t1", None]


def test_a_path_read_as_a_value_and_as_an_object_is_a_spec_problem():
    with pytest.raises(Exception, match="source 'v' is read as a value, but 'v.x' reads it as an object"):
        StarSchema(
            name="t",
            dimensions=[Dimension("d", "DIM_D", "D_KEY", [Field("D_ID", "v")])],
            date_dimension=None,
            fact=Fact("F", [Field("ID", "id", required=True)], Field("AT", "at", Timestamp(), required=True), ["d"], [Field("V", "v.x")]),
        )
