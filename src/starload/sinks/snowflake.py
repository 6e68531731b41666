"""The Snowflake sink, on the real ``snowflake-connector-python`` (``pip install 'starload[snowflake]'``).

A batch reaches Snowflake the way Snowflake recommends for bulk loads, in few round
trips: every part of the batch (dimensions, dates, facts, rejects, offsets) goes into
ONE Parquet file, ``PUT`` to the internal stage ``STARLOAD_STAGE`` and ``COPY``-ed
into one temporary staging table of this session's; then the shared set-based plan
of :class:`~starload.sinks.sql.SQLSink` runs in one transaction, each statement
reading its part of the staging table. The conflict lookup and the write read the
same staged rows, so a batch costs 15 statements whatever its size: PUT, COPY, the
conflict lookup, then ONE multi-statement request: BEGIN, the star's lock (see
:mod:`starload.sinks.sql`), the fence, two per dimension, dates, facts, rejects (when
there are any), offsets (two), COMMIT; the star's lock is held while Snowflake runs
that request, never across a round trip. The row counts of its statements are
fetched after the COMMIT, side by side (and on the sink's second session, a heartbeat
goes beside the request unless one was sent in the last ``heartbeat`` seconds, see
below). The staging table is made when the sink is prepared, not by the first batch.

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
  (sink options ``lock_timeout``, default 10 s, and ``statement_timeout``, default
  900 s; Snowflake's defaults are 12 hours and 2 days), so no statement waits
  unbounded. A lock wait that fails at once because 20 statements already wait for
  that lock (Snowflake's limit, 000625) is handled as a lock wait: tried again a
  second later; a statement timeout is transient and logged with what it waited for.
  The connector's own retries of a request are bounded by ``network_timeout``
  (default ``statement_timeout`` + 60 s; unbounded in the connector by default).
* **A killed loader's transaction** stays open, holding the star's lock, until
  Snowflake aborts it (after about four hours idle). An age cannot tell a dead
  holder from a slow one; a heartbeat can. Every sink has a loader id and names each
  transaction it begins ``STARLOAD_<id>``. While (and only while) one is open, it
  records that it is alive in ``STARLOAD_LOADERS`` (LOADER, HOLDER host:pid,
  BEAT_AT = the warehouse's ``CURRENT_TIMESTAMP``): as BEGIN is sent, then every
  ``heartbeat`` seconds (default 5), from a second session of its own, so a long
  statement or a held request of the write never delays a beat; an idle loader
  sends nothing (it keeps no warehouse awake). A transaction (a write, prepare, an
  offsets reset, a migration) that waited ``lock_timeout`` for a lock looks at its
  holder in ``SHOW TRANSACTIONS``: a ``STARLOAD_<id>`` transaction whose loader's
  last beat is older than ``dead_after`` seconds (default 20; the warehouse's clock
  judges, ``DATEDIFF`` against ``CURRENT_TIMESTAMP``), or that has none (a
  ``STARLOAD`` transaction of a version before heartbeats has none either), is
  aborted with ``SYSTEM$ABORT_TRANSACTION``, named in one warning line, and the
  transaction is retried at once. Any other holder (a live loader, however slow; a
  transaction that is not a loader's) is never aborted: the transaction is retried
  and waits again, and a holder that is not a loader's is named in the log with the
  statement that would free it. The wait shows in :attr:`~starload.sinks.base.Sink.waits`.
  Snowflake lets only the user who started a transaction, or an account
  administrator, abort it, and ``SHOW TRANSACTIONS`` lists the current user's only
  (``IN ACCOUNT`` needs ACCOUNTADMIN) (Snowflake docs: SYSTEM$ABORT_TRANSACTION,
  https://docs.snowflake.com/sql-reference/functions/system_abort_transaction, and
  SHOW TRANSACTIONS, https://docs.snowflake.com/sql-reference/sql/show-transactions):
  loaders sharing a star must connect as one user. A holder of another user is not
  listed, so it is waited for and never aborted; with loaders of several users,
  an administrator frees a dead one's transaction by hand.
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

import contextlib
import logging
import os
import re
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import pyarrow as pa
import pyarrow.parquet as pq

from starload.drift import Column
from starload.exceptions import SinkError, TerminalSinkError, TransientSinkError
from starload.hookspecs import hookimpl
from starload.identity import quote
from starload.mapping import Mapper
from starload.sinks.base import LOCK_TABLE, SinkType, StagedBatch, WriteResult, seconds_option
from starload.sinks.sql import COUNTERS, Dialect, SQLSink, Step, batch_parts
from starload.spec import StarSchema
from starload.waiting import Wait

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
    # Snowflake writes the null treatment after the parentheses:
    # https://docs.snowflake.com/en/sql-reference/functions/last_value
    last_known="last_value({}) IGNORE NULLS",
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
#: A waiter looks at the lock's holder each time its wait times out: every 10 s.
DEFAULT_LOCK_TIMEOUT = 10
DEFAULT_STATEMENT_TIMEOUT = 900
#: Seconds between two beats of a loader inside a transaction, and the age of the last
#: beat after which a loader whose transaction blocks another is taken for dead.
DEFAULT_HEARTBEAT = 5
DEFAULT_DEAD_AFTER = 20
#: Where loaders inside a transaction record that they are alive (one row per loader).
LOADERS_TABLE = "STARLOAD_LOADERS"
#: Every transaction the sink begins is named ``STARLOAD_<loader id>`` (``BEGIN NAME …``),
#: so that ``SHOW TRANSACTIONS`` tells whose it is; versions before heartbeats named it ``STARLOAD``.
TRANSACTION_NAME = "STARLOAD"
STARLOAD_TRANSACTION = re.compile(rf"{TRANSACTION_NAME}(?:_([0-9A-F]{{16}}))?", re.IGNORECASE)
#: Seconds between two log lines about failing beats.
BEAT_FAILURE_LOG_EVERY = 30.0
#: Seconds a beat's session may spend on one statement, and its connector on one request.
BEAT_TIMEOUT = 30
#: Row counts of a batch's statements fetched at once, after its COMMIT (one round trip for a star of up to 6 dimensions).
COUNT_FETCHES = 16
#: Seconds at least between two tries at a lock (a lock wait can fail at once: too many waiters).
LOCK_RETRY_EVERY = 1.0
T = TypeVar("T")

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
    """A statement waited for a lock longer than the session's LOCK_TIMEOUT; ``transaction`` holds it (if known), on ``table``."""

    def __init__(self, message: str, transaction: int | None, table: str | None = None) -> None:
        super().__init__(message)
        self.transaction = transaction
        self.table = table


