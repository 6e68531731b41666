"""The declarative star schema: dimensions, the date dimension and the fact.

A :class:`StarSchema` says which message fields feed which warehouse columns, with
their types and checks; the engine, the mapping and every sink are driven by it.
Every class is frozen. A spec is validated when it is built, and the
:class:`~starload.exceptions.SpecError` lists every problem, not just the first.

Rules the mapping applies to message values (see :mod:`starload.mapping`):

* ``String`` takes JSON strings only.
* ``Integer`` takes JSON integers only (``2.5`` and ``"3"`` are rejected) within 64 bits.
* ``Decimal(p, s)`` takes JSON numbers or numeric strings; a value needing more than
  ``s`` decimal places or more than ``p`` digits is rejected, never rounded.
* ``Timestamp`` takes ISO-8601 strings; an offset is converted to UTC and a
  timestamp without offset is taken to be UTC already.
"""

from __future__ import annotations

import enum
import re
from collections import Counter
from collections.abc import Iterator

import attrs

from starload.exceptions import SpecError

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
_SOURCE_FIELD = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]{0,127}$")
_RESERVED_PREFIXES = ("_SL_", "STARLOAD_")

#: Surrogate key of a dimension's unknown member (see :class:`Fact`).
UNKNOWN_KEY = -1
#: Columns starload adds to every dimension table.
DIMENSION_METADATA = ("LAST_EVENT_AT", "UPDATED_AT")
#: Columns starload adds to every fact table. GRAIN_HASH (63 bits of the MD5 of the
#: grain's typed values) lets a batch ask "is any of my grain values loaded?" by
#: scanning one integer column instead of the grain's strings.
FACT_METADATA = ("GRAIN_HASH", "MESSAGE_HASH", "KAFKA_TOPIC", "KAFKA_PARTITION", "KAFKA_OFFSET", "LOADED_AT")
#: The attributes of the date dimension, in table order, after its key.
DATE_ATTRIBUTES = (
    "FULL_DATE",
    "DAY",
    "MONTH",
    "MONTH_NAME",
    "QUARTER",
    "YEAR",
    "DAY_OF_WEEK",
    "DAY_NAME",
    "WEEK_OF_YEAR",
    "IS_WEEKEND",
)


def identifier_problems(name: object, what: str) -> list[str]:
    """Why ``name`` cannot be a warehouse identifier (empty when it can)."""
    if not isinstance(name, str) or not _IDENTIFIER.match(name):
        return [f"{what} {name!r} is not a valid identifier (letters, digits, _; max 128)"]
    if name.upper().startswith(_RESERVED_PREFIXES):
        return [f"{what} {name!r} uses a prefix reserved for starload ({', '.join(_RESERVED_PREFIXES)})"]
    return []


@attrs.frozen
class String:
    """Text; ``max_length`` is enforced by the mapping when given."""

    max_length: int | None = None


@attrs.frozen
class Integer:
    """A 64-bit integer."""


@attrs.frozen
class Decimal:
    """An exact decimal number: money is always this, never a float."""

    precision: int = 18
    scale: int = 2


@attrs.frozen
class Timestamp:
    """A point in time, stored timezone-aware in UTC."""


ColumnType = String | Integer | Decimal | Timestamp


class Check(enum.Enum):
    """A range check on a numeric field."""

    POSITIVE = "> 0"
    NON_NEGATIVE = ">= 0"


def _type_problems(column_type: object, what: str) -> list[str]:
    if not isinstance(column_type, (String, Integer, Decimal, Timestamp)):
        return [f"{what}: type {column_type!r} is not String, Integer, Decimal or Timestamp"]
    if isinstance(column_type, Decimal) and not (
        1 <= column_type.precision <= 38 and 0 <= column_type.scale <= column_type.precision
    ):
        return [f"{what}: Decimal({column_type.precision}, {column_type.scale}) needs 1 <= precision <= 38 and 0 <= scale <= precision"]
    if isinstance(column_type, String) and column_type.max_length is not None and column_type.max_length < 1:
        return [f"{what}: String max_length must be positive"]
    return []


def _problems_or_raise(problems: list[str]) -> None:
    if problems:
        raise SpecError(problems)


@attrs.frozen
class Field:
    """One warehouse column fed by one top-level field of the message."""

    column: str
    source: str
    type: ColumnType = String()
    required: bool = False
    check: Check | None = None

    def __attrs_post_init__(self) -> None:
        _problems_or_raise(self.problems())

    def problems(self) -> list[str]:
        what = f"column {self.column!r}"
        found = identifier_problems(self.column, "column")
        if not isinstance(self.source, str) or not _SOURCE_FIELD.match(self.source):
            found.append(f"{what}: source field {self.source!r} must be letters, digits, _ . - (max 128)")
        found += _type_problems(self.type, what)
        if self.check is not None and not isinstance(self.type, (Integer, Decimal)):
            found.append(f"{what}: check {self.check.name} needs an Integer or Decimal type")
        return found


