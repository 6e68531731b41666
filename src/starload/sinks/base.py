"""The Sink contract: what the engine hands a sink, and what a sink must do with it.

A sink receives one :class:`StagedBatch` per :meth:`Sink.write` and must apply all of
it in ONE warehouse transaction, in this order:

1. upsert every dimension in ``batch.dimensions`` set-based (surrogate keys are
   assigned by the warehouse, a sequence or identity, never by Python);
2. upsert ``batch.dates`` into the date dimension;
3. insert ``batch.facts`` joined to the dimensions on their natural keys, skipping
   any grain value already present (idempotent: a redelivered message loads once);
4. insert ``batch.rejects`` into ``STARLOAD_REJECTS``;
5. advance ``STARLOAD_OFFSETS`` for ``(batch.group, batch.topic)`` to
   ``batch.next_offsets`` (never backwards);

then commit. If anything fails the transaction is rolled back and the error is
raised: the engine then stops without advancing any offset. On start the engine
seeks each partition to :meth:`Sink.stored_offsets`, which is what makes the
warehouse exactly-once even when the loader is killed at any instant.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping
from typing import Any

import attrs
import pyarrow as pa

from starload.spec import StarSchema

OFFSETS_TABLE = "STARLOAD_OFFSETS"
REJECTS_TABLE = "STARLOAD_REJECTS"


@attrs.frozen
class StagedBatch:
    """One consumed batch, mapped to typed columnar tables (Arrow).

    * ``facts``: one row per new grain value; the fact's own columns by their
      warehouse names, the natural keys of each dimension as
      ``_SL_NK_<dimension table>_<column>``, ``DATE_KEY`` and the Kafka coordinates.
    * ``dimensions``: per dimension name, one row per natural key with the latest
      non-null value of each attribute in the batch and ``LAST_EVENT_AT`` (the
      latest event time).
    * ``dates``: one row per date with every date-dimension attribute.
    * ``rejects``: KAFKA_TOPIC, KAFKA_PARTITION, KAFKA_OFFSET, MESSAGE_KEY,
      MESSAGE_VALUE (the raw bytes) and REASON.
    * ``next_offsets``: per partition, the offset after the batch's last message.
    """

    schema: StarSchema
    group: str
    topic: str
    facts: pa.Table
    dimensions: Mapping[str, pa.Table]
    dates: pa.Table | None
    rejects: pa.Table
    next_offsets: Mapping[int, int]
    consumed: int
    duplicates_in_batch: int

    def offsets_table(self) -> pa.Table:
        """``next_offsets`` as a table of GROUP_ID, TOPIC, KAFKA_PARTITION, NEXT_OFFSET."""
        parts = sorted(self.next_offsets)
        return pa.table(
            {
                "GROUP_ID": pa.array([self.group] * len(parts), pa.string()),
                "TOPIC": pa.array([self.topic] * len(parts), pa.string()),
                "KAFKA_PARTITION": pa.array(parts, pa.int32()),
                "NEXT_OFFSET": pa.array([self.next_offsets[p] for p in parts], pa.int64()),
            }
        )


@attrs.frozen
class WriteResult:
    """What one committed :meth:`Sink.write` did.

    ``facts_inserted + duplicates + rejects`` equals the batch's consumed messages:
    ``duplicates`` counts grain values already loaded (in the table or earlier in the
    batch), ``rejects`` every rejected message of the batch (recorded once, however
    often it is replayed).
    """

    facts_inserted: int
    duplicates: int
    rejects: int
    dimension_rows_inserted: int = 0
    dimension_rows_updated: int = 0
    statements: int = 0


class Sink(abc.ABC):
    """A warehouse the engine loads into. See the module docstring for the contract."""

    @abc.abstractmethod
    def prepare(self, schema: StarSchema) -> None:
        """Create (or verify) the star's tables, sequences, offsets and rejects tables; idempotent."""

    @abc.abstractmethod
    def ddl(self, schema: StarSchema) -> list[str]:
        """The statements :meth:`prepare` runs, for ``starload ddl``."""

    @abc.abstractmethod
    def stored_offsets(self, group: str, topic: str) -> dict[int, int]:
        """Per partition, the next offset to consume, as committed in the warehouse."""

    @abc.abstractmethod
    def write(self, batch: StagedBatch) -> WriteResult:
        """Apply the whole batch and its offsets in one transaction."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""

    def __enter__(self) -> Sink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@attrs.frozen
class SinkType:
    """A registered sink: its name, a factory taking string options, and help text.

    ``factory(**options)`` builds the sink; options come from the CLI (for example
    ``--duckdb-path`` becomes ``path=…``; ``--sink-option key=value`` for any sink).
    """

    name: str
    factory: Callable[..., Sink]
    description: str = ""
    options: Mapping[str, str] = attrs.field(factory=dict)

    def create(self, **options: Any) -> Sink:
        """Build the sink with ``options``."""
        return self.factory(**options)
