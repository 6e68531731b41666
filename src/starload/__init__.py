"""starload: stream business events from Kafka into a star schema (Snowflake, DuckDB), exactly once.

The library logs to the ``starload`` logger (librdkafka's own lines as
``starload.librdkafka``) and, as a library should, prints nothing until the
application configures logging (``logging.basicConfig(level=logging.INFO)``, or a
handler on ``logging.getLogger("starload")``).
"""

import logging

logging.getLogger("starload").addHandler(logging.NullHandler())

from starload.broker import LocalBroker
from starload.engine import LoadStats, StarLoader
from starload.exceptions import (
    OffsetsMovedError,
    RejectGuardError,
    SinkError,
    SpecError,
    StarloadError,
    StartupError,
    StoredOffsetsError,
    TerminalSinkError,
    TransientSinkError,
)
from starload.generators.base import Event, Generator
from starload.generators.orders import ORDERS_GENERATOR, ORDERS_SCHEMA
from starload.hookspecs import hookimpl
from starload.produce import produce
from starload.sinks.base import Sink, SinkType, StagedBatch, WriteResult
from starload.sinks.duckdb import DuckDBSink
from starload.spec import (
    UNKNOWN_KEY,
    Boolean,
    Check,
    Date,
    DateDimension,
    Decimal,
    Dimension,
    Double,
    Fact,
    Field,
    Integer,
    Measure,
    StarSchema,
    String,
    Timestamp,
)

__all__ = [
    "ORDERS_GENERATOR",
    "ORDERS_SCHEMA",
    "UNKNOWN_KEY",
    "Boolean",
    "Check",
    "Date",
    "DateDimension",
    "Decimal",
    "Dimension",
    "Double",
    "DuckDBSink",
    "Event",
    "Fact",
    "Field",
    "Generator",
    "Integer",
    "LoadStats",
    "LocalBroker",
    "Measure",
    "OffsetsMovedError",
    "RejectGuardError",
    "Sink",
    "SinkError",
    "SinkType",
    "SpecError",
    "StagedBatch",
    "StarLoader",
    "StarSchema",
    "StarloadError",
    "StartupError",
    "StoredOffsetsError",
    "String",
    "TerminalSinkError",
    "Timestamp",
    "TransientSinkError",
    "WriteResult",
    "hookimpl",
    "produce",
]
