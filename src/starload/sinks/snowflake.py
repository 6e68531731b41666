"""The Snowflake sink, on the real ``snowflake-connector-python`` (``pip install 'starload[snowflake]'``).

A batch reaches Snowflake the way Snowflake recommends for bulk loads: every staged
Arrow table is written as a Parquet file, ``PUT`` to the internal stage
``STARLOAD_STAGE`` and ``COPY``-ed into a staging table of this loader's own; then
the shared set-based plan of :class:`~starload.sinks.sql.SQLSink` runs in one
transaction. The number of statements per batch does not depend on its size.

Surrogate keys come from ``IDENTITY`` columns (sequences inside Snowflake).
Concurrent loaders stay correct: their staging tables are private (temporary, or
suffixed with a per-loader id); UPDATE takes a lock on the dimension table that is
held until COMMIT, so two loaders upserting the same dimension run one after the
other and the second sees the first's members before inserting; facts of one
partition are only ever written by the loader that owns the partition, which seeks
to the offsets committed with the data.

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
import shutil
import tempfile
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from starload.exceptions import SinkError, StarloadError, TerminalSinkError, TransientSinkError
from starload.hookspecs import hookimpl
from starload.mapping import quote
from starload.sinks.base import SinkType
from starload.sinks.sql import Dialect, SQLSink

SNOWFLAKE = Dialect(
    name="snowflake",
    integer="NUMBER(38, 0)",
    small_integer="NUMBER(10, 0)",
    decimal="NUMBER({p}, {s})",
    timestamp="TIMESTAMP_TZ",
    binary="BINARY",
    sized_strings=True,
    key_default=lambda _seq: "IDENTITY(1, 1)",
    uses_sequence=False,
    placeholder="%s",
)

STAGE = "STARLOAD_STAGE"
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
    if pa.types.is_boolean(data_type):
        return "BOOLEAN"
    if pa.types.is_binary(data_type) or pa.types.is_large_binary(data_type):
        return "BINARY"
    if pa.types.is_string(data_type) or pa.types.is_large_string(data_type):
        return "VARCHAR"
    msg = f"no Snowflake type for staged Arrow type {data_type}"
    raise SinkError(msg)


class SnowflakeSink(SQLSink):
    """Loads the star into Snowflake through PUT + COPY INTO of Parquet files.

    ``connection_name`` picks a connection from ``connections.toml``; otherwise the
    ``SNOWFLAKE_*`` environment variables are used, overridden by ``settings``.
    ``staging`` is ``"temporary"`` (default: session-private staging tables) or
    ``"transient"`` (tables suffixed with this loader's id, dropped on close; for
    endpoints that cannot COPY into temporary tables, such as the local emulator).
    """

    dialect = SNOWFLAKE

    def __init__(self, *, connection_name: str | None = None, staging: str = "temporary", **settings: Any) -> None:
        super().__init__()
        if staging not in ("temporary", "transient"):
            msg = f"staging must be 'temporary' or 'transient', not {staging!r}"
            raise StarloadError(msg)
        self.connection_name = connection_name
        self.staging = staging
        self._settings = {k: v for k, v in settings.items() if v not in (None, "")}
        self._connection: Any = None
        self._id = uuid.uuid4().hex[:8].upper()
        self._files: Path | None = None
        self._batch = 0
        self._last_rowcount = 0
        self._staging_tables: set[str] = set()

    def __repr__(self) -> str:
        shown = {k: v for k, v in self.connection_arguments().items() if k not in SECRETS}
        return f"SnowflakeSink({shown})"

    def connection_arguments(self) -> dict[str, Any]:
        """What is passed to ``snowflake.connector.connect`` (includes secrets: never log it)."""
        if self.connection_name:
            return {"connection_name": self.connection_name, **self._settings}
        return {**settings_from_environment(), **self._settings}

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
        self._connection = self._guarded(lambda: snowflake.connector.connect(**arguments))
        self._files = Path(tempfile.mkdtemp(prefix="starload-snowflake-"))
        self._execute(f"CREATE STAGE IF NOT EXISTS {STAGE} FILE_FORMAT = (TYPE = PARQUET)")

    def _run(self, statement: str, params: Sequence[Any] | None = None) -> list[tuple[Any, ...]]:
        cursor = self._connection.cursor()
        try:
            cursor.execute(statement, params)
            rows = cursor.fetchall() if cursor.description else []
            self._last_rowcount = cursor.rowcount or 0
            return rows
        finally:
            cursor.close()

    def _rowcount(self, rows: list[tuple[Any, ...]]) -> int:
        return int(self._last_rowcount)

    def _stage(self, name: str, table: pa.Table) -> str:
        assert self._files is not None
        staged = f"STARLOAD_STAGED_{name}_{self._id}".upper()
        kind = "TEMPORARY" if self.staging == "temporary" else "TRANSIENT"
        columns = ", ".join(f"{quote(f.name)} {_arrow_type_name(f.type)}" for f in table.schema)
        self._execute(f"CREATE OR REPLACE {kind} TABLE {quote(staged)} ({columns})")
        self._staging_tables.add(staged)
        if table.num_rows:
            self._batch += 1
            folder = f"{self._id}/{self._batch}"
            path = self._files / f"{name.lower()}.parquet"
            pq.write_table(table, path, coerce_timestamps="us")
            try:
                self._execute(f"PUT 'file://{path.as_posix()}' @{STAGE}/{folder} AUTO_COMPRESS = FALSE OVERWRITE = TRUE")
            finally:
                path.unlink(missing_ok=True)
            self._execute(
                f"COPY INTO {quote(staged)} FROM @{STAGE}/{folder}/{path.name} FILE_FORMAT = (TYPE = PARQUET) "
                "MATCH_BY_COLUMN_NAME = CASE_SENSITIVE PURGE = TRUE"
            )
        return quote(staged)

    def _unstage(self, names: list[str]) -> None:
        """Staging tables are replaced by the next batch and dropped on close."""

    def _transaction(self, action: str) -> None:
        self._execute(action.upper())

    def _describe_error(self, exc: BaseException) -> SinkError | None:
        try:
            from snowflake.connector import errors
        except ImportError:
            return None
        if not isinstance(exc, errors.Error):
            return None
        # The connector's message names the query id and the error, never the credentials.
        text = f"Snowflake: {type(exc).__name__}: {getattr(exc, 'msg', None) or exc}"
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
        # 000625: statement timeout; 000604: query cancelled; 000630: lock wait timeout.
        retryable_errno = {625, 604, 630}
        if isinstance(exc, transient) or getattr(exc, "errno", None) in retryable_errno:
            return TransientSinkError(text)
        return TerminalSinkError(text)

    def close(self) -> None:
        if self._connection is not None:
            if self.staging == "transient":
                for staged in sorted(self._staging_tables):
                    try:
                        self._run(f"DROP TABLE IF EXISTS {quote(staged)}")
                    except Exception:  # noqa: BLE001 - best effort on the way out
                        log.warning("could not drop staging table %s", staged)
                        break
                self._staging_tables.clear()
            self._connection.close()
            self._connection = None
        if self._files is not None:
            shutil.rmtree(self._files, ignore_errors=True)
            self._files = None


SNOWFLAKE_SINK = SinkType(
    name="snowflake",
    factory=SnowflakeSink,
    description="Snowflake via PUT + COPY INTO of Parquet (SNOWFLAKE_* environment or --snowflake-connection)",
    options={
        "connection_name": "a connection of connections.toml (CLI: --snowflake-connection)",
        "staging": "temporary (default) or transient",
    },
)


@hookimpl
def register_sinks(register: Callable[[SinkType], None]) -> None:
    """Built-in plugin: the Snowflake sink (the driver is imported only when it connects)."""
    register(SNOWFLAKE_SINK)
