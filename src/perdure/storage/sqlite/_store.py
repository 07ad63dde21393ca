"""SQLite storage backend: one write connection with group commit, fsync off the event loop.

A transaction's reads and writes run synchronously on the caller's thread (they only touch the
page cache); `commit()` runs `COMMIT` — and so the WAL fsync — on a dedicated worker thread, so the
event loop keeps running while the batch becomes durable. Readers use a separate read-only
connection, which in WAL mode sees only committed data.

Example::

    store = Store("data/perdure.db")
    txn = store.begin()
    txn.put_invocation(Invocation(id="inv-1", service="greeter", handler="greet"))
    await store.commit(txn)
    await store.close()
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from pathlib import Path

import msgspec

from perdure.storage.api import Entry, Invocation, Reader, Status, Timer, Transaction

SYNCHRONOUS_MODES = ("FULL", "NORMAL", "OFF")

# Ordered migration scripts; migration N (1-based) brings the schema to user_version N.
MIGRATIONS = ("0001_initial.sql",)


class SchemaError(RuntimeError):
    """Raised at open when the database's schema is newer than this code; not retryable (upgrade)."""


# Module-level SQL: sqlite3 caches prepared statements by their text.
_PUT_INVOCATION = (
    "INSERT INTO invocations (id, service, handler, key, status, created_at, modified_at, record)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET"
    " service = excluded.service, handler = excluded.handler, key = excluded.key,"
    " status = excluded.status, created_at = excluded.created_at,"
    " modified_at = excluded.modified_at, record = excluded.record"
)
_GET_INVOCATION = "SELECT record FROM invocations WHERE id = ?"
_DELETE_INVOCATION = "DELETE FROM invocations WHERE id = ?"
_INVOCATIONS_WITH_STATUS = "SELECT record FROM invocations WHERE status = ? ORDER BY created_at, id"

_APPEND_ENTRY = "INSERT OR REPLACE INTO journal (invocation_id, idx, type, payload) VALUES (?, ?, ?, ?)"
_READ_JOURNAL = "SELECT type, payload FROM journal WHERE invocation_id = ? ORDER BY idx"
_DELETE_JOURNAL = "DELETE FROM journal WHERE invocation_id = ?"

_GET_STATE = "SELECT value FROM state WHERE service = ? AND key = ? AND name = ?"
_GET_ALL_STATE = "SELECT name, value FROM state WHERE service = ? AND key = ?"
_SET_STATE = "INSERT OR REPLACE INTO state (service, key, name, value) VALUES (?, ?, ?, ?)"
_CLEAR_STATE = "DELETE FROM state WHERE service = ? AND key = ? AND name = ?"
_CLEAR_ALL_STATE = "DELETE FROM state WHERE service = ? AND key = ?"

_GET_LOCK = "SELECT invocation_id FROM locks WHERE service = ? AND key = ?"
_SET_LOCK = "INSERT OR REPLACE INTO locks (service, key, invocation_id) VALUES (?, ?, ?)"
_RELEASE_LOCK = "DELETE FROM locks WHERE service = ? AND key = ?"

_INBOX_PUSH = "INSERT INTO inbox (service, key, seq, invocation_id) VALUES (?, ?, ?, ?)"
# One statement finds and removes the head: the PK (service, key, seq) makes min(seq) a seek.
_INBOX_POP = (
    "DELETE FROM inbox WHERE service = ?1 AND key = ?2"
    " AND seq = (SELECT min(seq) FROM inbox WHERE service = ?1 AND key = ?2) RETURNING invocation_id"
)
_INBOX_REMOVE = "DELETE FROM inbox WHERE service = ? AND key = ? AND invocation_id = ?"
_INBOX_MAX_SEQ = "SELECT coalesce(max(seq), 0) FROM inbox"

