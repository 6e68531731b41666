"""Spec files: a star declared in YAML or TOML, read into the same frozen attrs objects as the Python API.

The file's structure *is* the Python API: every key is an attrs field of
:class:`~starload.spec.StarSchema`, :class:`~starload.spec.Dimension`,
:class:`~starload.spec.DateDimension`, :class:`~starload.spec.Fact`,
:class:`~starload.spec.Field` or :class:`~starload.spec.Measure`, with the same name and
default; a type is written as :func:`~starload.spec.type_spelling` spells it
(``decimal(12,2)``), a check by its lower-case name (``non_negative``). One walker over
those attrs definitions does three jobs, so they cannot disagree:

* :func:`structure` builds the objects from plain data (:meth:`StarSchema.from_dict`);
* :func:`unstructure` gives plain data back (:meth:`StarSchema.to_dict`);
* :func:`json_schema` describes the format for editors (``starload spec schema``).

Why not cattrs: a person editing a file needs every problem at once, each with its
line, its path (``fact.columns[0].type``) and a suggestion for a near-miss key, and an
editor needs a JSON Schema; cattrs gives none of the three (its errors are exception
groups without positions), and the walker that gives them all is about as long as the
glue cattrs would need.

Every problem is found in one pass: the structural ones here (an unknown or missing
key, a value of the wrong kind, a malformed type, an unknown check), then the spec's
own validation (identifiers, references between objects), which runs on every object
whose parts could be read (:func:`~starload.spec.deferred_validation`).

TOML has no null: ``date_dimension = false`` says there is no date dimension (YAML
may say ``null`` or ``false``).
"""

from __future__ import annotations

import difflib
import enum
import re
import tomllib
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs
import yaml

from starload.exceptions import SpecError, SpecFileError
from starload.spec import (
    COLUMN_TYPES,
    IDENTIFIER_PATTERN,
    TYPE_PATTERN,
    StarSchema,
    Where,
    deferred_validation,
    parse_type,
    type_spelling,
)

#: File name endings and the format each one means.
SUFFIXES = {".yaml": "yaml", ".yml": "yaml", ".toml": "toml"}
#: Keys whose values are warehouse identifiers (the JSON Schema checks their form; the spec checks them all).
_IDENTIFIER_KEYS = frozenset({"name", "table", "key", "column", "date_key", "dated_by"})
#: Keys whose values are lists of names of other spec objects (dimensions, fact columns).
_NAME_LIST_KEYS = frozenset({"dimensions", "optional_dimensions", "factors"})
_FAILED = object()


