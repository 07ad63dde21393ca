"""The pipelining contract of `Store`: begin() right after commit() was called, reads of committing
writes, commit order, rollback of the open transaction only, and fail-stop after a failed commit."""

from __future__ import annotations

import asyncio
import sqlite3

import pytest

from perdure.storage import sqlite as sqlite_backend
from perdure.storage.api import Caller, Entry, Status, Store, Timer

from .conftest import OpenStore, committed, inv, writer_blocked

E = [Entry(type=i, payload=bytes([i]) * 3) for i in range(10)]


async def test_begin_right_after_commit_sees_the_committing_writes(store: Store) -> None:
    async with committed(store) as t:
        t.put_invocation(inv("old", status=Status.SUSPENDED))
        t.append_entries("old", 0, E[:1])
        t.set_state("S", "k", b"a", b"1")
        t.set_state("S", "k", b"b", b"2")
        t.set_state("S", "j", b"a", b"1")
        t.set_lock("S", "k", "old")
        t.inbox_push("S", "k", "w1")
        t.put_timer(Timer(id="t1", fire_at=5, kind="sleep", invocation_id="old"))

    first = store.begin()
    first.put_invocation(inv("new"))
    first.append_entries("new", 0, E[:2])
    first.append_entries("old", 1, E[1:2])
    first.clear_all_state("S", "k")
    first.set_state("S", "k", b"c", b"3")  # set after clear_all in the same transaction
    first.clear_state("S", "j", b"a")
    first.inbox_push("S", "k", "w2")
    first.set_lock("S", "k", "new")
    assert first.delete_timer("t1") is True
    first.put_timer(Timer(id="t2", fire_at=9, kind="retry", invocation_id="new"))
    committing = asyncio.ensure_future(store.commit(first))

    second = store.begin()  # before the first commit finished, or even started running
    assert second.get_invocation("new") == inv("new")
    assert [i.id for i in second.invocations_with_status(Status.RUNNING)] == ["new"]
    assert second.read_journal("new") == E[:2]
    assert second.read_journal("old") == E[:2]
    assert second.get_all_state("S", "k") == {b"c": b"3"}
    assert second.get_state("S", "k", b"a") is None
    assert second.get_state("S", "k", b"c") == b"3"
    assert second.get_all_state("S", "j") == {}
    assert second.get_lock("S", "k") == "new"
    assert second.get_timer("t1") is None
    assert second.delete_timer("t1") is False
    assert second.get_timer("t2") == Timer(id="t2", fire_at=9, kind="retry", invocation_id="new")
    assert second.inbox_pop("S", "k") == "w1"
    second.append_entries("new", 2, E[2:3])
    second.set_state("S", "k", b"d", b"4")
    second.inbox_push("S", "k", "w3")
    committing_too = asyncio.ensure_future(store.commit(second))

    third = store.begin()  # two transactions committing below this one
    assert third.read_journal("new") == E[:3]
    assert third.get_all_state("S", "k") == {b"c": b"3", b"d": b"4"}
    assert [third.inbox_pop("S", "k") for _ in range(3)] == ["w2", "w3", None]
    await asyncio.gather(committing, committing_too)
    await store.commit(third)

    reader = store.reader()
    assert reader.read_journal("new") == E[:3]
    assert reader.read_journal("old") == E[:2]
    assert reader.get_all_state("S", "k") == {b"c": b"3", b"d": b"4"}
    assert reader.all_timers() == [Timer(id="t2", fire_at=9, kind="retry", invocation_id="new")]


async def test_pipelined_commits_complete_in_order(store: Store) -> None:
    finished: list[int] = []
    in_flight: list[asyncio.Future[None]] = []
    for n in range(12):
        txn = store.begin()
        txn.put_invocation(inv(f"i{n}", created_at=n))
        txn.append_entries("log", n, [E[n % 10]])
        future = asyncio.ensure_future(store.commit(txn))
        future.add_done_callback(lambda _, n=n: finished.append(n))  # type: ignore[misc]
        in_flight.append(future)
        if len(in_flight) == 2:
            await in_flight.pop(0)
            durable = finished[-1]
            assert store.reader().get_invocation(f"i{durable}") is not None  # durable when awaited
    await asyncio.gather(*in_flight)
    assert finished == list(range(12))
    assert [i.id for i in store.reader().list_invocations()] == [f"i{n}" for n in range(12)]
    assert store.reader().read_journal("log") == [E[n % 10] for n in range(12)]


