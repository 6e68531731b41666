"""starload: stream business events from Kafka into a star schema (Snowflake, DuckDB), exactly once.

The library logs to the ``starload`` logger (librdkafka's own lines as
``starload.librdkafka``) and, as a library should, prints nothing until the
application configures logging (``logging.basicConfig(level=logging.INFO)``, or a
handler on ``logging.getLogger("starload")``).
"""

import importlib
import logging
from typing import TYPE_CHECKING

logging.getLogger("starload").addHandler(logging.NullHandler())

if TYPE_CHECKING:  # type checkers see the names; at run time each is imported when first used (PEP 562)
    from starload.broker import LocalBroker
    from starload.engine import StarLoader
    from starload.exceptions import (
        ConsumerGroupError,
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
    from starload.generators.bookshop import BOOKSHOP_SCHEMA
    from starload.generators.orders import ORDERS_GENERATOR, ORDERS_HISTORY_SCHEMA, ORDERS_SCHEMA
    from starload.generators.shop import SHOP_SCHEMA
    from starload.hookspecs import hookimpl
    from starload.producing import produce
    from starload.sinks.base import Sink, SinkType, StagedBatch, WriteResult
    from starload.sinks.duckdb import DuckDBSink
    from starload.spec import (
        UNKNOWN_KEY,
        Boolean,
        Carried,
        Changes,
        Check,
        Date,
        DateDimension,
        Decimal,
        Dimension,
        Double,
        Envelope,
        EventTime,
        Fact,
        Field,
        Format,
        Integer,
        Measure,
        Milestone,
        StarSchema,
        String,
        Timestamp,
        Updates,
    )
    from starload.stats import LoadStats

#: Where each public name lives; ``import starload`` itself imports nothing heavy, so the
#: ``starload`` program can catch signals before the engine, Kafka and Arrow are loaded.
_HOMES = {
    "LocalBroker": "starload.broker",
    "LoadStats": "starload.stats",
    "StarLoader": "starload.engine",
    "OffsetsMovedError": "starload.exceptions",
    "RejectGuardError": "starload.exceptions",
    "SinkError": "starload.exceptions",
    "SpecError": "starload.exceptions",
    "StarloadError": "starload.exceptions",
    "ConsumerGroupError": "starload.exceptions",
    "StartupError": "starload.exceptions",
    "StoredOffsetsError": "starload.exceptions",
    "TerminalSinkError": "starload.exceptions",
    "TransientSinkError": "starload.exceptions",
    "Event": "starload.generators.base",
    "Generator": "starload.generators.base",
    "ORDERS_GENERATOR": "starload.generators.orders",
    "ORDERS_SCHEMA": "starload.generators.orders",
    "ORDERS_HISTORY_SCHEMA": "starload.generators.orders",
    "SHOP_SCHEMA": "starload.generators.shop",
    "BOOKSHOP_SCHEMA": "starload.generators.bookshop",
    "hookimpl": "starload.hookspecs",
    "produce": "starload.producing",
    "Sink": "starload.sinks.base",
    "SinkType": "starload.sinks.base",
    "StagedBatch": "starload.sinks.base",
    "WriteResult": "starload.sinks.base",
    "DuckDBSink": "starload.sinks.duckdb",
    "UNKNOWN_KEY": "starload.spec",
    "Boolean": "starload.spec",
    "Carried": "starload.spec",
    "Changes": "starload.spec",
    "Check": "starload.spec",
    "Date": "starload.spec",
    "DateDimension": "starload.spec",
    "Decimal": "starload.spec",
    "Dimension": "starload.spec",
    "Double": "starload.spec",
    "Envelope": "starload.spec",
    "Format": "starload.spec",
    "EventTime": "starload.spec",
    "Fact": "starload.spec",
    "Field": "starload.spec",
    "Integer": "starload.spec",
    "Measure": "starload.spec",
    "Milestone": "starload.spec",
    "StarSchema": "starload.spec",
    "String": "starload.spec",
    "Timestamp": "starload.spec",
    "Updates": "starload.spec",
}


def __getattr__(name: str) -> object:
    if name not in _HOMES:
        msg = f"module 'starload' has no attribute {name!r}"
        raise AttributeError(msg)
    value = getattr(importlib.import_module(_HOMES[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


__all__ = [
    "BOOKSHOP_SCHEMA",
    "ORDERS_GENERATOR",
    "ORDERS_HISTORY_SCHEMA",
    "ORDERS_SCHEMA",
    "SHOP_SCHEMA",
    "UNKNOWN_KEY",
    "Boolean",
    "Carried",
    "Changes",
    "Check",
    "ConsumerGroupError",
    "Date",
    "DateDimension",
    "Decimal",
    "Dimension",
    "Double",
    "DuckDBSink",
    "Envelope",
    "Event",
    "EventTime",
    "Fact",
    "Field",
    "Format",
    "Generator",
    "Integer",
    "LoadStats",
    "LocalBroker",
    "Measure",
    "Milestone",
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
    "Updates",
    "WriteResult",
    "hookimpl",
    "produce",
]
