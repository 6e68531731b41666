"""The Snowflake sink, on the real ``snowflake-connector-python`` (``pip install 'starload[snowflake]'``).

A batch reaches Snowflake the way Snowflake recommends for bulk loads, in few round
trips: every part of the batch (dimensions, dates, facts, rejects, offsets) goes into
ONE Parquet file, ``PUT`` to the internal stage ``STARLOAD_STAGE`` and ``COPY``-ed
into one temporary staging table of this session's; then the shared set-based plan
of :class:`~starload.sinks.sql.SQLSink` runs in one transaction, each statement
reading its part of the staging table. The conflict lookup and the write read the
same staged rows, so a batch costs 13 statements whatever its size: PUT, COPY, the
conflict lookup, BEGIN, the star's lock (see :mod:`starload.sinks.sql`), two per
dimension, dates, facts, rejects (when there are any), offsets, COMMIT. The staging
table is made when the sink is prepared, not by the first batch.

Snowflake's own semantics, each checked against its documentation (the tests run
them through a local endpoint that enforces these rules, see
:mod:`starload.snowflake_endpoint`):

* Parquet is read with ``USE_LOGICAL_TYPE = TRUE`` (a UTC timestamp stays an instant
  instead of loading as TIMESTAMP_NTZ) and ``BINARY_AS_TEXT = FALSE`` (a reject's raw
  bytes are binary, not UTF-8 text, which would abort the COPY); columns are loaded
  by a ``SELECT $1:"C"::TYPE`` transformation, not ``MATCH_BY_COLUMN_NAME`` (which
  errors on an empty string). The session's ``TIMEZONE`` is UTC, so
  ``CURRENT_TIMESTAMP`` and every TIMESTAMP_TZ are stored in UTC.
* Every COPY's result is checked: the file must be LOADED with as many rows as were
  written (COPY skips files its load metadata says are loaded, and does not fail on a
  missing file). Anything else is a transient error: the batch is staged again.
* ``LOCK_TIMEOUT`` and ``STATEMENT_TIMEOUT_IN_SECONDS`` are set for the session
  (sink options ``lock_timeout``, default 120 s, and ``statement_timeout``, default
  900 s; Snowflake's defaults are 12 hours and 2 days), so no statement waits
  unbounded; a lock or statement timeout is transient and logged with what it waited
  for. The connector's own retries of a request are bounded by ``network_timeout``
  (default ``statement_timeout`` + 60 s; unbounded in the connector by default). A
  loader killed inside a transaction leaves it open, holding its locks, until
  Snowflake aborts it (after about four hours idle). Every starload transaction is
  named ``STARLOAD``; a loader whose transaction (a write, prepare, an offsets reset,
  a migration) waited for a lock held by a starload transaction open for longer than
  ``stale_transaction`` seconds (default 600; a live loader's transaction lasts
  seconds) aborts it with
  ``SYSTEM$ABORT_TRANSACTION``, which Snowflake allows the user who started it, and
  retries. Any other holder is only named in the log line, with the statement that
  would free it.
* If a ROLLBACK fails, the session is dropped and a new one opened: a DDL statement in
  a session with an open transaction would commit it.
* Values are bound server-side (``paramstyle='qmark'``).

Surrogate keys come from ``IDENTITY`` columns (sequences inside Snowflake).

Configuration comes from the environment (or a named connection of the connector's
``connections.toml``): ``SNOWFLAKE_ACCOUNT``, ``SNOWFLAKE_USER``,
``SNOWFLAKE_PASSWORD`` or ``SNOWFLAKE_PRIVATE_KEY_FILE`` (+
``SNOWFLAKE_PRIVATE_KEY_PASSPHRASE``), ``SNOWFLAKE_ROLE``, ``SNOWFLAKE_WAREHOUSE``
(default ``COMPUTE_WH``), ``SNOWFLAKE_DATABASE`` (default ``E_COMMERCE``),
``SNOWFLAKE_SCHEMA`` (default ``SALES``), and for local endpoints
``SNOWFLAKE_HOST``, ``SNOWFLAKE_PORT``, ``SNOWFLAKE_PROTOCOL``. Empty values count as
unset. Secrets are passed to the connector only; they never appear in logs or errors.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from starload.drift import Column
from starload.exceptions import SinkError, TerminalSinkError, TransientSinkError
from starload.hookspecs import hookimpl
from starload.mapping import Mapper, quote, raw_batch
from starload.sinks.base import SinkType, StagedBatch, seconds_option
from starload.sinks.sql import Dialect, SQLSink, batch_parts
from starload.spec import StarSchema

SNOWFLAKE = Dialect(
    name="snowflake",
    integer="NUMBER(38, 0)",
    small_integer="NUMBER(10, 0)",
    decimal="NUMBER({p}, {s})",
    timestamp="TIMESTAMP_TZ",
    double="FLOAT",
    binary="BINARY",
    sized_strings=True,
    key_default=lambda _seq: "IDENTITY(1, 1)",
    uses_sequence=False,
    transactional_ddl=False,
    placeholder="?",
    greatest="GREATEST_IGNORE_NULLS",
)

STAGE = "STARLOAD_STAGE"
#: How Snowflake must read the staged Parquet (CREATE FILE FORMAT, Parquet options).
PARQUET_FORMAT = "TYPE = PARQUET USE_LOGICAL_TYPE = TRUE BINARY_AS_TEXT = FALSE"
#: Batches a staging table takes before it is replaced by an empty one. Each batch's
#: rows carry the batch's number and are read by it alone; replacing the table now and
#: then bounds its size without a DELETE per batch.
STAGING_BATCHES = 16
#: Columns of the staging table that say which batch and which part a row belongs to.
BATCH_COLUMN, PART_COLUMN = "_SL_BATCH", "_SL_PART"
#: Snowflake error numbers that are worth retrying: 000604 statement cancelled,
#: 000625 lock wait (a lock held too long, or too many waiters), 000630 statement timeout.
RETRYABLE_ERRNO = frozenset({604, 625, 630})
#: Seconds a statement waits for a lock, and runs, unless the sink options say otherwise.
DEFAULT_LOCK_TIMEOUT = 120
DEFAULT_STATEMENT_TIMEOUT = 900
#: Seconds after which an open starload transaction that blocks a write is taken for a dead loader's.
DEFAULT_STALE_TRANSACTION = 600
#: The name of every transaction the sink begins (``BEGIN NAME …``), to know its own in ``SHOW TRANSACTIONS``.
TRANSACTION_NAME = "STARLOAD"

log = logging.getLogger(__name__)
#: Environment variable → connector argument. Secrets are marked so they are never shown.
ENVIRONMENT = {
    "SNOWFLAKE_ACCOUNT": "account",
    "SNOWFLAKE_USER": "user",
    "SNOWFLAKE_PASSWORD": "password",
    "SNOWFLAKE_PRIVATE_KEY_FILE": "private_key_file",
    "SNOWFLAKE_PRIVATE_KEY_PASSPHRASE": "private_key_file_pwd",
    "SNOWFLAKE_ROLE": "role",
    "SNOWFLAKE_WAREHOUSE": "warehouse",
    "SNOWFLAKE_DATABASE": "database",
    "SNOWFLAKE_SCHEMA": "schema",
    "SNOWFLAKE_HOST": "host",
    "SNOWFLAKE_PORT": "port",
    "SNOWFLAKE_PROTOCOL": "protocol",
}
SECRETS = frozenset({"password", "private_key_file_pwd", "token"})
DEFAULTS = {"warehouse": "COMPUTE_WH", "database": "E_COMMERCE", "schema": "SALES"}


def settings_from_environment(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Connector arguments from ``SNOWFLAKE_*`` variables, with the defaults filled in."""
    environ = os.environ if environ is None else environ
    found: dict[str, Any] = dict(DEFAULTS)
    for variable, argument in ENVIRONMENT.items():
        value = environ.get(variable, "").strip()
        if value:
            found[argument] = int(value) if argument == "port" else value
    return found