async def test_memory_store_pipelines_too() -> None:
    from perdure.storage import memory

    store = memory.Store()
    txn = store.begin()
    txn.put_invocation(inv("a"))
    pending = store.commit(txn)
    after = store.begin()  # allowed before the commit is awaited
    assert after.get_invocation("a") == inv("a")
    await pending
    await store.commit(after)


# --- sqlite: the committing window held open -------------------------------------------------------


async def test_committing_writes_are_seen_by_the_next_transaction_not_by_readers(
    open_sqlite: OpenStore,
) -> None:
    store = open_sqlite()
    async with committed(store) as t:
        t.put_invocation(inv("old"))
    reader = store.reader()
    with writer_blocked(store.path):
        first = store.begin()
        first.put_invocation(inv("new"))
        first.append_entries("new", 0, E[:1])
        first.set_state("S", "k", b"n", b"v")
        committing = asyncio.ensure_future(store.commit(first))
        await asyncio.sleep(0.05)  # the writer is now waiting for the lock
        assert not committing.done()
        assert reader.get_invocation("new") is None  # not durable: readers do not see it
        assert reader.read_journal("new") == []
        second = store.begin()
        assert second.get_invocation("new") == inv("new")
        assert second.read_journal("new") == E[:1]
        assert second.get_state("S", "k", b"n") == b"v"
        second.delete_invocation("old")
        committing_too = asyncio.ensure_future(store.commit(second))
        await asyncio.sleep(0.01)
        assert reader.get_invocation("old") == inv("old")
    await asyncio.gather(committing, committing_too)
    assert reader.get_invocation("new") == inv("new")
    assert reader.get_invocation("old") is None


async def test_begin_refuses_more_than_max_committing(open_sqlite: OpenStore) -> None:
    store = open_sqlite()
    with writer_blocked(store.path):
        in_flight = []
        for n in range(sqlite_backend.MAX_COMMITTING):
            txn = store.begin()
            txn.put_invocation(inv(f"i{n}"))
            in_flight.append(asyncio.ensure_future(store.commit(txn)))
        with pytest.raises(RuntimeError, match="still committing"):
            store.begin()
    await asyncio.gather(*in_flight)
    await store.commit(store.begin())
    assert store.reader().count_invocations()[Status.RUNNING] == sqlite_backend.MAX_COMMITTING


async def test_rollback_discards_only_the_open_transaction(open_sqlite: OpenStore) -> None:
    store = open_sqlite()
    async with committed(store) as t:
        t.put_invocation(inv("a"))
        t.set_lock("S", "k", "a")
    with writer_blocked(store.path):
        first = store.begin()
        first.append_entries("a", 0, E[:2])
        first.inbox_push("S", "k", "w1")
        committing = asyncio.ensure_future(store.commit(first))
        second = store.begin()
        second.put_invocation(inv("b"))
        second.append_entries("a", 2, E[2:4])
        assert second.inbox_pop("S", "k") == "w1"
        second.release_lock("S", "k")
        second.set_state("S", "k", b"n", b"v")
        store.rollback(second)
        third = store.begin()
        assert third.get_invocation("b") is None
        assert third.read_journal("a") == E[:2]
        assert third.get_lock("S", "k") == "a"
        assert third.get_all_state("S", "k") == {}
        assert third.inbox_pop("S", "k") == "w1"
        committing_too = asyncio.ensure_future(store.commit(third))
    await asyncio.gather(committing, committing_too)
    reader = store.reader()
    assert reader.read_journal("a") == E[:2]
    assert reader.get_invocation("b") is None
    txn = store.begin()
    assert txn.inbox_pop("S", "k") is None
    await store.commit(txn)


