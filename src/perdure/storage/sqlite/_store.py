"""The sqlite `Store`: begin/commit/rollback, the commit pipeline, fail-stop, and close."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from perdure.storage import api
from perdure.storage.sqlite import _schema
from perdure.storage.sqlite._lock import FileLock
from perdure.storage.sqlite._reader import Reader
from perdure.storage.sqlite._transaction import Transaction
from perdure.storage.sqlite._view import View
from perdure.storage.sqlite._writer import Job, Writer
from perdure.storage.sqlite._writes import Writes, batch

SYNCHRONOUS_MODES = ("FULL", "NORMAL", "OFF")

#: Transactions that may be committing (commit() called, not yet durable) when begin() is called.
MAX_COMMITTING = 3
MIN_SQLITE = (3, 33, 0)

_LAST_SEQ = (
    "SELECT max((SELECT coalesce(max(seq), 0) FROM invocations), (SELECT coalesce(max(seq), 0) FROM journal),"
    " (SELECT coalesce(max(seq), 0) FROM journal_ids))"
)
_INBOX_SEQ = "SELECT coalesce(max(seq), 0) FROM inbox"


class StoreFailed(RuntimeError):
    """A commit failed (I/O error, disk full, …), so the store refuses all further work; not retryable.

    Raised by `begin()`, and by `commit()` of every transaction after the one that failed (that one
    raises the original error). None of their writes were applied: stop the engine and start it
    again, which resumes from the durable state.
    """


class Store:
    """A SQLite database file as a perdure store: write-behind transactions, pipelined group commit.

    One store per file at a time: opening a file another store (in any process) holds raises
    `DatabaseInUse`, naming the holder.

    `cache_size` bounds the caches of durable data: that many invocation records, locks and inbox
    queues, and a tenth as many state maps (each at most 16 KiB). Needs SQLite 3.33 or newer.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        synchronous: str = "FULL",
        busy_timeout: float = 5.0,
        cache_size: int = 50_000,
    ) -> None:
        if sqlite3.sqlite_version_info < MIN_SQLITE:
            raise RuntimeError(
                f"perdure's sqlite store needs SQLite {'.'.join(map(str, MIN_SQLITE))} or newer"
                f" (UPDATE ... FROM, JSON functions); this Python uses SQLite {sqlite3.sqlite_version}"
            )
        synchronous = synchronous.upper()
        if synchronous not in SYNCHRONOUS_MODES:
            raise ValueError(
                f"synchronous must be one of {', '.join(SYNCHRONOUS_MODES)}, not {synchronous!r}"
            )
        self.path = Path(path)
        self._busy_timeout = busy_timeout
        self._lock = FileLock(self.path.with_name(self.path.name + ".lock"), self.path)
        try:
            # The write connection: opened and migrated here, then used only by the writer thread.
            self._conn = sqlite3.connect(
                self.path, timeout=busy_timeout, isolation_level=None, check_same_thread=False
            )
        except BaseException:
            self._lock.release()
            raise
        loop_conn: sqlite3.Connection | None = None
        try:
            mode = self._conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if mode != "wal":  # e.g. a filesystem without shared memory: readers would block the writer
                raise RuntimeError(f"cannot put {self.path} in WAL mode (got journal_mode={mode})")
            self._conn.execute(f"PRAGMA synchronous={synchronous}")
            _schema.migrate(self._conn)
            last_seq: int = self._conn.execute(_LAST_SEQ).fetchone()[0]
            inbox_seq: int = self._conn.execute(_INBOX_SEQ).fetchone()[0]
            loop_conn = self._connect_read_only()
            self._writer = Writer(self._conn)  # from here on, only its thread uses the write connection
        except BaseException:
            if loop_conn is not None:
                loop_conn.close()
            self._conn.close()
            self._lock.release()
            raise
        self._loop_conn = loop_conn  # cache misses of open transactions, on the event loop thread only
        self._view = View(loop_conn, cache_size=cache_size, last_seq=last_seq, inbox_seq=inbox_seq)
        self._read_conn: sqlite3.Connection | None = None  # for Reader, opened on first use
        self._open: Transaction | None = None
        self._committing: list[asyncio.Future[None]] = []  # oldest first, parallel to the view's layers
        self._failure: BaseException | None = None
        self._closed = False

    def begin(self) -> api.Transaction:
        if self._closed:
            raise RuntimeError("the store is closed")
        if self._failure is not None:
            raise self._failed()
        if self._open is not None:
            raise RuntimeError("a transaction is still open; commit or roll it back before begin()")
        if len(self._committing) >= MAX_COMMITTING:
            raise RuntimeError(
                f"{MAX_COMMITTING} transactions are still committing; await the oldest commit() first"
            )
        txn = self._open = Transaction(self._view, Writes(self._view.last_seq))
        return txn

    def commit(self, txn: api.Transaction) -> Coroutine[Any, Any, None]:
        """Hand the transaction to the writer thread now; awaiting the result waits until it is durable.

        The hand-off happens in this call, before anything is awaited, so `begin()` may follow at
        once. The result raises the commit's error, or `StoreFailed` if an earlier commit failed.
        """
        open_ = self._check_open(txn)
        self._open = None
        if self._failure is not None:
            raise self._failed()
        loop = asyncio.get_running_loop()
        writes = open_._w
        try:
            values = batch(writes)
        except BaseException as e:  # a bug: nothing was applied, but the engine must stop here
            self._failure = e
            raise
        done: asyncio.Future[None] = loop.create_future()
        self._view.layers.append(writes)
        self._committing.append(done)
        self._writer.submit(Job(values, _on_loop(loop, lambda error: self._durable(done, error))))
        return _wait(done)

    def rollback(self, txn: api.Transaction) -> None:
        """Discard the open transaction's writes (committing ones are not affected)."""
        self._check_open(txn)
        self._open = None

    def reader(self) -> api.Reader:
        if self._closed:
            raise RuntimeError("the store is closed")
        if self._read_conn is None:
            self._read_conn = self._connect_read_only()
        return Reader(self._read_conn)

    async def close(self) -> None:
        """Wait for committing transactions, then close; an open transaction is discarded."""
        if self._closed:
            return
        self._closed = True
        self._open = None
        self._loop_conn.close()
        if self._read_conn is not None:
            self._read_conn.close()
            self._read_conn = None
        # The writer finishes its queue first; closing the last connection checkpoints the WAL (an
        # fsync), on the writer thread.
        loop = asyncio.get_running_loop()
        stopped: asyncio.Future[None] = loop.create_future()
        self._writer.stop(_on_loop(loop, lambda error: _settle(stopped, error)))
        try:
            await stopped
        finally:
            self._lock.release()

    def _durable(self, done: asyncio.Future[None], error: BaseException | None) -> None:
        """On the loop: the writer finished the oldest committing transaction (reports come in order)."""
        assert self._committing[0] is done
        del self._committing[0]
        if error is None:
            self._view.durable()
            _settle(done, None)
            return
        del self._view.layers[0]
        if self._failure is None:
            self._failure = error
            _settle(done, error)
        else:
            _settle(done, self._failed())

    def _failed(self) -> StoreFailed:
        error = StoreFailed(
            f"the store failed: a commit did not complete ({self._failure!r});"
            " restart the engine to resume from the durable state"
        )
        error.__cause__ = self._failure
        return error

    def _check_open(self, txn: api.Transaction) -> Transaction:
        if self._open is None or txn is not self._open:
            raise RuntimeError("not this store's open transaction (already committed or rolled back?)")
        return self._open

    def _connect_read_only(self) -> sqlite3.Connection:
        uri = self.path.resolve().as_uri() + "?mode=ro"
        return sqlite3.connect(
            uri, uri=True, timeout=self._busy_timeout, isolation_level=None, check_same_thread=False
        )


async def _wait(done: asyncio.Future[None]) -> None:
    await done


def _on_loop(
    loop: asyncio.AbstractEventLoop, callback: Callable[[BaseException | None], None]
) -> Callable[[BaseException | None], None]:
    """Wrap `callback` so the writer thread can call it: it runs on `loop`."""

    def call(error: BaseException | None) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is left to tell
            loop.call_soon_threadsafe(callback, error)

    return call


def _settle(future: asyncio.Future[None], error: BaseException | None) -> None:
    if future.done():  # its awaiting task was cancelled
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(error)