def _as_tuple(value: object) -> tuple:
    return tuple(value)  # type: ignore[arg-type]


@attrs.frozen
class Dimension:
    """A dimension table with an integer surrogate key assigned by the sink.

    SCD type 1: one row per natural key; an attribute takes the value of the latest
    message in Kafka order (within a batch, by partition then offset), and a missing
    (null) attribute never erases a known value. Across partitions Kafka defines no
    order, so when two partitions disagree the later-loaded batch wins.
    """

    name: str
    table: str
    key: str
    natural_key: tuple[Field, ...] = attrs.field(converter=_as_tuple)
    attributes: tuple[Field, ...] = attrs.field(converter=_as_tuple, default=())
    scd_type: int = 1

    def __attrs_post_init__(self) -> None:
        _problems_or_raise(self.problems())

    @property
    def sequence(self) -> str:
        """Name of the sequence that hands out this dimension's surrogate keys."""
        return f"{self.table}_SEQ"

    @property
    def columns(self) -> tuple[Field, ...]:
        return self.natural_key + self.attributes

    def problems(self) -> list[str]:
        what = f"dimension {self.name!r}"
        found = identifier_problems(self.name, "dimension name")
        found += identifier_problems(self.table, f"{what}: table")
        found += identifier_problems(self.key, f"{what}: key column")
        if not self.natural_key:
            found.append(f"{what}: needs at least one natural key field")
        found += [f"{what}: {p}" for p in _not_fields(self.columns)]
        if self.scd_type != 1:
            found.append(f"{what}: only scd_type=1 is supported")
        names = [self.key, *(f.column for f in self.columns if isinstance(f, Field)), *DIMENSION_METADATA]
        found += _duplicate_problems(names, f"{what}: column")
        return found


@attrs.frozen
class DateDimension:
    """The date dimension: ``key`` is YYYYMMDD of the event time in UTC.

    Its attributes are :data:`DATE_ATTRIBUTES`: DAY_OF_WEEK is ISO (1 = Monday … 7 =
    Sunday), WEEK_OF_YEAR is the ISO week, IS_WEEKEND is Saturday or Sunday.
    """

    table: str = "DIM_DATE"
    key: str = "DATE_KEY"

    def __attrs_post_init__(self) -> None:
        found = identifier_problems(self.table, "date dimension table")
        found += identifier_problems(self.key, "date dimension key")
        if self.key in DATE_ATTRIBUTES:
            found.append(f"date dimension key {self.key!r} clashes with an attribute")
        _problems_or_raise(found)


@attrs.frozen
class Measure:
    """A derived fact column: the product of other fact columns (e.g. price × quantity)."""

    column: str
    factors: tuple[str, ...] = attrs.field(converter=_as_tuple)
    type: ColumnType = Decimal()

    def __attrs_post_init__(self) -> None:
        found = identifier_problems(self.column, "measure")
        found += _type_problems(self.type, f"measure {self.column!r}")
        if not isinstance(self.type, (Integer, Decimal)):
            found.append(f"measure {self.column!r} must be Integer or Decimal")
        if len(self.factors) < 2:
            found.append(f"measure {self.column!r} needs at least two factors")
        _problems_or_raise(found)


@attrs.frozen
class Fact:
    """The fact table: one row per grain value, pointing at every dimension.

    A message must carry the natural key of every dimension in ``dimensions``, or it
    is rejected, except for those listed in ``optional_dimensions``: a fact without
    that natural key points at the dimension's unknown member, whose surrogate key is
    :data:`UNKNOWN_KEY` (created by the sink's ``prepare``; its natural key is NULL).
    """

    table: str
    grain: tuple[Field, ...] = attrs.field(converter=_as_tuple)
    event_time: Field
    dimensions: tuple[str, ...] = attrs.field(converter=_as_tuple)
    columns: tuple[Field, ...] = attrs.field(converter=_as_tuple, default=())
    measures: tuple[Measure, ...] = attrs.field(converter=_as_tuple, default=())
    optional_dimensions: tuple[str, ...] = attrs.field(converter=_as_tuple, default=())

    def __attrs_post_init__(self) -> None:
        found = identifier_problems(self.table, "fact table")
        if not self.grain:
            found.append("fact: needs at least one grain field")
        found += [f"fact: {p}" for p in _not_fields((*self.grain, self.event_time, *self.columns))]
        if isinstance(self.event_time, Field):
            if not isinstance(self.event_time.type, Timestamp):
                found.append(f"fact: event_time {self.event_time.column!r} must have type Timestamp")
            if not self.event_time.required:
                found.append(f"fact: event_time {self.event_time.column!r} must be required")
        _problems_or_raise(found)

    @property
    def fields(self) -> tuple[Field, ...]:
        """Grain, event time and plain columns, in table order."""
        return (*self.grain, self.event_time, *self.columns)


def _not_fields(items: tuple) -> list[str]:
    return [f"{item!r} is not a Field" for item in items if not isinstance(item, Field)]