async def test_rollback_leaves_no_mutated_record_in_the_cache(open_sqlite: OpenStore) -> None:
    store = open_sqlite()
    async with committed(store) as t:
        t.put_invocation(inv("a"))
    txn = store.begin()
    got = txn.get_invocation("a")
    assert got is not None
    got.attempt = 5
    got.callers.append(Caller("p", 1))
    txn.put_invocation(got)
    mutated_but_not_put = txn.get_invocation("a")
    assert mutated_but_not_put is not None and mutated_but_not_put.attempt == 5
    mutated_but_not_put.status = Status.PAUSED
    store.rollback(txn)
    txn = store.begin()
    assert txn.get_invocation("a") == inv("a")
    kept = txn.get_invocation("a")
    assert kept is not None
    kept.failures = 3  # a caller's own copy: not stored unless put
    await store.commit(txn)
    assert store.reader().get_invocation("a") == inv("a")
    txn = store.begin()
    assert txn.get_invocation("a") == inv("a")
    await store.commit(txn)


async def test_close_waits_for_committing_transactions(open_sqlite: OpenStore) -> None:
    store = open_sqlite()
    in_flight = []
    for n in range(3):
        txn = store.begin()
        txn.put_invocation(inv(f"i{n}"))
        txn.append_entries(f"i{n}", 0, E[:n])
        in_flight.append(asyncio.ensure_future(store.commit(txn)))
    await store.close()
    await asyncio.gather(*in_flight)
    store = open_sqlite()
    assert [i.id for i in store.reader().list_invocations()] == ["i0", "i1", "i2"]
    assert store.reader().read_journal("i2") == E[:2]


# --- sqlite: fail-stop -----------------------------------------------------------------------------


async def test_disk_full_commit_raises_and_the_store_fails(open_sqlite: OpenStore) -> None:
    store = open_sqlite()
    async with committed(store) as t:
        t.put_invocation(inv("kept"))
    pages = store._conn.execute("PRAGMA page_count").fetchone()[0]
    store._conn.execute(f"PRAGMA max_page_count = {pages}")  # the writer is idle: no commit in flight
    txn = store.begin()
    txn.put_invocation(inv("lost"))
    txn.append_entries("lost", 0, [Entry(1, b"x" * 200_000)])
    with pytest.raises(sqlite3.OperationalError, match="full"):
        await store.commit(txn)
    with pytest.raises(sqlite_backend.StoreFailed, match="restart") as failed:
        store.begin()
    assert isinstance(failed.value.__cause__, sqlite3.OperationalError)
    assert store.reader().get_invocation("lost") is None
    await store.close()

    store = open_sqlite()  # the limit was the connection's, like a disk that has room again
    assert store.reader().get_invocation("kept") == inv("kept")
    assert store.reader().get_invocation("lost") is None
    assert store.reader().read_journal("lost") == []
    async with committed(store) as t:
        t.put_invocation(inv("after"))
    assert store.reader().get_invocation("after") == inv("after")


async def test_commits_after_a_failed_one_fail_too(open_sqlite: OpenStore) -> None:
    store = open_sqlite()
    async with committed(store) as t:
        t.put_invocation(inv("kept"))
    # A failure the next commit runs into, injected from outside like a bad disk would be.
    conn = sqlite3.connect(store.path)
    conn.execute(
        "CREATE TRIGGER boom BEFORE INSERT ON timers WHEN NEW.id = 'boom'"
        " BEGIN SELECT RAISE(ABORT, 'injected failure'); END"
    )
    conn.commit()
    conn.close()
    with writer_blocked(store.path):
        failing = store.begin()
        failing.put_invocation(inv("a"))
        failing.put_timer(Timer(id="boom", fire_at=1, kind="sleep", invocation_id="a"))
        first = asyncio.ensure_future(store.commit(failing))
        later = store.begin()
        later.put_invocation(inv("b"))
        second = asyncio.ensure_future(store.commit(later))
        open_when_it_fails = store.begin()
    with pytest.raises(sqlite3.IntegrityError, match="injected failure"):
        await first
    with pytest.raises(sqlite_backend.StoreFailed):
        await second
    open_when_it_fails.put_invocation(inv("c"))
    with pytest.raises(sqlite_backend.StoreFailed):
        await store.commit(open_when_it_fails)
    with pytest.raises(sqlite_backend.StoreFailed):
        store.begin()
    reader = store.reader()
    assert [i.id for i in reader.list_invocations()] == ["kept"]
    await store.close()
