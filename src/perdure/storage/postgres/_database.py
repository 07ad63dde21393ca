"""A PostgreSQL database as one node sees it: its connections, its writer, and a store per partition.

Per node: a read connection used only on the event loop thread (the views' cache misses, `Reader`,
the catalog), and the writer thread's connection. `partition_store(p, epoch, …)` opens the layered
store of a partition this node holds the lease of (`perdure.runtime.cluster` takes the leases):
its commits are applied only while the lease is still (this node, `epoch`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any

import psycopg

from perdure.storage import api, sql
from perdure.storage.layered import store as layered
from perdure.storage.layered.store import Done, on_loop, settle
from perdure.storage.layered.view import View
from perdure.storage.layered.writes import Writes
from perdure.storage.postgres import _catalog, _schema
from perdure.storage.postgres._batch import Rows, ingest, prepare
from perdure.storage.postgres._cluster import Control, notifications
from perdure.storage.postgres._reader import Reader
from perdure.storage.postgres._reads import ReadConnection, Reads
from perdure.storage.postgres._writer import Call, Job, Writer

#: How long a node's transaction may sit idle inside BEGIN…COMMIT (e.g. the process was stopped
#: with SIGSTOP) before PostgreSQL ends it, releasing the lease rows it locked for a takeover.
IDLE_IN_TRANSACTION_MS = 2000


def node_name() -> str:
    """A name for this node: its pid and a random part (a restarted process is a new node)."""
    return f"{os.getpid()}-{uuid.uuid4().hex[:8]}"


class PartitionStore(layered.Store):
    """The layered store of partition `partition`, committing under lease `epoch`."""

    def __init__(self, database: Database, partition: int, epoch: int, seq: int, inbox_seq: int) -> None:
        count = database.partitions
        reads = Reads(database.execute, partition)
        # Seqs of this partition are ≡ partition (mod count): views of different partitions never
        # allocate the same one. The lease row keeps the high-water marks.
        first = max(seq, partition)
        view = View(
            reads,
            cache_size=database.cache_size,
            last_seq=first,
            inbox_seq=max(inbox_seq, partition),
            seq_step=count,
            name=f"p{partition}",
        )
        super().__init__(view, _Sink(database, self, partition, epoch, view))
        self.database = database
        self.partition = partition
        self.epoch = epoch

    def reader(self) -> api.Reader:
        return self.database.reader()

    def sql_base(self, everything: bool) -> sql.Rows:
        return self.database.sql_base(everything)

    def read_catalog(self) -> api.CatalogSnapshot:
        return self.database.read_catalog()

    async def write_catalog(self, expected_version: int, change: api.CatalogChange) -> bool:
        return await self.database.write_catalog(expected_version, change)

    async def close(self) -> None:
        """No more transactions; waits until the committing ones are applied (or failed)."""
        self._close_pipeline()
        pending = list(self._committing)
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
        self.database.writer.forget(self)


class _Sink:
    __slots__ = ("_database", "_epoch", "_partition", "_store", "_view")

    def __init__(
        self, database: Database, store: PartitionStore, partition: int, epoch: int, view: View
    ) -> None:
        self._database = database
        self._store = store
        self._partition = partition
        self._epoch = epoch
        self._view = view

    def prepare(self, writes: Writes) -> object:
        view = self._view
        return prepare(writes, self._partition, self._epoch, view.last_seq, view.inbox_seq)

    def submit(self, prepared: object, done: Done) -> None:
        assert not isinstance(prepared, tuple)
        self._database.writer.submit(Job(self._store, prepared, done))  # type: ignore[arg-type]


class Database:
    """A node's view of a PostgreSQL database (see the module docstring).

    `partitions` None takes the database's stored count (a new database gets 24); another count than
    the stored one is refused. Raises `StoreUnavailable` when the database cannot be reached.
    """

    def __init__(
        self,
        url: str,
        *,
        partitions: int | None = None,
        node: str | None = None,
        cache_size: int = 50_000,
        connect_timeout: float = 5.0,
    ) -> None:
        self.url = url
        self.node = node or node_name()
        self.cache_size = cache_size
        self._connect_timeout = connect_timeout
        conn = self.connect("read")
        try:
            self.partitions = _schema.migrate(conn, partitions)
        except BaseException:
            conn.close()
            raise
        self._reads = ReadConnection(lambda: self.connect("read"), conn)
        self.execute = self._reads.execute
        self.writer = Writer(lambda: self.connect("writer", idle_ms=IDLE_IN_TRANSACTION_MS), self.node)
        self.membership = Control(url, self.node, connect_timeout)
        self._closed = False

    def connect(self, role: str, *, idle_ms: int | None = None) -> psycopg.Connection[Any]:
        """A new autocommit connection named after this node (`pg_stat_activity.application_name`)."""
        options = f"-c idle_in_transaction_session_timeout={idle_ms}" if idle_ms else None
        try:
            return psycopg.connect(
                self.url,
                autocommit=True,
                application_name=f"perdure {self.node} {role}"[:63],
                connect_timeout=max(1, round(self._connect_timeout)),
                options=options,
            )
        except psycopg.OperationalError as e:
            detail = " ".join(str(e).split())  # libpq's message spans lines
            raise api.StoreUnavailable(f"cannot connect to PostgreSQL at {_safe(self.url)}: {detail}") from e

    def partition_store(self, lease: api.Lease) -> PartitionStore:
        """The store of a partition this node holds `lease` of (with its high-water marks)."""
        if self._closed:
            raise RuntimeError("the database is closed")
        return PartitionStore(self, lease.partition, lease.epoch, lease.seq, lease.inbox_seq)

    def take_partition(self, partition: int) -> PartitionStore:
        """Take `partition`'s lease unconditionally (a new epoch) and open its store: for a node that
        runs alone (tools, tests). A cluster's nodes take leases only when free or expired."""
        row = self.execute(
            "UPDATE partition_leases SET node = %s, epoch = epoch + 1, acquired_at = now()"
            " WHERE partition = %s RETURNING epoch, seq, inbox_seq",
            (self.node, partition),
        )
        if not row:
            raise ValueError(f"no partition {partition}: this database has {self.partitions}")
        epoch, seq, inbox_seq = row[0]
        return self.partition_store(api.Lease(partition, self.node, epoch, seq, inbox_seq))

    def reader(self) -> Reader:
        if self._closed:
            raise RuntimeError("the database is closed")
        return Reader(self.execute)

    def sql_base(self, everything: bool) -> sql.Rows:
        """The base layer's rows, copied out in a few statements (journals and state with `everything`)."""
        rows, execute = sql.Rows(), self.execute
        rows.invocations = [
            (i, _text(s), _text(h), _text(k), st, c, m, bytes(r))
            for i, s, h, k, st, c, m, r in execute(_SQL["invocations"], ())
        ]
        rows.locks = [(_text(s), _text(k), i) for s, k, i in execute(_SQL["locks"], ())]
        rows.inbox = [(_text(s), _text(k), q, i) for s, k, q, i in execute(_SQL["inbox"], ())]
        if everything:
            rows.entries = [(i, x, t, bytes(p)) for i, x, t, p in execute(_SQL["entries"], ())]
            rows.state = [
                (_text(s), _text(k), bytes(n), bytes(v)) for s, k, n, v in execute(_SQL["state"], ())
            ]
        return rows

    def read_catalog(self) -> api.CatalogSnapshot:
        try:
            return _catalog.read(self._reads.connection())
        except (psycopg.OperationalError, psycopg.InterfaceError) as e:
            raise api.StoreUnavailable(f"the database did not answer: {e}") from e

    async def write_catalog(self, expected_version: int, change: api.CatalogChange) -> bool:
        return bool(await self.call(lambda conn: _catalog.write(conn, expected_version, change)))

    async def call(self, fn: Any) -> object:
        """Run `fn(connection)` on the writer, in a transaction of its own, in order with the batches."""
        loop = asyncio.get_running_loop()
        result: asyncio.Future[object] = loop.create_future()

        def done(value: object, error: BaseException | None) -> None:
            if not result.done():
                if error is None:
                    result.set_result(value)
                else:
                    result.set_exception(error)

        def report(value: object, error: BaseException | None) -> None:
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is left to tell
                loop.call_soon_threadsafe(done, value, error)

        self.writer.submit(Call(fn, report))
        return await result

    def deliveries(self, partitions: Sequence[int], *, limit: int = 1000) -> dict[int, list[api.Delivery]]:
        return self.reader().deliveries(partitions, limit=limit)

    async def send(self, deliveries: Sequence[tuple[int, str, bytes]]) -> None:
        rows = Rows(None, None, {"delivery_in": list(deliveries)})
        loop = asyncio.get_running_loop()
        sent: asyncio.Future[None] = loop.create_future()
        self.writer.submit(Job(rows, rows, on_loop(loop, lambda error: settle(sent, error))))
        await sent

    async def ingest(
        self,
        subscription_id: str,
        topic: str,
        partition: int,
        expected: api.Position | None,
        new: api.Position,
        deliveries: Sequence[tuple[int, str, bytes]],
    ) -> bool:
        key = (subscription_id, topic, partition)
        return bool(await self.call(lambda conn: ingest(conn, key, expected, new, deliveries)))

    def notifications(self) -> AsyncIterator[str]:
        return notifications(self.url, self.node)

    async def close(self) -> None:
        """Finish what the writer has queued, then close the connections."""
        if self._closed:
            return
        self._closed = True
        await self.membership.close()
        loop = asyncio.get_running_loop()
        stopped: asyncio.Future[None] = loop.create_future()
        self.writer.stop(on_loop(loop, lambda error: settle(stopped, error)))
        await stopped
        self._reads.close()


_SQL = {
    "invocations": (
        "SELECT id, service, handler, key, status, created_at, modified_at, record FROM invocations"
    ),
    "locks": "SELECT service, key, invocation_id FROM locks",
    "inbox": "SELECT service, key, seq, invocation_id FROM inbox",
    "entries": (
        "SELECT coalesce(i.id, o.id), j.idx, j.type, j.payload FROM journal AS j"
        " LEFT JOIN invocations AS i ON i.seq = j.seq LEFT JOIN journal_ids AS o ON o.seq = j.seq"
    ),
    "state": "SELECT service, key, name, value FROM state",
}


def _text(value: bytes | None) -> str | None:
    return None if value is None else bytes(value).decode()


def _safe(url: str) -> str:
    """The URL without its password, for messages."""
    try:
        info = psycopg.conninfo.conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "(an unparseable URL)"
    host, port, db = info.get("host", "localhost"), info.get("port", "5432"), info.get("dbname", "")
    return f"{host}:{port}/{db}"