def _arrow_type_name(data_type: pa.DataType) -> str:
    if pa.types.is_decimal(data_type):
        return f"NUMBER({data_type.precision}, {data_type.scale})"
    if pa.types.is_integer(data_type):
        return "NUMBER(38, 0)"
    if pa.types.is_timestamp(data_type):
        return "TIMESTAMP_TZ"
    if pa.types.is_date(data_type):
        return "DATE"
    if pa.types.is_float64(data_type):
        return "FLOAT"
    if pa.types.is_boolean(data_type):
        return "BOOLEAN"
    if pa.types.is_binary(data_type) or pa.types.is_large_binary(data_type):
        return "BINARY"
    if pa.types.is_string(data_type) or pa.types.is_large_string(data_type):
        return "VARCHAR"
    msg = f"no Snowflake type for staged Arrow type {data_type}"
    raise SinkError(msg)


#: The length of a VARCHAR declared without one (Snowflake: "String & binary data types").
MAX_VARCHAR = 16_777_216


def _spelling(data_type: str, length: int | None, precision: int | None, scale: int | None) -> str:
    """A column type as INFORMATION_SCHEMA.COLUMNS gives it, spelt as the sink's DDL spells it."""
    if data_type == "TEXT":
        return "VARCHAR" if length in (None, MAX_VARCHAR) else f"VARCHAR({length})"
    if data_type == "NUMBER":
        return f"NUMBER({precision}, {scale})"
    return str(data_type)


