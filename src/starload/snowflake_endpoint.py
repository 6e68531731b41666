"""The local Snowflake endpoint of the tests: fakesnow, held to Snowflake's own rules where it matters.

``python -m starload.snowflake_endpoint --port P [--latency-ms N]`` serves fakesnow's
HTTP endpoint (``pip install 'fakesnow[server]'``; the real ``snowflake-connector-python``
talks to it) through :class:`StrictSnowflake`, an ASGI layer that does what Snowflake
does where fakesnow, running every statement on DuckDB, would give DuckDB's answer
instead. Each rule names the Snowflake documentation page it comes from:

* **Parquet logical types** (CREATE FILE FORMAT, Parquet options ``USE_LOGICAL_TYPE`` /
  ``USE_VECTORIZED_SCANNER``): without one of them a Parquet timestamp loads as
  TIMESTAMP_NTZ, and a TIMESTAMP_TZ column then takes the session's offset. A Parquet
  COPY without either is refused here (Snowflake would shift the instants silently).
* **BINARY_AS_TEXT** (CREATE FILE FORMAT, Parquet options; default TRUE): binary
  columns are read as UTF-8 text, and invalid UTF-8 aborts the COPY. A Parquet COPY
  without ``BINARY_AS_TEXT = FALSE`` of a file whose binary column holds invalid
  UTF-8 fails here too.
* **MATCH_BY_COLUMN_NAME** (COPY INTO <table>, copy options): "an empty column value
  (e.g. "col1": "") produces an error". A COPY with it of a file holding an empty
  string fails here.
* **DDL commits the open transaction** (Transactions, "DDL"): a CREATE, ALTER or DROP
  run while a transaction is open commits it first.
* **A CREATE TABLE is one step** (CREATE TABLE: the table appears with its columns
  as declared): fakesnow records a VARCHAR's length in a second statement after
  the table exists, so a query of INFORMATION_SCHEMA in between saw the column
  unsized. Here such queries wait while a CREATE runs.
* **Multi-statement requests** (SQL API, "Submitting multiple SQL statements in a
  single request"; the connector's ``execute(..., num_statements=N)``): the statements
  run in turn as if each were sent alone, explicit transactions included; the count
  must match (000008), no value may be bound in them, and the answer lists each
  statement's query id, whose result the client fetches (``GET /queries/<id>/result``).
  A statement that fails ends the request with its error and the ones after it do not
  run (the documentation does not say; a client that rolls back after any failed
  request is right either way); a transaction the request began stays open until the
  client ends it, as after any failed statement (Transactions, "Statement rollback").
* **Locks** (Transactions, "Resource locking"; parameter LOCK_TIMEOUT, default 43200 s):
  UPDATE, DELETE and MERGE lock their table until the transaction ends, and wait for
  another transaction's lock up to the session's ``LOCK_TIMEOUT``, then fail with
  000625. At most 20 statements wait for one table's lock: the 21st fails at once with
  000625 ("the number of waiters for this lock exceeds the 20 statements limit"; the
  limit is not in the reference pages, its error is: Snowflake knowledge base, "Error:
  Statement … was aborted because the number of waiters for this lock exceeds the 20
  statements limit"). A transaction whose client vanished keeps its locks (it is "detached")
  until ``SYSTEM$ABORT_TRANSACTION(<id>)``. A session closed by its client rolls
  back its open transaction. ``BEGIN NAME n`` names a transaction, and ``SHOW
  TRANSACTIONS`` lists the open ones (id, user, session, name, started_on, state, scope).

fakesnow already behaves as Snowflake does for ``GREATEST``/``LEAST`` (NULL if any
argument is NULL), for ``cursor.rowcount`` of a SELECT (rows returned) and for COPY's
load metadata and missing files (LOAD_SKIPPED, "0 files processed"); the tests check
that too.

For the tests and the benchmark it also counts requests, can hold each request
``latency`` seconds (a remote warehouse's round trip), and injects faults:
``POST /starload/faults`` with ``[{"match": REGEX, "action": ACTION, "times": N,
"errno": E, "message": M, "seconds": S}]`` acts on the next N statements matching
REGEX: ``error`` fails them with that error, ``error_after`` runs them and then
answers with that error (a lost answer, e.g. of a COMMIT), ``delay`` holds them S
seconds before they run, ``lose_file`` loses their staged files before a COPY.
``POST /starload/stats`` returns the request counts (``held``: statements a ``delay``
fault started holding; ``multi``: multi-statement requests), ``served_ms`` (the
milliseconds requests took to answer, the ``latency`` held before not counted: with
several clients, time they queued in this one process too) and, per table, the
milliseconds statements waited for its lock (``lock_wait_ms:<table>``),
transactions held it (``lock_held_ms:<table>``), and the requests a session sent
while it held it (``sent_holding:<table>``); ``POST /starload/reset`` clears counts
and faults.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import os
import re
import time
from collections import Counter
from collections.abc import Awaitable, Callable, MutableMapping
from datetime import UTC, datetime
from typing import Any

import attrs
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: The error number of the rules whose Snowflake error number is not documented (the message says which rule).
STRICT_ERRNO = 990001
LOCK_ERRNO = 625
#: Snowflake's default LOCK_TIMEOUT, in seconds.
DEFAULT_LOCK_TIMEOUT = 43200
#: Answers of statements of multi-statement requests kept for the client to fetch.
KEPT_RESULTS = 10_000
#: Statements that may wait for one table's lock at once; the next fails at once with 000625.
LOCK_WAITERS_LIMIT = 20


class RuleViolation(Exception):
    """A statement Snowflake would fail: carries the error number and message to answer with."""

    def __init__(self, message: str, errno: int = STRICT_ERRNO, sqlstate: str = "22000") -> None:
        super().__init__(message)
        self.message, self.errno, self.sqlstate = message, errno, sqlstate


@attrs.define
class Session:
    """What the layer knows of one connector session."""

    token: str
    lock_timeout: float
    number: int = 0
    transaction: int | None = None
    transaction_name: str = ""


@attrs.define
class Fault:
    """An injected failure for the next ``times`` statements matching ``match``."""

    match: str
    action: str = "error"
    times: int = 1
    errno: int = 990002
    message: str = "injected failure"
    #: For ``delay``: how long the statement is held before it runs.
    seconds: float = 0.0


class StrictSnowflake:
    """ASGI layer over fakesnow's app; see the module docstring for the rules."""

    def __init__(self, app: ASGIApp, *, latency: float = 0.0) -> None:
        self.app = app
        self.latency = latency
        self.sessions: dict[str, Session] = {}
        #: (database, schema, table) → the session token holding its lock
        self.locks: dict[tuple[str, str, str], str] = {}
        #: (database, schema, table) → statements waiting for its lock now
        self.waiters: Counter[tuple[str, str, str]] = Counter()
        #: (database, schema, table) → when its holder took its lock
        self.taken: dict[tuple[str, str, str], float] = {}
        self.faults: list[Fault] = []
        self.requests: Counter[str] = Counter()
        #: query id → the answer of a statement of a multi-statement request, until the client fetches it
        self.results: dict[str, dict[str, Any]] = {}
        #: Held by a CREATE while it runs, and by a query of INFORMATION_SCHEMA (see the module docstring).
        self._catalog = asyncio.Lock()

    # ---- ASGI ---------------------------------------------------------------------------
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        if path.startswith("/starload/"):
            await self._control(scope, receive, send)
            return
        self.requests["all"] += 1
        if self.latency:
            await asyncio.sleep(self.latency)
        began = time.monotonic()
        try:
            await self._serve(path, scope, receive, send)
        finally:
            self.requests["served_ms"] += round((time.monotonic() - began) * 1000)

    async def _serve(self, path: str, scope: Scope, receive: Receive, send: Send) -> None:
        if path == "/session/v1/login-request":
            await self._login(scope, receive, send)
        elif path == "/queries/v1/query-request":
            self.requests["queries"] += 1
            await self._query(scope, receive, send)
        elif path.startswith("/queries/") and path.endswith("/result"):
            await self._result(scope, receive, send)
        elif path == "/session" and b"delete=" in scope.get("query_string", b""):
            await self._logout(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    async def _control(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = await _read(receive)
        if scope["path"] == "/starload/faults":
            self.faults += [Fault(**f) for f in json.loads(body)]
        elif scope["path"] == "/starload/reset":
            self.faults.clear()
            self.requests.clear()
        await _respond(send, {"requests": dict(self.requests), "faults": len(self.faults)})

    async def _login(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = await _read(receive)
        data = json.loads(_decoded(scope, body))
        params = data.get("data", {}).get("SESSION_PARAMETERS", {})
        status, response = await self._forward(scope, body, receive)
        answer = json.loads(response) if response else {}
        login = answer.get("data") or {}
        if login.get("token"):
            timeout = float(params.get("LOCK_TIMEOUT", DEFAULT_LOCK_TIMEOUT))
            self.sessions[login["token"]] = Session(login["token"], timeout, number=len(self.sessions) + 1)
            # Snowflake answers a login with a master token too; without one the connector never
            # ends its session on close (it skips the logout request).
            login.setdefault("masterToken", login["token"])
            response = json.dumps(answer).encode()
        await _respond_raw(send, status, response)

    async def _logout(self, scope: Scope, receive: Receive, send: Send) -> None:
        session = self.sessions.pop(_token(scope), None)
        if session is not None and session.transaction is not None:
            await self._roll_back(session)
        await self.app(scope, receive, send)

    async def _query(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = await _read(receive)
        session = self.sessions.get(_token(scope))
        request = json.loads(_decoded(scope, body))
        if session is not None:
            for table, holder in self.locks.items():
                if holder == session.token:  # a round trip while holding a lock: every waiter waits for it too
                    self.requests[f"sent_holding:{table[2]}"] += 1
        count = (request.get("parameters") or {}).get("MULTI_STATEMENT_COUNT")
        if count is not None and int(count) != 1:
            self.requests["multi"] += 1
            await _respond(send, await self._statements(scope, session, request, int(count), receive))
            return
        status, response = await self._statement(scope, session, request, receive)
        await _respond_raw(send, status, response)

    async def _statements(
        self, scope: Scope, session: Session | None, request: dict[str, Any], count: int, receive: Receive
    ) -> dict[str, Any]:
        """A multi-statement request: each statement in turn, as if sent alone; the answer lists their query ids.

        The statements after one that fails do not run, and the request answers with its
        error; a transaction the request opened stays open (the client ends it).
        """
        statements = _split(request.get("sqlText", ""))
        if count and len(statements) != count:
            message = f"Actual statement count {len(statements)} did not match the desired statement count {count}."
            return _error(RuleViolation(message, 8, "0A000"))
        if request.get("bindings"):
            # SQL API, "Submitting multiple SQL statements in a single request": no variable binding.
            return _error(RuleViolation("Bind variables are not supported in a multi-statement request.", 2049, "0A000"))
        parameters = {k: v for k, v in (request.get("parameters") or {}).items() if k != "MULTI_STATEMENT_COUNT"}
        ids = []
        for sql in statements:
            _, response = await self._statement(scope, session, {**request, "sqlText": sql, "parameters": parameters}, receive)
            answer = json.loads(response)
            if not answer.get("success"):
                return answer
            ids.append(answer["data"]["queryId"])
            self.results[ids[-1]] = answer
            if len(self.results) > KEPT_RESULTS:  # answers never fetched (a BEGIN's, a COMMIT's) go, oldest first
                del self.results[next(iter(self.results))]
        return {
            "data": {
                "resultIds": ",".join(ids),
                "queryId": f"multi-{ids[0] if ids else time.time_ns()}",
                "rowtype": [{"name": "multiple statement execution", "type": "text", "nullable": False}],
                "rowset": [["Multiple statements executed successfully."]],
                "queryResultFormat": "json",
                "total": 1,
            },
            "success": True,
        }

    async def _result(self, scope: Scope, receive: Receive, send: Send) -> None:
        """``GET /queries/<id>/result``: the answer of one statement of a multi-statement request (once)."""
        await _read(receive)
        answer = self.results.pop(scope["path"].split("/")[2], None)
        await _respond(send, answer or _error(RuleViolation("no result for that query id", 709, "02000")))

    async def _statement(self, scope: Scope, session: Session | None, request: dict[str, Any], receive: Receive) -> tuple[int, bytes]:
        """Run one statement through the rules and fakesnow; the HTTP status and body to answer with."""
        from sqlglot import exp

        sql = original = request.get("sqlText", "")
        try:
            statement = _parse(sql)
            fault = self._fault(sql)
            action = fault.action if fault is not None else None
            if fault is not None and action == "error":
                raise RuleViolation(fault.message, fault.errno, "08000")
            if fault is not None and action == "delay":
                self.requests["held"] += 1
                await asyncio.sleep(fault.seconds)
            if session is not None:
                sql = await self._apply_rules(session, statement, sql, lose_files=action == "lose_file")
        except RuleViolation as violation:
            return 200, json.dumps(_error(violation)).encode()
        body = _encoded(scope, json.dumps({**request, "sqlText": sql} if sql != original else request).encode())
        if isinstance(statement, exp.Create) or "INFORMATION_SCHEMA" in sql.upper():
            async with self._catalog:
                status, response = await self._forward(scope, body, receive)
        else:
            status, response = await self._forward(scope, body, receive)
        if session is not None:
            self._after(session, statement, sql, json.loads(response) if response else {})
        if fault is not None and action == "error_after":
            # The statement ran; its answer is lost on the way back.
            return 200, json.dumps(_error(RuleViolation(fault.message, fault.errno, "08000"))).encode()
        return status, response

    async def _forward(self, scope: Scope, body: bytes, receive: Receive) -> tuple[int, bytes]:
        """Run the request on fakesnow; its status and body."""
        chunks: list[bytes] = []
        status = 500
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        async def capture(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))

        await self.app(scope, replay, capture)
        return status, b"".join(chunks)

    # ---- the rules ----------------------------------------------------------------------
    def _fault(self, sql: str) -> Fault | None:
        for fault in self.faults:
            if re.search(fault.match, sql, re.IGNORECASE | re.DOTALL):
                fault.times -= 1
                if fault.times <= 0:
                    self.faults.remove(fault)
                return fault
        return None

    async def _apply_rules(self, session: Session, statement: Any, sql: str, *, lose_files: bool) -> str:
        """Check ``statement`` against the rules before it runs; the SQL to run instead, if any."""
        from sqlglot import exp

        abort = re.fullmatch(r"\s*SELECT\s+SYSTEM\$ABORT_TRANSACTION\s*\(\s*(\d+)\s*\)\s*;?\s*", sql, re.IGNORECASE)
        if abort:
            return await self._abort_transaction(int(abort[1]))
        if re.fullmatch(r"\s*SHOW\s+TRANSACTIONS\s*;?\s*", sql, re.IGNORECASE):
            return self._show_transactions()
        begin = re.fullmatch(r"\s*BEGIN(?:\s+(?:WORK|TRANSACTION))?(?:\s+NAME\s+(\w+))?\s*;?\s*", sql, re.IGNORECASE)
        if begin:
            if session.transaction is None:
                session.transaction = time.time_ns()
                session.transaction_name = (begin[1] or "").upper()
            return "BEGIN"  # fakesnow does not parse a transaction's name
        if statement is None:
            return sql
        if isinstance(statement, exp.Copy):
            await self._check_copy(session, statement, lose_files=lose_files)
        if session.transaction is not None and isinstance(statement, (exp.Create, exp.Drop, exp.Alter)):
            # Transactions, DDL: "each DDL statement executes as its own transaction"; it commits the open one.
            await _run(session.token, "COMMIT")
            self._end_transaction(session)
        if isinstance(statement, (exp.Update, exp.Delete, exp.Merge)):
            await self._lock(session, _target(session.token, statement))
        return sql

    def _after(self, session: Session, statement: Any, sql: str, response: dict[str, Any]) -> None:
        """Track the transaction once a statement ran."""
        from sqlglot import exp

        if isinstance(statement, (exp.Commit, exp.Rollback)) and response.get("success"):
            self._end_transaction(session)
        elif session.transaction is None:
            # An autocommitted statement: its locks end with it.
            self._release(session)
        elif re.match(r"\s*BEGIN\b", sql, re.IGNORECASE) and not response.get("success"):
            self._end_transaction(session)

    async def _check_copy(self, session: Session, statement: Any, *, lose_files: bool) -> None:
        options, match_by_name = _copy_options(statement)
        files = await _copy_files(session.token, statement)
        if lose_files:
            for path in files:
                os.remove(path)
            return
        if str(options.get("TYPE", "CSV")).upper() != "PARQUET":
            return
        if not (_true(options.get("USE_LOGICAL_TYPE")) or _true(options.get("USE_VECTORIZED_SCANNER"))):
            msg = (
                "strict endpoint: a Parquet COPY without USE_LOGICAL_TYPE = TRUE (or USE_VECTORIZED_SCANNER = TRUE) "
                "loads timestamps as TIMESTAMP_NTZ, shifted by the session's time zone in a TIMESTAMP_TZ column "
                "(Snowflake docs: CREATE FILE FORMAT, Parquet options)"
            )
            raise RuleViolation(msg)
        for path in files:
            parquet = pq.ParquetFile(path)
            for field in parquet.schema_arrow:
                as_text = pa.types.is_binary(field.type) and not _false(options.get("BINARY_AS_TEXT"))
                empty_matters = match_by_name and pa.types.is_string(field.type)
                if not (as_text or empty_matters):
                    continue
                column = parquet.read([field.name]).column(0)
                if as_text and not all(v is None or _utf8(v) for v in column.to_pylist()):
                    msg = (
                        f"Invalid UTF8 detected in string in column {field.name}: BINARY_AS_TEXT defaults to TRUE "
                        "(Snowflake docs: CREATE FILE FORMAT, Parquet options BINARY_AS_TEXT)"
                    )
                    raise RuleViolation(msg)
                if empty_matters and pc.any(pc.equal(column, "")).as_py():
                    msg = (
                        f"strict endpoint: MATCH_BY_COLUMN_NAME with an empty value in column {field.name} "
                        '("an empty column value produces an error", Snowflake docs: COPY INTO <table>)'
                    )
                    raise RuleViolation(msg)

    async def _lock(self, session: Session, table: tuple[str, str, str]) -> None:
        """Take the lock of ``table`` for an UPDATE, DELETE or MERGE, waiting up to the session's LOCK_TIMEOUT.

        At most LOCK_WAITERS_LIMIT statements wait for one lock; one more fails at once.
        """
        if self.locks.get(table) == session.token:
            return
        if table not in self.locks:
            self._take(session, table)
            return
        if self.waiters[table] >= LOCK_WAITERS_LIMIT:
            raise RuleViolation(
                f"{self._held(table)} Your statement was aborted because the number of waiters for this lock exceeds "
                f"the {LOCK_WAITERS_LIMIT} statements limit.",
                LOCK_ERRNO, "57014",
            )  # fmt: skip
        asked = time.monotonic()
        deadline = asked + session.lock_timeout
        self.waiters[table] += 1
        try:
            while self.locks.get(table) not in (None, session.token):
                if time.monotonic() >= deadline:
                    msg = (
                        f"{self._held(table)} Your statement was aborted because it waited longer than LOCK_TIMEOUT "
                        f"({session.lock_timeout:g} s)."
                    )
                    raise RuleViolation(msg, LOCK_ERRNO, "57014")
                await asyncio.sleep(0.02)
        finally:
            self.waiters[table] -= 1
            self.requests[f"lock_wait_ms:{table[2]}"] += round((time.monotonic() - asked) * 1000)
        self._take(session, table)

    def _take(self, session: Session, table: tuple[str, str, str]) -> None:
        self.locks[table] = session.token
        self.taken[table] = time.monotonic()

    def _held(self, table: tuple[str, str, str]) -> str:
        """Snowflake's first sentence of a 000625 error: who holds the lock of ``table``."""
        owner = next((s for s in self.sessions.values() if s.token == self.locks.get(table)), None)
        transaction = owner.transaction if owner is not None else 0
        return f"Statement has locked table '{table[2]}' in transaction {transaction} and this lock has not yet been released."

    def _release(self, session: Session) -> None:
        for table in [t for t, holder in self.locks.items() if holder == session.token]:
            del self.locks[table]
            self.requests[f"lock_held_ms:{table[2]}"] += round((time.monotonic() - self.taken.pop(table)) * 1000)

    def _end_transaction(self, session: Session) -> None:
        session.transaction = None
        self._release(session)

    async def _roll_back(self, session: Session) -> None:
        await _run(session.token, "ROLLBACK")
        self._end_transaction(session)

    def _show_transactions(self) -> str:
        """SHOW TRANSACTIONS as a query over what this layer tracks (id, user, session, name, started_on, state, scope)."""
        rows = [
            f"SELECT {s.transaction} AS \"id\", 'STARLOAD' AS \"user\", {s.number} AS \"session\", "
            f"'{s.transaction_name}' AS \"name\", "
            f"CAST('{datetime.fromtimestamp(s.transaction / 1e9, UTC).isoformat()}' AS TIMESTAMP_TZ) AS \"started_on\", "
            "'running' AS \"state\", 0 AS \"scope\""
            for s in self.sessions.values()
            if s.transaction is not None
        ]
        return " UNION ALL ".join(rows) or (
            'SELECT 0 AS "id", \'\' AS "user", 0 AS "session", \'\' AS "name", '
            'CAST(NULL AS TIMESTAMP_TZ) AS "started_on", \'\' AS "state", 0 AS "scope" WHERE 1 = 0'
        )

    async def _abort_transaction(self, transaction: int) -> str:
        """SYSTEM$ABORT_TRANSACTION: roll back that transaction, whichever session holds it; the answer as SQL."""
        for session in self.sessions.values():
            if session.transaction == transaction:
                await self._roll_back(session)
                return f"SELECT 'Transaction {transaction} aborted.' AS STATUS"
        return f"SELECT 'Transaction {transaction} not found.' AS STATUS"


# ---- helpers ------------------------------------------------------------------------------
def _parse(sql: str) -> Any:
    import sqlglot
    from sqlglot.errors import ParseError

    try:
        return sqlglot.parse_one(sql, read="snowflake")
    except (ParseError, ValueError):
        return None  # fakesnow answers with its own error


def _split(sql: str) -> list[str]:
    """The statements of a multi-statement request's text (split at the semicolons between them)."""
    from sqlglot.tokens import Tokenizer, TokenType

    statements, start = [], 0
    for token in Tokenizer(dialect="snowflake").tokenize(sql):
        if token.token_type == TokenType.SEMICOLON:
            statements.append(sql[start : token.start])
            start = token.end + 1
    statements.append(sql[start:])
    return [s.strip() for s in statements if s.strip()]


def _copy_options(statement: Any) -> tuple[dict[str, Any], bool]:
    """The COPY's FILE_FORMAT options and whether it matches columns by name."""
    from fakesnow.transforms.options import parse_options

    options: dict[str, Any] = {}
    match_by_name = False
    for param in statement.args.get("params", []):
        name = param.this.name.upper()
        if name == "FILE_FORMAT":
            options = parse_options(param.expressions)
        elif name == "MATCH_BY_COLUMN_NAME":
            match_by_name = param.expression.name.upper() != "NONE"
    return options, match_by_name


async def _copy_files(token: str, statement: Any) -> list[str]:
    """The local paths of the files a COPY reads (resolved as fakesnow's COPY does)."""
    import fakesnow.server
    from fakesnow import copy_into
    from fakesnow.transforms import stage
    from starlette.concurrency import run_in_threadpool

    conn = fakesnow.server.sessions[token]

    def resolve() -> list[str]:
        source = copy_into._from_source(statement)
        if not source.startswith("@"):
            return []
        table = copy_into._extract_table(statement.this)
        duck = conn._duck_conn
        url = copy_into.stage_url_from_var(source[1:], duck, conn.database, conn.schema, conn.table_stages, table)
        urls = copy_into._source_glob(url, duck)
        return [stage.file_path(u) for u in urls]

    return await run_in_threadpool(resolve)


async def _run(token: str, sql: str) -> None:
    """Run ``sql`` on a session's own fakesnow connection (outside any request of it)."""
    import fakesnow.server
    from starlette.concurrency import run_in_threadpool

    conn = fakesnow.server.sessions.get(token)
    if conn is not None:
        await run_in_threadpool(lambda: conn.cursor().execute(sql))


def _target(token: str, statement: Any) -> tuple[str, str, str]:
    """(database, schema, table) an UPDATE, DELETE or MERGE writes, resolved in the session as Snowflake does."""
    import fakesnow.server
    from sqlglot import exp

    conn = fakesnow.server.sessions.get(token)
    table = statement.this if isinstance(statement.this, exp.Table) else statement.find(exp.Table)
    database = table.catalog or (conn.database if conn is not None else "") or ""
    schema = table.db or (conn.schema if conn is not None else "") or ""
    return (database.upper(), schema.upper(), table.name.upper())


def _true(value: Any) -> bool:
    return str(value).upper() == "TRUE"


def _false(value: Any) -> bool:
    return str(value).upper() == "FALSE"


def _utf8(value: bytes) -> bool:
    try:
        value.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _token(scope: Scope) -> str:
    for name, value in scope.get("headers", []):
        if name == b"authorization":
            return value.decode()[17:-1]  # Snowflake Token="…"
    return ""


def _decoded(scope: Scope, body: bytes) -> bytes:
    gzipped = any(n == b"content-encoding" and v == b"gzip" for n, v in scope.get("headers", []))
    return gzip.decompress(body) if gzipped else body


def _encoded(scope: Scope, body: bytes) -> bytes:
    gzipped = any(n == b"content-encoding" and v == b"gzip" for n, v in scope.get("headers", []))
    return gzip.compress(body) if gzipped else body


def _error(violation: RuleViolation) -> dict[str, Any]:
    code = f"{violation.errno:06d}"
    return {"data": {"errorCode": code, "sqlState": violation.sqlstate}, "code": code, "message": violation.message, "success": False}


async def _read(receive: Receive) -> bytes:
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            return body


async def _respond(send: Send, payload: dict[str, Any]) -> None:
    await _respond_raw(send, 200, json.dumps(payload).encode())


async def _respond_raw(send: Send, status: int, body: bytes) -> None:
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def main(argv: list[str] | None = None) -> None:
    """Serve the strict endpoint on 127.0.0.1 until stopped."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True, help="port to listen on (127.0.0.1)")
    parser.add_argument("--latency-ms", type=float, default=0.0, help="hold each request this long (default 0)")
    args = parser.parse_args(argv)
    import fakesnow.server
    import uvicorn

    app = StrictSnowflake(fakesnow.server.app, latency=args.latency_ms / 1000)
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
