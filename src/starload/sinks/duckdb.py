"""The DuckDB sink: the embedded warehouse for local work and tests.

Each batch is registered with DuckDB as Arrow tables (no copy, no row loop) and
applied with the shared set-based plan of :class:`starload.sinks.sql.SQLSink` in
one transaction. Surrogate keys come from sequences (``<TABLE>_SEQ``);
``path=":memory:"`` gives an in-memory warehouse. ``memory_limit`` caps DuckDB's
buffer cache (default 512MB; ``--sink-option memory_limit=2GB``), which otherwise
grows with the database, up to 80 % of RAM.

**Readers while it loads.** DuckDB lets one process at a time open a file for
writing, and none other open it at all meanwhile, not even read-only. So the sink
lets the file go between batches: after a write or a read of offsets, it closes its
connection at once if it has held the file ``share_every`` seconds (default 2) or
more, and otherwise ``share_every`` seconds later unless another write came first.
Another process can then open the file read-only (:func:`read_only` waits for its
turn); when the sink needs the file back, it waits up to ``open_timeout`` seconds
(default 60) for the readers to close it, then fails the write as transient (the
engine retries it). ``share_every=0`` holds the file for the whole load (fastest;
no readers). Nothing can be lost or doubled: every batch is one transaction with its
offsets.

**One loader per file.** A loader also holds ``<path>.loader`` locked (with its PID
in it) from its sink's first call until the sink is closed, and removes it then: a
second loader on the same file stops at once with one line naming the process that
loads it. (POSIX only; elsewhere the check is left out.)

**Nothing before the first write.** :meth:`DuckDBSink.inspect` and the stored offsets
of a file that does not exist yet answer "nothing" without creating it (a bad
``memory_limit`` still shows at once); :meth:`DuckDBSink.prepare` makes the file.

``checkpoint_threshold`` is how much write-ahead log DuckDB gathers before it
checkpoints into the file (default here 64MB; DuckDB's own is 16MB). A checkpoint
rewrites the last, partly filled row group (122,880 rows): with batches
of 50,000 rows that happened every two or three batches, and cost about as much as
the inserts. Durability is unchanged: every batch is in the log at COMMIT, and the
log is replayed when the file is opened again. Closing the file to share it also
checkpoints, at most once per ``share_every`` seconds.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any, ClassVar, TypeVar

import duckdb
import pyarrow as pa

from starload.exceptions import SinkError, TerminalSinkError, TransientSinkError
from starload.hookspecs import hookimpl
from starload.drift import Column, WarehouseStar
from starload.sinks.base import SinkType, StagedBatch, WriteResult, seconds_option
from starload.sinks.sql import DUCKDB, SQLSink, batch_parts
from starload.spec import StarSchema

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; the one-loader check is left out
    fcntl = None  # type: ignore[assignment]

T = TypeVar("T")
log = logging.getLogger(__name__)
#: How DuckDB's catalogue names a type the sink's DDL spells otherwise.
_DUCKDB_SPELLINGS = {"TIMESTAMP WITH TIME ZONE": "TIMESTAMPTZ"}
_HELD = re.compile(r"Conflicting lock is held in (.*?) \(PID (\d+)\)")


@contextlib.contextmanager
def read_only(path: str | Path, timeout: float = 30.0) -> Iterator[duckdb.DuckDBPyConnection]:
    """A read-only connection to a DuckDB file a loader may be writing, for the length of a ``with`` block.

    Waits up to ``timeout`` seconds for the loader to let the file go between batches
    (it does within ``share_every`` seconds, plus the batch in hand), and for the file
    to exist (a loader makes it just before its first write). Keep the block short:
    while it is open, the loader waits.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            connection = duckdb.connect(str(path), read_only=True)
            break
        except duckdb.IOException as exc:
            waits = _HELD.search(str(exc)) is not None or not os.path.exists(path)
            if not waits or time.monotonic() >= deadline:
                raise
            time.sleep(0.05)
    try:
        yield connection
    finally:
        connection.close()


