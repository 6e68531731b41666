"""The local Schema Registry, through the real ``confluent_kafka.schema_registry`` client and serializers.

It holds Confluent's documented API (ids, subjects, versions, error codes) and its Avro
compatibility rule; the rule itself is checked against fastavro's own schema resolution.
"""

from __future__ import annotations

import io
import json
import struct
import uuid

import fastavro
import pytest
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.schema_registry.error import SchemaRegistryError
from confluent_kafka.serialization import MessageField, SerializationContext
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from starload.schema_registry_endpoint import reads

ORDER = {
    "type": "record",
    "name": "Order",
    "namespace": "shop",
    "fields": [
        {"name": "order_id", "type": "string"},
        {"name": "quantity", "type": "int"},
        {"name": "price", "type": {"type": "bytes", "logicalType": "decimal", "precision": 12, "scale": 2}},
        {"name": "customer", "type": {"type": "record", "name": "Customer", "fields": [{"name": "id", "type": "string"}]}},
        {"name": "coupon", "type": ["null", "string"], "default": None},
    ],
}


def evolved(**change: object) -> str:
    """:data:`ORDER` with its fields changed: ``add=field``, ``drop=name``, ``retype=(name, type)``."""
    schema = json.loads(json.dumps(ORDER))
    if "add" in change:
        schema["fields"].append(change["add"])
    if "drop" in change:
        schema["fields"] = [f for f in schema["fields"] if f["name"] != change["drop"]]
    if "retype" in change:
        name, kind = change["retype"]  # type: ignore[misc]
        schema["fields"] = [{"name": f["name"], "type": kind} if f["name"] == name else f for f in schema["fields"]]
    return json.dumps(schema)


@pytest.fixture
def client(local_schema_registry) -> SchemaRegistryClient:
    return SchemaRegistryClient({"url": local_schema_registry.url})


@pytest.fixture
def subject() -> str:
    return f"orders-{uuid.uuid4().hex[:8]}-value"


def test_the_serializers_frame_records_with_the_registered_id_and_read_them_back(client, subject):
    topic = subject.removesuffix("-value")
    serialize = AvroSerializer(client, json.dumps(ORDER))
    record = {"order_id": "O-1", "quantity": 2, "price": __import__("decimal").Decimal("19.99"), "customer": {"id": "C-1"}, "coupon": None}
    framed = serialize(record, SerializationContext(topic, MessageField.VALUE))
    magic, schema_id = struct.unpack(">bI", framed[:5])
    assert magic == 0 and schema_id == client.get_latest_version(subject).schema_id
    assert AvroDeserializer(client)(framed, SerializationContext(topic, MessageField.VALUE)) == record
    assert fastavro.schemaless_reader(io.BytesIO(framed[5:]), fastavro.parse_schema(ORDER)) == record


def test_ids_versions_and_subjects_follow_the_api(client, subject):
    other = subject.replace("orders", "returns")
    first = client.register_schema(subject, Schema(json.dumps(ORDER), "AVRO"))
    assert client.register_schema(subject, Schema(json.dumps(ORDER), "AVRO")) == first  # registered again: unchanged
    assert SchemaRegistryClient({"url": client._rest_client.base_urls[0]}).register_schema(other, Schema(json.dumps(ORDER), "AVRO")) == first
    added = evolved(add={"name": "channel", "type": "string", "default": "web"})
    second = client.register_schema(subject, Schema(added, "AVRO"))
    assert second != first
    assert client.get_versions(subject) == [1, 2]
    latest = client.get_latest_version(subject)
    assert (latest.version, latest.schema_id) == (2, second)
    assert client.get_version(subject, 1).schema_id == first
    assert json.loads(client.get_schema(second).schema_str) == json.loads(added)
    assert client.lookup_schema(subject, Schema(json.dumps(ORDER), "AVRO")).version == 1
    assert {subject, other} <= set(client.get_subjects())


@pytest.mark.parametrize(
    ("change", "level", "compatible"),
    [
        ({"add": {"name": "channel", "type": "string", "default": "web"}}, "BACKWARD", True),  # a new field with a default
        ({"add": {"name": "channel", "type": "string"}}, "BACKWARD", False),  # without one, old data has no value for it
        ({"drop": "coupon"}, "BACKWARD", True),  # the reader ignores what it does not know
        ({"drop": "coupon"}, "FORWARD", True),  # old readers fill it with its default
        ({"drop": "quantity"}, "FORWARD", False),  # old readers need it and have no default
        ({"retype": ("quantity", "long")}, "BACKWARD", True),  # int promotes to long
        ({"retype": ("quantity", "long")}, "FULL", False),  # but a long is no int
        ({"retype": ("quantity", "string")}, "BACKWARD", False),
        ({"retype": ("coupon", "string")}, "BACKWARD", False),  # a null in old data cannot be read as a string
        ({"retype": ("quantity", "string")}, "NONE", True),
    ],
)
def test_a_new_version_must_be_compatible_at_the_subjects_level(client, subject, change, level, compatible):
    client.register_schema(subject, Schema(json.dumps(ORDER), "AVRO"))
    client.set_compatibility(subject, level)
    assert client.get_compatibility(subject) == level
    new = Schema(evolved(**change), "AVRO")
    assert client.test_compatibility(subject, new) is compatible
    if compatible:
        client.register_schema(subject, new)
        assert client.get_versions(subject) == [1, 2]
    else:
        with pytest.raises(SchemaRegistryError) as refused:
            client.register_schema(subject, new)
        assert (refused.value.http_status_code, refused.value.error_code) == (409, 409)