_PUT_TIMER = (
    "INSERT OR REPLACE INTO timers (id, fire_at, kind, invocation_id, completion_id) VALUES (?, ?, ?, ?, ?)"
)
_GET_TIMER = "SELECT id, fire_at, kind, invocation_id, completion_id FROM timers WHERE id = ?"
_DELETE_TIMER = "DELETE FROM timers WHERE id = ?"
_ALL_TIMERS = "SELECT id, fire_at, kind, invocation_id, completion_id FROM timers ORDER BY fire_at, id"

_LIST_INVOCATIONS = {
    (False, False): "SELECT record FROM invocations ORDER BY created_at, id LIMIT ?",
    (True, False): "SELECT record FROM invocations WHERE status = ? ORDER BY created_at, id LIMIT ?",
    (False, True): "SELECT record FROM invocations WHERE service = ? ORDER BY created_at, id LIMIT ?",
    (True, True): (
        "SELECT record FROM invocations WHERE status = ? AND service = ? ORDER BY created_at, id LIMIT ?"
    ),
}
_COUNT_INVOCATIONS = "SELECT status, count(*) FROM invocations GROUP BY status"

# `sqlite3.Connection.execute`, bound: shared by the transaction and reader helpers.
_Execute = Callable[..., sqlite3.Cursor]

_ENCODER = msgspec.msgpack.Encoder()
_DECODE_INVOCATION = msgspec.msgpack.Decoder(Invocation).decode


class _Transaction:
    """The write ports over the store's write connection, inside an open `BEGIN`."""

    __slots__ = ("_execute", "_executemany", "_store")

    def __init__(self, store: Store, conn: sqlite3.Connection) -> None:
        self._store = store
        self._execute = conn.execute
        self._executemany = conn.executemany

    # InvocationTable

    def get_invocation(self, invocation_id: str) -> Invocation | None:
        row = self._execute(_GET_INVOCATION, (invocation_id,)).fetchone()
        return None if row is None else _DECODE_INVOCATION(row[0])

    def put_invocation(self, invocation: Invocation) -> None:
        inv = invocation
        self._execute(
            _PUT_INVOCATION,
            (
                inv.id,
                inv.service,
                inv.handler,
                inv.key,
                inv.status.value,
                inv.created_at,
                inv.modified_at,
                _ENCODER.encode(inv),
            ),
        )

    def delete_invocation(self, invocation_id: str) -> None:
        self._execute(_DELETE_INVOCATION, (invocation_id,))

    def invocations_with_status(self, status: Status) -> list[Invocation]:
        rows = self._execute(_INVOCATIONS_WITH_STATUS, (status.value,)).fetchall()
        return [_DECODE_INVOCATION(r[0]) for r in rows]

    # JournalTable

    def append_entries(self, invocation_id: str, start_index: int, entries: Sequence[Entry]) -> None:
        self._executemany(
            _APPEND_ENTRY,
            [(invocation_id, start_index + i, e.type, e.payload) for i, e in enumerate(entries)],
        )

    def read_journal(self, invocation_id: str) -> list[Entry]:
        return _read_journal(self._execute, invocation_id)

    def delete_journal(self, invocation_id: str) -> None:
        self._execute(_DELETE_JOURNAL, (invocation_id,))

    # StateTable

    def get_state(self, service: str, key: str, name: bytes) -> bytes | None:
        row = self._execute(_GET_STATE, (service, key, name)).fetchone()
        return None if row is None else bytes(row[0])

    def get_all_state(self, service: str, key: str) -> dict[bytes, bytes]:
        return _get_all_state(self._execute, service, key)

    def set_state(self, service: str, key: str, name: bytes, value: bytes) -> None:
        self._execute(_SET_STATE, (service, key, name, value))

    def clear_state(self, service: str, key: str, name: bytes) -> None:
        self._execute(_CLEAR_STATE, (service, key, name))

    def clear_all_state(self, service: str, key: str) -> None:
        self._execute(_CLEAR_ALL_STATE, (service, key))

    # InboxTable

    def get_lock(self, service: str, key: str) -> str | None:
        row = self._execute(_GET_LOCK, (service, key)).fetchone()
        return None if row is None else str(row[0])

    def set_lock(self, service: str, key: str, invocation_id: str) -> None:
        self._execute(_SET_LOCK, (service, key, invocation_id))

    def release_lock(self, service: str, key: str) -> None:
        self._execute(_RELEASE_LOCK, (service, key))

    def inbox_push(self, service: str, key: str, invocation_id: str) -> None:
        self._execute(_INBOX_PUSH, (service, key, self._store._next_seq(), invocation_id))

    def inbox_pop(self, service: str, key: str) -> str | None:
        # fetchall() steps the DELETE … RETURNING to completion, so no statement is left pending.
        rows = self._execute(_INBOX_POP, (service, key)).fetchall()
        return str(rows[0][0]) if rows else None

    def inbox_remove(self, service: str, key: str, invocation_id: str) -> bool:
        return self._execute(_INBOX_REMOVE, (service, key, invocation_id)).rowcount > 0

    # TimerTable

    def put_timer(self, timer: Timer) -> None:
        t = timer
        self._execute(_PUT_TIMER, (t.id, t.fire_at, t.kind, t.invocation_id, t.completion_id))

    def delete_timer(self, timer_id: str) -> bool:
        return self._execute(_DELETE_TIMER, (timer_id,)).rowcount > 0

    def get_timer(self, timer_id: str) -> Timer | None:
        row = self._execute(_GET_TIMER, (timer_id,)).fetchone()
        return None if row is None else Timer(*row)


