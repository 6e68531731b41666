"""Spec drift: how the star a warehouse holds differs from a spec, and which differences migrate.

A sink's ``prepare`` records the spec it created the star for in ``STARLOAD_STARS``
(its name, the spec in the spec file's structure as JSON, and a fingerprint of it).
Before a loader consumes anything, :func:`differences` compares

* the warehouse's tables, column by column (name, type, nullability), with the tables
  the spec asks for: what the sink reads from its catalogue against what its DDL
  would create (:meth:`~starload.sinks.base.Sink.inspect`,
  :meth:`~starload.sinks.base.Sink.expected_columns`), and
* the recorded spec with this one, in what the tables cannot show: where a column is
  read from, its checks, whether it is required, the grain, the natural keys, the
  factors of a measure, a type the warehouse spells the same (``string(32)`` and
  ``string(64)`` are both VARCHAR on DuckDB).

Each difference is one line (``FACT_PAYMENTS.IS_REFUND: VARCHAR in the warehouse,
BOOLEAN in the spec``) and either carries the :class:`Change` that applies it to the
warehouse (an additive change: ``starload migrate``) or None (refused). The additive
changes keep every row loaded before valid, with NULL (or the unknown member) where
it has no value:

========================================  ==============================================
change                                    migrated as
========================================  ==============================================
a new nullable fact column or measure     ADD COLUMN; rows loaded before hold NULL
a new dimension attribute                 ADD COLUMN; members known before hold NULL
a new dimension the fact points at as     its table (and its unknown member); facts
optional                                  loaded before point at the unknown member
a wider string or decimal                 ALTER COLUMN … SET DATA TYPE (a longer
                                          VARCHAR, more digits of the same scale)
========================================  ==============================================

Anything else changes what rows loaded before mean, and is refused: see
:data:`~starload.exceptions.REFUSED_ADVICE`.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from typing import Any

import attrs

from starload.exceptions import SpecDriftError
from starload.spec import (
    POSITION_PREFIX,
    UNKNOWN_KEY,
    ColumnType,
    Decimal,
    Field,
    StarSchema,
    String,
    source_name,
    type_spelling,
)


@attrs.frozen
class Column:
    """A column as a warehouse holds it: its type as the sink's DDL spells it, and whether it takes NULL."""

    type: str
    nullable: bool


#: Per table, per column name: the columns (in table order).
Tables = Mapping[str, Mapping[str, Column]]


@attrs.frozen
class WarehouseStar:
    """What a sink found of a star: the spec recorded for its name (None: none) and the tables that exist."""

    recorded: Mapping[str, Any] | None
    tables: Tables


@attrs.frozen
class Change:
    """How ``starload migrate`` applies one additive difference.

    ``kind`` is ``create_table`` (``table``), ``add_column`` (``table``, ``column``,
    ``type``; existing rows get ``fill``, NULL when None, and the column is NOT NULL
    when ``fill`` is given), ``widen`` (``column`` of ``table`` becomes ``type``) or
    ``record`` (only the recorded spec changes).
    """

    kind: str
    table: str = ""
    column: str = ""
    type: str = ""
    fill: int | None = None


@attrs.frozen
class Difference:
    """One way the warehouse differs from the spec: where, what, and the change that migrates it (None: refused)."""

    where: str
    text: str
    change: Change | None

    def __str__(self) -> str:
        return f"{self.where}: {self.text}"


def fingerprint(schema: StarSchema) -> str:
    """``sha256:`` and the digest of the spec's canonical JSON: equal for equal stars, whatever file they came from."""
    return "sha256:" + hashlib.sha256(spec_json(schema).encode()).hexdigest()


def spec_json(schema: StarSchema) -> str:
    """The spec in the spec file's structure, as canonical JSON (what ``STARLOAD_STARS.SPEC`` holds)."""
    return _canonical(schema.to_dict())


def _canonical(data: Mapping[str, Any]) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"))


def recorded_as(schema: StarSchema, found: WarehouseStar) -> bool:
    """Whether ``found`` is ``schema``'s star, recorded as this very spec, with all its tables."""
    return (
        found.recorded is not None
        and all(t in found.tables for t in schema.tables)
        and _canonical(found.recorded) == spec_json(schema)
    )


def differences(schema: StarSchema, found: WarehouseStar, expected: Tables) -> list[Difference]:
    """Every difference between the star the warehouse holds (``found``) and ``schema``; none for an empty warehouse.

    ``expected``: the tables the sink would create for ``schema``.
    """
    if not any(table in found.tables for table in schema.tables):
        return []  # a new star, or one whose tables were all dropped to rebuild it: prepare makes them
    diffs = _table_differences(schema, found.tables, expected, recorded=found.recorded is not None)
    if found.recorded is not None:
        diffs += _spec_differences(schema, found.recorded, {d.where for d in diffs})
        if not diffs and not recorded_as(schema, found):
            diffs.append(Difference(schema.name, "the recorded spec differs from this one in order only", Change("record")))
    return diffs