def _duplicate_problems(names: list[str], what: str) -> list[str]:
    counts = Counter(n.upper() for n in names)
    first = {}
    for name in names:
        first.setdefault(name.upper(), name)
    return [f"{what} {first[key]!r} appears {n} times" for key, n in counts.items() if n > 1]


@attrs.frozen
class StarSchema:
    """A whole star: dimensions, an optional date dimension and one fact table."""

    name: str
    dimensions: tuple[Dimension, ...] = attrs.field(converter=_as_tuple)
    fact: Fact
    date_dimension: DateDimension | None = DateDimension()

    def __attrs_post_init__(self) -> None:
        _problems_or_raise(list(self._cross_problems()))

    def dimension(self, name: str) -> Dimension:
        """The dimension called ``name``."""
        for dim in self.dimensions:
            if dim.name == name:
                return dim
        raise KeyError(name)

    @property
    def referenced_dimensions(self) -> tuple[Dimension, ...]:
        """The dimensions the fact points at, in the fact's order."""
        return tuple(self.dimension(n) for n in self.fact.dimensions)

    @property
    def tables(self) -> tuple[str, ...]:
        """Every table of the star (dimensions, date dimension, fact)."""
        date = (self.date_dimension.table,) if self.date_dimension else ()
        return (*(d.table for d in self.dimensions), *date, self.fact.table)

    def fact_columns(self) -> list[str]:
        """Fact table columns in order: fields, dimension keys, date key, measures, metadata."""
        cols = [f.column for f in self.fact.fields]
        cols += [self.dimension(n).key for n in self.fact.dimensions if n in self._dim_names()]
        if self.date_dimension:
            cols.append(self.date_dimension.key)
        cols += [m.column for m in self.fact.measures]
        return cols + list(FACT_METADATA)

    def _dim_names(self) -> set[str]:
        return {d.name for d in self.dimensions if isinstance(d, Dimension)}

    def _cross_problems(self) -> Iterator[str]:
        yield from identifier_problems(self.name, "schema name")
        for dim in self.dimensions:
            if not isinstance(dim, Dimension):
                yield f"{dim!r} is not a Dimension"
        if not isinstance(self.fact, Fact):
            yield f"fact {self.fact!r} is not a Fact"
            return
        dims = [d for d in self.dimensions if isinstance(d, Dimension)]
        yield from _duplicate_problems([d.name for d in dims], "dimension name")
        yield from _duplicate_problems(list(self.tables), "table")
        for ref in self.fact.dimensions:
            if ref not in self._dim_names():
                yield f"fact refers to unknown dimension {ref!r} (known: {sorted(self._dim_names())})"
        yield from _duplicate_problems(list(self.fact.dimensions), "fact dimension reference")
        for ref in self.fact.optional_dimensions:
            if ref not in self.fact.dimensions:
                yield f"optional dimension {ref!r} is not one the fact refers to ({list(self.fact.dimensions)})"
        yield from _duplicate_problems(self.fact_columns(), f"fact {self.fact.table!r}: column")
        numeric = {f.column: f for f in self.fact.fields if isinstance(f.type, (Integer, Decimal))}
        for measure in self.fact.measures:
            for factor in measure.factors:
                if factor not in numeric:
                    yield (
                        f"measure {measure.column!r}: factor {factor!r} is not an Integer or "
                        f"Decimal fact column (numeric columns: {sorted(numeric)})"
                    )
                elif not numeric[factor].required:
                    yield f"measure {measure.column!r}: factor {factor!r} must be required"
        sources: dict[str, object] = {}
        for field in (*self.fact.fields, *(f for d in dims for f in d.columns)):
            seen = sources.setdefault(field.source, field.type)
            if seen != field.type:
                yield f"source field {field.source!r} is read with two types: {seen!r} and {field.type!r}"

    def source_fields(self) -> dict[str, ColumnType]:
        """Every message field the schema reads, with its type, in first-use order."""
        found: dict[str, ColumnType] = {}
        for field in self.all_fields():
            found.setdefault(field.source, field.type)
        return found

    def all_fields(self) -> tuple[Field, ...]:
        """Every field of the fact and of every dimension."""
        return (*self.fact.fields, *(f for d in self.dimensions for f in d.columns))

    def is_optional(self, dimension: Dimension) -> bool:
        """Whether facts may lack ``dimension``'s natural key (they then point at its unknown member)."""
        return dimension.name in self.fact.optional_dimensions

    def is_required(self, source: str) -> bool:
        """Whether a message must carry ``source`` (required somewhere, or a mandatory natural key)."""
        natural = {f.source for d in self.referenced_dimensions if not self.is_optional(d) for f in d.natural_key}
        return source in natural or any(f.required for f in self.all_fields() if f.source == source)

    def check_of(self, source: str) -> Check | None:
        """The range check declared on ``source`` (the first one found)."""
        return next((f.check for f in self.all_fields() if f.source == source and f.check), None)
