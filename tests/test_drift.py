"""starload.drift on its own: which differences it finds, and which of them migrate."""

from __future__ import annotations

from pathlib import Path

import attrs
import pytest

from starload.drift import Column, WarehouseStar, _widens, differences, fingerprint
from starload.generators.orders import ORDERS_HISTORY_SCHEMA, ORDERS_SCHEMA
from starload.sinks.sql import DUCKDB, StarSQL
from starload.spec import Field, StarSchema
from starload.testing import changed_fact_column

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def held(schema: StarSchema, *, recorded: StarSchema | None = None, tables=None) -> WarehouseStar:
    """The warehouse as the DuckDB sink would find it after preparing ``recorded`` (default: ``schema``)."""
    made = StarSQL(recorded or schema, DUCKDB).expected_columns()
    return WarehouseStar((recorded or schema).to_dict(), made if tables is None else tables)


def expected(schema: StarSchema) -> dict:
    return StarSQL(schema, DUCKDB).expected_columns()


def test_one_star_has_one_fingerprint_whatever_file_it_came_from():
    yaml, toml = StarSchema.from_file(EXAMPLES / "payments.yaml"), StarSchema.from_file(EXAMPLES / "payments.toml")
    assert fingerprint(yaml) == fingerprint(toml) and fingerprint(yaml).startswith("sha256:")
    assert fingerprint(StarSchema.from_file(EXAMPLES / "orders.yaml")) == fingerprint(ORDERS_SCHEMA) != fingerprint(yaml)


def test_the_star_as_recorded_has_no_differences_and_an_empty_warehouse_none_either():
    assert differences(ORDERS_SCHEMA, held(ORDERS_SCHEMA), expected(ORDERS_SCHEMA)) == []
    assert differences(ORDERS_SCHEMA, WarehouseStar(None, {}), expected(ORDERS_SCHEMA)) == []
    # A star none of whose tables exist is new, whatever is recorded for its name (a rebuild).
    assert differences(ORDERS_SCHEMA, WarehouseStar({"name": "orders"}, {}), expected(ORDERS_SCHEMA)) == []


@pytest.mark.parametrize(
    ("old", "new", "wider"),
    [
        ("VARCHAR(2)", "VARCHAR(3)", True), ("VARCHAR(2)", "VARCHAR", True), ("VARCHAR", "VARCHAR(9)", False),
        ("VARCHAR(3)", "VARCHAR(2)", False), ("NUMBER(12, 2)", "NUMBER(14,2)", True), ("DECIMAL(12,2)", "DECIMAL(14, 3)", False),
        ("DECIMAL(14,2)", "DECIMAL(12,2)", False), ("BIGINT", "VARCHAR", False), ("BOOLEAN", "BOOLEAN", False),
    ],
)
def test_what_widens(old, new, wider):
    assert _widens(old, new) is wider


def test_a_spec_only_change_is_found_in_the_recorded_spec():
    moved = changed_fact_column(ORDERS_SCHEMA, "SHIPPING_REGION", source="ship.region", check=None)
    [diff] = differences(moved, held(moved, recorded=ORDERS_SCHEMA), expected(moved))
    assert str(diff) == "FACT_ORDERS.SHIPPING_REGION: source 'shipping_region' in the recorded spec, 'ship.region' in this one"
    assert diff.change is None
    longer = changed_fact_column(ORDERS_SCHEMA, "SHIPPING_REGION", type="string(9)")
    shorter = changed_fact_column(longer, "SHIPPING_REGION", type="string(5)")
    [grew] = differences(longer, held(longer, recorded=shorter), expected(longer))
    assert grew.change is not None and grew.change.kind == "record"  # the same VARCHAR on DuckDB: only the record changes
    [shrank] = differences(shorter, held(shorter, recorded=longer), expected(shorter))
    assert shrank.change is None


