"""Read-only SQL over a store's data: the capability behind the admin API's `/query` and `perdure sql`.

A store offers its data as the *base layer* — five tables of one shape on every backend:

    perdure_invocation (id, service, handler, key, status, created_at, modified_at, record)
    perdure_journal    (invocation_id, idx, type, payload)
    perdure_state      (service, key, name, value)
    perdure_lock       (service, key, invocation_id)
    perdure_inbox      (service, key, seq, invocation_id)

either as a SQLite file it maps onto them with TEMP views (`File`: the SQLite store; a read-only
connection sees committed data only, WAL snapshots included), or as rows copied into an
in-memory database (`Rows`: the memory store, PostgreSQL). The caller brings the layer above (its
views and SQL functions: the admin API's `sys_invocation`, `sys_journal`, …). Each query runs on
a connection of its own, locked down: an authorizer that lets it read the views and the base
tables only, a time limit (progress handler) and a row cap. It blocks: run it in a worker thread.
"""

from __future__ import annotations

import re
import sqlite3
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_LEADING_COMMENTS = re.compile(r"\A(?:\s+|--[^\n]*(?:\n|\Z)|/\*.*?\*/)*", re.DOTALL)
_READ_STATEMENTS = ("select", "with", "values", "explain")
_CHECK_EVERY = 1000  # SQLite VM instructions between time checks

BASE_TABLES = frozenset(
    {"perdure_invocation", "perdure_journal", "perdure_state", "perdure_lock", "perdure_inbox"}
)

_ROW_TABLES = (
    "CREATE TABLE perdure_invocation (id TEXT PRIMARY KEY, service TEXT NOT NULL, handler TEXT NOT NULL,"
    " key TEXT, status TEXT NOT NULL, created_at INTEGER NOT NULL, modified_at INTEGER NOT NULL,"
    " record BLOB NOT NULL)",
    "CREATE INDEX perdure_invocation_order ON perdure_invocation (created_at, id)",
    "CREATE INDEX perdure_invocation_status ON perdure_invocation (status, created_at)",
    "CREATE TABLE perdure_journal (invocation_id TEXT NOT NULL, idx INTEGER NOT NULL, type INTEGER NOT NULL,"
    " payload BLOB NOT NULL, PRIMARY KEY (invocation_id, idx))",
    "CREATE TABLE perdure_state (service TEXT NOT NULL, key TEXT NOT NULL, name BLOB NOT NULL,"
    " value BLOB NOT NULL, PRIMARY KEY (service, key, name))",
    "CREATE TABLE perdure_lock (service TEXT NOT NULL, key TEXT NOT NULL, invocation_id TEXT NOT NULL,"
    " PRIMARY KEY (service, key))",
    "CREATE TABLE perdure_inbox (service TEXT NOT NULL, key TEXT NOT NULL, seq INTEGER NOT NULL,"
    " invocation_id TEXT NOT NULL, PRIMARY KEY (service, key, seq))",
)
_INSERT = {
    "invocations": "INSERT INTO perdure_invocation VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
    "entries": "INSERT INTO perdure_journal VALUES (?, ?, ?, ?)",
    "state": "INSERT INTO perdure_state VALUES (?, ?, ?, ?)",
    "locks": "INSERT INTO perdure_lock VALUES (?, ?, ?)",
    "inbox": "INSERT INTO perdure_inbox VALUES (?, ?, ?, ?)",
}


class QueryError(Exception):
    """A query was refused or failed; the message says why (the admin API answers 400)."""


@dataclass
class Result:
    columns: list[str]
    rows: list[tuple[Any, ...]]
    truncated: bool = False  # more rows matched than the cap


@dataclass(frozen=True)
class File:
    """A SQLite file and the TEMP views mapping its tables onto the base layer."""

    path: Path
    views: tuple[str, ...]
    tables: frozenset[str]  # the file's tables those views read