def _path_text(path: Where) -> str:
    """``("fact", "columns", 0, "type")`` as ``fact.columns[0].type``."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (int, float)):
        return f"the number {value}"
    if isinstance(value, str):
        return f"the string {value!r}"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, Mapping):
        return "a mapping"
    return type(value).__name__


def _is_source(hint: Any) -> bool:
    return set(typing.get_args(hint)) == {str, tuple[str, ...]}


def _is_column_type(hint: Any) -> bool:
    return set(typing.get_args(hint)) == set(COLUMN_TYPES)


def _optional(hint: Any) -> Any | None:
    """``X`` of ``X | None`` (None for any other hint)."""
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return rest[0] if len(rest) == 1 else None
    return None


class _Structurer:
    """Builds spec objects from plain data, collecting every problem with its path."""

    def __init__(self) -> None:
        self.problems: list[tuple[Where, str]] = []

    def fail(self, path: Where, message: str) -> object:
        self.problems.append((path, message))
        return _FAILED

    def value(self, hint: Any, data: Any, path: Where) -> Any:
        inner = _optional(hint)
        if inner is not None:
            if data is None or (data is False and attrs.has(inner)):
                return None
            return self.value(inner, data, path)
        if attrs.has(hint):
            return self.object(hint, data, path)
        if _is_column_type(hint):
            if not isinstance(data, str):
                return self.fail(path, f"expected a type such as string(64) or decimal(12,2), got {_kind(data)}")
            try:
                return parse_type(data)
            except SpecError as exc:
                return self.fail(path, exc.problems[0])
        if _is_source(hint):
            if isinstance(data, list) and data and all(isinstance(k, str) for k in data):
                return tuple(data)
            if isinstance(data, str):
                return data
            return self.fail(path, f"expected a path such as merchant.id (or a list of keys), got {_kind(data)}")
        if isinstance(hint, type) and issubclass(hint, enum.Enum):
            names = {member.name.lower(): member for member in hint}
            if isinstance(data, str) and data in names:
                return names[data]
            return self.fail(path, f"unknown {hint.__name__.lower()} {data!r}{_suggest(data, names)} (one of: {', '.join(names)})")
        if typing.get_origin(hint) is tuple:
            (item, _ellipsis) = typing.get_args(hint)
            if not isinstance(data, list):
                return self.fail(path, f"expected a list, got {_kind(data)}")
            items = [self.value(item, element, (*path, i)) for i, element in enumerate(data)]
            return _FAILED if any(x is _FAILED for x in items) else tuple(items)
        return self.scalar(hint, data, path)

    def scalar(self, hint: Any, data: Any, path: Where) -> Any:
        if hint is bool:
            if isinstance(data, bool):
                return data
            return self.fail(path, f"expected true or false, got {_kind(data)}")
        if hint is int:
            if isinstance(data, int) and not isinstance(data, bool):
                return data
            return self.fail(path, f"expected a whole number, got {_kind(data)}")
        if hint is str:
            if isinstance(data, str):
                return data
            yaml_hint = " (YAML reads yes, no, on and off as true or false: put the name in quotes)" if isinstance(data, bool) else ""
            return self.fail(path, f"expected a string, got {_kind(data)}{yaml_hint}")
        msg = f"no file spelling for {hint!r}"  # a spec class grew a field of a kind this walker does not know
        raise TypeError(msg)

    def object(self, cls: type, data: Any, path: Where) -> Any:
        if not isinstance(data, Mapping):
            return self.fail(path, f"expected a mapping of {', '.join(a.name for a in attrs.fields(cls))}, got {_kind(data)}")
        fields = {a.name: a for a in attrs.fields(cls)}
        meant = set()
        for key in data:
            if key not in fields:
                close = _close(key, fields)
                meant.update(close)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                self.fail((*path, key), f"unknown key {key!r}{hint} (the keys of {_what(cls)}: {', '.join(fields)})")
        hints = typing.get_type_hints(cls)
        arguments, substituted = {}, False
        for name, field in fields.items():
            if name in data:
                arguments[name] = self.value(hints[name], data[name], (*path, name))
            elif field.default is attrs.NOTHING:
                needed = ", ".join(n for n, f in fields.items() if f.default is attrs.NOTHING)
                arguments[name] = _FAILED if name in meant else self.fail(path, f"missing key {name!r} ({_what(cls)} needs {needed})")
            if arguments.get(name) is _FAILED and field.default is not attrs.NOTHING:
                # Reported already; build with the default, so that the objects around it are still checked.
                arguments[name], substituted = _default(field), True
        if any(v is _FAILED for v in arguments.values()):
            return _FAILED
        with deferred_validation() as found:
            built = cls(**arguments)
        for obj, problems in found:
            if not (substituted and obj is built):  # its own checks would judge the stand-in default
                self.problems += [((*path, *p.where), str(p)) for p in problems]
        return built


def _default(field: attrs.Attribute) -> Any:  # type: ignore[type-arg]
    return field.default.factory() if isinstance(field.default, attrs.Factory) else field.default  # type: ignore[arg-type, attr-defined]


def _what(cls: type) -> str:
    return {"StarSchema": "a star", "DateDimension": "the date dimension", "Fact": "the fact"}.get(cls.__name__, f"a {cls.__name__.lower()}")


def _close(word: object, choices: Mapping[str, Any] | list[str]) -> list[str]:
    """The one choice ``word`` most likely misspells or shortens (none when nothing is close)."""
    if not isinstance(word, str) or not word:
        return []
    return difflib.get_close_matches(word, list(choices), n=1) or [c for c in choices if c.startswith(word)][:1]


def _suggest(word: object, choices: Mapping[str, Any] | list[str]) -> str:
    close = _close(word, choices)
    return f"; did you mean {close[0]!r}?" if close else ""


def structure(data: Any, *, lines: Mapping[Where, int] | None = None, file: str | None = None) -> StarSchema:
    """The :class:`StarSchema` ``data`` declares; :class:`SpecFileError` lists every problem (with its line, given ``lines``)."""
    structurer = _Structurer()
    built = structurer.value(StarSchema, data, ())
    if structurer.problems or built is _FAILED:
        raise SpecFileError(file, [_located(path, message, lines, file) for path, message in structurer.problems])
    return built


def _located(path: Where, message: str, lines: Mapping[Where, int] | None, file: str | None) -> str:
    """``file:line: path: message``, with the line of the nearest part of ``path`` the file has."""
    where = _path_text(path)
    text = f"{where}: {message}" if where else message
    if lines is None:
        return text
    line = next((lines[path[:n]] for n in range(len(path), -1, -1) if path[:n] in lines), None)
    return f"{file or '<spec>'}:{line}: {text}" if line else text


def load_file(path: str | Path) -> StarSchema:
    """The star declared in a YAML (``.yaml``, ``.yml``) or TOML (``.toml``) file."""
    path = Path(path)
    kind = SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise SpecFileError(str(path), [f"{path}: a spec file's name ends in {', '.join(SUFFIXES)}, which says its format"])
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecFileError(str(path), [f"{path}: cannot read it: {exc}"]) from None
    data, lines, read_problems = (read_yaml if kind == "yaml" else read_toml)(text)
    problems = [f"{path}:{line}: {message}" for line, message in read_problems]
    if problems and not lines:  # not valid YAML or TOML: nothing more to judge
        raise SpecFileError(str(path), problems)
    try:
        schema = structure(data, lines=lines, file=str(path))
    except SpecFileError as exc:
        raise SpecFileError(str(path), problems + exc.problems) from None
    if problems:
        raise SpecFileError(str(path), problems)
    return schema


# ---- reading the formats, with lines ---------------------------------------------------------

Read = tuple[Any, dict[Where, int], list[tuple[int, str]]]


def read_yaml(text: str) -> Read:
    """(data, line of every key and item, syntax problems and repeated keys as (line, message))."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        return None, {}, [((mark.line + 1) if mark else 1, f"not valid YAML: {exc.problem or exc.context}")]
    finally:
        loader.dispose()
    lines: dict[Where, int] = {}
    problems: list[tuple[int, str]] = []

    def walk(node: yaml.Node, path: Where) -> None:
        lines.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            seen: dict[object, int] = {}
            for key_node, value_node in node.value:
                key, line = key_node.value, key_node.start_mark.line + 1
                if key in seen:
                    where = _path_text((*path, key))
                    problems.append((line, f"{where}: key {key!r} appears again (first on line {seen[key]}); YAML would keep only the last"))
                seen.setdefault(key, line)
                lines.setdefault((*path, key), line)
                walk(value_node, (*path, key))
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                walk(item, (*path, i))

    if node is not None:
        walk(node, ())
    return data, lines, problems


