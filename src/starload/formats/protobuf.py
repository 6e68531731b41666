"""Protobuf messages of a writer schema (Confluent's wire format), as the JSON text the mapping reads.

The registry serves a Protobuf schema as its serialized ``FileDescriptorProto``
(``?format=serialized``, base64), as confluent-kafka's own deserializer asks for it. After
the schema id, a value carries the message's indexes in the file (Confluent's framing: a
zigzag varint count, then each index; a single zero byte for the first message), then the
message.

A message becomes a JSON object by its fields' names (proto3 fields without presence
that hold their default are written, as the deserializer reads them: a quantity of 0 is
0, not missing; a field with presence that is unset is missing). 64-bit integers stay
numbers (Protobuf's own JSON mapping writes them as strings), enums are their names,
``google.protobuf.Timestamp`` an ISO-8601 instant, the wrapper types their value, and
``confluent.type.Decimal`` (Confluent's decimal: the unscaled value's big-endian bytes
and a scale) its exact digits. A schema importing any other file is not read (its
messages are rejects naming the import).
"""

from __future__ import annotations

import base64
import decimal
from collections.abc import Mapping
from typing import Any

import orjson
from confluent_kafka.schema_registry.confluent.type import decimal_pb2
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, timestamp_pb2, wrappers_pb2
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import DecodeError, Message

from starload.formats.avro import accepted, exact_decimal, path_tree
from starload.spec import (
    ARRAY_MARK,
    POSITION_MARK,
    Boolean,
    ColumnType,
    Decimal,
    Double,
    Integer,
    Source,
    Timestamp,
    source_path,
    type_spelling,
)

#: The files a schema may import: each is in every reader's pool.
KNOWN_IMPORTS = {f.DESCRIPTOR.name: f for f in (timestamp_pb2, wrappers_pb2, decimal_pb2)}
_WRAPPERS = {
    f"google.protobuf.{name}"
    for name in (
        "DoubleValue",
        "FloatValue",
        "Int64Value",
        "UInt64Value",
        "Int32Value",
        "UInt32Value",
        "BoolValue",
        "StringValue",
        "BytesValue",
    )
}
_INTEGERS = {
    getattr(FieldDescriptor, f"TYPE_{t}")
    for t in ("INT32", "INT64", "UINT32", "UINT64", "SINT32", "SINT64", "FIXED32", "FIXED64", "SFIXED32", "SFIXED64")
}
#: A field's type → its writer type in :data:`~starload.formats.avro.ACCEPTS`' terms.
_KINDS = {FieldDescriptor.TYPE_DOUBLE: "double", FieldDescriptor.TYPE_FLOAT: "float", FieldDescriptor.TYPE_BOOL: "boolean",
          FieldDescriptor.TYPE_STRING: "string", FieldDescriptor.TYPE_ENUM: "enum", FieldDescriptor.TYPE_BYTES: "bytes",
          **dict.fromkeys(_INTEGERS, "long")}  # fmt: skip
_MESSAGE_KINDS = {"google.protobuf.Timestamp": "timestamp-micros", "confluent.type.Decimal": "decimal"}


def _varint(data: bytes, at: int) -> tuple[int, int]:
    """A zigzag-encoded varint of ``data`` at ``at``, and where the next value starts."""
    shift = result = 0
    while True:
        if at >= len(data):
            raise ValueError("the message indexes end before their last byte")
        byte = data[at]
        result |= (byte & 0x7F) << shift
        at += 1
        if not byte & 0x80:
            return (result >> 1) ^ -(result & 1), at
        shift += 7


def message_indexes(payload: bytes) -> tuple[list[int], bytes]:
    """The message indexes after the schema id (``[0]``: the file's first message) and the message's bytes."""
    count, at = _varint(payload, 0)
    if count == 0:
        return [0], payload[at:]
    if count < 0 or count > 100:
        raise ValueError(f"not Confluent's Protobuf framing: {count} message indexes")
    indexes = []
    for _ in range(count):
        index, at = _varint(payload, at)
        indexes.append(index)
    return indexes, payload[at:]


def _pool() -> descriptor_pool.DescriptorPool:
    """A descriptor pool holding the files a schema may import (:data:`KNOWN_IMPORTS`)."""
    pool = descriptor_pool.DescriptorPool()
    for known in KNOWN_IMPORTS.values():
        pool.AddSerializedFile(known.DESCRIPTOR.serialized_pb)
    return pool