@dataclass
class Rows:
    """The base layer's rows, copied out of a store (collected on the event loop)."""

    invocations: list[tuple[Any, ...]] = field(default_factory=list)
    entries: list[tuple[Any, ...]] = field(default_factory=list)
    state: list[tuple[Any, ...]] = field(default_factory=list)
    locks: list[tuple[Any, ...]] = field(default_factory=list)
    inbox: list[tuple[Any, ...]] = field(default_factory=list)


Base = File | Rows


@dataclass(frozen=True)
class Layer:
    """What the caller builds over the base: views (SQL), their functions, what queries may read."""

    views: tuple[str, ...]
    functions: Mapping[str, tuple[int, Callable[..., Any]]]  # name -> (arguments, function)
    readable: frozenset[str]  # the views, besides the base tables
    describe: str = ""  # names the views, for messages


def check_read_only(sql: str, layer: Layer) -> None:
    """Refuse anything but one SELECT (or WITH … SELECT, VALUES) with a clear message."""
    body = _LEADING_COMMENTS.sub("", sql, count=1)
    word = re.match(r"[A-Za-z]+", body)
    if word is None:
        raise QueryError('the query is empty: send {"query": "SELECT …"}')
    if word.group(0).lower() not in _READ_STATEMENTS:
        raise QueryError(
            f"only read-only SELECT queries are allowed, not {word.group(0).upper()}:"
            f" the views are {layer.describe}"
        )


def run(
    base: Base,
    layer: Layer,
    sql: str,
    params: Sequence[Any] | Mapping[str, Any] = (),
    *,
    timeout: float = 2.0,
    max_rows: int = 10_000,
) -> Result:
    """Run `sql` over `base` with `layer` on top (blocking); `QueryError` when it fails or is too slow."""
    conn = _connect(base, layer, timeout)
    try:
        deadline = time.monotonic() + timeout
        conn.set_progress_handler(lambda: time.monotonic() > deadline, _CHECK_EVERY)
        try:
            cursor = conn.execute(sql, params)
            rows = cursor.fetchmany(max_rows + 1)
        except sqlite3.OperationalError as e:
            if str(e) == "interrupted":
                raise QueryError(f"the query ran longer than {timeout:g} s and was stopped") from None
            raise QueryError(_explain(e, layer)) from None
        except (sqlite3.Error, sqlite3.Warning, OverflowError) as e:
            raise QueryError(_explain(e, layer)) from None
        columns = [d[0] for d in cursor.description or ()]
        return Result(columns, rows[:max_rows], len(rows) > max_rows)
    finally:
        conn.close()


def _connect(base: Base, layer: Layer, timeout: float) -> sqlite3.Connection:
    if isinstance(base, File):
        uri = base.path.resolve().as_uri() + "?mode=ro"
        try:
            conn = sqlite3.connect(uri, uri=True, timeout=timeout, isolation_level=None)
        except sqlite3.Error as e:
            raise QueryError(f"cannot open the database read-only: {e}") from None
        setup, tables = base.views, base.tables
    else:
        conn = sqlite3.connect(":memory:", isolation_level=None)
        for statement in _ROW_TABLES:
            conn.execute(statement)
        for name, insert in _INSERT.items():
            conn.executemany(insert, getattr(base, name))
        setup, tables = (), frozenset()
    try:
        for name, (arguments, fn) in layer.functions.items():
            conn.create_function(name, arguments, fn, deterministic=True)
        for statement in (*setup, *layer.views):
            conn.execute(statement)
        conn.execute("PRAGMA query_only = ON")
        readable = BASE_TABLES | layer.readable | tables | {"json_each", "json_tree"}
        conn.set_authorizer(_authorizer(frozenset(readable)))
    except BaseException:
        conn.close()
        raise
    return conn


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


def _explain(error: BaseException, layer: Layer) -> str:
    message = str(error)
    if "not authorized" in message or "prohibited" in message:
        return f"{message}: queries may only read the views {layer.describe}"
    return message