def test_errors_carry_the_registrys_codes(client, subject, local_schema_registry):
    with pytest.raises(SchemaRegistryError) as unknown:
        client.get_schema(987_654)
    assert (unknown.value.http_status_code, unknown.value.error_code) == (404, 40403)
    with pytest.raises(SchemaRegistryError) as no_subject:
        client.get_latest_version(subject)
    assert no_subject.value.error_code == 40401
    with pytest.raises(SchemaRegistryError) as invalid:
        client.register_schema(subject, Schema('{"type": "record", "name": "X", "fields": [{"name": "a", "type": "Nope"}]}', "AVRO"))  # an unknown type
    assert (invalid.value.http_status_code, invalid.value.error_code) == (422, 42201)
    client.register_schema(subject, Schema(json.dumps(ORDER), "AVRO"))
    with pytest.raises(SchemaRegistryError) as no_version:
        client.get_version(subject, 7)
    assert no_version.value.error_code == 40402
    # The backend store failing: 5xx with 50001, as long as it lasts (the client retries, then gives up).
    local_schema_registry.fail_next(times=50, status=503)
    try:
        with pytest.raises(SchemaRegistryError) as outage:
            SchemaRegistryClient({"url": local_schema_registry.url, "max.retries": 1, "retries.wait.ms": 1}).get_schema(1)
        assert (outage.value.http_status_code, outage.value.error_code) == (503, 50001)
    finally:
        local_schema_registry.reset()


def test_json_schema_and_protobuf_schemas_are_stored_and_served(client, subject):
    text = json.dumps({"type": "object", "properties": {"order_id": {"type": "string"}}, "required": ["order_id"]})
    schema_id = client.register_schema(subject, Schema(text, "JSON"))
    served = client.get_schema(schema_id)
    assert (served.schema_type, json.loads(served.schema_str)) == ("JSON", json.loads(text))
    proto = 'syntax = "proto3";\nmessage Order { string order_id = 1; }\n'
    proto_id = client.register_schema(subject.replace("-value", "-p-value"), Schema(proto, "PROTOBUF"))
    assert (client.get_schema(proto_id).schema_type, client.get_schema(proto_id).schema_str) == ("PROTOBUF", proto)


# ---- the compatibility rule is Avro's own schema resolution ----------------------------------------

PRIMITIVE = st.sampled_from(["int", "long", "float", "double", "string", "bytes", "boolean"])


@st.composite
def records(draw: st.DrawFn, name: str = "R", depth: int = 0) -> dict:
    """A record schema: primitive fields, optional ones (a union with null and a default), a nested record."""
    fields = []
    for n in range(draw(st.integers(1, 4))):
        kind = draw(PRIMITIVE)
        if draw(st.booleans()):
            fields.append({"name": f"f{n}", "type": ["null", kind], "default": None})
        else:
            fields.append({"name": f"f{n}", "type": kind})
    if depth < 1 and draw(st.booleans()):
        fields.append({"name": "inner", "type": draw(records(name=f"{name}Inner", depth=depth + 1))})
    return {"type": "record", "name": name, "fields": fields}


@st.composite
def changed(draw: st.DrawFn, schema: dict) -> dict:
    """``schema`` with some fields dropped, retyped or added (with or without a default)."""
    new = json.loads(json.dumps(schema))
    for field in new["fields"]:
        if field["name"] != "inner" and draw(st.booleans()):
            field["type"] = draw(PRIMITIVE)
            field.pop("default", None)
    keep = [f for f in new["fields"] if draw(st.booleans()) or f["name"] == "inner"]
    new["fields"] = keep or new["fields"][:1]
    if draw(st.booleans()):
        extra = {"name": "added", "type": draw(PRIMITIVE)}
        if draw(st.booleans()):
            extra = {"name": "added", "type": ["null", extra["type"]], "default": None}
        new["fields"].append(extra)
    return new


def sample(schema: dict, *, nulls: bool) -> dict:
    """A record of ``schema``: every optional field None (``nulls``) or a value."""
    values = {"int": 1, "long": 2, "float": 1.5, "double": 2.5, "string": "s", "bytes": b"b", "boolean": True}
    record = {}
    for field in schema["fields"]:
        kind = field["type"]
        if isinstance(kind, dict):
            record[field["name"]] = sample(kind, nulls=nulls)
        elif isinstance(kind, list):
            record[field["name"]] = None if nulls else values[kind[1]]
        else:
            record[field["name"]] = values[kind]
    return record


def readable(reader: dict, writer: dict, record: dict) -> bool:
    """Whether fastavro reads ``record``, written with ``writer``, with ``reader``."""
    buffer = io.BytesIO()
    fastavro.schemaless_writer(buffer, fastavro.parse_schema(writer), record)
    try:
        fastavro.schemaless_reader(io.BytesIO(buffer.getvalue()), fastavro.parse_schema(writer), fastavro.parse_schema(reader))
    except fastavro.read.SchemaResolutionError:
        return False
    return True


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_the_rule_agrees_with_fastavros_schema_resolution(data):
    """Records with and without their optional values read with the changed schema exactly when the rule says it reads the old one."""
    writer = data.draw(records())
    reader = data.draw(changed(writer))
    both = readable(reader, writer, sample(writer, nulls=False)) and readable(reader, writer, sample(writer, nulls=True))
    assert reads(reader, writer, {}, {}) == both, (reader, writer)