def check(schema: StarSchema, found: WarehouseStar, expected: Tables, *, sink: str, new: bool = False) -> None:
    """Raise :class:`SpecDriftError` listing every difference (see :func:`differences`); return when there is none.

    ``new``: none of the star's tables existed before the DDL that made those in
    ``found``, so a spec recorded for its name belongs to tables dropped since (a
    rebuild) and is not compared.
    """
    if new:
        found = WarehouseStar(None, found.tables)
    diffs = differences(schema, found, expected)
    if diffs:
        raise SpecDriftError(schema.name, sink, diffs)


# ---- the tables -----------------------------------------------------------------------


def _attribute_of(column: str) -> str | None:
    """The attribute whose event position ``column`` holds (:func:`~starload.spec.position_column`), if it is one."""
    return column[len(POSITION_PREFIX):] if column.upper().startswith(POSITION_PREFIX) else None


def _table_differences(schema: StarSchema, tables: Tables, expected: Tables, *, recorded: bool) -> list[Difference]:
    """Column by column; a missing table is a difference only where a spec is recorded (else prepare makes it)."""
    found: list[Difference] = []
    optional_keys = {(fact.table, schema.dimension(n).key) for fact in schema.all_facts for n in fact.optional_dimensions}
    natural = {(d.table, f.column) for d in schema.dimensions for f in d.natural_key}
    for table, columns in expected.items():
        have = tables.get(table)
        if have is None:
            if recorded:
                found.append(Difference(table, "not in the warehouse", _new_table(schema, table)))
            continue
        have_upper = {name.upper(): name for name in have}
        missing = [c for c in columns if c.upper() not in have_upper]
        extra = [have_upper[c] for c in have_upper if c not in {n.upper() for n in columns}]
        # An attribute's position column comes and goes with it: one line says both.
        missing = [c for c in missing if _attribute_of(c) not in missing]
        extra = [c for c in extra if _attribute_of(c) not in extra]
        for name in missing:
            column = columns[name]
            if column.nullable:
                change: Change | None = Change("add_column", table, name, column.type)
            elif (table, name) in optional_keys:
                change = Change("add_column", table, name, column.type, fill=UNKNOWN_KEY)
            else:
                change = None
            renamed = [e for e in extra if _same(have[e].type, column.type)]
            hint = f" (renamed from {renamed[0]}?)" if len(missing) == 1 and len(renamed) == 1 else ""
            null = "nullable" if column.nullable else "NOT NULL"
            whose = "kept by starload (a star made by an earlier version has none)" if name.upper().startswith("_SL_") else "in the spec"
            found.append(Difference(f"{table}.{name}", f"not in the warehouse, {column.type} {null} {whose}{hint}", change))
        for name in extra:
            found.append(Difference(f"{table}.{name}", f"{have[name].type} in the warehouse, not in the spec (a column removed or renamed)", None))
        for name, column in columns.items():
            held = have.get(have_upper.get(name.upper(), ""))
            if held is None:
                continue
            if not _same(held.type, column.type):
                widened = (table, name) not in natural and _widens(held.type, column.type)
                change = Change("widen", table, name, column.type) if widened else None
                found.append(Difference(f"{table}.{name}", f"{held.type} in the warehouse, {column.type} in the spec", change))
            elif held.nullable != column.nullable:
                null = {True: "nullable", False: "NOT NULL"}
                found.append(Difference(f"{table}.{name}", f"{null[held.nullable]} in the warehouse, {null[column.nullable]} in the spec", None))
    return found


def _new_table(schema: StarSchema, table: str) -> Change | None:
    """A missing table the spec asks for can be created when it is a dimension (its fact column is its own difference)."""
    return Change("create_table", table) if any(d.table == table for d in schema.dimensions) else None


def _norm(type_name: str) -> str:
    return re.sub(r"\s+", "", type_name.upper())


def _same(a: str, b: str) -> bool:
    return _norm(a) == _norm(b)


_SIZED = re.compile(r"^([A-Z_]+)(?:\((\d+)(?:,(\d+))?\))?$")
_STRINGS = frozenset({"VARCHAR", "TEXT", "STRING"})
_DECIMALS = frozenset({"DECIMAL", "NUMBER", "NUMERIC"})


