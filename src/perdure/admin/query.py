"""Read-only SQL over the engine's data: `POST /query`, and the page queries of `/invocations`.

Every query gets its own connection, in a worker thread so the event loop keeps running:

- SQLite store: a separate read-only connection to the database file (`mode=ro`,
  `PRAGMA query_only`), which in WAL mode sees committed data only.
- memory store (tests): a snapshot of the reader's data copied into an in-memory database.

Both get the views of `views.py`, then an authorizer that allows reading those views and their
base tables and nothing else, a time limit (progress handler) and a row cap.
"""

from __future__ import annotations

import asyncio
import re
import sqlite3
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from perdure.admin import functions, views
from perdure.storage.api import Reader, Status

_ENCODE = msgspec.msgpack.Encoder().encode
_LEADING_COMMENTS = re.compile(r"\A(?:\s+|--[^\n]*(?:\n|\Z)|/\*.*?\*/)*", re.DOTALL)
_READ_STATEMENTS = ("select", "with", "values", "explain")
_CHECK_EVERY = 1000  # SQLite VM instructions between time checks
_READABLE = views.READABLE | {"json_each", "json_tree"}  # plus the JSON table functions
_VIEW_NAMES = ", ".join(sorted(views.PUBLIC_VIEWS))


class QueryError(Exception):
    """A query was refused or failed; the message says why (answered as 400)."""


@dataclass
class Result:
    columns: list[str]
    rows: list[tuple[Any, ...]]
    truncated: bool = False  # more rows matched than the cap


@dataclass
class Snapshot:
    """A memory store's data in the base-table shape (collected on the event loop)."""

    invocations: list[tuple[Any, ...]] = field(default_factory=list)
    entries: list[tuple[Any, ...]] = field(default_factory=list)
    state: list[tuple[Any, ...]] = field(default_factory=list)
    locks: list[tuple[Any, ...]] = field(default_factory=list)
    inbox: list[tuple[Any, ...]] = field(default_factory=list)


#: Statuses in which an exclusive invocation holds its key (the memory snapshot's `perdure_lock`).
_HOLDING = frozenset({Status.RUNNING, Status.SUSPENDED, Status.BACKING_OFF, Status.PAUSED})


def snapshot(reader: Reader, *, everything: bool) -> Snapshot:
    """Copy invocations (and, with `everything`, journals and the state of keys seen).

    The `Reader` port has no locks or inboxes, so for the memory store (tests) they are derived
    from the invocations: an exclusive invocation of a key in a holding status holds its lock,
    and pending ones queue in the order they became pending (`modified_at`, then creation).
    """
    snap = Snapshot()
    keys: set[tuple[str, str]] = set()
    pending: list[tuple[int, int, str, str, str]] = []
    for inv in reader.list_invocations(limit=sys.maxsize):
        if inv.key is not None and inv.exclusive and inv.status in _HOLDING:
            snap.locks.append((inv.service, inv.key, inv.id))
        elif inv.key is not None and inv.status is Status.PENDING:
            pending.append((inv.modified_at, inv.created_at, inv.id, inv.service, inv.key))
        snap.invocations.append(
            (inv.id, inv.service, inv.handler, inv.key, inv.status.value, inv.created_at,
             inv.modified_at, _ENCODE(inv))
        )  # fmt: skip
        if everything:
            journal = reader.read_journal(inv.id)
            snap.entries += [(inv.id, i, e.type, e.payload) for i, e in enumerate(journal)]
            if inv.key is not None:
                keys.add((inv.service, inv.key))
    for seq, (_, _, invocation_id, service, key) in enumerate(sorted(pending)):
        snap.inbox.append((service, key, seq, invocation_id))
    for service, key in sorted(keys):
        snap.state += [(service, key, n, v) for n, v in sorted(reader.get_all_state(service, key).items())]
    return snap


def check_read_only(sql: str) -> None:
    """Refuse anything but one SELECT (or WITH … SELECT, VALUES) with a clear message."""
    body = _LEADING_COMMENTS.sub("", sql, count=1)
    word = re.match(r"[A-Za-z]+", body)
    if word is None:
        raise QueryError('the query is empty: send {"query": "SELECT …"}')
    if word.group(0).lower() not in _READ_STATEMENTS:
        raise QueryError(
            f"only read-only SELECT queries are allowed, not {word.group(0).upper()}:"
            f" the views are {_VIEW_NAMES}"
        )