class LockWaitError(TransientSinkError):
    """A statement waited for a lock longer than the session's LOCK_TIMEOUT; ``transaction`` holds it (if known)."""

    def __init__(self, message: str, transaction: int | None) -> None:
        super().__init__(message)
        self.transaction = transaction


class StagingLayout:
    """Where the columns of every part of a batch live in the one staging table.

    Parts share a staging column when they have a column of the same name and type
    (KAFKA_PARTITION, for example); staging columns are named ``C1``, ``C2``, … so
    that no generated identifier grows with the spec's names.
    """

    def __init__(self, schemas: Mapping[str, pa.Schema]) -> None:
        self.parts = list(schemas)
        #: (source column name, Arrow type) → staging column
        self.columns: dict[tuple[str, pa.DataType], str] = {}
        self.types: dict[str, pa.DataType] = {}
        for schema in schemas.values():
            for field in schema:
                key = (field.name, field.type)
                if key not in self.columns:
                    name = f"C{len(self.columns) + 1}"
                    self.columns[key] = name
                    self.types[name] = field.type
        self.schemas = dict(schemas)

    @classmethod
    def of(cls, parts: Mapping[str, pa.Table]) -> StagingLayout:
        """The layout of a batch's parts (:func:`~starload.sinks.sql.batch_parts`)."""
        return cls({name: table.schema for name, table in parts.items()})

    def ddl(self, table: str) -> str:
        """The staging table: batch number, part number, then every staging column."""
        columns = [f"{BATCH_COLUMN} NUMBER(38, 0)", f"{PART_COLUMN} NUMBER(10, 0)"]
        columns += [f"{quote(c)} {_arrow_type_name(t)}" for c, t in self.types.items()]
        return f"CREATE OR REPLACE TEMPORARY TABLE {quote(table)} ({', '.join(columns)})"

    def copy(self, table: str, location: str) -> str:
        """COPY the staged file at ``location`` into ``table``, each column typed by a transformation."""
        names = [BATCH_COLUMN, PART_COLUMN, *self.types]
        types = ["NUMBER(38, 0)", "NUMBER(10, 0)", *(_arrow_type_name(t) for t in self.types.values())]
        targets = ", ".join(map(quote, names))
        selects = ", ".join(f"$1:{quote(n)}::{t}" for n, t in zip(names, types))
        return (
            f"COPY INTO {quote(table)} ({targets}) FROM (SELECT {selects} FROM {location}) "
            f"FILE_FORMAT = ({PARQUET_FORMAT}) PURGE = TRUE"
        )

    def relation(self, table: str, batch: int, part: str) -> str:
        """The rows of one part of one batch, under the part's own column names (numbers are the loader's own)."""
        columns = ", ".join(f"{quote(self.columns[(f.name, f.type)])} AS {quote(f.name)}" for f in self.schemas[part])
        where = f"{BATCH_COLUMN} = {int(batch)} AND {PART_COLUMN} = {self.parts.index(part)}"
        return f"(SELECT {columns} FROM {quote(table)} WHERE {where})"

    def file(self, batch: int, parts: Mapping[str, pa.Table]) -> pa.Table:
        """One Arrow table holding ``parts`` of batch ``batch`` in the staging columns."""
        pieces = []
        for part, table in parts.items():
            n = table.num_rows
            arrays = {BATCH_COLUMN: pa.array([batch] * n, pa.int64()), PART_COLUMN: pa.array([self.parts.index(part)] * n, pa.int32())}
            mine = {self.columns[(f.name, f.type)]: table.column(f.name) for f in table.schema}
            for column, data_type in self.types.items():
                arrays[column] = mine.get(column, pa.nulls(n, data_type))
            pieces.append(pa.table(arrays))
        return pa.concat_tables(pieces)


