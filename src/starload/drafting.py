"""A first spec for a topic, drafted from a sample of its messages (``starload spec draft``).

Every leaf path of the records becomes a fact column with a declared type: from the writer
schema where the topic has one (Avro: its logical types decide, as in :mod:`starload.formats.avro`),
else from the JSON values seen (an ISO-8601 text is a ``timestamp`` or a ``date``, a number
with a fraction or the digits of one a ``decimal`` wide enough for every value seen, never a
``double``: money is exact). The grain and the event time are the best candidates found: a
field present in every message whose values are all distinct (an ``id`` by name first), and
a timestamp present in every message. Other candidates, the dimensions to consider and the
arrays (each a fact of its own: see docs/order-lines.md) are comments for the person
who edits it. The draft is a valid spec as printed: it loads a star of one fact.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping, Sequence
from decimal import Decimal, InvalidOperation
from typing import Any

import yaml

from starload.formats.avro import SEMANTIC, named, type_names, writer_kind
from starload.mapping import ISO_TIMESTAMP
from starload.spec import Format

_ISO_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_ISO_TIMESTAMP = re.compile(ISO_TIMESTAMP)
_DIGITS = re.compile(r"-?[0-9]+(\.[0-9]+)?")
#: Avro writer types (logical, else Avro) → the declared type a draft gives them.
_AVRO_TYPES = {
    "int": "integer", "long": "integer", "float": "double", "double": "double", "boolean": "boolean",
    "string": "string", "enum": "string", "uuid": "string", "date": "date",
    **dict.fromkeys(("timestamp-millis", "timestamp-micros", "local-timestamp-millis", "local-timestamp-micros"), "timestamp"),
}  # fmt: skip


class _Leaf:
    """What the sample says of one leaf path: how often it held a value, of which kinds, and whether a value repeated."""

    def __init__(self) -> None:
        self.present = 0
        self.kinds: Counter[str] = Counter()
        self.values: set[str] = set()
        self.repeated = False
        self.whole, self.scale = 0, 0

    def add(self, value: Any) -> None:
        self.present += 1
        text = str(value)
        if text in self.values:
            self.repeated = True
        self.values.add(text)
        kind = _json_kind(value)
        self.kinds[kind] += 1
        if kind in ("integer", "decimal"):
            self._digits(value)

    def _digits(self, value: Any) -> None:
        try:
            number = Decimal(str(value))
        except InvalidOperation:
            return
        _, digits, exponent = number.as_tuple()
        scale = max(0, -int(exponent))
        self.scale = max(self.scale, scale)
        self.whole = max(self.whole, len(digits) - scale)

    def declared(self) -> str:
        """The type most of the values fit (numbers: a decimal when any has a fraction); the others are left to be rejects."""
        numbers = self.kinds["integer"] + self.kinds["decimal"]
        kind, count = max([("number", numbers), *((k, n) for k, n in self.kinds.items() if k not in ("integer", "decimal"))], key=lambda kn: kn[1])
        if kind != "number" or count == 0:
            return kind
        if not self.kinds["decimal"]:
            return "integer"
        scale = max(self.scale, 2)
        return f"decimal({min(38, max(18, self.whole + scale))},{scale})"

    def misfits(self) -> int:
        """How many values seen do not fit :meth:`declared`."""
        declared = self.declared()
        fitting = {"integer": ("integer",), "string": ("string", "date", "timestamp")}.get(declared, (declared,))
        if declared.startswith("decimal"):
            fitting = ("integer", "decimal")
        return self.present - sum(self.kinds[k] for k in fitting)


def _json_kind(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "decimal"
    if isinstance(value, str):
        if _ISO_DATE.fullmatch(value):
            return "date"
        if _ISO_TIMESTAMP.fullmatch(value) and ("T" in value or " " in value):
            return "timestamp"
        if _DIGITS.fullmatch(value):
            return "decimal" if "." in value else "string"  # digits without a point: an id more often than a number
    return "string"


def _leaves(record: Any, prefix: tuple[str, ...], found: dict[tuple[str, ...], _Leaf], arrays: set[str]) -> None:
    if isinstance(record, dict):
        for key, value in record.items():
            _leaves(value, (*prefix, key), found, arrays)
    elif isinstance(record, list):
        arrays.add(".".join(prefix))
    elif record is not None and prefix:
        found.setdefault(prefix, _Leaf()).add(record)


def _avro_leaves(schema: Any, names: dict[str, Any], prefix: tuple[str, ...], found: dict[tuple[str, ...], str], arrays: set[str]) -> None:
    """The leaf paths of an Avro record schema with the declared type each gets."""
    node = named(schema, names)
    if isinstance(node, dict) and node.get("type") == "record" and node.get("connect.name") not in SEMANTIC:
        for field in node["fields"]:
            _avro_leaves(field["type"], names, (*prefix, field["name"]), found, arrays)
        return
    kind = writer_kind(node)
    if kind == "array":
        arrays.add(".".join(prefix))
        return
    if isinstance(node, dict) and node.get("connect.name") in SEMANTIC:
        kind = SEMANTIC[node["connect.name"]]
    if kind in ("decimal", "starload-variable-scale-decimal"):
        precision, scale = int(node.get("precision", 38)), int(node.get("scale", 0)) if kind == "decimal" else 6
        found[prefix] = f"decimal({min(38, precision)},{scale})"
    elif kind == "starload-local-timestamp-nanos":
        found[prefix] = "timestamp"
    elif kind in _AVRO_TYPES:
        found[prefix] = _AVRO_TYPES[kind]
    elif isinstance(node, dict) and node.get("connect.name") == "io.debezium.time.ZonedTimestamp":
        found[prefix] = "timestamp"


def _column(path: tuple[str, ...]) -> str:
    name = re.sub(r"[^A-Za-z0-9]+", "_", "_".join(path)).strip("_").upper() or "VALUE"
    return name if name[0].isalpha() else f"C_{name}"


def _source(path: tuple[str, ...]) -> str | list[str]:
    return ".".join(path) if all("." not in k for k in path) else list(path)


def draft(
    topic: str,
    records: Sequence[Mapping[str, Any]],
    *,
    value_format: Format = Format.JSON,
    writer_schema: Any = None,
    envelope: bool = False,
) -> str:
    """The YAML text of a first spec for ``topic`` from sampled ``records`` (decoded values; Debezium's rows when ``envelope``).

    ``writer_schema``: the latest writer schema seen (parsed JSON) of a framed topic, whose
    types decide; the records then only say which fields are always present and distinct.
    """
    leaves: dict[tuple[str, ...], _Leaf] = {}
    arrays: set[str] = set()
    for record in records:
        _leaves(record, (), leaves, arrays)
    objects = {p[:n] for p in leaves for n in range(1, len(p))}
    mixed = sorted(p for p in leaves if p in objects)  # an object in some messages, a value in others: read as the object
    leaves = {p: leaf for p, leaf in leaves.items() if p not in objects}
    types = {path: leaf.declared() for path, leaf in leaves.items()}
    if writer_schema is not None:
        typed: dict[tuple[str, ...], str] = {}
        root = writer_schema
        names = type_names(writer_schema)
        if envelope:
            root = next(f["type"] for f in named(root, names)["fields"] if f["name"] == "after")
        _avro_leaves(root, names, (), typed, arrays)
        types = typed
    always = {p for p in types if p in leaves and leaves[p].present == len(records)}
    # A table's change events repeat a row's key: its grain is the key, not a value seen once.
    unique = [p for p in types if p in always and (envelope or not leaves[p].repeated) and types[p] in ("string", "integer")]
    grain = sorted(unique, key=lambda p: (not p[-1].lower().endswith("id"), len(p), p))
    times = [p for p in types if types[p] == "timestamp" and p in always]
    event_time = sorted(times, key=lambda p: (not re.search(r"(time|_at|date|ts)$", p[-1].lower()), p))
    name = re.sub(r"[^A-Za-z0-9]+", "_", topic).strip("_").lower() or "star"
    comments = [f"# A first spec drafted from {len(records)} messages of topic {topic!r}: check every type, then name the dimensions."]
    fact: dict[str, Any] = {"table": f"FACT_{name.upper()}", "topic": topic}
    if value_format is not Format.JSON:
        fact["format"] = value_format.value
    if envelope:
        fact["changes"], fact["envelope"] = "latest", "debezium"
        comments.append("# Debezium change events of a table: drafted as a fact holding each row's latest state; for master data (customers),")
        comments.append("# declare a dimension with this topic and envelope: debezium instead (see docs/several-topics.md).")
    if not grain:
        comments.append("# No field was present and distinct in every message sampled: name the grain (the fields that identify a fact).")
        grain = sorted(always or types, key=lambda p: (len(p), p))[:1]
    if not event_time and not envelope:
        comments.append("# No timestamp was present in every message: name the event time (a timestamp field).")
    fact["grain"] = [{"column": _column(grain[0]), "source": _source(grain[0]), "type": types[grain[0]], "required": True}] if grain else []
    if envelope:
        fact["event_time"] = {"column": "CHANGED_AT", "source": "ts_ms", "type": "timestamp", "required": True}
    elif event_time:
        fact["event_time"] = {"column": _column(event_time[0]), "source": _source(event_time[0]), "type": "timestamp", "required": True}
    else:
        fact["event_time"] = {"column": "EVENT_TIME", "source": "event_time", "type": "timestamp", "required": True}
    fact["dimensions"] = []
    taken = {*grain[:1], *([] if envelope else event_time[:1])}
    fact["columns"] = [{"column": _column(p), "source": _source(p), "type": types[p]} for p in types if p not in taken]
    if len(unique) > 1:
        comments.append("# Other grain candidates (in every message" + ("" if envelope else ", each value once") + "): " + ", ".join(".".join(p) for p in grain[1:]))
    if len(event_time) > 1:
        comments.append("# Other event-time candidates: " + ", ".join(".".join(p) for p in event_time[1:]))
    nested = sorted({p[0] for p in types if len(p) > 1 and p[0] not in {g[0] for g in grain[:1]}})
    if nested:
        comments.append("# Objects that may be dimensions (move their id to natural_key, the rest to attributes): " + ", ".join(nested))
    odd = [f"{'.'.join(p)} ({leaves[p].misfits()} of {leaves[p].present})" for p in types if writer_schema is None and p in leaves and leaves[p].misfits()]
    if odd:
        comments.append("# Values that do not fit the type drafted, which will be rejects: " + ", ".join(odd))
    if mixed:
        comments.append("# A value in some messages, an object in others (those will be rejects): " + ", ".join(".".join(p) for p in mixed))
    if arrays:
        comments.append("# Arrays (a fact per element each, see docs/order-lines.md): " + ", ".join(sorted(arrays)))
    body = yaml.safe_dump({"name": name, "dimensions": [], "fact": fact}, sort_keys=False, allow_unicode=True, width=200, default_flow_style=None)
    return "\n".join(comments) + "\n" + body


def debezium_rows(records: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]] | None:
    """The rows of Debezium change events (``after``, else ``before``; the JSON converter's ``payload`` unwrapped), None unless every record is one."""
    events = [r["payload"] if isinstance(r.get("payload"), Mapping) and "op" not in r else r for r in records]
    if not events or not all(e.get("op") in ("c", "u", "d", "r") and ("after" in e or "before" in e) for e in events):
        return None
    return [row for e in events if isinstance(row := e.get("after") or e.get("before"), Mapping)]
