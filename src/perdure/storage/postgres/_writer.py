"""The writer thread of a node: the only user of its write connection.

It applies what the node's partitions commit, strictly in the order each partition committed it.
Batches that queued up while it was busy form groups of at most one batch per partition, each group
one statement and so one transaction (`_batch.APPLY_GROUP`: one round trip for many partitions). A
group checks the leases of its partitions first: a partition another node took is refused with
`LeaseLost` and the rest of the group goes again without it. A lost connection is retried with
backoff, the same group again, until the database answers (every statement is idempotent). A
batch that fails for another reason fails alone, and so does every later batch of its view
(fail-stop per view).
`Call`s (the catalog's compare-and-set, the Kafka intake's) run in transactions of their own, in
order with the batches.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

import psycopg

from perdure.storage.api import LeaseLost, StoreUnavailable
from perdure.storage.postgres._batch import APPLY_GROUP, FENCED, INSTALL, Rows, group_json

log = logging.getLogger("perdure.storage.postgres")

Done = Callable[[BaseException | None], None]
Connect = Callable[[], psycopg.Connection[Any]]

#: Backoff between attempts to reach the database again: doubles from the first to the last.
RETRY_FIRST_S, RETRY_MAX_S = 0.05, 2.0


class Job:
    """One committed transaction of a view (`view` tells views apart, also across re-acquisitions)."""

    __slots__ = ("done", "rows", "view")

    def __init__(self, view: object, rows: Rows, done: Done) -> None:
        self.view = view
        self.rows = rows
        self.done = done


class Call:
    """Run `fn(connection)` in a transaction of its own; `done(result, error)` afterwards. Not
    retried (its outcome may be unknown after a lost connection: the error says so)."""

    __slots__ = ("done", "fn")

    def __init__(
        self,
        fn: Callable[[psycopg.Connection[Any]], object],
        done: Callable[[object, BaseException | None], None],
    ) -> None:
        self.fn = fn
        self.done = done


class _Stop:
    __slots__ = ("done",)

    def __init__(self, done: Done) -> None:
        self.done = done


class _Fenced(Exception):
    def __init__(self, partitions: set[int]) -> None:
        self.partitions = partitions


def is_disconnect(error: BaseException, conn: psycopg.Connection[Any] | None) -> bool:
    return isinstance(error, psycopg.OperationalError | psycopg.InterfaceError) and (
        conn is None or conn.closed or conn.broken
    )


class Writer:
    def __init__(self, connect: Connect, node: str) -> None:
        self._connect = connect
        self._node = node
        self._conn: psycopg.Connection[Any] | None = None
        self._failed: dict[int, BaseException] = {}  # id(view) -> what stopped it
        self._queue: queue.SimpleQueue[Job | Call | _Stop] = queue.SimpleQueue()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="perdure-postgres-writer", daemon=True)
        self._thread.start()

    def submit(self, item: Job | Call) -> None:
        self._queue.put(item)

    def stop(self, done: Done) -> None:
        """Finish what is queued (a group waiting for the database gives up), close, then `done`."""
        self._stopping = True
        self._queue.put(_Stop(done))

    def forget(self, view: object) -> None:
        """The view is gone: drop what is remembered of its failure."""
        self._failed.pop(id(view), None)

    # ---- the thread

    def _run(self) -> None:
        while True:
            items = [self._queue.get()]
            while True:
                try:
                    items.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            jobs: list[Job] = []
            for item in [*items, None]:
                if isinstance(item, Job):
                    jobs.append(item)
                    continue
                if jobs:
                    self._jobs(jobs)
                    jobs = []
                if isinstance(item, Call):
                    self._call(item)
                elif isinstance(item, _Stop):
                    self._close()
                    item.done(None)
                    for rest in items[items.index(item) + 1 :]:
                        if isinstance(rest, _Stop):
                            rest.done(None)
                    return

    def _jobs(self, jobs: list[Job]) -> None:
        """Apply `jobs` in rounds of at most one job per partition, keeping each partition's order."""
        while jobs:
            group: list[Job] = []
            later: list[Job] = []
            partitions: set[int] = set()
            for job in jobs:
                partition = job.rows.partition
                if partition is None:  # no partition's rows: joins any group
                    group.append(job)
                elif partition in partitions:
                    later.append(job)
                else:
                    partitions.add(partition)
                    group.append(job)
            self._group(group)
            jobs = later

    def _group(self, group: list[Job]) -> None:
        live: list[Job] = []
        for job in group:
            failure = self._failed.get(id(job.view))
            if failure is not None:
                job.done(failure)
            else:
                live.append(job)
        delay = RETRY_FIRST_S
        while live:
            try:
                self._apply(live)
            except _Fenced as fenced:
                for job in [j for j in live if j.rows.partition in fenced.partitions]:
                    self._fail(job, LeaseLost(f"partition {job.rows.partition} is owned by another node now"))
                live = [j for j in live if j.rows.partition not in fenced.partitions]
                continue
            except Exception as e:
                if is_disconnect(e, self._conn) or isinstance(e, psycopg.errors.DeadlockDetected):
                    if self._stopping:
                        for job in live:
                            self._fail(job, StoreUnavailable(f"the database did not answer: {e}"))
                        return
                    if is_disconnect(e, self._conn):
                        log.warning(
                            "the writer's database connection: %s; retrying in %.2f s",
                            " ".join(str(e).split()),
                            delay,
                        )
                        self._drop_connection()
                        time.sleep(delay)
                        delay = min(delay * 2, RETRY_MAX_S)
                    continue
                if len(live) > 1:  # find the culprit: the others go on
                    for job in live:
                        self._group([job])
                    return
                self._fail(live[0], e)
                return
            for job in live:
                job.done(None)
            return

    def _fail(self, job: Job, error: BaseException) -> None:
        self._failed[id(job.view)] = error
        job.done(error)

    def _apply(self, group: list[Job]) -> None:
        """One statement, so one transaction and one round trip (`_batch.APPLY_GROUP`)."""
        conn = self._connection()
        try:
            conn.execute(APPLY_GROUP, (self._node, group_json(group)))
        except psycopg.Error as e:
            if e.sqlstate == FENCED:
                raise _Fenced({int(p) for p in (e.diag.message_detail or "").split(",") if p}) from e
            raise

    def _call(self, call: Call) -> None:
        try:
            conn = self._connection()
            with conn.transaction():
                result = call.fn(conn)
        except Exception as e:
            if is_disconnect(e, self._conn):
                self._drop_connection()
                e = StoreUnavailable(
                    f"the database did not answer (the change may or may not have been made): {e}"
                )
            call.done(None, e)
            return
        call.done(result, None)

    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is None:
            conn = self._connect()
            try:
                conn.execute(INSTALL)
            except BaseException:
                conn.close()
                raise
            self._conn = conn
        return self._conn

    def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()

    def _close(self) -> None:
        self._drop_connection()