class _LockWait:
    """A transaction's wait for a lock, across its tries: from the first lock statement until the lock is taken.

    A wait for the star's lock ends once it is taken; a wait for another table's lock
    (one held by a transaction that is not a loader's) ends when the transaction succeeds.
    """

    def __init__(self, sink: SnowflakeSink) -> None:
        self._sink = sink
        self._context: contextlib.AbstractContextManager[Wait] | None = None
        self._star = False
        self.wait: Wait | None = None

    def begin(self, what: str, *, star: bool, since: float | None = None) -> Wait:
        """The wait in progress, or a new one for ``what`` (since ``since``, a ``time.time()``, or now)."""
        if self.wait is None:
            self._context = self._sink.waits.on(what)
            self.wait, self._star = self._context.__enter__(), star
            if since is not None:
                self.wait.since = since
        return self.wait

    def taken(self) -> None:
        """The star's lock was taken: a wait for it ends."""
        if self._star:
            self.end()

    def end(self) -> None:
        context, self._context, self.wait = self._context, None, None
        if context is not None:
            context.__exit__(None, None, None)


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


def _statement_failed(exc: BaseException) -> bool:
    """Whether ``exc`` is Snowflake refusing a statement (the session itself is sound)."""
    try:
        from snowflake.connector import errors
    except ImportError:
        return False
    return isinstance(exc, errors.ProgrammingError)


def _unknown_counts(batch: StagedBatch, why: str) -> dict[str, int]:
    """The counts of a committed batch whose row counts are unknown (``why``): its messages count as loaded."""
    log.warning(
        "the row counts of a committed batch are unknown, %s: its messages are counted as loaded (duplicates among "
        "them too), its dimension rows not at all",
        why,
    )
    return {**dict.fromkeys(COUNTERS, 0), "messages": batch.counted_rows()}