class ProtobufReader:
    """The messages of one writer schema (its registry text ``schema_str``: a base64 ``FileDescriptorProto``); ValueError when it is none."""

    def __init__(self, schema_str: str) -> None:
        try:
            self.file = descriptor_pb2.FileDescriptorProto.FromString(
                base64.b64decode(schema_str.encode("ascii"), validate=True)
            )
        except (ValueError, DecodeError) as exc:
            raise ValueError(
                f"not a serialized Protobuf file descriptor (the registry's format=serialized): {exc}"
            ) from None
        unknown = [d for d in self.file.dependency if d not in KNOWN_IMPORTS]
        if unknown:
            raise ValueError(f"it imports {', '.join(unknown)}: only {', '.join(sorted(KNOWN_IMPORTS))} are read")
        self.file.name = self.file.name or "writer.proto"
        try:
            self._descriptor = _pool().Add(self.file)
        except (TypeError, KeyError, ValueError) as exc:
            raise ValueError(f"not a Protobuf file the descriptor pool takes: {exc}") from None
        self._classes: dict[tuple[int, ...], type[Message]] = {}

    def message(self, indexes: list[int]) -> Descriptor:
        """The message type at ``indexes`` (a top-level message, then nested ones)."""
        try:
            found = self._descriptor.message_types_by_name[self.file.message_type[indexes[0]].name]
            for index in indexes[1:]:
                found = found.nested_types[index]
        except IndexError:
            raise ValueError(f"no message at indexes {indexes} of its schema") from None
        return found

    def text(self, payload: bytes) -> str:
        """The message encoded in ``payload`` (its indexes, then the message) as JSON text; ValueError when it is none."""
        indexes, data = message_indexes(payload)
        key = tuple(indexes)
        if key not in self._classes:
            self._classes[key] = message_factory.GetMessageClass(self.message(indexes))
        try:
            message = self._classes[key].FromString(data)
        except DecodeError as exc:
            raise ValueError(f"not a Protobuf message of its schema: {exc}") from None
        return orjson.dumps(_record(message)).decode()

    def problems(self, fields: Mapping[Source, ColumnType], *, within: tuple[str, ...] = ()) -> list[str]:
        """Why the spec's paths and declared types cannot be read from the first message (empty when they can)."""
        root = self.message([0])
        for key in within:
            field = root.fields_by_name.get(key)
            if field is None or field.message_type is None:
                return [f"{'.'.join(within)}: not a message of the writer schema"]
            root = field.message_type
        return [
            p
            for source, declared in fields.items()
            if (p := _path_problem(root, source_path(source), declared)) is not None
        ]


def _repeated(field: FieldDescriptor) -> bool:
    """Whether a field is repeated (``is_repeated`` in newer protobuf releases, ``label`` in older ones)."""
    found = getattr(field, "is_repeated", None)
    return bool(found) if found is not None else field.label == FieldDescriptor.LABEL_REPEATED


def _kind(field: FieldDescriptor) -> str:
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        name = field.message_type.full_name
        if name in _WRAPPERS:
            return _KINDS[field.message_type.fields_by_name["value"].type]
        return _MESSAGE_KINDS.get(name, "map" if field.message_type.GetOptions().map_entry else "record")
    return _KINDS.get(field.type, "unknown")


def _path_problem(root: Descriptor, keys: tuple[str, ...], declared: ColumnType) -> str | None:
    if keys[-1].endswith(POSITION_MARK):  # an element's position is a number whatever the field holds
        return None
    message: Descriptor | None = root
    field: FieldDescriptor | None = None
    for n, key in enumerate(keys):
        name = key.removesuffix(ARRAY_MARK)
        if field is not None and _kind(field) == "map":  # this key is one of the map's keys
            field = field.message_type.fields_by_name["value"]
            message = field.message_type if _kind(field) in ("record", "map") else None
            continue
        if message is None:
            return f"{'.'.join(keys[:n])}: the writer type {_kind(field) if field else '?'} has no field {name!r}"
        field = message.fields_by_name.get(name)
        if field is None:
            return None  # absent: read as missing, as a JSON message without the key
        if key.endswith(ARRAY_MARK) and not _repeated(field):
            return f"{'.'.join(keys[: n + 1])}: the writer type {_kind(field)} is not repeated"
        message = field.message_type if _kind(field) in ("record", "map") else None
    assert field is not None
    repeated = _repeated(field) and _kind(field) != "map"
    if repeated and not keys[-1].endswith(ARRAY_MARK):
        return f"{'.'.join(keys)}: the writer type repeated {_kind(field)} cannot become {type_spelling(declared)}"
    if _kind(field) in accepted(declared):
        return None
    return f"{'.'.join(keys)}: the writer type {_kind(field)} cannot become {type_spelling(declared)}"


def _record(message: Message) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for field in message.DESCRIPTOR.fields:
        value = getattr(message, field.name)
        if _repeated(field):
            if field.message_type is not None and field.message_type.GetOptions().map_entry:
                found[field.name] = {
                    str(k): _value(field.message_type.fields_by_name["value"], v) for k, v in value.items()
                }
            else:
                found[field.name] = [_value(field, v) for v in value]
        elif field.has_presence and not message.HasField(field.name):
            continue
        else:
            found[field.name] = _value(field, value)
    return found


def _value(field: FieldDescriptor, value: Any) -> Any:
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        name = field.message_type.full_name
        if name == "google.protobuf.Timestamp":
            return value.ToJsonString()
        if name == "confluent.type.Decimal":
            return format(exact_decimal(value.value, value.scale), "f")
        if name in _WRAPPERS:
            return _value(field.message_type.fields_by_name["value"], value.value)
        return _record(value)
    if field.type == FieldDescriptor.TYPE_ENUM:
        known = field.enum_type.values_by_number.get(value)
        return known.name if known is not None else value
    if field.type == FieldDescriptor.TYPE_BYTES:
        return base64.b64encode(value).decode()
    return value