def read_toml(text: str) -> Read:
    """(data, line of every key and item, syntax problems as (line, message))."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        found = re.search(r"\(at line (\d+)", str(exc))
        reason = re.sub(r" \(at line.*", "", str(exc))
        return None, {}, [(int(found.group(1)) if found else 1, f"not valid TOML: {reason}")]
    return data, _TomlLines(text).run(), []


class _TomlLines:
    """The line of every key, table and array item of a TOML document that ``tomllib`` has already accepted.

    ``tomllib`` gives no positions, so this scanner follows just enough of TOML (tables,
    arrays of tables, dotted keys, inline tables, arrays, the four kinds of strings,
    comments) to know where each path starts.
    """

    _BARE = re.compile(r"[A-Za-z0-9_-]+")
    _STRING = re.compile(r'"""(?:\\.|[^\\])*?"""|\'\'\'.*?\'\'\'|"(?:\\.|[^"\\\n])*"|\'[^\'\n]*\'', re.S)

    def __init__(self, text: str) -> None:
        self.text, self.pos = text, 0
        self.lines: dict[Where, int] = {}
        self.tables: dict[Where, int] = {}  # array-of-tables path → items so far

    @property
    def line(self) -> int:
        return self.text.count("\n", 0, self.pos) + 1

    def run(self) -> dict[Where, int]:
        current: Where = ()
        while self._skip(newlines=True):
            if self.text.startswith("[[", self.pos):
                self.pos += 2
                keys = self._keys()
                table = (*self._resolve(keys[:-1]), keys[-1])
                self.lines.setdefault(table, self.line)
                n = self.tables.get(table, 0)
                self.tables[table] = n + 1
                current = (*table, n)
                self.lines[current] = self.line
                self.pos = self.text.find("]]", self.pos) + 2
            elif self.text.startswith("[", self.pos):
                self.pos += 1
                current = self._resolve(self._keys())
                self.lines.setdefault(current, self.line)
                self.pos = self.text.find("]", self.pos) + 1
            else:
                self._pair(current)
        return self.lines

    def _resolve(self, keys: list[str]) -> Where:
        """A table header's keys as a path, an array of tables standing for its last item."""
        path: Where = ()
        for key in keys:
            path = (*path, key)
            if path in self.tables:
                path = (*path, self.tables[path] - 1)
        return path

    def _skip(self, *, newlines: bool) -> bool:
        """Skip blanks and comments (and line ends with ``newlines``); whether text is left."""
        while self.pos < len(self.text):
            ch = self.text[self.pos]
            if ch == "#":
                end = self.text.find("\n", self.pos)
                self.pos = len(self.text) if end < 0 else end
            elif ch in " \t\r" or (newlines and ch == "\n"):
                self.pos += 1
            else:
                return True
        return False

    def _keys(self) -> list[str]:
        keys = []
        while True:
            self._skip(newlines=False)
            string = self._STRING.match(self.text, self.pos)
            if string:
                keys.append(tomllib.loads(f"k = {string.group()}")["k"])
                self.pos = string.end()
            else:
                bare = self._BARE.match(self.text, self.pos)
                keys.append(bare.group() if bare else "")
                self.pos = bare.end() if bare else self.pos + 1
            self._skip(newlines=False)
            if not self.text.startswith(".", self.pos):
                return keys
            self.pos += 1

    def _pair(self, table: Where) -> None:
        line = self.line
        keys = self._keys()
        for n in range(1, len(keys) + 1):
            self.lines.setdefault((*table, *keys[:n]), line)
        self._skip(newlines=False)
        self.pos += 1  # the "="
        self._value((*table, *keys))

    def _value(self, path: Where) -> None:
        self._skip(newlines=True)
        ch = self.text[self.pos : self.pos + 1]
        if ch == "{":
            self.pos += 1
            while self._skip(newlines=True) and self.text[self.pos] != "}":
                if self.text[self.pos] == ",":
                    self.pos += 1
                    continue
                self._pair(path)
            self.pos += 1
        elif ch == "[":
            self.pos += 1
            i = 0
            while self._skip(newlines=True) and self.text[self.pos] != "]":
                if self.text[self.pos] == ",":
                    self.pos += 1
                    continue
                self.lines.setdefault((*path, i), self.line)
                self._value((*path, i))
                i += 1
            self.pos += 1
        else:
            string = self._STRING.match(self.text, self.pos)
            if string:
                self.pos = string.end()
            else:
                end = re.compile(r"[,\]}\n#]").search(self.text, self.pos)
                self.pos = end.start() if end else len(self.text)


