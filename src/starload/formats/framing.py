"""Confluent's wire format: a zero "magic" byte, the writer schema's id (4 bytes, big-endian), then the encoded record.

The format of Confluent's serializers, Karapace, Redpanda and Apicurio in its
compatible mode; Debezium's Avro converter writes it too.
"""

from __future__ import annotations

MAGIC = 0
#: Bytes before the record: the magic byte and the schema id.
HEADER = 5


def unframed(value: bytes) -> tuple[int, bytes]:
    """``(schema id, record bytes)`` of a framed value; ValueError saying what is wrong when it is not framed."""
    if value[0] != MAGIC:
        raise ValueError(
            f"not in the Schema Registry's wire format: the first byte is {value[0]}, not {MAGIC} (a value its serializer did not frame)"
        )
    if len(value) < HEADER:
        raise ValueError(f"not in the Schema Registry's wire format: {len(value)} bytes, too short for a schema id")
    return int.from_bytes(value[1:HEADER], "big"), value[HEADER:]


def framed(schema_id: int, record: bytes) -> bytes:
    """``record`` framed with ``schema_id`` (what a registry-aware serializer writes)."""
    return bytes([MAGIC]) + schema_id.to_bytes(4, "big") + record