class _LoaderLock:
    """``<path>.loader``, locked for as long as a sink of this process loads ``path`` (shared by the process's sinks)."""

    _held: ClassVar[dict[str, tuple[IO[str], int]]] = {}
    _guard = threading.Lock()

    @staticmethod
    def _name(path: str) -> str | None:
        """The lock file of ``path``; None where there is none to take (no fcntl, or an in-memory database)."""
        return None if fcntl is None or path == ":memory:" else os.path.realpath(path) + ".loader"

    @classmethod
    def claim(cls, path: str) -> None:
        name = cls._name(path)
        if name is None:
            return
        with cls._guard:
            if name in cls._held:
                file, users = cls._held[name]
                cls._held[name] = (file, users + 1)
                return
            folder = os.path.dirname(name)
            if not os.path.isdir(folder):
                msg = f"DuckDB sink {path!r}: the folder {folder} does not exist; create it, or give another --duckdb-path"
                raise TerminalSinkError(msg)
            while True:
                try:
                    file = open(name, "a+")  # noqa: SIM115 - held open past this call, closed by release()
                except OSError as exc:
                    msg = f"DuckDB sink {path!r}: cannot open {name}: {exc.strerror}"
                    raise TerminalSinkError(msg) from None
                try:
                    fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:
                    file.seek(0)
                    holder = file.read().strip() or "unknown"
                    file.close()
                    msg = (
                        f"DuckDB file {path!r} is loaded by another process (PID {holder}, per {name}): one loader per "
                        "file. Stop that loader, or give this one another --duckdb-path"
                    )
                    raise TerminalSinkError(msg) from None
                if cls._still_named(file, name):
                    break
                file.close()  # its loader removed it after we opened it: take the new one
            file.truncate(0)
            file.write(f"{os.getpid()}\n")
            file.flush()
            cls._held[name] = (file, 1)

    @staticmethod
    def _still_named(file: IO[str], name: str) -> bool:
        """Whether ``name`` is still the file locked (a loader that stops removes it while it holds the lock)."""
        try:
            return os.stat(name).st_ino == os.fstat(file.fileno()).st_ino
        except FileNotFoundError:
            return False

    @classmethod
    def release(cls, path: str) -> None:
        """Let the file go; the last user removes it (still locked, so no other loader holds a removed file)."""
        name = cls._name(path)
        with cls._guard:
            if name is None or name not in cls._held:
                return
            file, users = cls._held.pop(name)
            if users > 1:
                cls._held[name] = (file, users - 1)
                return
            with contextlib.suppress(FileNotFoundError):
                os.unlink(name)
            file.close()