# ---- writing: a file descriptor holding what the spec reads of a topic, and its messages ---------

_DECLARED = {
    Integer: FieldDescriptor.TYPE_INT64,
    Double: FieldDescriptor.TYPE_DOUBLE,
    Boolean: FieldDescriptor.TYPE_BOOL,
}


def file_for(fields: Mapping[Source, tuple[ColumnType, bool]], name: str) -> descriptor_pb2.FileDescriptorProto:
    """A proto3 file whose first message holds ``fields`` (per path, its declared type and whether it is required) at their paths.

    Objects on the way are messages, ``lines[]`` a repeated message; a decimal is a
    ``confluent.type.Decimal``, a timestamp a ``google.protobuf.Timestamp``, a date its ISO
    text; a field not required has presence (proto3 ``optional``).
    """
    file = descriptor_pb2.FileDescriptorProto(
        name=f"{name}.proto", package="starload", syntax="proto3", dependency=sorted(KNOWN_IMPORTS)
    )
    _message(file.message_type.add(name=_proto_name(name)), path_tree(fields))
    return file


def _message(message: descriptor_pb2.DescriptorProto, tree: dict[str, Any]) -> None:
    field_type = descriptor_pb2.FieldDescriptorProto
    for number, (key, node) in enumerate(tree.items(), 1):
        clean, repeated = key.removesuffix(ARRAY_MARK), key.endswith(ARRAY_MARK)
        field = message.field.add(
            name=clean, number=number, label=field_type.LABEL_REPEATED if repeated else field_type.LABEL_OPTIONAL
        )
        if isinstance(node, dict):
            nested = message.nested_type.add(name=_proto_name(clean) + "Message")
            _message(nested, node)
            field.type, field.type_name = field_type.TYPE_MESSAGE, nested.name
            continue
        declared, required = node
        if isinstance(declared, Decimal):
            field.type, field.type_name = field_type.TYPE_MESSAGE, ".confluent.type.Decimal"
        elif isinstance(declared, Timestamp) and declared.encoding == "iso8601":
            field.type, field.type_name = field_type.TYPE_MESSAGE, ".google.protobuf.Timestamp"
        else:
            field.type = _DECLARED.get(
                type(declared), field_type.TYPE_INT64 if isinstance(declared, Timestamp) else field_type.TYPE_STRING
            )
            if not required and not repeated:
                field.proto3_optional, field.oneof_index = True, len(message.oneof_decl)
                message.oneof_decl.add(name=f"_{clean}")


def _proto_name(text: str) -> str:
    cleaned = "".join(c if c.isalnum() else "_" for c in text)
    return cleaned[:1].upper() + cleaned[1:] if cleaned[:1].isalpha() else f"M_{cleaned}"


class ProtobufWriter:
    """Writes JSON-shaped values (a generator's events) as messages of ``file``'s first message, with their indexes (``[0]``)."""

    def __init__(self, file: descriptor_pb2.FileDescriptorProto) -> None:
        self.file = file
        self._class = message_factory.GetMessageClass(_pool().Add(file).message_types_by_name[file.message_type[0].name])

    def record(self, value: Any) -> bytes:
        """``value`` as the message indexes and the message (unframed); ValueError naming what does not fit."""
        message = self._class()
        try:
            _fill(message, value)
        except (TypeError, ValueError, decimal.InvalidOperation, AttributeError) as exc:
            raise ValueError(f"does not fit the Protobuf message {self.file.message_type[0].name}: {exc}") from None
        return b"\x00" + message.SerializeToString()


def _fill(message: Message, value: Mapping[str, Any]) -> None:
    for field in message.DESCRIPTOR.fields:
        given = value.get(field.name) if isinstance(value, Mapping) else None
        if given is None:
            continue
        if _repeated(field):
            for item in given:
                if field.message_type is not None:
                    _set_message(getattr(message, field.name).add(), field, item)
                else:
                    getattr(message, field.name).append(item)
        elif field.message_type is not None:
            _set_message(getattr(message, field.name), field, given)
        else:
            setattr(message, field.name, given if field.type != FieldDescriptor.TYPE_STRING else str(given))


def _set_message(target: Message, field: FieldDescriptor, given: Any) -> None:
    name = field.message_type.full_name
    if name == "google.protobuf.Timestamp":
        target.FromJsonString(given)
    elif name == "confluent.type.Decimal":
        exact = decimal.Decimal(str(given))
        scale = max(0, -int(exact.as_tuple().exponent))
        unscaled = int(exact.scaleb(scale))
        target.value = unscaled.to_bytes(max(1, (unscaled.bit_length() + 8) // 8), "big", signed=True)
        target.precision, target.scale = max(1, len(exact.as_tuple().digits)), scale
    else:
        _fill(target, given)