def _moved_conflicts(held: StagedBatch, batch: StagedBatch) -> bool:
    """Whether ``batch`` is ``held`` with conflicting facts moved to the rejects (:meth:`StagedBatch.with_conflicts`)."""
    return (
        batch.raw is held.raw
        and batch.dimensions is held.dimensions
        and batch.dates is held.dates
        and batch.next_offsets == held.next_offsets
        and batch.expected_offsets == held.expected_offsets
        and {t: f.schema for t, f in batch.facts.items()} == {t: f.schema for t, f in held.facts.items()}
        and batch.rejects.schema == held.rejects.schema
        and batch.conflicts > held.conflicts
    )


class SnowflakeSink(SQLSink):
    """Loads the star into Snowflake through one PUT and one COPY INTO of Parquet per batch.

    ``connection_name`` picks a connection from ``connections.toml``; otherwise the
    ``SNOWFLAKE_*`` environment variables are used, overridden by ``settings`` (any
    argument of ``snowflake.connector.connect``). ``lock_timeout``,
    ``statement_timeout``, ``heartbeat`` and ``dead_after`` are seconds (see the module docstring).
    """

    dialect = SNOWFLAKE
    probes_loaded = False

    def __init__(
        self,
        *,
        connection_name: str | None = None,
        lock_timeout: int | str = DEFAULT_LOCK_TIMEOUT,
        statement_timeout: int | str = DEFAULT_STATEMENT_TIMEOUT,
        heartbeat: float | str = DEFAULT_HEARTBEAT,
        dead_after: float | str = DEFAULT_DEAD_AFTER,
        network_timeout: int | str | None = None,
        **settings: Any,
    ) -> None:
        super().__init__()
        self.connection_name = connection_name
        self.lock_timeout = seconds_option("lock_timeout", lock_timeout, whole=True, low=1)
        self.statement_timeout = seconds_option("statement_timeout", statement_timeout, whole=True, low=1)
        self.heartbeat = seconds_option("heartbeat", heartbeat, low=0.1)
        self.dead_after = seconds_option("dead_after", dead_after, low=2 * self.heartbeat)
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
        #: This loader's id, in the name of each transaction it begins and in its beats.
        self.loader_id = uuid.uuid4().hex[:16].upper()
        #: The session that sends the beats (opened by the first beat), guarded by ``_beat_guard``.
        self._beat_connection: Any = None
        self._beat_guard = threading.Lock()
        self._beats_table_made = False
        #: When the last beat succeeded and when a failing one was last logged (``time.monotonic()``).
        self._beaten: float | None = None
        self._beat_failure_logged: float | None = None
        #: Set to stop the beats of the transaction open now (None: no transaction open).
        self._beating: threading.Event | None = None
        #: While a locked transaction is tried (and tried again after lock waits), its wait for the lock.
        self._lock_wait: _LockWait | None = None
        #: Whether a write retries itself after a lock wait (so that its transaction's own retries do not).
        self._write_retries = False

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
        # A transaction the dropped session may still hold is no longer this loader's: let others judge it dead.
        self._stop_beating()
        connection, self._connection = self._connection, None
        # A new session has no staging table (it was temporary) and holds no batch.
        self._layout, self._held, self._relations = None, None, {}
        if connection is not None:
            connection.close()

    def _run(self, statement: str, params: Sequence[Any] | None = None) -> list[tuple[Any, ...]]:
        locking = self._sql is not None and self._sql.token and statement == self._sql.lock()
        waiting = self._lock_wait if locking else None
        cursor = self._connection.cursor()
        try:
            if waiting is not None:
                # Shown (after a few seconds) while the star's lock is asked, ended once it is taken.
                waiting.begin("the star's lock", star=True)
                cursor.execute(statement, params)
                waiting.taken()
            else:
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
            empty = mapper.stage_topics({}, group="")
        finally:
            mapper.close()
        self._guarded(self._make_staging, StagingLayout.of(batch_parts(empty)))
        self._forget_counts()

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

    @property
    def _begin(self) -> str:
        """The BEGIN of this loader's transactions: named, for :meth:`_judge`."""
        return f"BEGIN NAME {TRANSACTION_NAME}_{self.loader_id}"

    def _transaction(self, action: str) -> None:
        if action == "begin":
            self._start_beating()
            try:
                self._execute(self._begin)
            except BaseException:
                self._stop_beating()
                raise
            return
        try:
            self._execute(action.upper())
        finally:
            # After the answer, not before: a slow COMMIT is still a live loader's.
            self._stop_beating()

    def _write_batch(self, batch: StagedBatch, staged: dict[str, str]) -> dict[str, int]:
        """The batch's whole transaction in ONE multi-statement request, BEGIN to COMMIT: the star's lock is held only while Snowflake runs it.

        No question is asked inside it (see :meth:`SQLSink._apply_batch`); the fence makes
        a batch whose offsets moved commit nothing. The row counts are fetched after the
        COMMIT, outside the lock, together. A request that fails is rolled back; one whose
        answer was lost is resolved by the stored offsets, its counts then unknown.
        """
        sql = self._new_token()
        plan: list[tuple[str, str]] = [("", self._begin), ("locked", sql.lock())]
        self._apply_batch(batch, staged, lambda counter, statement: plan.append((counter, statement)), None)
        plan.append(("", "COMMIT"))
        waiting = self._lock_wait
        sent = time.monotonic()
        self._start_beating()
        try:
            if waiting is not None:
                # Shown (after a few seconds) while the request waits, most likely for the star's lock.
                waiting.begin("the star's lock", star=True)
            ids = self._guarded(self._send_whole, [statement for _, statement in plan])
            if waiting is not None:
                waiting.taken()
        except SinkError as exc:
            elapsed = time.monotonic() - sent
            self._rollback_quietly()  # a failed statement leaves the transaction open
            # A try that failed on a lock wait waited; the request that ran held the lock (its own wait included).
            if isinstance(exc, LockWaitError):
                self._lock_waited += elapsed
                raise
            self._lock_held += elapsed
            self._resolve_commit(batch, exc)  # which statement failed is not told: the COMMIT may have run
            return _unknown_counts(batch, "its answer was lost")
        finally:
            self._stop_beating()
        self._lock_held += time.monotonic() - sent
        counted = [(counter, qid) for (counter, _), qid in zip(plan, ids, strict=True) if counter]
        try:
            rowcounts = self._guarded(self._rowcounts, [qid for _, qid in counted])
        except TransientSinkError as exc:
            return _unknown_counts(batch, f"they could not be fetched ({exc})")
        counts = dict.fromkeys((*COUNTERS, "locked"), 0)
        for (counter, _), rows in zip(counted, rowcounts, strict=True):
            counts[counter] += rows
        self._check_lock(counts.pop("locked"))
        self._check_offsets(batch, counts)  # after the COMMIT: a batch that may not commit wrote nothing (the fence)
        return counts

    def _send_whole(self, statements: Sequence[str]) -> list[str]:
        """Send ``statements`` as one multi-statement request (no bound values in it); each one's query id.

        The ids are the connector's ``multi_statement_savedIds`` (the answer's ``resultIds``).
        """
        self._statements += len(statements)
        cursor = self._connection.cursor()
        try:
            cursor.execute(";\n".join(statements), num_statements=len(statements))
            return list(cursor.multi_statement_savedIds)
        finally:
            cursor.close()

    def _rowcounts(self, ids: Sequence[str]) -> list[int]:
        """The row counts of statements already run (by query id), fetched side by side."""

        def rowcount(qid: str) -> int:
            cursor = self._connection.cursor()
            try:
                return int(cursor.query_result(qid).rowcount or 0)
            finally:
                cursor.close()

        with ThreadPoolExecutor(min(COUNT_FETCHES, max(1, len(ids))), thread_name_prefix="starload-counts") as pool:
            return list(pool.map(rowcount, ids))

    # -- several loaders: the heartbeat, and the lock waits ----------------------
    def write(self, batch: StagedBatch) -> WriteResult:
        """The SQL sink's write; after a lock wait it is tried again whole (its plan is made afresh each time)."""
        self._write_retries = True
        try:
            return self._waiting_for_locks(lambda: SQLSink.write(self, batch))
        finally:
            self._write_retries = False

    def _locked(self, apply: Callable[[], object], batch: StagedBatch | None = None) -> None:
        """The SQL sink's locked transaction, tried until it has its locks (a dead loader's transaction aborted)."""
        if self._write_retries:
            SQLSink._locked(self, apply, batch)  # the write around it tries again
        else:
            self._waiting_for_locks(lambda: SQLSink._locked(self, apply, batch))

    def _waiting_for_locks(self, attempt: Callable[[], T]) -> T:
        """Run ``attempt`` (a locked transaction) until it does not fail on a lock wait; see the module docstring.

        After each lock wait the holder is looked at (:meth:`_judge`); a dead loader's
        transaction is aborted. Either way the transaction is tried again at once: the
        next try waits up to ``lock_timeout`` for the lock, no backoff in between.
        """
        if self._lock_wait is not None:  # nested: the outer loop tries again
            return attempt()
        self._lock_wait = lock_wait = _LockWait(self)
        told: set[str] = set()
        try:
            while True:
                tried = time.monotonic()
                try:
                    return attempt()
                except LockWaitError as exc:
                    star = exc.table in (None, LOCK_TABLE)
                    what = "the star's lock" if star else f"a lock on {exc.table}"
                    wait = lock_wait.begin(what, star=star, since=time.time() - (time.monotonic() - tried))
                    holder, aborted = self._judge(exc.transaction, told)
                    wait.what = f"{what}, held by {holder}"
                    self.waits.remind()
                    if self.waits.stopping.is_set() and not aborted:
                        raise self.waits.stopped(wait) from exc
                    if not aborted:
                        pause = max(0.0, LOCK_RETRY_EVERY - (time.monotonic() - tried))
                        time.sleep(pause)
                        self._lock_waited += pause  # a wait for the lock too (see WriteResult.lock_waited)
        finally:
            self._lock_wait = None
            lock_wait.end()

    def _judge(self, transaction: int | None, told: set[str]) -> tuple[str, bool]:
        """Who holds the lock a transaction waited for (``held by …``), and whether it was aborted (a dead loader's).

        ``told``: what was logged already during this wait (each holder is named once).
        """
        if transaction is None:
            return "a transaction Snowflake did not name", False
        try:
            rows = self._guarded(self._look, "SHOW TRANSACTIONS")
            [row] = [r for r in rows if str(r.get("id")) == str(transaction)] or [None]
            if row is None:
                # Ended since, or another user's: SHOW TRANSACTIONS lists only the current user's.
                if f"unlisted {transaction}" not in told and f"seen {transaction}" in told:
                    told.add(f"unlisted {transaction}")
                    log.warning(
                        "waiting for transaction %s, which SHOW TRANSACTIONS does not list: another user's (it lists "
                        "only this user's; loaders sharing a star must share a user); left alone. "
                        "SELECT SYSTEM$ABORT_TRANSACTION(%s), run by its user or an account administrator, frees it",
                        transaction, transaction,
                    )  # fmt: skip
                told.add(f"seen {transaction}")
                return f"transaction {transaction} (not listed: ended, or another user's)", False
            name = str(row.get("name") or "")
            matched = STARLOAD_TRANSACTION.fullmatch(name)
            if matched is None:
                if f"foreign {transaction}" not in told:
                    told.add(f"foreign {transaction}")
                    log.warning(
                        "waiting for transaction %s (%r, user %s, started %s), which is not a starload loader's: left "
                        "alone. SELECT SYSTEM$ABORT_TRANSACTION(%s) frees it",
                        transaction, name, row.get("user"), row.get("started_on"), transaction,
                    )  # fmt: skip
                return f"transaction {transaction} ({name or 'unnamed'}), not a starload loader's", False
            loader = (matched[1] or "").upper()
            beat = self._last_beat(loader) if loader and loader != self.loader_id else None
            if beat is not None and beat[1] <= self.dead_after:
                holder, age = beat
                return f"loader {holder} (transaction {transaction}, last beat {age:.0f} s ago)", False
            if loader == self.loader_id:
                why = "it was begun by this loader in a session it dropped since"
            elif beat is None:
                why = f"its loader {loader} has no beat" if loader else "a loader of a version before heartbeats"
            else:
                why = f"its loader {beat[0]} last beat {beat[1]:.0f} s ago (dead_after {self.dead_after:g} s)"
            self._guarded(self._look, f"SELECT SYSTEM$ABORT_TRANSACTION({int(transaction)})")
            log.warning(
                "aborted transaction %s (%s), which held the lock this loader waited for: %s, so the loader is gone",
                transaction, name, why,
            )  # fmt: skip
            if loader:
                self._guarded(self._run, f"DELETE FROM {quote(LOADERS_TABLE)} WHERE LOADER = ?", [loader])
            return f"transaction {transaction} ({name}), aborted: {why}", True
        except SinkError as exc:
            log.warning("could not look at the transaction %s that held the lock: %s", transaction, exc)
            return f"transaction {transaction}", False

    def _look(self, statement: str) -> list[dict[str, Any]]:
        """Run a statement outside any transaction (in a new session if the last was dropped); rows by column."""
        self._connect()
        return [dict(zip(self._last_columns, row)) for row in self._run(statement)]

    def rebuild(self, schema: StarSchema, topics: Sequence[str], group: str | None = None) -> list[Step]:
        """The SQL sink's, refused while a loader beats on the star (its last beat younger than ``dead_after``)."""
        self._guarded(self._connect)
        if LOADERS_TABLE in self._guarded(self._columns, [LOADERS_TABLE]):
            alive = self._guarded(
                self._run,
                f"SELECT HOLDER, DATEDIFF(millisecond, BEAT_AT, CURRENT_TIMESTAMP) FROM {quote(LOADERS_TABLE)} "
                "WHERE DATEDIFF(millisecond, BEAT_AT, CURRENT_TIMESTAMP) <= ?",
                [int(self.dead_after * 1000)],
            )
            if alive:
                holders = ", ".join(f"{holder} ({age / 1000:.0f} s ago)" for holder, age in alive)
                msg = f"{self.location()}: a loader is running on the star (last beats: {holders}); stop it, then rebuild"
                raise TerminalSinkError(msg)
        return super().rebuild(schema, topics, group)

    def _last_beat(self, loader: str) -> tuple[str, float] | None:
        """The HOLDER of ``loader`` and the age of its last beat in seconds by the warehouse's clock; None: no beat."""
        self._guarded(self._connect)
        try:
            rows = self._guarded(
                self._run,
                f"SELECT HOLDER, DATEDIFF(millisecond, BEAT_AT, CURRENT_TIMESTAMP) FROM {quote(LOADERS_TABLE)} "
                "WHERE LOADER = ?",
                [loader],
            )
        except TerminalSinkError:
            if LOADERS_TABLE in self._guarded(self._columns, [LOADERS_TABLE]):
                raise
            return None  # no loader has ever beaten on this star
        return (str(rows[0][0]), float(rows[0][1]) / 1000) if rows else None

    def _beat(self, *, fresh: float = 0.0, stop: threading.Event | None = None) -> None:
        """Record that this loader is alive, from its second session (unless a beat did less than ``fresh`` s ago).

        Never fails: a failing beat is logged (at most every BEAT_FAILURE_LOG_EVERY
        seconds), and the session is opened again by the next. ``stop``: the beats of
        a transaction that may have ended while this one waited its turn.
        """
        now = time.monotonic()
        if fresh and self._beaten is not None and now - self._beaten < fresh:
            return
        if not self._beat_guard.acquire(timeout=BEAT_TIMEOUT):
            return  # a beat is on its way already
        try:
            if stop is not None and stop.is_set():
                return
            import snowflake.connector

            if self._beat_connection is None:
                arguments = self.connection_arguments()
                session = {**arguments["session_parameters"], "STATEMENT_TIMEOUT_IN_SECONDS": BEAT_TIMEOUT}
                arguments |= {"session_parameters": session, "network_timeout": BEAT_TIMEOUT}
                self._beat_connection = snowflake.connector.connect(**arguments)
            cursor = self._beat_connection.cursor()
            try:
                if not self._beats_table_made:
                    cursor.execute(
                        f"CREATE TABLE IF NOT EXISTS {quote(LOADERS_TABLE)} "
                        "(LOADER VARCHAR NOT NULL, HOLDER VARCHAR, BEAT_AT TIMESTAMP_TZ)"
                    )
                    # Loaders killed outside a transaction leave a row nobody reads again.
                    cursor.execute(
                        f"DELETE FROM {quote(LOADERS_TABLE)} WHERE BEAT_AT < DATEADD(day, -1, CURRENT_TIMESTAMP)"
                    )
                    self._beats_table_made = True
                cursor.execute(
                    f"MERGE INTO {quote(LOADERS_TABLE)} AS t USING (SELECT ? AS LOADER, ? AS HOLDER) AS s "
                    "ON t.LOADER = s.LOADER "
                    "WHEN MATCHED THEN UPDATE SET HOLDER = s.HOLDER, BEAT_AT = CURRENT_TIMESTAMP "
                    "WHEN NOT MATCHED THEN INSERT (LOADER, HOLDER, BEAT_AT) "
                    "VALUES (s.LOADER, s.HOLDER, CURRENT_TIMESTAMP)",
                    [self.loader_id, self._holder],
                )
            finally:
                cursor.close()
            self._beaten = time.monotonic()
        except Exception as exc:  # noqa: BLE001 - a beat never fails the write
            if not _statement_failed(exc):  # else the session is sound: keep it
                self._close_beats()
            if self._beat_failure_logged is None or now - self._beat_failure_logged >= BEAT_FAILURE_LOG_EVERY:
                self._beat_failure_logged = now
                log.warning(
                    "could not record this loader's heartbeat in %s (other loaders may take it for dead and abort its "
                    "transaction): %s", LOADERS_TABLE, self._describe_error(exc) or exc,
                )  # fmt: skip
        finally:
            self._beat_guard.release()

    def _start_beating(self) -> None:
        """Beat at once (unless a beat is fresh), then every ``heartbeat`` seconds until the transaction begun now ends.

        From a daemon thread, so the first beat goes side by side with the transaction's
        first request: a waiter looks at the beats only after a ``lock_timeout`` wait.
        """
        self._stop_beating()
        stop = self._beating = threading.Event()

        def beat() -> None:
            self._beat(fresh=self.heartbeat, stop=stop)
            while not stop.wait(self.heartbeat):
                self._beat(stop=stop)

        threading.Thread(target=beat, name=f"starload-heartbeat-{self.loader_id}", daemon=True).start()

    def _stop_beating(self) -> None:
        beating, self._beating = self._beating, None
        if beating is not None:
            beating.set()

    def _close_beats(self) -> None:
        """Close the beats' session (the caller holds ``_beat_guard``)."""
        connection, self._beat_connection = self._beat_connection, None
        if connection is not None:
            with contextlib.suppress(Exception):
                connection.close()

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
            waited = (
                "found its queue full (Snowflake lets at most 20 statements wait for one lock)"
                if "statements limit" in detail
                else f"waited (lock_timeout {self.lock_timeout} s)"
            )
            text = (
                f"Snowflake: a statement {waited} for a lock on {table[1] if table else 'a table'} held by transaction "
                f"{holder}. If it belongs to a loader that was killed, Snowflake aborts it after about four hours idle; "
                f"SELECT SYSTEM$ABORT_TRANSACTION({holder}) frees it now. {detail}"
            )
            return LockWaitError(text, int(found[1]) if found else None, table[1] if table else None)
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
            if self._beat_guard.acquire(timeout=BEAT_TIMEOUT):
                try:
                    if self._beat_connection is not None:  # this loader is gone: its row is no longer needed
                        with contextlib.suppress(Exception):
                            self._beat_connection.cursor().execute(
                                f"DELETE FROM {quote(LOADERS_TABLE)} WHERE LOADER = ?", [self.loader_id]
                            )
                    self._close_beats()
                finally:
                    self._beat_guard.release()
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
        "lock_timeout": f"seconds a statement waits for a lock before the holder is looked at (default {DEFAULT_LOCK_TIMEOUT})",
        "statement_timeout": f"seconds a statement may run (default {DEFAULT_STATEMENT_TIMEOUT})",
        "heartbeat": f"seconds between a loader's beats while its transaction is open (default {DEFAULT_HEARTBEAT})",
        "dead_after": (
            f"seconds without a beat after which a loader whose transaction blocks another is taken for dead and "
            f"its transaction aborted (default {DEFAULT_DEAD_AFTER}; at least 2 x heartbeat)"
        ),
        "network_timeout": "seconds the connector may spend retrying one request (default statement_timeout + 60)",
    },
)


@hookimpl
def register_sinks(register: Callable[[SinkType], None]) -> None:
    """Built-in plugin: the Snowflake sink (the driver is imported only when it connects)."""
    register(SNOWFLAKE_SINK)
