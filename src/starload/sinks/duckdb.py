"""The DuckDB sink: the embedded warehouse for local work and tests.

Each batch is registered with DuckDB as Arrow tables (no copy, no row loop) and
applied with the shared set-based plan of :class:`starload.sinks.sql.SQLSink` in
one transaction. Surrogate keys come from sequences (``<TABLE>_SEQ``);
``path=":memory:"`` gives an in-memory warehouse. ``memory_limit`` caps DuckDB's
buffer cache (default 512MB; ``--sink-option memory_limit=2GB``), which otherwise
grows with the database, up to 80 % of RAM.

**Readers while it loads.** DuckDB lets one process at a time open a file for
writing, and none other open it at all meanwhile, not even read-only. So the sink
hands the file to readers, and a reader that tries once a second with a plain
read-only connect (``duckdb.connect(path, read_only=True)``, ``duckdb -readonly``) gets
in within about a second plus the batch being written, at any stream rate:

* **A reader knocks** (Linux): the sink watches the file with inotify. A reader's
  attempt to open it, even one that fails because the loader holds it, is an open of
  the file by another process; the sink then lets the file go as soon as the call in
  hand (a batch's transaction) ends, or at once when it is idle. Without readers the
  file is held for the whole load, as fast as ``share_every=0``. (inotify sees only
  this machine's opens: a reader on another machine, over a network file system, is
  never let in.)
* **Elsewhere** (no inotify, or none left: ``fs.inotify.max_user_instances``), it
  lets the file go ``share_every`` seconds (default 2) after it opened it, as soon as
  the call in hand ends.
* **The reader's turn.** Once it let the file go, the sink stays away for
  ``reader_window`` seconds (default 1.5, more than a reader's second between tries),
  or until the readers that came in meanwhile have closed it again (Linux),
  then takes the file back, waiting up to ``open_timeout`` seconds (default 60) for
  the readers in it to close it, and then failing the write as transient (the engine
  retries it). :func:`read_only` waits for its turn.

``share_every=0`` holds the file for the whole load (no readers). Nothing can be lost
or doubled: every batch is one transaction with its offsets, and a reader sees whole
batches only.

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
import select
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
from starload.sinks.sql import DUCKDB, SQLSink, Step, batch_parts
from starload.spec import StarSchema

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; the one-loader check is left out
    fcntl = None  # type: ignore[assignment]
try:
    from inotify_simple import INotify, flags
except ImportError:  # not Linux: readers are let in every share_every seconds instead
    INotify = None  # type: ignore[assignment,misc]

T = TypeVar("T")
log = logging.getLogger(__name__)
#: How DuckDB's catalogue names a type the sink's DDL spells otherwise.
_DUCKDB_SPELLINGS = {"TIMESTAMP WITH TIME ZONE": "TIMESTAMPTZ"}
#: Seconds without an open or close of the file after which readers that came in during their turn are done.
READERS_DONE_AFTER = 0.1
#: Seconds at the start of the readers' turn whose opens and closes are the knock's own (a failed
#: connect opens and closes the file three times): a reader that comes in then waits out the window.
KNOCK_TAIL = 0.2
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
            # The file may appear between the failed open and this check: its absence is judged by the error too.
            missing = "database does not exist" in str(exc) or not os.path.exists(path)
            waits = _HELD.search(str(exc)) is not None or missing
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


class _Knocks:
    """Opens of a DuckDB file by anyone (inotify): while the sink holds the file, an open is a reader knocking."""

    def __init__(self, path: str) -> None:
        self._watch = INotify()
        try:
            self._watch.add_watch(path, flags.OPEN | flags.CLOSE_NOWRITE)
        except OSError:
            self._watch.close()
            raise
        self._wake_read, self._wake_write = os.pipe()  # wake() ends a wait() at once

    @classmethod
    def watch(cls, path: str) -> _Knocks | None:
        """Knocks at ``path``; None where they cannot be seen (not Linux, no inotify instance left)."""
        if INotify is None:
            return None
        try:
            return cls(path)
        except OSError as exc:
            log.warning("DuckDB sink %r: cannot watch the file for readers (%s); letting them in every share_every seconds", path, exc)
            return None

    def wait(self) -> bool:
        """Wait for opens (True) or :meth:`wake` (False)."""
        ready = select.select([self._watch, self._wake_read], [], [])[0]
        return self._wake_read not in ready

    def wake(self) -> None:
        os.write(self._wake_write, b"x")

    def heard(self) -> tuple[int, int]:
        """How often the file was opened, and closed unwritten (a reader's close), since the last call."""
        events = self._watch.read(timeout=0)
        opened = sum(1 for e in events if e.mask & flags.OPEN)
        return opened, sum(1 for e in events if e.mask & flags.CLOSE_NOWRITE)

    def close(self) -> None:
        self._watch.close()
        os.close(self._wake_read)
        os.close(self._wake_write)


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
        reader_window: float | str = 1.5,
    ) -> None:
        super().__init__()
        self.path = str(path)
        self.memory_limit = memory_limit
        self.checkpoint_threshold = checkpoint_threshold
        self.share_every = seconds_option("share_every", share_every)
        self.open_timeout = seconds_option("open_timeout", open_timeout)
        self.reader_window = seconds_option("reader_window", reader_window)
        self._connection: duckdb.DuckDBPyConnection | None = None
        self._claimed = False
        #: Held while the connection is in use; the release timer takes it too.
        self._use = threading.RLock()
        #: Without knocks: lets the file go ``share_every`` seconds after it was opened (once the call in hand ends).
        self._release: threading.Timer | None = None
        #: Readers knocking (None: not watched, or cannot be), and the thread that lets them in.
        self._knocks: _Knocks | None = None
        self._watcher: threading.Thread | None = None
        self._watched = False
        #: Until when (``time.monotonic()``) the file is the readers': the sink does not reopen it before.
        self._readers_until = 0.0
        #: Set while the file is the readers'; and once a reader came in meanwhile (the turn then ends early).
        self._readers_turn = threading.Event()
        #: During a turn: readers in the file now (opens less closes), and when one last came or went (None: none came yet).
        self._readers_inside = 0
        self._readers_moved: float | None = None

    @property
    def connection(self) -> duckdb.DuckDBPyConnection:
        """The open connection (opened by :meth:`prepare`; reopened if it was let go, and kept until the sink's next call)."""
        with self._use:
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

    def rebuilding(self, schema: StarSchema, topics: Sequence[str], group: str | None = None) -> list[Step]:
        """The SQL sink's, refused while another process loads the file (its ``.loader`` lock); nothing when there is no file."""
        self._claim()
        return self._shared(super().rebuilding, schema, topics, group) if self._exists() else []

    def rebuild(self, schema: StarSchema, topics: Sequence[str], group: str | None = None) -> list[Step]:
        self._claim()
        return self._shared(super().rebuild, schema, topics, group) if self._exists() else []

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
        if self._watcher is not None and self._knocks is not None:
            self._knocks.wake()
            self._watcher.join()
            self._watcher = None
        with self._use:
            self._disconnect()
            if self._knocks is not None:
                self._knocks.close()
                self._knocks = None
            self._watched = False
        if self._claimed:
            _LoaderLock.release(self.path)
            self._claimed = False

    def _shared(self, call: Callable[..., T], *args: Any) -> T:
        """Run ``call`` holding the file: readers are let in between calls (the watcher and the timer wait for ``_use``)."""
        with self._use:
            return call(*args)

    def _let_go(self, connection: duckdb.DuckDBPyConnection) -> None:
        """The timer (without knocks): let readers in, unless ``connection`` was let go already."""
        with self._use:
            if self._connection is connection:
                self._let_readers_in()

    def _let_readers_in(self) -> None:
        """Close the file and leave it to readers for ``reader_window`` seconds."""
        self._disconnect()
        self._readers_until = time.monotonic() + self.reader_window
        self._readers_inside, self._readers_moved = 0, None
        self._readers_turn.set()

    def _watch(self, knocks: _Knocks) -> None:
        """The watcher thread: let readers in when one knocks, once the call in hand (if any) ends."""
        while knocks.wait():
            if self._readers_turn.is_set():  # the file is the readers': opens and closes are theirs
                opened, closed = knocks.heard()
                if time.monotonic() < self._readers_until - self.reader_window + KNOCK_TAIL:
                    continue  # the rest of the failed try that knocked, not a reader coming in
                # at least 0: the close of a knock that failed just before the turn may come in it
                self._readers_inside = max(0, self._readers_inside + opened - closed)
                if opened or self._readers_moved is not None:
                    self._readers_moved = time.monotonic()
                continue
            with self._use:  # taken between calls only; _connect consumes the sink's own opens under it
                if any(knocks.heard()) and self._connection is not None:
                    log.debug("DuckDB sink %r: a reader knocked; letting it in for %g s", self.path, self.reader_window)
                    self._let_readers_in()

    # -- the connection ------------------------------------------------------------
    def _config(self) -> dict[str, str]:
        return {"memory_limit": self.memory_limit, "checkpoint_threshold": self.checkpoint_threshold}

    def _disconnect(self) -> None:
        if self._release is not None:
            self._release.cancel()
            self._release = None
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.close()

    def _connect(self) -> None:
        if self._connection is not None:
            return
        self._wait_for_readers_turn()
        asked = time.monotonic()
        with self.waits.on(f"readers of DuckDB file {self.path!r} to close it") as wait:
            while True:
                try:
                    self._connection = duckdb.connect(self.path, config=self._config())
                    break
                except duckdb.IOException as exc:
                    held = _HELD.search(str(exc))
                    if held is None:
                        raise
                    wait.what = f"a reader of DuckDB file {self.path!r} to close it ({held[1]}, PID {held[2]})"
                    if self.waits.stopping.is_set():
                        raise self.waits.stopped(wait) from None
                    if time.monotonic() - asked >= self.open_timeout:
                        msg = (
                            f"DuckDB file {self.path!r} is held open by another process ({held[1]}, PID {held[2]}) for "
                            f"{self.open_timeout:g} s (open_timeout): a reader should close it soon after its query"
                        )
                        raise TransientSinkError(msg) from None
                    self.waits.remind()
                    time.sleep(0.05)
        waited = time.monotonic() - asked
        if waited >= 0.05:
            log.debug("DuckDB sink %r: waited %.3f s for readers to close the file", self.path, waited)
        self._connection.execute("SET TimeZone = 'UTC'")
        self._hear_knocks()

    def _wait_for_readers_turn(self) -> None:
        """Wait out the readers' turn: ``reader_window`` seconds, or until readers came in and closed the file again."""
        while (now := time.monotonic()) < self._readers_until:
            moved = self._readers_moved
            if moved is not None and self._readers_inside <= 0 and now - moved >= READERS_DONE_AFTER:
                break  # a reader's connect opens and closes the file a few times, within microseconds
            time.sleep(0.02)
        self._readers_turn.clear()

    def _hear_knocks(self) -> None:
        """Watch the file for readers once it exists, and forget the opens the sink's own connect made; without knocks, set the timer."""
        if not self.share_every or self.path == ":memory:":
            return
        if not self._watched:
            self._watched = True  # once: where the file cannot be watched, the warning says so once
            self._knocks = _Knocks.watch(self.path)
            if self._knocks is not None:
                self._watcher = threading.Thread(target=self._watch, args=(self._knocks,), name="starload-duckdb-readers", daemon=True)
                self._watcher.start()
        if self._knocks is not None:
            self._knocks.heard()  # the sink's own opens
            return
        self._release = threading.Timer(self.share_every, self._let_go, args=(self._connection,))
        self._release.daemon = True
        self._release.start()

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
        "share_every": "without inotify, let readers in at least this often, in seconds (default 2; 0: hold the file, no readers)",
        "reader_window": "seconds the file is left to readers each time they are let in (default 1.5)",
        "open_timeout": "seconds to wait for readers to close the file (default 60)",
    },
)


@hookimpl
def register_sinks(register: Callable[[SinkType], None]) -> None:
    """Built-in plugin: the DuckDB sink."""
    register(DUCKDB_SINK)
