"""The declarative star schema: dimensions, the date dimension and the fact.

A :class:`StarSchema` says which message fields feed which warehouse columns, with
their types and checks; the engine, the mapping and every sink are driven by it.
Every class is frozen. A spec is validated when it is built, and the
:class:`~starload.exceptions.SpecError` lists every problem, not just the first.
The same star can be written as a YAML or TOML file (:meth:`StarSchema.from_file`,
see :mod:`starload.specfile`); each type below has a spelling in that format
(:func:`type_spelling`, :func:`parse_type`).

**Sources** are paths into the JSON message: ``"merchant.id"`` is the field ``id`` of
the object ``merchant``; ``"lines[].isbn"`` the field ``isbn`` of each element of the
array ``lines`` and ``"lines[#]"`` each element's position (0-based), which give a fact
a row per element (see :meth:`Feed.array_of`; one array level per fact). A key that itself contains a dot is written as a list of keys
instead: ``("meta", "trace.id")`` (in a file: ``source: [meta, trace.id]``). A missing
or null object on the way is a missing field; a value that is not an object where the
path goes on, or an object where a value is expected, is a reject naming the path.

Rules the mapping applies to message values (see :mod:`starload.mapping`):

* ``String`` (``string``, ``string(n)``) takes JSON strings only.
* ``Integer`` (``integer``) takes JSON integers only (``2.5`` and ``"3"`` are rejected) within 64 bits.
* ``Decimal(p, s)`` (``decimal(p,s)``) takes JSON numbers or numeric strings; a value needing more than
  ``s`` decimal places or more than ``p`` digits is rejected, never rounded. Money is always this.
* ``Double`` (``double``) takes JSON numbers (finite), for measurements that are not money.
* ``Boolean`` (``boolean``) takes JSON ``true`` and ``false`` only (``"yes"`` and ``1`` are rejected).
* ``Date`` (``date``) takes ISO ``YYYY-MM-DD`` strings.
* ``Timestamp()`` (``timestamp``) takes ISO-8601 strings; an offset is converted to UTC and a
  timestamp without offset is taken to be UTC already. ``Timestamp("epoch_s")`` and
  ``Timestamp("epoch_ms")`` (``timestamp(epoch_s)``, ``timestamp(epoch_ms)``) take JSON
  numbers of seconds or milliseconds since 1970-01-01 UTC (a fraction keeps up to
  microseconds). Every timestamp is stored timezone-aware, in UTC.
"""

from __future__ import annotations

import contextlib
import contextvars
import difflib
import enum
import json
import re
from collections import Counter
from collections.abc import Iterator
from typing import Any

import attrs

from starload.exceptions import SpecError

#: A warehouse identifier of a spec (a table, a column, a dimension's name); always quoted in SQL.
IDENTIFIER_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,127}$"
_IDENTIFIER = re.compile(IDENTIFIER_PATTERN)
_RESERVED_PREFIXES = ("_SL_", "STARLOAD_")
#: The longest source path, in characters.
MAX_SOURCE = 1024
#: Surrogate key of a dimension's unknown member (see :class:`Fact`).
UNKNOWN_KEY = -1
#: Columns starload adds to every dimension table.
DIMENSION_METADATA = ("LAST_EVENT_AT", "UPDATED_AT")
#: Columns starload adds to a dimension with a topic of its own: whether the member is known
#: from facts only so far (see :class:`Dimension`).
TOPIC_DIMENSION_METADATA = ("IS_INFERRED",)
#: Columns starload adds to a dimension whose topic holds change events (an ``envelope``):
#: whether the member's row is deleted in the source now, and when it was last deleted.
DELETE_COLUMNS = ("IS_DELETED", "DELETED_AT")
#: The source of the delete markers: not a message field, starload derives them from each change event's ``op``.
CHANGE_SOURCE = "(change event)"
#: The ``event_time`` source of a fact with an envelope that means the change event's own time (Debezium's ``ts_ms``), not a row field.
CHANGE_TIME_SOURCE = "ts_ms"
#: The most topics one star reads (each has 4 bits of an event position inside a batch).
MAX_TOPICS = 16
_TOPIC = re.compile(r"^[A-Za-z0-9._-]{1,249}$")
#: Columns starload adds to a dimension that keeps history (see :class:`Dimension`).
VERSION_COLUMNS = ("VALID_FROM", "VALID_TO", "IS_CURRENT")
#: The prefix of :func:`position_column`.
POSITION_PREFIX = "_SL_AT_"
#: The prefix of :func:`history_table`.
HISTORY_PREFIX = "STARLOAD_HISTORY_"


def history_table(table: str) -> str:
    """The table in which a dimension ``table`` that keeps history logs its observations: ``STARLOAD_HISTORY_<table>``.

    One row per event that carries a history attribute (and each batch's earliest
    event of a member): the natural key, the event time and position, and the
    history attributes' values. Versions are computed from it, so a late event can
    be placed among the events it falls between.
    """
    return HISTORY_PREFIX + table


def position_column(column: str) -> str:
    """The dimension column holding the event position of attribute ``column``'s value: ``_SL_AT_<column>``.

    A position is text that sorts in the order of the rule "event time, then
    partition, then offset": the event time in UTC with microseconds, the partition
    in 5 digits and the offset in 15 (``2024-03-01T09:30:00.000000Z 00002
    000000000001234``). NULL is before every position (a value loaded by a version of
    starload that kept no positions).
    """
    return POSITION_PREFIX + column


#: Of a fact whose topic holds change events: the column of the position of its latest change, which its delete markers follow.
DELETES_POSITION = position_column(DELETE_COLUMNS[0])


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

Where = tuple[str | int, ...]


class Problem(str):
    """One problem of a spec: its message, and ``where`` it is.

    ``where`` is a path of attribute names and list indices relative to the object
    that found the problem (``("fact", "columns", 0, "type")`` for a star), so that a
    spec file can point at the line (see :mod:`starload.specfile`).
    """

    where: Where

    def __new__(cls, message: str, where: Where = ()) -> Problem:
        self = super().__new__(cls, message)
        self.where = tuple(where)
        return self


_COLLECTOR: contextvars.ContextVar[list[tuple[object, list[Problem]]] | None] = contextvars.ContextVar(
    "starload_spec_problems", default=None
)


@contextlib.contextmanager
def deferred_validation() -> Iterator[list[tuple[object, list[Problem]]]]:
    """Inside this block, spec objects are built even when invalid, and each one's problems are appended to the list.

    This is how a spec file reports every problem of every object at once; outside it,
    an invalid object raises :class:`~starload.exceptions.SpecError`.
    """
    found: list[tuple[object, list[Problem]]] = []
    token = _COLLECTOR.set(found)
    try:
        yield found
    finally:
        _COLLECTOR.reset(token)


def _report(obj: object, problems: list[Problem]) -> None:
    if not problems:
        return
    collector = _COLLECTOR.get()
    if collector is None:
        raise SpecError(problems)
    collector.append((obj, problems))


def identifier_problems(name: object, what: str, where: Where = ()) -> list[Problem]:
    """Why ``name`` cannot be a warehouse identifier (empty when it can)."""
    if not isinstance(name, str) or not _IDENTIFIER.match(name):
        return [Problem(f"{what} {name!r} is not a valid identifier (letters, digits, _; max 128)", where)]
    if name.upper().startswith(_RESERVED_PREFIXES):
        return [Problem(f"{what} {name!r} uses a prefix reserved for starload ({', '.join(_RESERVED_PREFIXES)})", where)]
    return []


def topic_problems(topic: object, what: str, where: Where = ()) -> list[Problem]:
    """Why ``topic`` cannot be a Kafka topic name (empty when it can)."""
    if not isinstance(topic, str) or not _TOPIC.match(topic) or topic in (".", ".."):
        return [Problem(f"{what} {topic!r} is not a Kafka topic name (letters, digits, '.', '_', '-'; max 249)", where)]
    return []


# ---- column types ------------------------------------------------------------------------


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
class Double:
    """A 64-bit floating-point number, for measurements that are not money."""


@attrs.frozen
class Boolean:
    """JSON ``true`` or ``false``."""


@attrs.frozen
class Date:
    """A calendar date, given as ISO ``YYYY-MM-DD``."""


#: How a :class:`Timestamp` is written in the message.
TIMESTAMP_ENCODINGS = ("iso8601", "epoch_s", "epoch_ms")


@attrs.frozen
class Timestamp:
    """A point in time, stored timezone-aware in UTC; ``encoding`` is one of :data:`TIMESTAMP_ENCODINGS`."""

    encoding: str = "iso8601"