class DuckDBSink(SQLSink):
    """Loads the star into a DuckDB database file (or ``:memory:``), letting readers in between batches."""

    dialect = DUCKDB

    def __init__(
        self,
        path: str | Path = "starload.duckdb",
        memory_limit: str = "512MB",
        checkpoint_threshold: str = "64MB",
        share_every: float | str = 2.0,
        open_timeout: float | str = 60.0,
    ) -> None:
        super().__init__()
        self.path = str(path)
        self.memory_limit = memory_limit
        self.checkpoint_threshold = checkpoint_threshold
        self.share_every = seconds_option("share_every", share_every)
        self.open_timeout = seconds_option("open_timeout", open_timeout)
        self._connection: duckdb.DuckDBPyConnection | None = None
        self._claimed = False
        #: Held while the connection is in use; the release timer takes it too.
        self._use = threading.RLock()
        self._opened_at = 0.0
        self._release: threading.Timer | None = None
        #: Calls of the sink in progress (they nest: prepare inspects): only the outermost lets the file go.
        self._calls = 0

    @property
    def connection(self) -> duckdb.DuckDBPyConnection:
        """The open connection (opened by :meth:`prepare`; reopened if it was let go, and kept until the sink's next call)."""
        with self._use:
            self._cancel_release()
            if self._connection is None and self._sql is not None:
                self._guarded(self._connect)
            if self._connection is None:
                msg = "DuckDBSink.prepare(schema) must be called before use"
                raise SinkError(msg)
            return self._connection

    # -- every call holds the file, then lets it go now or soon ------------------------
    def location(self) -> str:
        return f"DuckDB file {self.path!r}"

    def inspect(self, schema: StarSchema) -> WarehouseStar:
        """What the file holds of the star; nothing, without creating the file, when there is none yet."""
        self._claim()
        if not self._exists():
            self._bind(schema)
            self._guarded(lambda: duckdb.connect(":memory:", config=self._config()).close())  # a bad setting shows now
            return WarehouseStar(None, {})
        return self._shared(super().inspect, schema)

    def prepare(self, schema: StarSchema) -> None:
        self._claim()
        self._shared(super().prepare, schema)

    def migrate(self, schema: StarSchema) -> None:
        self._claim()
        self._shared(super().migrate, schema)

    def _claim(self) -> None:
        """Hold ``<path>.loader`` from the sink's first call until it is closed (one loader per file)."""
        if not self._claimed:
            _LoaderLock.claim(self.path)
            self._claimed = True

    def _exists(self) -> bool:
        return self.path == ":memory:" or self._connection is not None or os.path.exists(self.path)

    def _stored(self, group: str, topic: str) -> dict[int, tuple[int, str | None]]:
        if not self._exists():
            return {}
        return super()._stored(group, topic)

    def stored_offsets(self, group: str, topic: str) -> dict[int, int]:
        return self._shared(super().stored_offsets, group, topic)

    def stored_topic_ids(self, group: str, topic: str) -> dict[int, str]:
        return self._shared(super().stored_topic_ids, group, topic)

    def reset_offsets(self, group: str, topic: str, offsets: Mapping[int, int], topic_id: str | None) -> None:
        self._shared(super().reset_offsets, group, topic, offsets, topic_id)

    def find_conflicts(self, batch: StagedBatch) -> pa.Table:
        return self._shared(super().find_conflicts, batch)

    def write(self, batch: StagedBatch) -> WriteResult:
        return self._shared(super().write, batch)

    def close(self) -> None:
        with self._use:
            self._cancel_release()
            self._disconnect()
        if self._claimed:
            _LoaderLock.release(self.path)
            self._claimed = False

    def _shared(self, call: Callable[..., T], *args: Any) -> T:
        """Run ``call`` holding the file; the outermost call lets it go (an inner one may be inside a transaction)."""
        with self._use:
            self._cancel_release()
            self._calls += 1
            try:
                return call(*args)
            finally:
                self._calls -= 1
                if not self._calls:
                    self._let_go()

    def _let_go(self) -> None:
        """Close the file now if it has been held ``share_every`` seconds, else in ``share_every`` seconds."""
        if not self.share_every or self.path == ":memory:" or self._connection is None:
            return
        if time.monotonic() - self._opened_at >= self.share_every:
            self._disconnect()
            return
        self._release = threading.Timer(self.share_every, self._let_go_now)
        self._release.daemon = True
        self._release.start()

    def _let_go_now(self) -> None:
        with self._use:
            if self._release is not None:  # not cancelled meanwhile
                self._release = None
                self._disconnect()

    def _cancel_release(self) -> None:
        if self._release is not None:
            self._release.cancel()
            self._release = None

    # -- the connection ------------------------------------------------------------
    def _config(self) -> dict[str, str]:
        return {"memory_limit": self.memory_limit, "checkpoint_threshold": self.checkpoint_threshold}

    def _disconnect(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.close()

    def _connect(self) -> None:
        if self._connection is not None:
            return
        config = self._config()
        deadline = time.monotonic() + self.open_timeout
        while True:
            try:
                self._connection = duckdb.connect(self.path, config=config)
                break
            except duckdb.IOException as exc:
                held = _HELD.search(str(exc))
                if held is None:
                    raise
                if time.monotonic() >= deadline:
                    msg = (
                        f"DuckDB file {self.path!r} is held open by another process ({held[1]}, PID {held[2]}) for "
                        f"{self.open_timeout:g} s (open_timeout): a reader should close it soon after its query"
                    )
                    raise TransientSinkError(msg) from None
                time.sleep(0.05)
        self._opened_at = time.monotonic()
        waited = self._opened_at - (deadline - self.open_timeout)
        if waited >= 0.05:
            log.debug("DuckDB sink %r: waited %.3f s for readers to close the file", self.path, waited)
        self._connection.execute("SET TimeZone = 'UTC'")

    def _run(self, statement: str, params: Sequence[Any] | None = None) -> list[tuple[Any, ...]]:
        return self.connection.execute(statement, params).fetchall()

    def _rowcount(self, rows: list[tuple[Any, ...]]) -> int:
        return int(rows[0][0]) if rows else 0

    def _columns(self, tables: Sequence[str]) -> dict[str, dict[str, Column]]:
        listed = ", ".join("?" * len(tables))
        rows = self._run(
            "SELECT table_name, column_name, data_type, is_nullable FROM information_schema.columns "
            f"WHERE table_catalog = current_database() AND table_schema = current_schema() AND table_name IN ({listed}) "
            "ORDER BY table_name, ordinal_position",
            list(tables),
        )
        found: dict[str, dict[str, Column]] = {}
        for table, column, data_type, nullable in rows:
            spelt = _DUCKDB_SPELLINGS.get(data_type, data_type)
            found.setdefault(table, {})[column] = Column(spelt, nullable == "YES")
        return found

    def _stage_batch(self, batch: StagedBatch) -> dict[str, str]:
        """Register each part as a view of its Arrow table (no copy)."""
        staged = {}
        for name, table in batch_parts(batch).items():
            staged[name] = f"_sl_{name.lower()}"
            self.connection.register(staged[name], table)
        return staged

    def _release_batch(self, staged: dict[str, str]) -> None:
        for view in staged.values():
            self.connection.unregister(view)

    def _transaction(self, action: str) -> None:
        self._execute(action.upper())

    def _describe_error(self, exc: BaseException) -> SinkError | None:
        if isinstance(exc, duckdb.Error):
            msg = f"DuckDB sink {self.path!r}: {exc}"
            return TerminalSinkError(msg)
        return None


DUCKDB_SINK = SinkType(
    name="duckdb",
    factory=DuckDBSink,
    description="embedded DuckDB database file (default starload.duckdb)",
    options={
        "path": "database file, or :memory: (CLI: --duckdb-path)",
        "memory_limit": "DuckDB buffer cache cap (default 512MB)",
        "checkpoint_threshold": "write-ahead log gathered before a checkpoint (default 64MB)",
        "share_every": "let readers open the file at least this often, in seconds (default 2; 0: hold it)",
        "open_timeout": "seconds to wait for readers to close the file (default 60)",
    },
)


@hookimpl
def register_sinks(register: Callable[[SinkType], None]) -> None:
    """Built-in plugin: the DuckDB sink."""
    register(DUCKDB_SINK)