class _Reader:
    """Read-only queries on the store's reader connection; each statement sees a committed snapshot."""

    __slots__ = ("_execute",)

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._execute = conn.execute

    def get_invocation(self, invocation_id: str) -> Invocation | None:
        row = self._execute(_GET_INVOCATION, (invocation_id,)).fetchone()
        return None if row is None else _DECODE_INVOCATION(row[0])

    def read_journal(self, invocation_id: str) -> list[Entry]:
        return _read_journal(self._execute, invocation_id)

    def get_all_state(self, service: str, key: str) -> dict[bytes, bytes]:
        return _get_all_state(self._execute, service, key)

    def list_invocations(
        self, *, status: Status | None = None, service: str | None = None, limit: int = 100
    ) -> list[Invocation]:
        params: list[object] = []
        if status is not None:
            params.append(status.value)
        if service is not None:
            params.append(service)
        params.append(limit)
        sql = _LIST_INVOCATIONS[status is not None, service is not None]
        return [_DECODE_INVOCATION(r[0]) for r in self._execute(sql, params).fetchall()]

    def all_timers(self) -> list[Timer]:
        return [Timer(*row) for row in self._execute(_ALL_TIMERS).fetchall()]

    def count_invocations(self) -> dict[Status, int]:
        counts = dict.fromkeys(Status, 0)
        for status, n in self._execute(_COUNT_INVOCATIONS).fetchall():
            counts[Status(status)] = n
        return counts