ColumnType = String | Integer | Decimal | Double | Boolean | Date | Timestamp
COLUMN_TYPES = (String, Integer, Decimal, Double, Boolean, Date, Timestamp)
#: The types a range check applies to.
NUMERIC_TYPES = (Integer, Decimal, Double)
#: Every spelling of a type in a spec file, as one regular expression (Python's and JSON Schema's dialects agree on it).
TYPE_PATTERN = (
    r"^(?:(string)(?:\((\d+)\))?|(integer)|(decimal)(?:\(\s*(\d+)\s*,\s*(\d+)\s*\))?|(double)|(boolean)|(date)"
    r"|(timestamp)(?:\((iso8601|epoch_s|epoch_ms)\))?)$"
)
_TYPE = re.compile(TYPE_PATTERN)
_TYPE_FORMS = {
    "string": "string or string(N)",
    "integer": "integer",
    "decimal": "decimal or decimal(P,S) with whole numbers P and S",
    "double": "double",
    "boolean": "boolean",
    "date": "date",
    "timestamp": "timestamp, timestamp(epoch_s) or timestamp(epoch_ms)",
}


def type_spelling(column_type: ColumnType) -> str:
    """How a spec file writes ``column_type`` (``decimal(12,2)``); :func:`parse_type` reads it back."""
    if isinstance(column_type, String):
        return "string" if column_type.max_length is None else f"string({column_type.max_length})"
    if isinstance(column_type, Decimal):
        return f"decimal({column_type.precision},{column_type.scale})"
    if isinstance(column_type, Timestamp):
        return "timestamp" if column_type.encoding == "iso8601" else f"timestamp({column_type.encoding})"
    return type(column_type).__name__.lower()