def test_a_renamed_column_is_one_missing_and_one_extra_with_a_hint():
    data = ORDERS_SCHEMA.to_dict()
    data["dimensions"][0]["attributes"][1]["column"] = "REGION"
    renamed = StarSchema.from_dict(data)
    found = {str(d): d.change for d in differences(renamed, held(renamed, recorded=ORDERS_SCHEMA), expected(renamed))}
    assert found.keys() == {
        "DIM_CUSTOMER.REGION: not in the warehouse, VARCHAR nullable in the spec (renamed from CUSTOMER_REGION?)",
        "DIM_CUSTOMER.CUSTOMER_REGION: VARCHAR in the warehouse, not in the spec (a column removed or renamed)",
    }
    assert [c.kind if c else None for c in found.values()] == ["add_column", None]


def test_a_table_missing_from_a_recorded_star_is_made_only_when_it_is_a_dimension():
    tables = {t: c for t, c in expected(ORDERS_SCHEMA).items() if t not in ("DIM_PRODUCT", "FACT_ORDERS")}
    found = {d.where: d.change for d in differences(ORDERS_SCHEMA, held(ORDERS_SCHEMA, tables=tables), expected(ORDERS_SCHEMA))}
    assert found["DIM_PRODUCT"] is not None and found["DIM_PRODUCT"].kind == "create_table"
    assert found["FACT_ORDERS"] is None
    # Unrecorded (made by an earlier version): a missing table is made by prepare, not a difference.
    assert differences(ORDERS_SCHEMA, WarehouseStar(None, tables), expected(ORDERS_SCHEMA)) == []


def test_a_nullability_change_is_refused():
    tables = expected(ORDERS_SCHEMA)
    tables["FACT_ORDERS"] = {**tables["FACT_ORDERS"], "SHIPPING_REGION": Column("VARCHAR", nullable=False)}
    [diff] = differences(ORDERS_SCHEMA, held(ORDERS_SCHEMA, tables=tables), expected(ORDERS_SCHEMA))
    assert (str(diff), diff.change) == ("FACT_ORDERS.SHIPPING_REGION: NOT NULL in the warehouse, nullable in the spec", None)


def test_keeping_history_or_not_is_refused_and_an_added_history_attribute_migrates():

    found = differences(ORDERS_HISTORY_SCHEMA, held(ORDERS_SCHEMA), expected(ORDERS_HISTORY_SCHEMA))
    lines = [str(d) for d in found if d.change is None]
    assert "DIM_CUSTOMER: keeps no history (a row per member) in the recorded spec, keeps history (a row per version) in this one" in lines
    assert "DIM_CUSTOMER.CUSTOMER_REGION: keeps no history in the recorded spec, keeps it in this one" in lines
    back = differences(ORDERS_SCHEMA, held(ORDERS_HISTORY_SCHEMA), expected(ORDERS_SCHEMA))
    assert any(str(d).startswith("DIM_CUSTOMER: keeps history") and d.change is None for d in back)
    # One more history attribute on a dimension that keeps history: a new column in it and in its log.
    customer = ORDERS_HISTORY_SCHEMA.dimensions[0]
    tier = Field("CUSTOMER_TIER", "customer_tier", history=True)
    wider = attrs.evolve(ORDERS_HISTORY_SCHEMA, dimensions=[attrs.evolve(customer, attributes=[*customer.attributes, tier]), ORDERS_HISTORY_SCHEMA.dimensions[1]])
    added = differences(wider, held(ORDERS_HISTORY_SCHEMA), expected(wider))
    assert sorted((d.change.kind, d.change.table, d.change.column) for d in added) == [
        ("add_column", "DIM_CUSTOMER", "CUSTOMER_TIER"),
        ("add_column", "STARLOAD_HISTORY_DIM_CUSTOMER", "CUSTOMER_TIER"),
    ]
    statements = [s for d in added for s in StarSQL(wider, DUCKDB).migration(d.change)]
    assert not any("_SL_AT_CUSTOMER_TIER" in s for s in statements)  # a history attribute has no position column