def _moved_conflicts(held: StagedBatch, batch: StagedBatch) -> bool:
    """Whether ``batch`` is ``held`` with conflicting facts moved to the rejects (:meth:`StagedBatch.with_conflicts`)."""
    return (
        batch.raw is not None
        and batch.raw is held.raw
        and batch.dimensions is held.dimensions
        and batch.dates is held.dates
        and batch.next_offsets == held.next_offsets
        and batch.expected_offsets == held.expected_offsets
        and batch.facts.schema == held.facts.schema
        and batch.rejects.schema == held.rejects.schema
        and batch.conflicts > held.conflicts
    )


class SnowflakeSink(SQLSink):
    """Loads the star into Snowflake through one PUT and one COPY INTO of Parquet per batch.

    ``connection_name`` picks a connection from ``connections.toml``; otherwise the
    ``SNOWFLAKE_*`` environment variables are used, overridden by ``settings`` (any
    argument of ``snowflake.connector.connect``). ``lock_timeout``,
    ``statement_timeout`` and ``stale_transaction`` are seconds (see the module docstring).
    """

    dialect = SNOWFLAKE
    probes_loaded = False

    def __init__(
        self,
        *,
        connection_name: str | None = None,
        lock_timeout: int | str = DEFAULT_LOCK_TIMEOUT,
        statement_timeout: int | str = DEFAULT_STATEMENT_TIMEOUT,
        stale_transaction: int | str = DEFAULT_STALE_TRANSACTION,
        network_timeout: int | str | None = None,
        **settings: Any,
    ) -> None:
        super().__init__()
        self.connection_name = connection_name
        self.lock_timeout = seconds_option("lock_timeout", lock_timeout, whole=True, low=1)
        self.statement_timeout = seconds_option("statement_timeout", statement_timeout, whole=True, low=1)
        self.stale_transaction = seconds_option("stale_transaction", stale_transaction, whole=True, low=1)
        if network_timeout is None:
            network_timeout = self.statement_timeout + 60
        self.network_timeout = seconds_option("network_timeout", network_timeout, whole=True, low=1)
        self._settings = {k: v for k, v in settings.items() if v not in (None, "")}
        self._connection: Any = None
        self._id = uuid.uuid4().hex[:12].upper()
        self._files: Path | None = None
        self._last_rowcount = 0
        self._last_columns: list[str] = []
        self._staging = f"STARLOAD_BATCH_{self._id}"
        self._layout: StagingLayout | None = None
        #: Batches staged since the staging table was (re)made; the last one's number.
        self._staged_batches = 0
        self._batch_number = 0
        #: The batch whose rows the staging table holds, its relations, and whether
        #: rejects were added to them since (see :meth:`_stage_batch`).
        self._held: StagedBatch | None = None
        self._relations: dict[str, str] = {}
        self._held_extended = False

    def __repr__(self) -> str:
        shown = {k: v for k, v in self.connection_arguments().items() if k not in SECRETS}
        return f"SnowflakeSink({shown})"

    def connection_arguments(self) -> dict[str, Any]:
        """What is passed to ``snowflake.connector.connect`` (includes secrets: never log it)."""
        session = {
            "TIMEZONE": "UTC",
            "LOCK_TIMEOUT": self.lock_timeout,
            "STATEMENT_TIMEOUT_IN_SECONDS": self.statement_timeout,
            "QUERY_TAG": "starload",
        }
        # network_timeout bounds the connector's own retries of a request (unbounded by default).
        fixed = {"paramstyle": "qmark", "session_parameters": session, "network_timeout": self.network_timeout}
        if self.connection_name:
            return {"connection_name": self.connection_name, **fixed, **self._settings}
        return {**settings_from_environment(), **fixed, **self._settings}

    # -- SQLSink -----------------------------------------------------------------
    def _connect(self) -> None:
        if self._connection is not None:
            return
        try:
            import snowflake.connector
        except ImportError:
            msg = "the Snowflake sink needs the snowflake extra: pip install 'starload[snowflake]'"
            raise ImportError(msg) from None
        arguments = self.connection_arguments()
        if not self.connection_name and "account" not in arguments:
            msg = "Snowflake account not configured: set SNOWFLAKE_ACCOUNT or use --snowflake-connection NAME"
            raise TerminalSinkError(msg)
        self._connection = snowflake.connector.connect(**arguments)
        if self._files is None:
            self._files = Path(tempfile.mkdtemp(prefix="starload-snowflake-"))

    def _disconnect(self) -> None:
        connection, self._connection = self._connection, None
        # A new session has no staging table (it was temporary) and holds no batch.
        self._layout, self._held, self._relations = None, None, {}
        if connection is not None:
            connection.close()

    def _run(self, statement: str, params: Sequence[Any] | None = None) -> list[tuple[Any, ...]]:
        cursor = self._connection.cursor()
        try:
            cursor.execute(statement, params)
            self._last_columns = [d[0].lower() for d in cursor.description or []]
            rows = cursor.fetchall() if cursor.description else []
            self._last_rowcount = cursor.rowcount or 0
            return rows
        finally:
            cursor.close()

    def _results(self, statement: str) -> list[dict[str, Any]]:
        """Run a statement (counted) whose result rows are a report: each row by lower-case column name."""
        return [dict(zip(self._last_columns, row)) for row in self._execute(statement)]

    def _rowcount(self, rows: list[tuple[Any, ...]]) -> int:
        return int(self._last_rowcount)

    def location(self) -> str:
        arguments = self.connection_arguments()
        if self.connection_name and not {"database", "schema"} & arguments.keys():
            return f"Snowflake connection {self.connection_name!r}"
        return f"Snowflake schema {arguments.get('database', '?')}.{arguments.get('schema', '?')}"

    def _columns(self, tables: Sequence[str]) -> dict[str, dict[str, Column]]:
        """From INFORMATION_SCHEMA.COLUMNS ("COLUMNS view"): TEXT is VARCHAR, unsized at its maximum length."""
        listed = ", ".join("?" * len(tables))
        rows = self._run(
            "SELECT TABLE_NAME, COLUMN_NAME, DATA_TYPE, CHARACTER_MAXIMUM_LENGTH, NUMERIC_PRECISION, NUMERIC_SCALE, "
            "IS_NULLABLE FROM INFORMATION_SCHEMA.COLUMNS WHERE TABLE_SCHEMA = CURRENT_SCHEMA() "
            f"AND TABLE_NAME IN ({listed}) ORDER BY TABLE_NAME, ORDINAL_POSITION",
            list(tables),
        )
        found: dict[str, dict[str, Column]] = {}
        for table, column, data_type, length, precision, scale, nullable in rows:
            found.setdefault(table, {})[column] = Column(_spelling(data_type, length, precision, scale), nullable == "YES")
        return found

    def _stage_batch(self, batch: StagedBatch) -> dict[str, str]:
        """Stage ``batch`` unless the staging table holds it already.

        The conflict lookup stages a batch and the write reuses it. When the lookup
        found conflicts, the engine writes the batch with those rows moved from the
        facts to the rejects: then only the added rejects are staged. The staged facts
        still hold the conflicting rows, and the fact insert skips them all the same
        (each repeats a grain value loaded already, or one earlier in the batch).
        """
        if batch is self._held:
            return self._relations
        held = self._held
        if held is not None and not self._held_extended and _moved_conflicts(held, batch):
            known = set(zip(held.rejects.column("KAFKA_PARTITION").to_pylist(), held.rejects.column("KAFKA_OFFSET").to_pylist()))
            coordinates = zip(batch.rejects.column("KAFKA_PARTITION").to_pylist(), batch.rejects.column("KAFKA_OFFSET").to_pylist())
            added = batch.rejects.filter(pa.array([c not in known for c in coordinates]))
            self._held, self._held_extended = None, True  # unknown until the upload succeeded
            if added.num_rows:
                self._upload({"REJECTS": added})
            self._held = batch
            return self._relations
        parts = batch_parts(batch)
        layout = StagingLayout.of(parts)
        self._held = None
        self._make_staging(layout, renew=self._staged_batches >= STAGING_BATCHES)
        self._batch_number += 1
        self._staged_batches += 1
        self._upload(parts)
        self._relations = {part: layout.relation(self._staging, self._batch_number, part) for part in parts}
        self._held, self._held_extended = batch, False
        return self._relations

    def _make_staging(self, layout: StagingLayout, *, renew: bool = False) -> None:
        """(Re)make this session's staging table for ``layout`` unless it has it already (and ``renew`` is False)."""
        if renew or self._layout is None or layout.schemas != self._layout.schemas:
            self._execute(layout.ddl(self._staging))
            self._layout, self._staged_batches = layout, 0

    def prepare(self, schema: StarSchema) -> None:
        """The SQL sink's prepare, then the stage and the staging table, so that the first batch does not wait for them."""
        super().prepare(schema)
        self._guarded(self._execute, f"CREATE STAGE IF NOT EXISTS {STAGE} FILE_FORMAT = ({PARQUET_FORMAT})")
        mapper = Mapper(schema)
        try:
            empty = mapper.stage(raw_batch([]), topic="", group="")
        finally:
            mapper.close()
        self._guarded(self._make_staging, StagingLayout.of(batch_parts(empty)))
        self._statements = 0

    def _upload(self, parts: Mapping[str, pa.Table]) -> None:
        """PUT ``parts`` of the current batch as one Parquet file and COPY it into the staging table; check both."""
        assert self._files is not None and self._layout is not None
        table = self._layout.file(self._batch_number, parts)
        folder = f"{self._id}/{uuid.uuid4().hex[:12]}"
        path = self._files / "batch.parquet"
        pq.write_table(table, path, coerce_timestamps="us")
        try:
            put = self._results(f"PUT 'file://{path.as_posix()}' @{STAGE}/{folder} AUTO_COMPRESS = FALSE OVERWRITE = TRUE")
        finally:
            path.unlink(missing_ok=True)
        if [row.get("status") for row in put] != ["UPLOADED"]:
            msg = f"Snowflake: PUT of a staged batch did not upload one file: {put}"
            raise TransientSinkError(msg)
        copied = self._results(self._layout.copy(self._staging, f"@{STAGE}/{folder}/{path.name}"))
        loaded = [(row.get("status"), row.get("rows_loaded")) for row in copied]
        if loaded != [("LOADED", table.num_rows)]:
            msg = (
                f"Snowflake: COPY of a staged batch loaded {loaded or 'no file'} instead of one file of "
                f"{table.num_rows} rows: {copied}"
            )
            raise TransientSinkError(msg)

    def _release_batch(self, staged: dict[str, str]) -> None:
        """Staged rows stay for the write that follows the conflict lookup; later batches never read them."""

    def _transaction(self, action: str) -> None:
        self._execute(f"BEGIN NAME {TRANSACTION_NAME}" if action == "begin" else action.upper())

    def _locked(self, apply: Callable[[], object], batch: StagedBatch | None = None) -> None:
        """The SQL sink's locked transaction; a lock wait first aborts the transaction that held it, if it is stale."""
        try:
            super()._locked(apply, batch)
        except LockWaitError as exc:
            if exc.transaction is not None:
                self._abort_if_stale(exc.transaction)
            raise

    def _abort_if_stale(self, transaction: int) -> None:
        """Abort ``transaction`` if it is a starload transaction open longer than ``stale_transaction`` seconds."""
        try:
            rows = self._guarded(self._results, "SHOW TRANSACTIONS")
            [holder] = [r for r in rows if str(r.get("id")) == str(transaction)] or [None]
            if holder is None:
                log.warning("the transaction %s that held the lock has ended", transaction)
                return
            started = holder.get("started_on")
            if isinstance(started, datetime) and started.tzinfo is None:
                started = started.replace(tzinfo=UTC)
            age = (datetime.now(UTC) - started).total_seconds() if isinstance(started, datetime) else 0.0
            if str(holder.get("name") or "").upper() != TRANSACTION_NAME or age < self.stale_transaction:
                log.warning(
                    "waiting for transaction %s (%s, open %.0f s); not a stale starload transaction, left alone",
                    transaction, holder.get("name"), age,
                )
                return
            self._guarded(self._run, f"SELECT SYSTEM$ABORT_TRANSACTION({int(transaction)})")
            log.warning(
                "aborted transaction %s: a starload transaction open for %.0f s (stale_transaction %d s), "
                "left by a loader that is gone; it held the lock this write waited for",
                transaction, age, self.stale_transaction,
            )
        except SinkError as exc:
            log.warning("could not look at the transaction %s that held the lock: %s", transaction, exc)

    def _describe_error(self, exc: BaseException) -> SinkError | None:
        try:
            from snowflake.connector import errors
        except ImportError:
            return None
        if not isinstance(exc, errors.Error):
            return None
        # The connector's message names the query id and the error, never the credentials.
        detail = getattr(exc, "msg", None) or str(exc)
        text = f"Snowflake: {type(exc).__name__}: {detail}"
        errno = getattr(exc, "errno", None)
        if errno == 625:
            table = re.search(r"locked table '([^']+)'", detail)
            found = re.search(r"in transaction (\d+)", detail)
            holder = found[1] if found else "(unknown)"
            text = (
                f"Snowflake: waited for a lock on {table[1] if table else 'a table'} held by transaction "
                f"{holder} (lock_timeout {self.lock_timeout} s). If it belongs to a loader that was killed, "
                f"Snowflake aborts it after about four hours idle; SELECT SYSTEM$ABORT_TRANSACTION({holder}) "
                f"frees it now. {detail}"
            )
            return LockWaitError(text, int(found[1]) if found else None)
        transient = (
            errors.OperationalError,
            errors.InterfaceError,
            errors.InternalServerError,
            errors.ServiceUnavailableError,
            errors.GatewayTimeoutError,
            errors.BadGatewayError,
            errors.RequestTimeoutError,
            errors.TooManyRequests,
            errors.OtherHTTPRetryableError,
        )
        if isinstance(exc, transient) or errno in RETRYABLE_ERRNO:
            return TransientSinkError(text)
        return TerminalSinkError(text)

    def close(self) -> None:
        try:
            self._disconnect()
        finally:
            if self._files is not None:
                shutil.rmtree(self._files, ignore_errors=True)
                self._files = None


SNOWFLAKE_SINK = SinkType(
    name="snowflake",
    factory=SnowflakeSink,
    description="Snowflake via PUT + COPY INTO of Parquet (SNOWFLAKE_* environment or --snowflake-connection)",
    options={
        "connection_name": "a connection of connections.toml (CLI: --snowflake-connection)",
        "lock_timeout": f"seconds a statement waits for a lock (default {DEFAULT_LOCK_TIMEOUT})",
        "statement_timeout": f"seconds a statement may run (default {DEFAULT_STATEMENT_TIMEOUT})",
        "stale_transaction": f"seconds after which a blocking starload transaction is aborted (default {DEFAULT_STALE_TRANSACTION})",
        "network_timeout": "seconds the connector may spend retrying one request (default statement_timeout + 60)",
    },
)


@hookimpl
def register_sinks(register: Callable[[SinkType], None]) -> None:
    """Built-in plugin: the Snowflake sink (the driver is imported only when it connects)."""
    register(SNOWFLAKE_SINK)