class Store:
    """A SQLite database file as a perdure store: one writer, group commit, WAL readers."""

    def __init__(self, path: str | Path, *, synchronous: str = "FULL", busy_timeout: float = 5.0) -> None:
        synchronous = synchronous.upper()
        if synchronous not in SYNCHRONOUS_MODES:
            raise ValueError(
                f"synchronous must be one of {', '.join(SYNCHRONOUS_MODES)}, not {synchronous!r}"
            )
        self.path = Path(path)
        self._busy_timeout = busy_timeout
        # isolation_level=None: we issue BEGIN/COMMIT ourselves. check_same_thread=False: COMMIT
        # runs on the worker thread, everything else on the caller's; the caller never overlaps them.
        self._conn = sqlite3.connect(
            self.path, timeout=busy_timeout, isolation_level=None, check_same_thread=False
        )
        try:
            mode = self._conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if mode != "wal":  # e.g. a filesystem without shared memory: readers would block the writer
                raise RuntimeError(f"cannot put {self.path} in WAL mode (got journal_mode={mode})")
            self._conn.execute(f"PRAGMA synchronous={synchronous}")
            _migrate(self._conn)
            self._seq: int = self._conn.execute(_INBOX_MAX_SEQ).fetchone()[0]
        except BaseException:
            self._conn.close()
            raise
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="perdure-sqlite-commit")
        self._read_conn: sqlite3.Connection | None = None
        # The open transaction, from begin() until its COMMIT finished on the worker thread.
        self._current: _Transaction | None = None
        self._closed = False

    def begin(self) -> Transaction:
        if self._current is not None:
            raise RuntimeError("a transaction is still open or committing; commit it before begin()")
        self._conn.execute("BEGIN")
        txn = self._current = _Transaction(self, self._conn)
        return txn

    async def commit(self, txn: Transaction) -> None:
        self._check_current(txn)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self._commit_sync)

    def _commit_sync(self) -> None:
        # Runs on the worker thread. _current is cleared only here, so a begin() racing a commit whose
        # awaiting task was cancelled fails loudly instead of interleaving with the COMMIT.
        try:
            self._conn.execute("COMMIT")
        except BaseException:
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
            raise
        finally:
            self._current = None

    def rollback(self, txn: Transaction) -> None:
        self._check_current(txn)
        try:
            self._conn.execute("ROLLBACK")
        finally:
            self._current = None

    def reader(self) -> Reader:
        if self._closed:
            raise RuntimeError("the store is closed")
        if self._read_conn is None:
            uri = self.path.resolve().as_uri() + "?mode=ro"
            self._read_conn = sqlite3.connect(
                uri, uri=True, timeout=self._busy_timeout, isolation_level=None, check_same_thread=False
            )
        return _Reader(self._read_conn)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._read_conn is not None:
            self._read_conn.close()
            self._read_conn = None
        # Closing the last connection checkpoints the WAL (an fsync), so do it off the loop too.
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self._conn.close)
        self._executor.shutdown(wait=True)

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def _check_current(self, txn: Transaction) -> None:
        if txn is not self._current:
            raise RuntimeError("not this store's open transaction (already committed or rolled back?)")


def _read_journal(execute: _Execute, invocation_id: str) -> list[Entry]:
    return [Entry(t, p) for t, p in execute(_READ_JOURNAL, (invocation_id,)).fetchall()]


def _get_all_state(execute: _Execute, service: str, key: str) -> dict[bytes, bytes]:
    return dict(execute(_GET_ALL_STATE, (service, key)).fetchall())


def _migrate(conn: sqlite3.Connection) -> None:
    """Bring the schema to the newest version, all pending migrations in one transaction."""
    # BEGIN IMMEDIATE takes the write lock before reading the version, so two processes opening a new
    # database at once migrate it once: the second waits (busy_timeout), then finds it up to date.
    conn.execute("BEGIN IMMEDIATE")
    try:
        version: int = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > len(MIGRATIONS):
            raise SchemaError(
                f"database schema version {version} is newer than this perdure knows ({len(MIGRATIONS)});"
                " upgrade perdure to open it"
            )
        folder = resources.files("perdure.storage") / "migrations"
        for name in MIGRATIONS[version:]:
            for statement in _statements((folder / name).read_text(encoding="utf-8")):
                conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {len(MIGRATIONS)}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def _statements(script: str) -> list[str]:
    """Split a migration script into statements (executescript() would commit our transaction)."""
    statements, buffer = [], ""
    for line in script.splitlines(keepends=True):
        buffer += line
        if sqlite3.complete_statement(buffer):
            statements.append(buffer)
            buffer = ""
    if buffer.strip() and not all(ln.lstrip().startswith("--") for ln in buffer.splitlines() if ln.strip()):
        raise ValueError(f"migration script ends with an incomplete statement: {buffer.strip()[:80]!r}")
    return statements