def parse_type(text: str) -> ColumnType:
    """The type a spec file spells ``text``; a malformed spelling raises :class:`SpecError` saying what is allowed."""
    match = _TYPE.match(text) if isinstance(text, str) else None
    if match is None:
        word = re.match(r"\s*([A-Za-z_]*)", text).group(1) if isinstance(text, str) else ""
        if word.lower() in _TYPE_FORMS:
            msg = f"{text!r} is not a type: write {_TYPE_FORMS[word.lower()]}, in lower case"
        else:
            close = difflib.get_close_matches(word.lower(), _TYPE_FORMS, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            msg = f"unknown type {text!r}{hint} (the types: {'; '.join(_TYPE_FORMS.values())})"
        raise SpecError([msg])
    g = match.groups()
    if g[0]:
        return String(int(g[1])) if g[1] else String()
    if g[3]:
        return Decimal(int(g[4]), int(g[5])) if g[4] else Decimal()
    if g[9]:
        return Timestamp(g[10] or "iso8601")
    return {"integer": Integer, "double": Double, "boolean": Boolean, "date": Date}[next(x for x in g if x)]()


class Check(enum.Enum):
    """A range check on a numeric field; a spec file writes it by its lower-case name (``non_negative``)."""

    POSITIVE = "> 0"
    NON_NEGATIVE = ">= 0"


def _type_problems(column_type: object, what: str, where: Where = ()) -> list[Problem]:
    if not isinstance(column_type, COLUMN_TYPES):
        names = ", ".join(t.__name__ for t in COLUMN_TYPES)
        return [Problem(f"{what}: type {column_type!r} is not one of {names}", where)]
    if isinstance(column_type, Decimal) and not (
        1 <= column_type.precision <= 38 and 0 <= column_type.scale <= column_type.precision
    ):
        return [
            Problem(
                f"{what}: Decimal({column_type.precision}, {column_type.scale}) needs 1 <= precision <= 38 and 0 <= scale <= precision",
                where,
            )
        ]
    if isinstance(column_type, String) and column_type.max_length is not None and column_type.max_length < 1:
        return [Problem(f"{what}: String max_length must be positive", where)]
    if isinstance(column_type, Timestamp) and column_type.encoding not in TIMESTAMP_ENCODINGS:
        return [Problem(f"{what}: Timestamp encoding {column_type.encoding!r} is not one of {', '.join(TIMESTAMP_ENCODINGS)}", where)]
    return []


# ---- sources -----------------------------------------------------------------------------

Source = str | tuple[str, ...]


def _as_source(value: object) -> object:
    """A list of keys becomes the dotted string when no key holds a dot (one spelling per path), else a tuple."""
    if isinstance(value, (list, tuple)):
        if value and all(isinstance(k, str) and k and "." not in k for k in value):
            return ".".join(value)
        return tuple(value)
    return value


def source_path(source: Source) -> tuple[str, ...]:
    """The keys from the message's top level down to the field."""
    return tuple(source.split(".")) if isinstance(source, str) else tuple(source)


def source_name(source: Source) -> str:
    """``source`` as reject reasons and messages show it: dotted, a key holding a dot in double quotes."""
    if isinstance(source, str):
        return source
    return ".".join(json.dumps(k, ensure_ascii=False) if "." in k else k for k in source)


def source_problems(source: object, what: str, where: Where = ()) -> list[Problem]:
    """Why ``source`` cannot be a path into a message (empty when it can)."""
    ok = isinstance(source, str) or (isinstance(source, tuple) and source and all(isinstance(k, str) for k in source))
    if not ok:
        return [Problem(f"{what} {source!r} must be a path: a string like merchant.id, or a list of keys", where)]
    keys = source_path(source)  # type: ignore[arg-type]
    if any(not k for k in keys):
        return [Problem(f"{what} {source_name(source)!r} has an empty key (two dots in a row, or a dot at an end)", where)]  # type: ignore[arg-type]
    if any(not ch.isprintable() for k in keys for ch in k):
        return [Problem(f"{what} {source_name(source)!r} holds a control character", where)]  # type: ignore[arg-type]
    if len(source_name(source)) > MAX_SOURCE:  # type: ignore[arg-type]
        return [Problem(f"{what} is longer than {MAX_SOURCE} characters", where)]
    marked = [n for n, k in enumerate(keys) if k.endswith((ARRAY_MARK, POSITION_MARK))]
    shown = source_name(source)  # type: ignore[arg-type]
    if any(k in (ARRAY_MARK, POSITION_MARK) for k in keys):
        return [Problem(f"{what} {shown!r}: {ARRAY_MARK} and {POSITION_MARK} follow the name of an array (lines[].isbn)", where)]
    if len(marked) > 1:
        return [Problem(f"{what} {shown!r} reads an array inside an array: one array level per fact (a fact has a row per element of one array)", where)]
    if marked and keys[marked[0]].endswith(POSITION_MARK) and marked[0] != len(keys) - 1:
        return [Problem(f"{what} {shown!r}: {POSITION_MARK} is an element's position, a number: nothing can follow it", where)]
    return []


#: A key ending in this reads each element of the array it names: ``lines[].isbn``.
ARRAY_MARK = "[]"
#: A key ending in this reads each element's position in the array it names, 0-based: ``lines[#]``.
POSITION_MARK = "[#]"


def array_of(source: Source) -> tuple[str, ...] | None:
    """The path of the array ``source`` reads an element of (``("lines",)`` for ``lines[].isbn``), None when it reads none."""
    keys = source_path(source)
    for n, key in enumerate(keys):
        for mark in (ARRAY_MARK, POSITION_MARK):
            if key.endswith(mark):
                return (*keys[:n], key[: -len(mark)])
    return None


def element_path(source: Source) -> tuple[str, ...] | None:
    """The keys of ``source`` inside an element of its array (``()``: the element itself); None for the position (``[#]``)."""
    keys = source_path(source)
    for n, key in enumerate(keys):
        if key.endswith(POSITION_MARK):
            return None
        if key.endswith(ARRAY_MARK):
            return keys[n + 1 :]
    return keys


# ---- the spec ----------------------------------------------------------------------------


@attrs.frozen
class Field:
    """One warehouse column fed by one field of the message (``source``: a path, see the module docstring)."""

    column: str
    source: Source = attrs.field(converter=_as_source)
    type: ColumnType = String()
    required: bool = False
    check: Check | None = None
    #: On a dimension attribute: keep its history (SCD type 2, see :class:`Dimension`).
    history: bool = False

    def __attrs_post_init__(self) -> None:
        _report(self, self.problems())

    @property
    def path(self) -> tuple[str, ...]:
        """The keys of :attr:`source`, top level first."""
        return source_path(self.source)

    def problems(self) -> list[Problem]:
        what = f"column {self.column!r}"
        found = identifier_problems(self.column, "column", ("column",))
        found += source_problems(self.source, f"{what}: source", ("source",))
        found += _type_problems(self.type, what, ("type",))
        if self.check is not None and not isinstance(self.type, NUMERIC_TYPES):
            found.append(Problem(f"{what}: check {self.check.name} needs an Integer, Decimal or Double type", ("check",)))
        if not isinstance(self.history, bool):
            found.append(Problem(f"{what}: history must be true or false", ("history",)))
        if not source_problems(self.source, "") and element_path(self.source) is None and not isinstance(self.type, Integer):
            found.append(Problem(f"{what}: {source_name(self.source)} is an element's position: its type is integer", ("type",)))
        return found


def delete_fields(*, history: bool = False) -> tuple[Field, Field]:
    """The delete markers starload derives from each change event's ``op`` (:data:`DELETE_COLUMNS`), as fields: ``IS_DELETED`` (a boolean; ``history``: kept as history) and ``DELETED_AT``."""
    deleted, at = DELETE_COLUMNS
    return Field(deleted, CHANGE_SOURCE, Boolean(), history=history), Field(at, CHANGE_SOURCE, Timestamp())


def _history_problems(fields: tuple, what: str, attribute: str) -> list[Problem]:
    """Problems of ``history: true`` where it means nothing (a natural key, a fact column)."""
    return [
        Problem(f"{what}: {f.column!r} cannot keep history (only a dimension attribute can)", (attribute, i, "history"))
        for i, f in enumerate(fields)
        if isinstance(f, Field) and f.history is True
    ]


def _as_tuple(value: object) -> tuple:
    return tuple(value)  # type: ignore[arg-type]


def _as_enum(kind: type[enum.Enum], value: object) -> Any:
    """``value`` as a member of ``kind`` (by member or value); any other value unchanged, for the object's checks to report."""
    try:
        return kind(value)
    except ValueError:
        return value


class Envelope(enum.Enum):
    """How a topic's messages wrap the row (a dimension's own topic, or a ``latest`` fact's); a spec file writes it by its lower-case name (``debezium``).

    ``DEBEZIUM``: the change event of Debezium's JSON converter, with or without its
    ``schema``/``payload`` wrapper: ``before``, ``after``, ``op`` (``c`` create, ``u``
    update, ``d`` delete, ``r`` snapshot read), ``ts_ms`` and ``source``. Field paths
    are read from ``after`` (from ``before`` for a delete; of a delete only the row's
    key is required), and the event time is ``ts_ms`` unless the dimension names a row
    field (``event_time``; a fact's ``event_time`` source ``ts_ms`` means the event's).
    """

    DEBEZIUM = "debezium"


class Format(enum.Enum):
    """How a topic's message values are encoded; a spec file writes it by its lower-case name (``avro``).

    ``JSON`` (the default): JSON text. ``AVRO``, ``PROTOBUF`` and ``JSON_SCHEMA``:
    Confluent's wire format (a zero byte, the writer schema's 4-byte big-endian id in the
    Schema Registry, then the Avro binary record, the Protobuf message indexes and message,
    or the JSON text). A decoded record is read as JSON is:
    records are objects, a union with null a nullable value, maps objects, arrays ``[]``
    paths; see :mod:`starload.formats` for the writer types each declared type takes.
    """

    JSON = "json"
    AVRO = "avro"
    PROTOBUF = "protobuf"
    JSON_SCHEMA = "json_schema"

    @property
    def framed(self) -> bool:
        """Whether its values carry a schema id of the Schema Registry (the loader then needs one)."""
        return self is not Format.JSON


@attrs.frozen
class EventTime:
    """Where a dimension topic's messages carry their event time (a ``timestamp`` type)."""

    source: Source = attrs.field(converter=_as_source)
    type: ColumnType = Timestamp()

    def __attrs_post_init__(self) -> None:
        found = source_problems(self.source, "event_time: source", ("source",))
        found += _type_problems(self.type, "event_time", ("type",))
        if not isinstance(self.type, Timestamp):
            found.append(Problem("event_time must have a timestamp type", ("type",)))
        _report(self, found)


@attrs.frozen
class Carried:
    """Where one fact's messages carry a ``column`` of a ``dimension`` (a natural key or an attribute), at ``source``.

    Without it, a fact's messages carry a dimension's natural key at the dimension's own
    sources; and, of a dimension without a topic of its own, every attribute too.
    """

    dimension: str
    column: str
    source: Source = attrs.field(converter=_as_source)

    def __attrs_post_init__(self) -> None:
        _report(self, source_problems(self.source, f"carries {self.dimension}.{self.column}: source", ("source",)))


@attrs.frozen
class Dimension:
    """A dimension table with an integer surrogate key assigned by the sink.

    Every rule below orders events by their event time (a fact's, or the dimension
    topic's), a tie going to the later partition, then the later offset, then (in a
    star of several topics) the topic whose name sorts later: never by the order
    messages are loaded in. A missing (null) attribute never erases a known value.

    **Where its values come from.** Without a ``topic``, from the messages of the facts
    that refer to it (in a star of one fact, from that fact's messages), at the
    fields' sources. With a ``topic`` (master data, change data capture), from that
    topic's messages, at the fields' sources, with their ``event_time`` (with
    ``envelope: debezium``, ``ts_ms`` unless named); a fact referring to it then
    carries its natural key, and the attributes it lists in ``carries``
    (:class:`Carried`). Both sources count, by event time. A member known only from
    facts so far is *inferred* (``IS_INFERRED``, attributes unknown until its record
    arrives, when it is completed in place: same surrogate key).

    * **Type 1** (every attribute by default): one row per natural key; an attribute
      takes the value of its latest event.
    * **Type 2**: when any attribute is declared ``history=True``, the table keeps one
      row per *version* of a member, each with its own surrogate key and
      :data:`VERSION_COLUMNS`: ``VALID_FROM`` (inclusive), ``VALID_TO`` (exclusive; NULL
      on the current version) and ``IS_CURRENT``. A version starts at the first event
      time at which a history attribute's value differs from the one in force (the
      state after every event of an instant counts); an event that changes nothing
      makes nothing; while a history attribute is unknown, its first known value fills
      the version in force. The first version starts at the member's earliest event.
      Type-1 attributes hold their latest value on every version. Facts point at the
      version in force at their event time (``VALID_FROM <= t < VALID_TO``), and a late
      event that splits or merges versions re-points the facts it moves.
    """

    name: str
    table: str
    key: str
    natural_key: tuple[Field, ...] = attrs.field(converter=_as_tuple)
    attributes: tuple[Field, ...] = attrs.field(converter=_as_tuple, default=())
    #: The topic of its own records (None: it is fed by facts' messages only).
    topic: str | None = None
    #: How the topic's messages wrap the row (None: the message is the row).
    envelope: Envelope | None = None
    #: Where the topic's messages carry their event time (needed without an envelope).
    event_time: EventTime | None = None
    #: How the topic's message values are encoded (:class:`Format`).
    format: Format = attrs.field(converter=lambda v: _as_enum(Format, v), default=Format.JSON)

    def __attrs_post_init__(self) -> None:
        _report(self, self.problems())

    @property
    def sequence(self) -> str:
        """Name of the sequence that hands out this dimension's surrogate keys."""
        return f"{self.table}_SEQ"

    @property
    def tracked_attributes(self) -> tuple[Field, ...]:
        """The attributes, and of a dimension whose topic holds change events the delete markers (:data:`DELETE_COLUMNS`).

        ``IS_DELETED`` is true from a delete on, false from an upsert on (NULL while the
        member is inferred); with history it keeps history, so a delete closes the
        version in force. ``DELETED_AT`` is the time of the latest delete (kept after a
        re-insert). Both follow event time like any attribute.
        """
        if self.envelope is None:
            return self.attributes
        return (*self.attributes, *delete_fields(history=any(isinstance(f, Field) and f.history is True for f in self.attributes)))

    @property
    def history_attributes(self) -> tuple[Field, ...]:
        """The attributes whose history is kept (type 2)."""
        return tuple(f for f in self.tracked_attributes if isinstance(f, Field) and f.history is True)

    @property
    def current_attributes(self) -> tuple[Field, ...]:
        """The attributes that hold their latest value only (type 1)."""
        return tuple(f for f in self.tracked_attributes if not (isinstance(f, Field) and f.history is True))

    @property
    def keeps_history(self) -> bool:
        """Whether the table holds versions (any attribute keeps history)."""
        return bool(self.history_attributes)

    @property
    def history_table(self) -> str:
        """The table of the history attributes' observed values, event by event (:func:`history_table`)."""
        return history_table(self.table)

    @property
    def columns(self) -> tuple[Field, ...]:
        return self.natural_key + self.attributes

    def problems(self) -> list[Problem]:
        what = f"dimension {self.name!r}"
        found = identifier_problems(self.name, "dimension name", ("name",))
        found += identifier_problems(self.table, f"{what}: table", ("table",))
        found += identifier_problems(self.key, f"{what}: key column", ("key",))
        if not self.natural_key:
            found.append(Problem(f"{what}: needs at least one natural key field", ("natural_key",)))
        found += _not_fields(self.natural_key, what, "natural_key") + _not_fields(self.attributes, what, "attributes")
        found += _history_problems(self.natural_key, what, "natural_key")
        if self.topic is not None:
            found += topic_problems(self.topic, f"{what}: topic", ("topic",))
            if self.envelope is None and self.event_time is None:
                found.append(Problem(f"{what}: a dimension with a topic needs an event_time (or an envelope that has one)", ("event_time",)))
        else:
            found += [Problem(f"{what}: {k} needs a topic", (k,)) for k in ("envelope", "event_time") if getattr(self, k) is not None]
            found += [Problem(f"{what}: format needs a topic", ("format",))] if self.format is not Format.JSON else []
        versions = VERSION_COLUMNS if self.keeps_history else ()
        names = [self.key, *(f.column for f in self.columns if isinstance(f, Field)), *DIMENSION_METADATA, *versions]
        names += list(TOPIC_DIMENSION_METADATA) if self.topic is not None else []
        names += list(DELETE_COLUMNS) if self.envelope is not None else []
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
        found = identifier_problems(self.table, "date dimension table", ("table",))
        found += identifier_problems(self.key, "date dimension key", ("key",))
        if self.key in DATE_ATTRIBUTES:
            found.append(Problem(f"date dimension key {self.key!r} clashes with an attribute", ("key",)))
        _report(self, found)


@attrs.frozen
class Measure:
    """A derived fact column: the product of other fact columns (e.g. price × quantity)."""

    column: str
    factors: tuple[str, ...] = attrs.field(converter=_as_tuple)
    type: ColumnType = Decimal()

    def __attrs_post_init__(self) -> None:
        found = identifier_problems(self.column, "measure", ("column",))
        found += _type_problems(self.type, f"measure {self.column!r}", ("type",))
        if not isinstance(self.type, (Integer, Decimal)):
            found.append(Problem(f"measure {self.column!r} must be Integer or Decimal", ("type",)))
        if len(self.factors) < 2:
            found.append(Problem(f"measure {self.column!r} needs at least two factors", ("factors",)))
        _report(self, found)


class Changes(enum.Enum):
    """What a later event of a fact's grain value does; a spec file writes it by its lower-case name (``latest``).

    ``INSERT`` (the default): the first event of a grain value makes its row, and
    the row never changes; a later event with the same content is a duplicate, one
    with other content a *conflict* (rejected, the first version stays). For facts
    that are events (an order placed, a payment made).

    ``LATEST``: the row holds the values of the grain value's latest event by event
    time (ties: partition, then offset, then topic, as everywhere), whatever order
    events arrive in: a late, older event changes none of them, and a redelivered
    one changes nothing. Dimension keys and the date key follow the row's
    :attr:`Fact.dated_by` column (its event time by default), so a row dated by a
    field that stays fixed (an order's ``placed_at``) keeps its date and its
    dimension versions while its status changes. :attr:`Fact.milestones` make it an
    accumulating snapshot. No event is a conflict: every valid one is loaded.
    """

    INSERT = "insert"
    LATEST = "latest"


@attrs.frozen
class Milestone:
    """A column of an accumulating snapshot: the earliest event time at which the message's ``source`` read ``equals``.

    ``source``'s value is compared as text (a status ``shipped``). The column is a
    ``timestamp``, NULL until an event meets the condition; an earlier event meeting
    it, arriving late, moves it back. With a date dimension the row also holds
    ``date_key`` (default: the column's name without a trailing ``_AT``, then
    ``_DATE_KEY``: ``SHIPPED_AT`` gives ``SHIPPED_DATE_KEY``), the milestone's date in
    the date dimension, a role of it. Only a fact with ``changes: latest`` has milestones.
    """

    column: str
    source: Source = attrs.field(converter=_as_source)
    equals: str
    date_key: str | None = None

    def __attrs_post_init__(self) -> None:
        found = identifier_problems(self.column, "milestone", ("column",))
        found += source_problems(self.source, f"milestone {self.column!r}: source", ("source",))
        if self.date_key is not None:
            found += identifier_problems(self.date_key, f"milestone {self.column!r}: date_key", ("date_key",))
        if not isinstance(self.equals, str):
            found.append(Problem(f"milestone {self.column!r}: equals must be a string (the value compared as text)", ("equals",)))
        _report(self, found)

    @property
    def date_key_column(self) -> str:
        """The column of the milestone's date key (when the star has a date dimension)."""
        if self.date_key is not None:
            return self.date_key
        stem = self.column[:-3] if self.column.upper().endswith("_AT") and len(self.column) > 3 else self.column
        return f"{stem}_DATE_KEY"


@attrs.frozen
class Updates:
    """Another topic whose events update a ``latest`` fact's rows (an order's status events, filling its milestones).

    Its messages carry the fact's grain at the sources ``grain`` (one per grain column,
    in order) and their event time at ``event_time`` (a column of the fact's, holding
    the time of the latest of these events), and fill ``columns`` and ``milestones``
    of the fact, each by the rules of :class:`Changes` and :class:`Milestone`: the
    columns follow this topic's latest event, whatever the fact's own topic says.

    An event of this topic whose grain value has no row yet makes the row, with what the
    fact's own topic fills unknown (NULL; dimension keys at the unknown member, no date
    key) until that topic's event comes and completes it in place.
    """

    topic: str
    grain: tuple[Source, ...] = attrs.field(converter=lambda v: tuple(_as_source(x) for x in v))
    event_time: Field
    columns: tuple[Field, ...] = attrs.field(converter=_as_tuple, default=())
    milestones: tuple[Milestone, ...] = attrs.field(converter=_as_tuple, default=())
    #: How the topic's message values are encoded (:class:`Format`).
    format: Format = attrs.field(converter=lambda v: _as_enum(Format, v), default=Format.JSON)

    def __attrs_post_init__(self) -> None:
        what = f"updates from {self.topic!r}"
        found = topic_problems(self.topic, f"{what}: topic", ("topic",))
        for i, source in enumerate(self.grain):
            found += source_problems(source, f"{what}: grain", ("grain", i))
        found += _not_fields(self.columns, what, "columns") + _not_fields((self.event_time,), what, "event_time")
        found += _history_problems(self.columns, what, "columns")
        found += [Problem(f"{what}: {m!r} is not a Milestone", ("milestones", i)) for i, m in enumerate(self.milestones) if not isinstance(m, Milestone)]
        if isinstance(self.event_time, Field) and (not isinstance(self.event_time.type, Timestamp) or not self.event_time.required):
            found.append(Problem(f"{what}: event_time {self.event_time.column!r} must be a required timestamp", ("event_time",)))
        if not self.columns and not self.milestones:
            found.append(Problem(f"{what}: fills nothing (give it columns or milestones)"))
        _report(self, found)

    def part(self, fact: Fact) -> Fact:
        """What this topic's messages make of ``fact``: a ``latest`` fact of the same table with only these columns and milestones."""
        grain = tuple(Field(g.column, source, g.type, required=True) for g, source in zip(fact.grain, self.grain))
        return Fact(
            table=fact.table, grain=grain, event_time=self.event_time, dimensions=(), columns=self.columns,
            topic=self.topic, changes=Changes.LATEST, milestones=self.milestones, format=self.format,
        )  # fmt: skip


@attrs.frozen
class Fact:
    """The fact table: one row per grain value, pointing at every dimension.

    A message must carry the natural key of every dimension in ``dimensions``, or it
    is rejected, except for those listed in ``optional_dimensions``: a fact without
    that natural key points at the dimension's unknown member, whose surrogate key is
    :data:`UNKNOWN_KEY` (created by the sink's ``prepare``; its natural key is NULL).

    ``changes`` says what a later event of a grain value does (:class:`Changes`):
    nothing but a duplicate or a conflict (``insert``), or update the row to the
    latest event (``latest``, with ``dated_by``, ``milestones``, ``updates`` from other
    topics and an ``envelope`` of change events: see :meth:`deletes`).
    """

    table: str
    grain: tuple[Field, ...] = attrs.field(converter=_as_tuple)
    event_time: Field
    dimensions: tuple[str, ...] = attrs.field(converter=_as_tuple)
    columns: tuple[Field, ...] = attrs.field(converter=_as_tuple, default=())
    measures: tuple[Measure, ...] = attrs.field(converter=_as_tuple, default=())
    optional_dimensions: tuple[str, ...] = attrs.field(converter=_as_tuple, default=())
    #: The topic of its messages (None: the one the loader is given, ``--topic``).
    topic: str | None = None
    #: Dimension columns its messages carry elsewhere than at the dimension's sources (:class:`Carried`).
    carries: tuple[Carried, ...] = attrs.field(converter=_as_tuple, default=())
    #: What a later event of a grain value does (:class:`Changes`).
    changes: Changes = attrs.field(converter=lambda v: _as_enum(Changes, v), default=Changes.INSERT)
    #: Of a ``latest`` fact: the timestamp column that dates the row (its date key) and picks its
    #: dimension versions (None: the event time, the row's latest event's).
    dated_by: str | None = None
    #: Of a ``latest`` fact: the accumulating snapshot's milestones (:class:`Milestone`).
    milestones: tuple[Milestone, ...] = attrs.field(converter=_as_tuple, default=())
    #: Of a ``latest`` fact: other topics whose events update its rows (:class:`Updates`).
    updates: tuple[Updates, ...] = attrs.field(converter=_as_tuple, default=())
    #: Of a ``latest`` fact: how its topic's messages wrap the row (``debezium``: change events of a table; see :meth:`deletes`).
    envelope: Envelope | None = None
    #: How its topic's message values are encoded (:class:`Format`).
    format: Format = attrs.field(converter=lambda v: _as_enum(Format, v), default=Format.JSON)

    def __attrs_post_init__(self) -> None:
        found = identifier_problems(self.table, "fact table", ("table",))
        found += self._change_problems()
        if self.topic is not None:
            found += topic_problems(self.topic, "fact: topic", ("topic",))
        if not self.grain:
            found.append(Problem("fact: needs at least one grain field", ("grain",)))
        found += _not_fields(self.grain, "fact", "grain") + _not_fields(self.columns, "fact", "columns")
        found += _not_fields((self.event_time,), "fact", "event_time")
        found += _history_problems(self.grain, "fact", "grain") + _history_problems(self.columns, "fact", "columns")
        if isinstance(self.event_time, Field) and self.event_time.history is True:
            found.append(Problem(f"fact: event_time {self.event_time.column!r} cannot keep history", ("event_time", "history")))
        if isinstance(self.event_time, Field):
            if not isinstance(self.event_time.type, Timestamp):
                found.append(Problem(f"fact: event_time {self.event_time.column!r} must have type Timestamp", ("event_time", "type")))
            if not self.event_time.required:
                found.append(Problem(f"fact: event_time {self.event_time.column!r} must be required", ("event_time", "required")))
        _report(self, found)

    def _change_problems(self) -> list[Problem]:
        found = []
        if not isinstance(self.changes, Changes):
            found.append(Problem(f"fact {self.table!r}: changes must be one of {', '.join(c.value for c in Changes)} (got {self.changes!r})", ("changes",)))
        if self.changes is Changes.INSERT:
            found += [Problem(f"fact {self.table!r}: {k} needs changes: latest", (k,)) for k in ("dated_by", "milestones", "updates") if getattr(self, k)]
        for i, u in enumerate(self.updates):
            if not isinstance(u, Updates):
                found.append(Problem(f"fact {self.table!r}: {u!r} is not an Updates", ("updates", i)))
            elif len(u.grain) != len(self.grain):
                found.append(Problem(f"fact {self.table!r}: updates from {u.topic!r} read {len(u.grain)} grain sources for {len(self.grain)} grain columns", ("updates", i, "grain")))
            elif u.topic == self.topic:
                found.append(Problem(f"fact {self.table!r}: updates from {u.topic!r}, its own topic (declare those columns on the fact)", ("updates", i, "topic")))
        if self.envelope is not None:
            if self.changes is not Changes.LATEST:
                found.append(Problem(f"fact {self.table!r}: a topic of change events (envelope) needs changes: latest", ("changes",)))
            if self.topic is None:
                found.append(Problem(f"fact {self.table!r}: a topic of change events (envelope) needs a topic", ("topic",)))
        topics = [u.topic for u in self.updates if isinstance(u, Updates)]
        found += _duplicate_problems(topics, f"fact {self.table!r}: updates from topic", ("updates",))
        found += [Problem(f"fact {self.table!r}: {m!r} is not a Milestone", ("milestones", i)) for i, m in enumerate(self.milestones) if not isinstance(m, Milestone)]
        if self.dated_by is not None:
            dated = next((f for f in self.columns if isinstance(f, Field) and f.column == self.dated_by), None)
            if dated is None or not isinstance(dated.type, Timestamp) or not dated.required:
                found.append(Problem(f"fact {self.table!r}: dated_by {self.dated_by!r} must name a required timestamp column of the fact", ("dated_by",)))
        return found

    @property
    def fields(self) -> tuple[Field, ...]:
        """Grain, event time and plain columns, in table order."""
        return (*self.grain, self.event_time, *self.columns)

    @property
    def changing(self) -> bool:
        """Whether a later event of a grain value updates its row (``changes: latest``)."""
        return self.changes is Changes.LATEST

    @property
    def dating(self) -> Field:
        """The field whose time dates a row and picks its dimension versions: ``dated_by``'s column, else the event time."""
        return next((f for f in self.columns if f.column == self.dated_by), self.event_time)

    @property
    def position_column(self) -> str:
        """Of a ``latest`` fact: the column holding the event position of the event whose values the row holds (:func:`position_column` of the event time column)."""
        return position_column(self.event_time.column)

    @property
    def deletes(self) -> tuple[Field, ...]:
        """Of a fact whose topic holds change events: the delete markers (:func:`delete_fields`; none otherwise).

        Its row keeps the values of the latest create, update or snapshot read (``c``,
        ``u``, ``r``) of its grain value by event time, and a delete (``d``) keeps them too:
        ``IS_DELETED`` and ``DELETED_AT`` follow the latest change of any kind (true and its
        time after a delete, false and NULL after a later create), so a deleted row stays
        for the history of what was loaded, and a query leaves it out with ``NOT IS_DELETED``.
        """
        return delete_fields() if self.envelope is not None else ()

    @property
    def reads_change_time(self) -> bool:
        """Whether its event time is the change event's ``ts_ms`` (a fact with an envelope whose ``event_time`` source is ``ts_ms``)."""
        return self.envelope is not None and self.event_time.source == CHANGE_TIME_SOURCE

    @property
    def rows_may_wait(self) -> bool:
        """Whether a row may lack its own values: made by :attr:`updates` first, or by a delete alone (then NULL where unknown)."""
        return bool(self.updates) or self.envelope is not None

    @property
    def parts(self) -> tuple[Fact, ...]:
        """What each topic of :attr:`updates` makes of this fact (:meth:`Updates.part`)."""
        return tuple(u.part(self) for u in self.updates if isinstance(u, Updates))

    @property
    def table_fields(self) -> tuple[Field, ...]:
        """The fields of its table, in order: :attr:`fields`, then each of :attr:`updates`' event time and columns."""
        return (*self.fields, *(f for p in self.parts for f in p.fields[len(p.grain) :]))

    @property
    def all_milestones(self) -> tuple[Milestone, ...]:
        """Its milestones, then those of :attr:`updates`."""
        return (*self.milestones, *(m for p in self.parts for m in p.milestones))

    def owners(self) -> dict[str, str]:
        """Of a ``latest`` fact: per column another topic fills (:attr:`updates`), the position column of that topic's events (the others follow :attr:`position_column`)."""
        found = {}
        for p in self.parts:
            found |= {f.column: p.position_column for f in p.fields[len(p.grain) :]} | {p.position_column: p.position_column}
        return found | {c: DELETES_POSITION for c in (*(f.column for f in self.deletes), DELETES_POSITION)} if self.deletes else found

    @property
    def position_columns(self) -> tuple[str, ...]:
        """Of a ``latest`` fact: its :attr:`position_column`, then each of :attr:`updates`', then of its change events' delete markers (none for an insert-only fact)."""
        deleted = (DELETES_POSITION,) if self.deletes else ()
        return (self.position_column, *(p.position_column for p in self.parts), *deleted) if self.changing else ()

    @property
    def read_fields(self) -> tuple[Field, ...]:
        """Every field its messages are read for: :attr:`fields`, then each milestone's source (not required; of the type a column reads it with, else a string)."""
        types = {f.source: f.type for f in self.fields}
        fields = tuple(f for f in self.fields if not (self.reads_change_time and f is self.event_time))
        return (*fields, *(Field(m.column, m.source, types.get(m.source, String())) for m in self.milestones))

    def is_optional(self, dimension: Dimension) -> bool:
        """Whether its messages may lack ``dimension``'s natural key (the fact then points at its unknown member)."""
        return dimension.name in self.optional_dimensions

    def may_point_at_unknown(self, dimension: Dimension) -> bool:
        """Whether a row may point at ``dimension``'s unknown member: its messages may lack the key, or the row may lack its own values (:attr:`rows_may_wait`)."""
        return self.is_optional(dimension) or (self.rows_may_wait and dimension.name in self.dimensions)


def _not_fields(items: tuple, what: str, attribute: str) -> list[Problem]:
    if attribute == "event_time":
        return [Problem(f"{what}: {item!r} is not a Field", (attribute,)) for item in items if not isinstance(item, Field)]
    return [
        Problem(f"{what}: {item!r} is not a Field", (attribute, i)) for i, item in enumerate(items) if not isinstance(item, Field)
    ]


def _duplicate_problems(names: list[str], what: str, where: Where = ()) -> list[Problem]:
    counts = Counter(n.upper() for n in names if isinstance(n, str))
    first: dict[str, str] = {}
    for name in names:
        if isinstance(name, str):
            first.setdefault(name.upper(), name)
    return [Problem(f"{what} {first[key]!r} appears {n} times", where) for key, n in counts.items() if n > 1]


@attrs.frozen
class Feed:
    """What one topic's messages feed: facts, or a dimension (its own topic), or both, and the dimension columns they carry.

    ``facts``: the facts with a row per message (or per element of an array, see
    :meth:`array_of`). ``dimension``: the dimension whose topic it is (None: none).
    ``carried``: per dimension the messages feed, the dimension's fields with their
    sources as paths into *these* messages (one source per column, whichever part
    of the star reads it). ``event_time``: where they carry their event time, the
    same for every part (None: a Debezium envelope's ``ts_ms``). ``topic`` None: the
    loader's ``--topic``.
    """

    topic: str | None
    facts: tuple[Fact, ...]
    dimension: Dimension | None
    carried: tuple[tuple[Dimension, tuple[Field, ...]], ...]
    event_time: EventTime | None

    @property
    def envelope(self) -> Envelope | None:
        """How the messages wrap their row (a dimension topic's envelope, or its facts')."""
        if self.dimension is not None:
            return self.dimension.envelope
        return next((f.envelope for f in self.facts if f.envelope is not None), None)

    @property
    def format(self) -> Format:
        """How the messages' values are encoded (its parts agree: :meth:`StarSchema.problems`)."""
        return self.dimension.format if self.dimension is not None else self.facts[0].format

    def fields(self) -> tuple[Field, ...]:
        """Every field the messages are read for: the facts', then the carried dimension columns."""
        return (*(f for fact in self.facts for f in fact.read_fields), *(f for _, fields in self.carried for f in fields))

    def source_fields(self) -> dict[Source, ColumnType]:
        """Every message field read, with its type, in first-use order (the event time last, when not a fact field)."""
        found: dict[Source, ColumnType] = {}
        for field in self.fields():
            found.setdefault(field.source, field.type)
        if self.event_time is not None:
            found.setdefault(self.event_time.source, self.event_time.type)
        return found

    def is_required(self, source: Source) -> bool:
        """Whether a message must carry ``source``: required somewhere, the event time, or a natural key not every fact referring to it may lack.

        Of a source inside an array's elements: whether each element must carry it.
        """
        if self.event_time is not None and source == self.event_time.source:
            return True
        natural = {
            f.source
            for dim, fields in self.carried
            if not ((refs := [x for x in self.facts if dim.name in x.dimensions]) and all(x.is_optional(dim) for x in refs))
            for f in fields
            if f.column in {k.column for k in dim.natural_key}
        }
        return source in natural or any(f.required for f in self.fields() if f.source == source)

    def check_of(self, source: Source) -> Check | None:
        """The range check declared on ``source`` (the first one found)."""
        return next((f.check for f in self.fields() if f.source == source and f.check), None)

    def fields_of(self, dimension: Dimension) -> tuple[Field, ...]:
        """``dimension``'s fields these messages carry (none when they do not feed it)."""
        return next((fields for dim, fields in self.carried if dim.name == dimension.name), ())

    @property
    def arrays(self) -> tuple[tuple[str, ...], ...]:
        """The arrays whose elements the messages are read for, in first-use order."""
        return tuple(dict.fromkeys(a for f in self.fields() if (a := array_of(f.source)) is not None))

    def array_of(self, fact: Fact) -> tuple[str, ...] | None:
        """The array whose elements are ``fact``'s rows (None: a row per message): the one its fields or its dimensions' natural keys read."""
        found = self.arrays_of(fact)
        return found[0] if found else None

    def arrays_of(self, fact: Fact) -> tuple[tuple[str, ...], ...]:
        """Every array ``fact``'s rows read (more than one is a spec problem)."""
        sources = [f.source for f in fact.read_fields]
        sources += [f.source for dim, fields in self.carried if dim.name in fact.dimensions for f in fields if f.column in {k.column for k in dim.natural_key}]
        return tuple(dict.fromkeys(a for s in sources if (a := array_of(s)) is not None))

    def dimension_array(self, dimension: Dimension) -> tuple[str, ...] | None:
        """The array whose elements are ``dimension``'s observations in these messages (None: one per message)."""
        natural = {k.column for k in dimension.natural_key}
        return next((a for f in self.fields_of(dimension) if f.column in natural and (a := array_of(f.source)) is not None), None)

    def counting_fact(self) -> Fact | None:
        """The fact whose rows count the messages (loaded or duplicates): the first insert-only one with a row per message, else the first with a row per message, else the first."""
        whole = [f for f in self.facts if self.array_of(f) is None]
        return next((f for f in whole if not f.changing), whole[0] if whole else self.facts[0] if self.facts else None)


@attrs.frozen
class StarSchema:
    """A whole star: dimensions, an optional date dimension, and one fact table (``fact``) or several (``facts``).

    Several facts share the dimensions and the date dimension (conformed dimensions):
    each reads its own topic, and a dimension may read one of its own (see
    :class:`Dimension`); one loader reads every topic of the star (:meth:`feeds`).
    :meth:`from_file` and :meth:`from_dict` build the same objects from a YAML or TOML
    spec file (see :mod:`starload.specfile`); :meth:`to_dict` gives the file's form back.
    """

    name: str
    dimensions: tuple[Dimension, ...] = attrs.field(converter=_as_tuple)
    fact: Fact | None = None
    date_dimension: DateDimension | None = DateDimension()
    facts: tuple[Fact, ...] = attrs.field(converter=_as_tuple, default=())

    def __attrs_post_init__(self) -> None:
        _report(self, list(self._cross_problems()))

    @classmethod
    def from_file(cls, path: str | Any) -> StarSchema:
        """The star declared in a ``.yaml``/``.yml`` or ``.toml`` file; :class:`SpecError` lists every problem with its line."""
        from starload.specfile import load_file

        return load_file(path)

    @classmethod
    def from_dict(cls, data: Any) -> StarSchema:
        """The star declared by ``data``, a mapping in the spec file's structure."""
        from starload.specfile import structure

        return structure(data)

    def to_dict(self) -> dict[str, Any]:
        """This star in the spec file's structure (keys left at their defaults are left out)."""
        from starload.specfile import unstructure

        return unstructure(self)

    def dimension(self, name: str) -> Dimension:
        """The dimension called ``name``."""
        for dim in self.dimensions:
            if dim.name == name:
                return dim
        raise KeyError(name)

    @property
    def all_facts(self) -> tuple[Fact, ...]:
        """Every fact of the star: ``fact``, or ``facts``."""
        return (self.fact,) if isinstance(self.fact, Fact) else tuple(f for f in self.facts if isinstance(f, Fact))

    def referenced_dimensions(self, fact: Fact) -> tuple[Dimension, ...]:
        """The dimensions ``fact`` points at, in its order."""
        return tuple(self.dimension(n) for n in fact.dimensions)

    def is_optional(self, dimension: Dimension) -> bool:
        """Whether some fact's rows may point at ``dimension``'s unknown member (:meth:`Fact.may_point_at_unknown`; the dimension then has one)."""
        return any(f.may_point_at_unknown(dimension) for f in self.all_facts)

    @property
    def tables(self) -> tuple[str, ...]:
        """Every table of the star (dimensions, their history logs, date dimension, facts)."""
        date = (self.date_dimension.table,) if self.date_dimension else ()
        logs = tuple(d.history_table for d in self.dimensions if d.keeps_history)
        return (*(d.table for d in self.dimensions), *logs, *date, *(f.table for f in self.all_facts))

    def fact_columns(self, fact: Fact) -> list[str]:
        """``fact``'s table columns in order: fields (its own, then those of its updates), dimension keys, date key, measures, milestones (each with its date key), metadata, event positions (of a ``latest`` fact)."""
        cols = [f.column for f in fact.table_fields]
        cols += [self.dimension(n).key for n in fact.dimensions if n in self._dim_names()]
        if self.date_dimension:
            cols.append(self.date_dimension.key)
        cols += [m.column for m in fact.measures]
        for m in fact.all_milestones:
            cols += [m.column, m.date_key_column] if self.date_dimension else [m.column]
        cols += [f.column for f in fact.deletes]
        return cols + list(FACT_METADATA) + list(fact.position_columns)

    @property
    def named_topics(self) -> tuple[str, ...] | None:
        """The topics the star reads when every part that reads one names it (a loader then needs no ``--topic``); else None."""
        topics = [f.topic for f in self.feeds()]
        return None if None in topics else tuple(str(t) for t in topics)

    @property
    def several_topics(self) -> bool:
        """Whether the star reads more than one topic (event positions then name their topic)."""
        return len(self.feeds()) > 1

    def parts(self) -> tuple[tuple[str | None, Fact | None, Dimension | None], ...]:
        """Each part of the star that reads a topic, in spec order: (topic, fact, None) per fact, then per topic that updates one (:meth:`Fact.parts`), (topic, None, dimension) per dimension with a topic."""
        facts = tuple((f.topic, f, None) for f in self.all_facts)
        updates = tuple((p.topic, p, None) for f in self.all_facts for p in f.parts)
        return (*facts, *updates, *((d.topic, None, d) for d in self.dimensions if isinstance(d, Dimension) and d.topic is not None))

    def feeds(self) -> tuple[Feed, ...]:
        """What each topic of the star feeds, in the order the topics first appear in the spec (facts first, then dimensions)."""
        return self._feeds_and_clashes()[0]

    def _feeds_and_clashes(self) -> tuple[tuple[Feed, ...], list[str]]:
        """The feeds, and where two parts of one topic read one dimension column at different sources."""
        only = len(self.all_facts) == 1
        found, clashes = [], []
        parts = self.parts()
        for topic in dict.fromkeys(t for t, _, _ in parts):
            facts = tuple(f for t, f, _ in parts if t == topic and f is not None)
            own = next((d for t, _, d in parts if t == topic and d is not None), None)
            sources: dict[str, dict[str, Field]] = {}
            for fact in facts:
                overrides = {(c.dimension, c.column): c.source for c in fact.carries if isinstance(c, Carried)}
                for dim in self.dimensions:
                    if dim.name not in fact.dimensions and not (only and dim.topic is None and fact in self.all_facts):
                        continue
                    natural = {f.column for f in dim.natural_key}
                    for f in dim.columns:
                        if (dim.name, f.column) in overrides or dim.topic is None or f.column in natural:
                            field = attrs.evolve(f, source=overrides.get((dim.name, f.column), f.source))
                            seen = sources.setdefault(dim.name, {}).setdefault(f.column, field)
                            if seen.source != field.source:
                                clashes.append(
                                    f"topic {topic!r}: {dim.name}.{f.column} is read at {source_name(seen.source)!r} "
                                    f"and at {source_name(field.source)!r}: a message carries a dimension column at one place"
                                )
            if own is not None:
                for f in own.columns:
                    seen = sources.setdefault(own.name, {}).setdefault(f.column, f)
                    if seen.source != f.source:
                        clashes.append(f"topic {topic!r}: {own.name}.{f.column} is read at {source_name(seen.source)!r} by a fact and at {source_name(f.source)!r} by the dimension")
            order = {d.name: n for n, d in enumerate(self.dimensions)}
            carried = tuple(
                (self.dimension(name), tuple(cols[f.column] for f in self.dimension(name).columns if f.column in cols))
                for name, cols in sorted(sources.items(), key=lambda item: order[item[0]])
            )
            if facts:
                at = facts[0].event_time
                event_time: EventTime | None = None if facts[0].reads_change_time else EventTime(at.source, at.type)
            else:
                event_time = own.event_time if own is not None else None
            found.append(Feed(topic, facts, own, carried, event_time))
        return tuple(found), clashes

    def feed(self, topic: str) -> Feed:
        """The feed of ``topic``: the one that names it, else the one that names no topic (the loader's ``--topic``)."""
        feeds = self.feeds()
        named = [f for f in feeds if f.topic == topic] or [f for f in feeds if f.topic is None]
        if not named:
            msg = f"star {self.name!r} reads no topic {topic!r} (its topics: {', '.join(str(f.topic) for f in feeds)})"
            raise KeyError(msg)
        return named[0]

    def feed_of(self, fact: Fact) -> Feed:
        """The feed whose messages ``fact``'s rows come from (``fact`` may be a part, :meth:`Fact.parts`)."""
        return next(f for f in self.feeds() if any(x is fact or x == fact for x in f.facts))

    def topic_rank(self, feed: Feed) -> int:
        """``feed``'s topic's place among the star's topics sorted by name (a tie of event positions goes to the later); 0 in a star of one topic."""
        if not self.several_topics:
            return 0
        return sorted(str(f.topic) for f in self.feeds()).index(str(feed.topic))

    def _dim_names(self) -> set[str]:
        return {d.name for d in self.dimensions if isinstance(d, Dimension)}

    def _cross_problems(self) -> Iterator[Problem]:
        yield from identifier_problems(self.name, "schema name", ("name",))
        for i, dim in enumerate(self.dimensions):
            if not isinstance(dim, Dimension):
                yield Problem(f"{dim!r} is not a Dimension", ("dimensions", i))
        if (self.fact is None) == (not self.facts):
            yield Problem("a star has a fact, or a list of facts (one of the two)", ("facts" if self.facts else "fact",))
        if self.fact is not None and not isinstance(self.fact, Fact):
            yield Problem(f"fact {self.fact!r} is not a Fact", ("fact",))
        for i, fact in enumerate(self.facts):
            if not isinstance(fact, Fact):
                yield Problem(f"fact {fact!r} is not a Fact", ("facts", i))
        facts = self.all_facts
        if not facts or len(facts) != len(self.facts or [self.fact]):
            return
        places: list[Where] = [("fact",)] if self.fact is not None else [("facts", i) for i in range(len(facts))]
        dims = [d for d in self.dimensions if isinstance(d, Dimension)]
        yield from _duplicate_problems([d.name for d in dims], "dimension name", ("dimensions",))
        yield from _duplicate_problems(list(self.tables), "table")
        yield from self._topic_problems(facts, places, dims)
        for fact, place in zip(facts, places):
            yield from self._fact_problems(fact, place)
        for feed in self.feeds():
            yield from self._source_problems(feed)
            changing = sorted({f.table for f in feed.facts if f.changing})
            fixed = sorted({f.table for f in feed.facts if not f.changing})
            if changing and fixed:
                # A conflict in an insert-only fact rejects its message whole, and a latest fact cannot take an event back.
                yield Problem(
                    f"topic {feed.topic!r} feeds {', '.join(changing)} (changes: latest) and {', '.join(fixed)} (insert-only): "
                    "a topic's facts all change or none does (declare changes: latest on both, or read the topic in two stars)"
                )

    def _topic_problems(self, facts: tuple[Fact, ...], places: list[Where], dims: list[Dimension]) -> Iterator[Problem]:
        readers = [(f.topic, f.table, place) for f, place in zip(facts, places)]
        readers += [(u.topic, f.table, (*place, "updates", i)) for f, place in zip(facts, places) for i, u in enumerate(f.updates) if isinstance(u, Updates)]
        topics = [(topic, place) for topic, _, place in readers] + [(d.topic, ("dimensions", i)) for i, d in enumerate(dims) if d.topic is not None]
        if len(topics) > 1:
            for topic, place in topics:
                if topic is None:
                    yield Problem("in a star of several parts, every fact names its topic", (*place, "topic"))
        owners: dict[str, Dimension] = {}
        for i, dim in enumerate(dims):
            if dim.topic is not None and owners.setdefault(dim.topic, dim) is not dim:
                yield Problem(f"topic {dim.topic!r} is the topic of two dimensions ({owners[dim.topic].name}, {dim.name}): a topic feeds one dimension of its own", ("dimensions", i, "topic"))
        for topic, table, place in readers:
            own = owners.get(str(topic))
            if own is not None and own.envelope is not None:
                yield Problem(
                    f"topic {topic!r} holds change events ({own.envelope.value}) of dimension {own.name!r}: it cannot feed fact {table!r} too",
                    (*place, "topic"),
                )
        wrapped: dict[str | None, set[Envelope | None]] = {}
        for f in facts:
            wrapped.setdefault(f.topic, set()).add(f.envelope)
            for u in f.updates:
                wrapped.setdefault(getattr(u, "topic", None), set()).add(None)
        for d in dims:
            if d.topic is not None and d.envelope is None:  # a topic of a dimension's change events feeds no fact (above)
                wrapped.setdefault(d.topic, set()).add(None)
        for topic, envelopes in wrapped.items():
            if len(envelopes) > 1:
                yield Problem(f"topic {topic!r}: its parts disagree on its envelope (a topic holds change events for all its parts, or for none)")
        encoded: dict[str | None, set[Format]] = {}
        for f in facts:
            encoded.setdefault(f.topic, set()).add(f.format)
            for u in f.updates:
                if isinstance(u, Updates):
                    encoded.setdefault(u.topic, set()).add(u.format)
        for d in dims:
            if d.topic is not None:
                encoded.setdefault(d.topic, set()).add(d.format)
        for topic, formats in encoded.items():
            if len(formats) > 1:
                names = ", ".join(sorted(f.value for f in formats))
                yield Problem(f"topic {topic!r}: its parts disagree on its format ({names}); a topic's values have one encoding")
        # Where each part of a topic reads its event time: the first part's place is the topic's.
        times: dict[str | None, tuple[str, Source]] = {}
        reading = [(f.topic, f"fact {f.table!r}", f.event_time.source, p) for f, p in zip(facts, places) if isinstance(f.event_time, Field)]
        reading += [(u.topic, f"updates of {f.table!r}", u.event_time.source, (*p, "updates", i)) for f, p in zip(facts, places) for i, u in enumerate(f.updates) if isinstance(u, Updates)]
        reading += [(d.topic, f"dimension {d.name!r}", d.event_time.source, ("dimensions", i)) for i, d in enumerate(dims) if d.topic and d.event_time]
        for topic, part, source, place in reading:
            first, at = times.setdefault(topic, (part, source))
            if at != source:
                yield Problem(
                    f"topic {topic!r}: {first} reads the event time at {source_name(at)!r}, {part} at {source_name(source)!r}: "
                    "a message has one event time, read at one place",
                    (*place, "event_time"),
                )
        if len({t for t, _ in topics}) > MAX_TOPICS:
            yield Problem(f"a star reads at most {MAX_TOPICS} topics ({len({t for t, _ in topics})} here)")
        if len(facts) > 1:
            for i, dim in enumerate(dims):
                if dim.topic is None and not any(dim.name in f.dimensions for f in facts):
                    yield Problem(f"dimension {dim.name!r} has no topic and no fact refers to it: nothing would feed it", ("dimensions", i))
        yield from (Problem(clash) for clash in self._feeds_and_clashes()[1])

    def _fact_problems(self, fact: Fact, place: Where) -> Iterator[Problem]:
        for i, ref in enumerate(fact.dimensions):
            if ref not in self._dim_names():
                yield Problem(f"fact refers to unknown dimension {ref!r} (known: {sorted(self._dim_names())})", (*place, "dimensions", i))
        yield from _duplicate_problems(list(fact.dimensions), "fact dimension reference", (*place, "dimensions"))
        for i, ref in enumerate(fact.optional_dimensions):
            if ref not in fact.dimensions:
                yield Problem(
                    f"optional dimension {ref!r} is not one the fact refers to ({list(fact.dimensions)})",
                    (*place, "optional_dimensions", i),
                )
        yield from _duplicate_problems(self.fact_columns(fact), f"fact {fact.table!r}: column", place)
        for i, carried in enumerate(fact.carries):
            where = (*place, "carries", i)
            if not isinstance(carried, Carried):
                yield Problem(f"fact {fact.table!r}: {carried!r} is not a Carried", where)
            elif carried.dimension not in fact.dimensions:
                yield Problem(f"fact {fact.table!r} carries {carried.dimension!r}, a dimension it does not refer to ({list(fact.dimensions)})", (*where, "dimension"))
            elif carried.column not in (columns := [f.column for f in self.dimension(carried.dimension).columns]):
                yield Problem(f"fact {fact.table!r} carries {carried.column!r}, not a column of dimension {carried.dimension!r} ({columns})", (*where, "column"))
        pairs = [f"{c.dimension}.{c.column}" for c in fact.carries if isinstance(c, Carried)]
        yield from _duplicate_problems(pairs, f"fact {fact.table!r} carries", (*place, "carries"))
        numeric = {f.column: f for f in fact.fields if isinstance(f.type, (Integer, Decimal))}
        for i, measure in enumerate(fact.measures):
            for factor in measure.factors:
                where = (*place, "measures", i, "factors")
                if factor not in numeric:
                    yield Problem(
                        f"measure {measure.column!r}: factor {factor!r} is not an Integer or "
                        f"Decimal fact column (numeric columns: {sorted(numeric)})",
                        where,
                    )
                elif not numeric[factor].required:
                    yield Problem(f"measure {measure.column!r}: factor {factor!r} must be required", where)

    def _source_problems(self, feed: Feed) -> Iterator[Problem]:
        """A source read with two types, or as a value and as an object, by one topic's messages."""
        on = f" (topic {feed.topic})" if self.several_topics and feed.topic else ""
        fields = [(f.source, f.type) for f in feed.fields() if not source_problems(f.source, "")]
        if feed.event_time is not None and not source_problems(feed.event_time.source, ""):
            fields.append((feed.event_time.source, feed.event_time.type))
        types: dict[Source, object] = {}
        for source, column_type in fields:
            seen = types.setdefault(source, column_type)
            if seen != column_type:
                yield Problem(
                    f"source field {source_name(source)!r}{on} is read with two types: "
                    f"{type_spelling(seen)} and {type_spelling(column_type)}"  # type: ignore[arg-type]
                )
        yield from self._array_problems(feed, on)
        paths = {source_path(source) for source, _ in fields}
        for source, _ in fields:
            array = array_of(source)
            clash = next((p for p in paths if array is not None and array_of(p) is None and p[: len(array)] == array), None)
            if clash is not None:
                yield Problem(
                    f"source {source_name(clash)!r}{on} reads {source_name(array)!r} as an object or a value, but {source_name(source)!r} reads it as an array"
                )
        for path in sorted(paths):
            for n in range(1, len(path)):
                if path[:n] in paths:
                    yield Problem(
                        f"source {source_name(path[:n])!r}{on} is read as a value, but {source_name(path)!r} reads it as an object"
                    )

    def _array_problems(self, feed: Feed, on: str) -> Iterator[Problem]:
        """A fact or a dimension that reads elements of arrays in a way that gives no one row per element."""
        if feed.event_time is not None and array_of(feed.event_time.source) is not None:
            yield Problem(f"event time {source_name(feed.event_time.source)!r}{on} is read from an array: a message has one event time")
        for fact in feed.facts:
            arrays = feed.arrays_of(fact)
            if len(arrays) > 1:
                names = ", ".join(source_name(a) + ARRAY_MARK for a in arrays)
                yield Problem(f"fact {fact.table!r} reads several arrays ({names}): a fact has a row per element of one array")
                continue
            if not arrays:
                continue
            array = source_name(arrays[0])
            if fact.changing:
                yield Problem(
                    f"fact {fact.table!r} has a row per element of {array}{on}: changes: latest keeps the latest event of a row per message "
                    "(a fact of elements is insert-only)"
                )
                continue
            if not any(array_of(f.source) == arrays[0] for f in fact.fields):
                dims = [d.name for d, fields in feed.carried if d.name in fact.dimensions and feed.dimension_array(d) == arrays[0]]
                yield Problem(
                    f"fact {fact.table!r} refers to dimension {dims[0]!r}, whose natural key is read from each element of {array}{on}: "
                    f"a fact refers to it with a row per element (a grain that reads {array}{POSITION_MARK} or an element field)"
                )
            elif not any(array_of(g.source) == arrays[0] for g in fact.grain):
                yield Problem(
                    f"fact {fact.table!r} has a row per element of {array}, but its grain reads nothing of the elements: "
                    f"add {array}{POSITION_MARK} (the element's position) or an element field to the grain"
                )
        for dim, fields in feed.carried:
            natural = feed.dimension_array(dim)
            for f in fields:
                array = array_of(f.source)
                if array is not None and array != natural:
                    at = f"each element of {source_name(natural)}" if natural else "one place per message"
                    yield Problem(
                        f"dimension {dim.name!r}: {f.column} is read from each element of {source_name(array)}{on}, but its natural key at {at}: "
                        "a member has one value per message"
                    )

    def all_fields(self) -> tuple[Field, ...]:
        """Every field of every fact and of every dimension."""
        return (*(f for fact in self.all_facts for f in fact.fields), *(f for d in self.dimensions for f in d.columns))