def _authorizer(
    readable: frozenset[str],
) -> Callable[[int, str | None, str | None, str | None, str | None], int]:
    """Allow SELECTs reading `readable` tables and views, and functions but load_extension."""

    def authorize(action: int, arg1: str | None, arg2: str | None, db: str | None, source: str | None) -> int:
        if action in (sqlite3.SQLITE_SELECT, sqlite3.SQLITE_RECURSIVE):
            return sqlite3.SQLITE_OK
        if action == sqlite3.SQLITE_READ and arg1 is not None and arg1.lower() in readable:
            return sqlite3.SQLITE_OK
        if action == sqlite3.SQLITE_FUNCTION and (arg2 or "").lower() != "load_extension":
            return sqlite3.SQLITE_OK
        return sqlite3.SQLITE_DENY

    return authorize


class Database:
    """Opens a locked-down connection per query over a store's data."""

    def __init__(
        self,
        source: Path | Callable[[bool], Snapshot],
        service_type: Callable[[str], str | None],
        *,
        timeout: float = 2.0,
        max_rows: int = 10_000,
    ) -> None:
        # The SQLite file, or a function returning a fresh `Snapshot` (called on the event loop).
        self._source = source
        self._service_type = service_type
        self.timeout = timeout
        self.max_rows = max_rows

    async def query(self, sql: str) -> Result:
        """Run a user's read-only statement; `QueryError` when refused, failed or too slow."""
        check_read_only(sql)
        return await self.run(sql, (), everything=True)

    async def run(
        self, sql: str, params: Sequence[Any] | Mapping[str, Any], *, everything: bool = False
    ) -> Result:
        """Run trusted SQL, still locked down; memory snapshots copy journals and state if `everything`."""
        source = self._source if isinstance(self._source, Path) else self._source(everything)
        return await asyncio.to_thread(self._run, source, sql, params)

    def _run(self, source: Path | Snapshot, sql: str, params: Sequence[Any] | Mapping[str, Any]) -> Result:
        conn = self._connect(source)
        try:
            deadline = time.monotonic() + self.timeout
            conn.set_progress_handler(lambda: time.monotonic() > deadline, _CHECK_EVERY)
            try:
                cursor = conn.execute(sql, params)
                rows = cursor.fetchmany(self.max_rows + 1)
            except sqlite3.OperationalError as e:
                if str(e) == "interrupted":
                    limit = f"{self.timeout:g} s"
                    raise QueryError(f"the query ran longer than {limit} and was stopped") from None
                raise QueryError(str(e)) from None
            except (sqlite3.Error, sqlite3.Warning, OverflowError) as e:
                raise QueryError(_explain(e)) from None
            columns = [d[0] for d in cursor.description or ()]
            truncated = len(rows) > self.max_rows
            return Result(columns, rows[: self.max_rows], truncated)
        finally:
            conn.close()

    def _connect(self, source: Path | Snapshot) -> sqlite3.Connection:
        if isinstance(source, Path):
            conn = self._open_file(source)
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version not in views.SQLITE_BASE:
                conn.close()
                raise QueryError(f"the database has schema version {version}, which these views do not know")
            setup, tables = views.SQLITE_BASE[version]
        else:
            conn = sqlite3.connect(":memory:", isolation_level=None)
            for statement in views.SNAPSHOT_TABLES:
                conn.execute(statement)
            conn.executemany(views.INSERT_INVOCATION, source.invocations)
            conn.executemany(views.INSERT_ENTRY, source.entries)
            conn.executemany(views.INSERT_STATE, source.state)
            conn.executemany(views.INSERT_LOCK, source.locks)
            conn.executemany(views.INSERT_INBOX, source.inbox)
            setup, tables = (), frozenset()
        try:
            functions.register(conn, self._service_type)
            for statement in (*setup, *views.PUBLIC):
                conn.execute(statement)
            conn.execute("PRAGMA query_only = ON")
            conn.set_authorizer(_authorizer(_READABLE | tables))
        except BaseException:
            conn.close()
            raise
        return conn

    def _open_file(self, path: Path) -> sqlite3.Connection:
        uri = path.resolve().as_uri() + "?mode=ro"
        try:
            return sqlite3.connect(uri, uri=True, timeout=self.timeout, isolation_level=None)
        except sqlite3.Error as e:
            raise QueryError(f"cannot open the database read-only: {e}") from None


def _explain(error: BaseException) -> str:
    message = str(error)
    if "not authorized" in message or "prohibited" in message:
        return f"{message}: queries may only read the views {_VIEW_NAMES}"
    return message
