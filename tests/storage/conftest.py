"""Fixtures and helpers shared by the storage tests: stores of every backend, records to store."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from perdure.storage import memory
from perdure.storage import postgres as postgres_backend
from perdure.storage import sqlite as sqlite_backend
from perdure.storage.api import (
    Caller,
    DeadLetter,
    Failure,
    Invocation,
    Outcome,
    Redrive,
    Status,
    Store,
    Transaction,
)

BACKENDS = ["memory", "sqlite", "postgres"]

OpenStore = Callable[..., sqlite_backend.Store]


@pytest.fixture
async def open_sqlite(tmp_path: Path) -> AsyncIterator[OpenStore]:
    """Factory: open (or reopen) a sqlite store in tmp_path; every store opened is closed at the end."""
    opened: list[sqlite_backend.Store] = []

    def open_(name: str = "perdure.db", synchronous: str = "FULL", **options: Any) -> sqlite_backend.Store:
        store = sqlite_backend.Store(tmp_path / name, synchronous=synchronous, **options)
        opened.append(store)
        return store

    yield open_
    for store in opened:
        await store.close()  # idempotent: tests may have closed it already


@pytest.fixture(params=BACKENDS)
async def store(
    request: pytest.FixtureRequest, open_sqlite: OpenStore, postgres: Callable[[], str]
) -> AsyncIterator[Store]:
    """A store of each backend (PostgreSQL: partition 0 of a one-partition database)."""
    if request.param == "postgres":
        database = postgres_backend.Database(postgres(), partitions=1)
        s: Store = database.take_partition(0)
        yield s
        await s.close()
        await database.close()
        return
    s = memory.Store() if request.param == "memory" else open_sqlite()
    yield s
    if request.param == "memory":
        await s.close()


@contextlib.asynccontextmanager
async def committed(store: Store) -> AsyncIterator[Transaction]:
    """One transaction, committed when the block ends."""
    txn = store.begin()
    yield txn
    await store.commit(txn)


def full_invocation(id: str = "inv-1") -> Invocation:
    """An invocation with every field away from its default, nested structs and lists included."""
    return Invocation(
        id=id,
        service="Greeter",
        handler="greet",
        key="alice",
        exclusive=True,
        status=Status.SUSPENDED,
        created_at=1_700_000_000_000,
        modified_at=1_700_000_000_500,
        execute_at=1_700_000_001_000,
        idempotency_key="idem-7",
        callers=[Caller(invocation_id="parent-1", completion_id=3), Caller("parent-2", 1)],
        attempt=4,
        failures=2,
        last_failure=Failure(code=500, message="boom"),
        next_retry_at=1_700_000_002_000,
        journal_length=12,
        command_count=6,
        attempt_start_length=9,
        last_progress_at=1_700_000_000_400,
        attempts_since_progress=1,
        waiting_completions=[1, 5, 8],
        waiting_signals=[2],
        notified=[4, -17, "go"],
        outcome=Outcome(value=None, failure=Failure(code=409, message="conflict")),
        completed_at=1_700_000_003_000,
        retention_until=1_700_086_400_000,
        random_seed=0xDEADBEEF,
        deployment_id="dp_1",
        waiting_named_signals=["go"],
        protocol_version=7,
        on_failure="topic:dead",
        queue_key="k-1",
        dead_letter=DeadLetter(
            subscription="sub_1",
            topic="orders",
            partition=3,
            offset=42,
            key=b"\xffk",
            headers=[("trace", b"\x00t")],
            value=b'{"n": 1}',
            error=Failure(code=500, message="bad record"),
            attempts=3,
            policy="topic:dead",
            parked_at=1_700_000_004_000,
            state="redriven",
            redrives=[Redrive(at=1_700_000_005_000, invocation_id="inv-9")],
            redrive_of="inv-0",
            checkpoint=17,
            produced=True,
        ),
    )


def inv(id: str, *, service: str = "Svc", status: Status = Status.RUNNING, created_at: int = 0) -> Invocation:
    return Invocation(id=id, service=service, handler="h", status=status, created_at=created_at)


@contextlib.contextmanager
def writer_blocked(path: Path) -> Iterator[None]:
    """Hold the database's write lock from another connection: the store's commits wait behind it.

    They wait up to the store's busy_timeout (5 s by default), so keep the block short.
    """
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    finally:
        conn.execute("ROLLBACK")
        conn.close()