def _widens(old: str, new: str) -> bool:
    """Whether type ``new`` holds every value of ``old``: a longer (or unbounded) string, more digits of the same scale."""
    a, b = _SIZED.match(_norm(old)), _SIZED.match(_norm(new))
    if a is None or b is None or a[1] != b[1]:
        return False
    if a[1] in _STRINGS:
        return a[2] is not None and (b[2] is None or int(b[2]) > int(a[2]))
    if a[1] in _DECIMALS and a[2] and b[2]:
        return (a[3] or "0") == (b[3] or "0") and int(b[2]) > int(a[2])
    return False


# ---- the recorded spec ------------------------------------------------------------------


def _spec_differences(schema: StarSchema, recorded: Mapping[str, Any], reported: set[str]) -> list[Difference]:
    try:
        before = StarSchema.from_dict(recorded)
    except Exception as exc:  # noqa: BLE001 - a record this version cannot read is one difference, whatever broke
        return [Difference(schema.name, f"the spec recorded in the warehouse cannot be read by this version of starload ({exc})", None)]
    found: list[Difference] = []
    old, new = _meanings(before), _meanings(schema)
    for where in sorted(old.keys() & new.keys()):
        for aspect, (was, now) in _compare(old[where], new[where]).items():
            if where in reported and aspect in ("type", "required"):
                continue  # the warehouse's column shows it already
            change = Change("record") if aspect == "type" and _spec_widens(was, now) else None
            if aspect == "required":
                text = "required in the recorded spec, not in this one" if was else "not required in the recorded spec, required in this one"
            elif aspect == "history":
                text = "keeps history in the recorded spec, not in this one" if was else "keeps no history in the recorded spec, keeps it in this one"
            else:
                text = f"{aspect} {_show(was)} in the recorded spec, {_show(now)} in this one"
            found.append(Difference(where, text, change))
    shapes = {}
    facts = {f.table: f for f in before.all_facts}
    for fact in schema.all_facts:
        if fact.table in facts:
            shapes[f"{fact.table} grain"] = ([f.column for f in facts[fact.table].grain], [f.column for f in fact.grain])
            shapes[f"{fact.table} event time"] = (facts[fact.table].event_time.column, fact.event_time.column)
    dims = {d.name: d for d in before.dimensions}
    for dim in schema.dimensions:
        if dim.name in dims:
            shapes[f"{dim.table} natural key"] = ([f.column for f in dims[dim.name].natural_key], [f.column for f in dim.natural_key])
            was, now = dims[dim.name].keeps_history, dim.keeps_history
            if was != now:
                found.append(Difference(dim.table, f"{_versions(was)} in the recorded spec, {_versions(now)} in this one", None))
    for where, (was, now) in shapes.items():
        if was != now:
            found.append(Difference(where, f"{_show(was)} in the recorded spec, {_show(now)} in this one", None))
    return found


def _meanings(schema: StarSchema) -> dict[str, dict[str, Any]]:
    """Per ``TABLE.COLUMN`` fed from the message: what the column holds, aspect by aspect."""
    found: dict[str, dict[str, Any]] = {}

    def add(table: str, field: Field) -> None:
        found[f"{table}.{field.column}"] = {
            "source": source_name(field.source),
            "type": field.type,
            "required": field.required,
            "check": field.check.name.lower() if field.check else None,
        } | ({"history": True} if field.history else {})  # only when kept: specs recorded before history compare equal

    for dim in schema.dimensions:
        for field in dim.columns:
            add(dim.table, field)
    for fact in schema.all_facts:
        for field in fact.table_fields:
            add(fact.table, field)
        for m in fact.all_milestones:
            found[f"{fact.table}.{m.column}"] = {"source": source_name(m.source), "equals": m.equals}
        for measure in fact.measures:
            found[f"{fact.table}.{measure.column}"] = {"factors": list(measure.factors), "type": measure.type}
    return found


def _versions(kept: bool) -> str:
    return "keeps history (a row per version)" if kept else "keeps no history (a row per member)"


def _compare(old: dict[str, Any], new: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    return {aspect: (old.get(aspect), new.get(aspect)) for aspect in old.keys() | new.keys() if old.get(aspect) != new.get(aspect)}


def _spec_widens(old: ColumnType, new: ColumnType) -> bool:
    if isinstance(old, String) and isinstance(new, String):
        return old.max_length is not None and (new.max_length is None or new.max_length > old.max_length)
    if isinstance(old, Decimal) and isinstance(new, Decimal):
        return old.scale == new.scale and new.precision > old.precision
    return False


def _show(value: Any) -> str:
    if isinstance(value, list):
        return "(" + ", ".join(map(str, value)) + ")"
    if value is None:
        return "none"
    if isinstance(value, str):
        return repr(value)
    try:
        return type_spelling(value)
    except (TypeError, KeyError, AttributeError):
        return str(value)
