"""The SQLite `Store`: the database file, its lock, connections and writer under a layered store."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from pathlib import Path

from perdure.storage import api, sql
from perdure.storage.layered import store as layered
from perdure.storage.layered.store import MAX_COMMITTING, Done, StoreFailed, on_loop, settle
from perdure.storage.layered.view import View
from perdure.storage.layered.writes import Writes
from perdure.storage.sqlite import _catalog, _schema
from perdure.storage.sqlite._batch import Batch, batch
from perdure.storage.sqlite._lock import FileLock
from perdure.storage.sqlite._reader import Reader
from perdure.storage.sqlite._reads import Reads
from perdure.storage.sqlite._sql import VIEWS
from perdure.storage.sqlite._writer import Call, Job, Writer

__all__ = ["MAX_COMMITTING", "MIN_SQLITE", "SYNCHRONOUS_MODES", "Store", "StoreFailed"]

SYNCHRONOUS_MODES = ("FULL", "NORMAL", "OFF")
MIN_SQLITE = (3, 33, 0)

_LAST_SEQ = (
    "SELECT max((SELECT coalesce(max(seq), 0) FROM invocations), (SELECT coalesce(max(seq), 0) FROM journal),"
    " (SELECT coalesce(max(seq), 0) FROM journal_ids))"
)
_INBOX_SEQ = "SELECT coalesce(max(seq), 0) FROM inbox"


class _Sink:
    """Batches as one SQL statement each (`_batch`), applied by the writer thread."""

    __slots__ = ("_writer",)

    def __init__(self, writer: Writer) -> None:
        self._writer = writer

    def prepare(self, writes: Writes) -> object:
        if writes.deliveries or writes.delivered:
            raise RuntimeError("a SQLite store has one partition that owns every key: it has no deliveries")
        return batch(writes)

    def submit(self, prepared: object, done: Done) -> None:
        assert isinstance(prepared, Batch)
        self._writer.submit(Job(prepared, done))


class Store(layered.Store):
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
        view = View(Reads(loop_conn), cache_size=cache_size, last_seq=last_seq, inbox_seq=inbox_seq)
        super().__init__(view, _Sink(self._writer))
        self._read_conn: sqlite3.Connection | None = None  # for Reader, opened on first use

    def reader(self) -> api.Reader:
        if self._closed:
            raise RuntimeError("the store is closed")
        if self._read_conn is None:
            self._read_conn = self._connect_read_only()
        return Reader(self._read_conn)

    def sql_base(self, everything: bool) -> sql.File:
        """The file itself, mapped onto the base layer (a query's connection sees committed data)."""
        views, tables = VIEWS[len(_schema.MIGRATIONS)]
        return sql.File(self.path, views, tables)

    def read_catalog(self) -> api.CatalogSnapshot:
        if self._closed:
            raise RuntimeError("the store is closed")
        if self._read_conn is None:
            self._read_conn = self._connect_read_only()
        return _catalog.read(self._read_conn)

    async def write_catalog(self, expected_version: int, change: api.CatalogChange) -> bool:
        if self._closed:
            raise RuntimeError("the store is closed")
        loop = asyncio.get_running_loop()
        written: asyncio.Future[object] = loop.create_future()

        def done(result: object, error: BaseException | None) -> None:
            if not written.done():
                if error is None:
                    written.set_result(result)
                else:
                    written.set_exception(error)

        def report(result: object, error: BaseException | None) -> None:
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is left to tell
                loop.call_soon_threadsafe(done, result, error)

        self._writer.submit(Call(lambda conn: _catalog.write(conn, expected_version, change), report))
        return bool(await written)

    async def close(self) -> None:
        """Wait for committing transactions, then close; an open transaction is discarded."""
        if self._closed:
            return
        self._close_pipeline()
        self._loop_conn.close()
        if self._read_conn is not None:
            self._read_conn.close()
            self._read_conn = None
        # The writer finishes its queue first; closing the last connection checkpoints the WAL (an
        # fsync), on the writer thread.
        loop = asyncio.get_running_loop()
        stopped: asyncio.Future[None] = loop.create_future()
        self._writer.stop(on_loop(loop, lambda error: settle(stopped, error)))
        try:
            await stopped
        finally:
            self._lock.release()

    def _connect_read_only(self) -> sqlite3.Connection:
        uri = self.path.resolve().as_uri() + "?mode=ro"
        return sqlite3.connect(
            uri, uri=True, timeout=self._busy_timeout, isolation_level=None, check_same_thread=False
        )
