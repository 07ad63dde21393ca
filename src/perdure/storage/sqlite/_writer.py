"""The writer thread: the only user of the write connection once the store is open.

It applies committed batches strictly in order. A lone batch is one autocommit statement (its
COMMIT and fsync included: one GIL-free step); batches that queued up while it was busy go into one
transaction (one fsync for all of them). Each batch's `done` callback runs after its COMMIT
returned, with None or the error that stopped it. After a failure every later batch is refused with
the same error (fail-stop: the store above turns it into `StoreFailed`).
"""

from __future__ import annotations

import contextlib
import queue
import sqlite3
import threading
from collections.abc import Callable

from perdure.storage.sqlite._batch import Batch, shape

Done = Callable[[BaseException | None], None]


class Job:
    """One committed transaction: its `batch()`, and what to call once durable (or not)."""

    __slots__ = ("batch", "done")

    def __init__(self, batch: Batch, done: Done) -> None:
        self.batch = batch
        self.done = done


class Call:
    """Run `fn(connection)` in a transaction of its own, in order with the batches; `done(result,
    error)` afterwards (the catalog's compare-and-set writes)."""

    __slots__ = ("done", "fn")

    def __init__(
        self, fn: Callable[[sqlite3.Connection], object], done: Callable[[object, BaseException | None], None]
    ) -> None:
        self.fn = fn
        self.done = done


class _Stop:
    __slots__ = ("done",)

    def __init__(self, done: Done) -> None:
        self.done = done


class Writer:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self._shapes: set[int] = set()  # batch shapes whose view and trigger this connection has
        self._queue: queue.SimpleQueue[Job | Call | _Stop] = queue.SimpleQueue()
        # A daemon: an event loop that exits without closing its store must not hang the process.
        self._thread = threading.Thread(target=self._run, name="perdure-sqlite-writer", daemon=True)
        self._thread.start()

    def submit(self, job: Job | Call) -> None:
        self._queue.put(job)

    def stop(self, done: Done) -> None:
        """Finish the queued jobs, close the connection (its final checkpoint), then call `done`."""
        self._queue.put(_Stop(done))

    def _run(self) -> None:
        failure: BaseException | None = None
        while True:
            items = [self._queue.get()]
            while True:
                try:
                    items.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            jobs: list[Job] = []
            for item in [*items, None]:  # consecutive batches share one transaction
                if isinstance(item, Job):
                    jobs.append(item)
                    continue
                if jobs:
                    error = failure if failure is not None else self._apply(jobs)
                    failure = error
                    for job in jobs:
                        job.done(error)
                    jobs = []
                if isinstance(item, Call):
                    self._call(item, failure)
                elif isinstance(item, _Stop):
                    closed: BaseException | None = None
                    try:
                        self._conn.close()
                    except Exception as e:
                        closed = e
                    item.done(closed)
                    for rest in items[items.index(item) + 1 :]:
                        if isinstance(rest, _Stop):
                            rest.done(closed)
                    return

    def _create(self, mask: int) -> None:
        if mask and mask not in self._shapes:
            for sql in shape(mask).create:
                self._conn.execute(sql)
            self._shapes.add(mask)

    def _call(self, call: Call, failure: BaseException | None) -> None:
        if failure is not None:
            call.done(None, failure)
            return
        conn = self._conn
        try:
            conn.execute("BEGIN IMMEDIATE")
            result = call.fn(conn)
            conn.execute("COMMIT")
        except Exception as e:
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            call.done(None, e)
            return
        call.done(result, None)

    def _apply(self, jobs: list[Job]) -> BaseException | None:
        conn = self._conn
        try:
            for job in jobs:  # before BEGIN: a rollback would take a new view and trigger with it
                self._create(job.batch.mask)
            if len(jobs) == 1:
                mask, values = jobs[0].batch
                if mask:
                    conn.execute(shape(mask).insert, values)
            else:
                conn.execute("BEGIN")
                for job in jobs:
                    mask, values = job.batch
                    if mask:
                        conn.execute(shape(mask).insert, values)
                conn.execute("COMMIT")
        except Exception as e:
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            return e
        return None