# ---- back to plain data, and the JSON Schema ------------------------------------------------


def unstructure(obj: Any) -> Any:
    """Plain data (the file's structure) for a spec object; keys at their defaults are left out."""
    if attrs.has(type(obj)) and not isinstance(obj, COLUMN_TYPES):
        found = {}
        for field in attrs.fields(type(obj)):
            value = getattr(obj, field.name)
            if field.default is attrs.NOTHING or value != _default(field):
                found[field.name] = unstructure(value)
        return found
    if isinstance(obj, COLUMN_TYPES):
        return type_spelling(obj)
    if isinstance(obj, enum.Enum):
        return obj.name.lower()
    if isinstance(obj, tuple):
        return [unstructure(x) for x in obj]
    return obj


def json_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of the spec file format, from the same attrs definitions :func:`structure` reads."""
    definitions: dict[str, Any] = {}

    def of(hint: Any, key: str) -> dict[str, Any]:
        inner = _optional(hint)
        if inner is not None:
            alternatives = [of(inner, key), {"type": "null"}]
            return {"anyOf": [*alternatives, {"const": False}] if attrs.has(inner) else alternatives}
        if attrs.has(hint):
            if hint.__name__ not in definitions:
                definitions[hint.__name__] = {}
                definitions[hint.__name__] = describe(hint)
            return {"$ref": f"#/$defs/{hint.__name__}"}
        if _is_column_type(hint):
            return {"type": "string", "pattern": TYPE_PATTERN}
        if _is_source(hint):
            key_text = {"type": "string", "minLength": 1}
            return {"oneOf": [key_text, {"type": "array", "items": key_text, "minItems": 1}]}
        if isinstance(hint, type) and issubclass(hint, enum.Enum):
            return {"enum": [member.name.lower() for member in hint]}
        if typing.get_origin(hint) is tuple:
            item = of(typing.get_args(hint)[0], "")
            if key in _NAME_LIST_KEYS and item == {"type": "string"}:
                item = {"type": "string", "pattern": IDENTIFIER_PATTERN}
            return {"type": "array", "items": item}
        if hint is str:
            return {"type": "string", "pattern": IDENTIFIER_PATTERN} if key in _IDENTIFIER_KEYS else {"type": "string"}
        return {"type": {bool: "boolean", int: "integer"}[hint]}

    def describe(cls: type) -> dict[str, Any]:
        hints = typing.get_type_hints(cls)
        properties = {}
        for field in attrs.fields(cls):
            properties[field.name] = of(hints[field.name], field.name)
            default = unstructure(field.default) if field.default is not attrs.NOTHING else None
            if default is not None and not isinstance(field.default, attrs.Factory):  # type: ignore[arg-type]
                properties[field.name]["default"] = default
        required = [f.name for f in attrs.fields(cls) if f.default is attrs.NOTHING]
        doc = (cls.__doc__ or "").strip().split("\n")[0]
        return {"type": "object", "description": doc, "properties": properties, "required": required, "additionalProperties": False}

    of(StarSchema, "")
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "starload star spec",
        "$ref": "#/$defs/StarSchema",
        "$defs": definitions,
    }

