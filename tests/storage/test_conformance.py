"""One conformance suite for every storage backend, plus sqlite-only durability and URL tests."""

from __future__ import annotations

import re
import sqlite3
import threading
from pathlib import Path

import msgspec
import pytest

from perdure.storage import memory, open_store
from perdure.storage import postgres as postgres_backend
from perdure.storage import sqlite as sqlite_backend
from perdure.storage.api import (
    CatalogChange,
    Deployment,
    Entry,
    Invocation,
    KafkaCluster,
    Outcome,
    Position,
    ServiceRevision,
    Status,
    Store,
    Subscription,
    Timer,
)
from perdure.storage.sqlite import _schema as sqlite_schema

from .conftest import OpenStore, committed, full_invocation, inv

# --- invocations -----------------------------------------------------------------------------------


def test_full_invocation_sets_every_field() -> None:
    """Guards the round-trip test below: a field added to Invocation must be set here too."""
    full, default = full_invocation(), Invocation(id="", service="", handler="")
    unset = [
        f.name
        for f in msgspec.structs.fields(Invocation)
        if getattr(full, f.name) == getattr(default, f.name)
    ]
    assert unset == []


async def test_invocation_round_trips_every_field(store: Store) -> None:
    original = full_invocation()
    completed = Invocation(
        id="inv-2", service="S", handler="h", status=Status.COMPLETED, outcome=Outcome(value=b"\x00ok")
    )
    async with committed(store) as t:
        t.put_invocation(original)
        t.put_invocation(completed)
    txn = store.begin()
    assert txn.get_invocation("inv-1") == original
    assert txn.get_invocation("inv-2") == completed
    assert txn.get_invocation("missing") is None
    await store.commit(txn)
    assert store.reader().get_invocation("inv-1") == original


async def test_parked_invocations_are_listed_and_counted(store: Store) -> None:
    """Dead letters: a parked invocation (status PARKED, with its `dead_letter`) is found by status,
    counted, and leaves the status when discarded — on every backend."""
    parked = full_invocation("p-1")
    parked.status = Status.PARKED
    async with committed(store) as t:
        t.put_invocation(parked)
        t.put_invocation(inv("other", status=Status.COMPLETED))
    reader = store.reader()
    assert reader.list_invocations(status=Status.PARKED) == [parked]
    assert reader.count_invocations()[Status.PARKED] == 1
    assert reader.completed_before(2**62) == [(0, "other")]  # parked records never expire
    parked.status = Status.COMPLETED
    async with committed(store) as t:
        t.put_invocation(parked)
    assert store.reader().list_invocations(status=Status.PARKED) == []


async def test_put_invocation_replaces_and_delete_removes(store: Store) -> None:
    first = inv("a", status=Status.PENDING)
    async with committed(store) as t:
        t.put_invocation(first)
    updated = inv("a", status=Status.RUNNING, created_at=5)
    updated.attempt = 1
    async with committed(store) as t:
        t.put_invocation(updated)
    assert store.reader().get_invocation("a") == updated
    assert store.reader().count_invocations()[Status.RUNNING] == 1
    assert store.reader().count_invocations()[Status.PENDING] == 0
    async with committed(store) as t:
        t.delete_invocation("a")
        t.delete_invocation("never-existed")
    assert store.reader().get_invocation("a") is None


async def test_stored_invocation_is_isolated_from_caller_mutation(store: Store) -> None:
    record = inv("a")
    async with committed(store) as t:
        t.put_invocation(record)
    record.waiting_completions.append(7)
    txn = store.begin()
    got = txn.get_invocation("a")
    assert got is not None and got.waiting_completions == []
    got.attempt = 99
    assert txn.get_invocation("a") == inv("a")
    await store.commit(txn)


async def test_invocations_with_status(store: Store) -> None:
    async with committed(store) as t:
        t.put_invocation(inv("r2", status=Status.RUNNING, created_at=2))
        t.put_invocation(inv("s1", status=Status.SUSPENDED, created_at=1))
        t.put_invocation(inv("r1", status=Status.RUNNING, created_at=1))
    txn = store.begin()
    assert [i.id for i in txn.invocations_with_status(Status.RUNNING)] == ["r1", "r2"]
    assert [i.id for i in txn.invocations_with_status(Status.SUSPENDED)] == ["s1"]
    assert txn.invocations_with_status(Status.PAUSED) == []
    await store.commit(txn)


# --- journal ---------------------------------------------------------------------------------------


async def test_journal_appends_in_several_calls_read_in_order(store: Store) -> None:
    entries = [Entry(type=i % 5, payload=bytes([i]) * i) for i in range(25)]
    async with committed(store) as t:
        t.append_entries("a", 0, entries[:1])
    async with committed(store) as t:
        t.append_entries("a", 1, entries[1:10])
        t.append_entries("b", 0, [])
    txn = store.begin()
    txn.append_entries("a", 10, entries[10:25])
    txn.append_entries("b", 0, [Entry(1, b"other")])
    assert txn.read_journal("a") == entries  # reads see the transaction's own writes
    await store.commit(txn)
    assert store.reader().read_journal("a") == entries
    assert store.reader().read_journal("b") == [Entry(1, b"other")]
    assert store.reader().read_journal("missing") == []


async def test_journal_entry_at_an_existing_index_is_replaced(store: Store) -> None:
    async with committed(store) as t:
        t.append_entries("a", 0, [Entry(1, b"x"), Entry(2, b"y")])
    async with committed(store) as t:
        t.append_entries("a", 1, [Entry(3, b"z"), Entry(4, b"w")])
    assert store.reader().read_journal("a") == [Entry(1, b"x"), Entry(3, b"z"), Entry(4, b"w")]


async def test_delete_journal(store: Store) -> None:
    async with committed(store) as t:
        t.append_entries("a", 0, [Entry(1, b"x")])
        t.append_entries("b", 0, [Entry(2, b"y")])
    async with committed(store) as t:
        t.delete_journal("a")
        t.delete_journal("missing")
    assert store.reader().read_journal("a") == []
    assert store.reader().read_journal("b") == [Entry(2, b"y")]


# --- state -----------------------------------------------------------------------------------------


async def test_state_get_set_clear_isolated_per_service_and_key(store: Store) -> None:
    txn = store.begin()
    txn.set_state("Cart", "alice", b"items", b"[1]")
    txn.set_state("Cart", "alice", b"total", b"10")
    txn.set_state("Cart", "bob", b"items", b"[2]")
    txn.set_state("Other", "alice", b"items", b"[3]")
    txn.set_state("Cart", "alice", b"items", b"[1,4]")  # overwrite
    assert txn.get_state("Cart", "alice", b"items") == b"[1,4]"
    assert txn.get_state("Cart", "alice", b"missing") is None
    assert txn.get_state("Cart", "carol", b"items") is None
    assert txn.get_all_state("Cart", "alice") == {b"items": b"[1,4]", b"total": b"10"}
    await store.commit(txn)

    async with committed(store) as t:
        t.clear_state("Cart", "alice", b"total")
    assert store.reader().get_all_state("Cart", "alice") == {b"items": b"[1,4]"}
    async with committed(store) as t:
        t.clear_all_state("Cart", "alice")
        t.clear_state("Cart", "zed", b"x")
    reader = store.reader()
    assert reader.get_all_state("Cart", "alice") == {}
    assert reader.get_all_state("Cart", "bob") == {b"items": b"[2]"}
    assert reader.get_all_state("Other", "alice") == {b"items": b"[3]"}


async def test_state_handles_binary_names_and_empty_values(store: Store) -> None:
    async with committed(store) as t:
        t.set_state("S", "k", b"\x00\xff", b"")
        t.set_state("S", "", b"n", b"v")
    txn = store.begin()
    assert txn.get_state("S", "k", b"\x00\xff") == b""
    assert txn.get_state("S", "", b"n") == b"v"
    await store.commit(txn)


# --- locks and inbox -------------------------------------------------------------------------------


async def test_lock_set_get_release(store: Store) -> None:
    txn = store.begin()
    assert txn.get_lock("Obj", "k") is None
    txn.set_lock("Obj", "k", "inv-1")
    txn.set_lock("Obj", "other", "inv-2")
    assert txn.get_lock("Obj", "k") == "inv-1"
    await store.commit(txn)

    txn = store.begin()
    assert txn.get_lock("Obj", "k") == "inv-1"
    txn.release_lock("Obj", "k")
    txn.release_lock("Obj", "never-locked")
    assert txn.get_lock("Obj", "k") is None
    assert txn.get_lock("Obj", "other") == "inv-2"
    await store.commit(txn)


async def test_inbox_is_fifo_per_key_across_transactions(store: Store) -> None:
    ids = [f"inv-{i}" for i in range(200)]
    for chunk in range(0, 200, 50):
        async with committed(store) as t:
            for i in ids[chunk : chunk + 50]:
                t.inbox_push("Obj", "k", i)
    async with committed(store) as t:
        t.inbox_push("Obj", "other", "x")
    popped: list[str | None] = []
    for _ in range(4):
        async with committed(store) as t:
            popped.extend(t.inbox_pop("Obj", "k") for _ in range(50))
    assert popped == ids
    txn = store.begin()
    assert txn.inbox_pop("Obj", "k") is None
    assert txn.inbox_pop("Obj", "never") is None
    assert txn.inbox_pop("Obj", "other") == "x"
    await store.commit(txn)


async def test_inbox_interleaved_push_pop_keeps_order(store: Store) -> None:
    txn = store.begin()
    txn.inbox_push("S", "k", "a")
    txn.inbox_push("S", "k", "b")
    assert txn.inbox_pop("S", "k") == "a"
    txn.inbox_push("S", "k", "c")
    assert [txn.inbox_pop("S", "k") for _ in range(3)] == ["b", "c", None]
    txn.inbox_push("S", "k", "d")  # a drained queue starts over
    assert txn.inbox_pop("S", "k") == "d"
    await store.commit(txn)


async def test_inbox_remove_middle_element(store: Store) -> None:
    async with committed(store) as t:
        for i in ("a", "b", "c"):
            t.inbox_push("S", "k", i)
    txn = store.begin()
    assert txn.inbox_remove("S", "k", "b") is True
    assert txn.inbox_remove("S", "k", "b") is False
    assert txn.inbox_remove("S", "other", "a") is False
    assert [txn.inbox_pop("S", "k") for _ in range(3)] == ["a", "c", None]
    await store.commit(txn)


# --- timers ----------------------------------------------------------------------------------------


async def test_timer_put_get_delete(store: Store) -> None:
    sleep = Timer(id="t-sleep", fire_at=300, kind="sleep", invocation_id="a", completion_id=4)
    retry = Timer(id="t-retry", fire_at=100, kind="retry", invocation_id="b")
    async with committed(store) as t:
        t.put_timer(sleep)
        t.put_timer(retry)
    txn = store.begin()
    assert txn.get_timer("t-sleep") == sleep
    assert txn.get_timer("missing") is None
    assert txn.delete_timer("t-retry") is True
    assert txn.delete_timer("t-retry") is False
    assert txn.get_timer("t-retry") is None
    await store.commit(txn)
    assert store.reader().all_timers() == [sleep]


async def test_put_timer_with_same_id_replaces(store: Store) -> None:
    async with committed(store) as t:
        t.put_timer(Timer(id="t", fire_at=1, kind="sleep", invocation_id="a"))
    moved = Timer(id="t", fire_at=9, kind="sleep", invocation_id="a")
    async with committed(store) as t:
        t.put_timer(moved)
    assert store.reader().all_timers() == [moved]


async def test_all_timers_ordered_by_fire_at(store: Store) -> None:
    timers = [
        Timer(id=f"t{i}", fire_at=(i * 7919) % 100, kind="sleep", invocation_id=f"i{i}") for i in range(50)
    ]
    timers.append(Timer(id="t-dup", fire_at=timers[0].fire_at, kind="invoke", invocation_id="x"))
    async with committed(store) as t:
        for x in timers:
            t.put_timer(x)
    assert store.reader().all_timers() == sorted(timers, key=lambda t: (t.fire_at, t.id))


# --- reader ----------------------------------------------------------------------------------------


async def test_list_invocations_filters_order_and_limit(store: Store) -> None:
    records = [
        inv("a3", service="A", status=Status.RUNNING, created_at=3),
        inv("a1", service="A", status=Status.COMPLETED, created_at=1),
        inv("b2", service="B", status=Status.RUNNING, created_at=2),
        inv("a2", service="A", status=Status.RUNNING, created_at=2),
        inv("b1", service="B", status=Status.PAUSED, created_at=1),
    ]
    async with committed(store) as t:
        for r in records:
            t.put_invocation(r)
    reader = store.reader()

    def ids(**kwargs: object) -> list[str]:
        return [i.id for i in reader.list_invocations(**kwargs)]  # type: ignore[arg-type]

    assert ids() == ["a1", "b1", "a2", "b2", "a3"]
    assert ids(limit=2) == ["a1", "b1"]
    assert ids(status=Status.RUNNING) == ["a2", "b2", "a3"]
    assert ids(service="A") == ["a1", "a2", "a3"]
    assert ids(service="A", status=Status.RUNNING) == ["a2", "a3"]
    assert ids(service="A", status=Status.RUNNING, limit=1) == ["a2"]
    assert ids(service="C") == []
    assert ids(status=Status.SCHEDULED) == []


async def test_get_invocations_reads_the_stored_ones_of_many_ids(store: Store) -> None:
    records = [full_invocation("x1"), inv("x2", status=Status.COMPLETED), inv('x\'3, "q"')]
    async with committed(store) as t:
        for r in records:
            t.put_invocation(r)
    reader = store.reader()
    wanted = ['x\'3, "q"', "missing", "x1", "x2", "x1"]  # an unknown id, a repeat, quotes and a comma
    assert reader.get_invocations(wanted) == {r.id: r for r in records}
    assert reader.get_invocations(["x2"]) == {"x2": records[1]}
    assert reader.get_invocations(["missing"]) == reader.get_invocations([]) == {}


async def test_count_invocations_lists_every_status(store: Store) -> None:
    assert store.reader().count_invocations() == dict.fromkeys(Status, 0)
    statuses = [Status.RUNNING, Status.RUNNING, Status.SUSPENDED, Status.COMPLETED]
    async with committed(store) as t:
        for n, s in enumerate(statuses):
            t.put_invocation(inv(f"i{n}", status=s))
    expected = dict.fromkeys(Status, 0) | {Status.RUNNING: 2, Status.SUSPENDED: 1, Status.COMPLETED: 1}
    assert store.reader().count_invocations() == expected


async def test_committed_data_is_visible_to_reader(store: Store) -> None:
    reader = store.reader()  # a reader taken before the commit sees it too
    assert reader.get_invocation("a") is None
    async with committed(store) as t:
        t.put_invocation(inv("a"))
        t.append_entries("a", 0, [Entry(1, b"x")])
        t.set_state("S", "k", b"n", b"v")
        t.put_timer(Timer(id="t", fire_at=1, kind="sleep", invocation_id="a"))
    assert reader.get_invocation("a") == inv("a")
    assert reader.read_journal("a") == [Entry(1, b"x")]
    assert reader.get_all_state("S", "k") == {b"n": b"v"}
    assert [t.id for t in reader.all_timers()] == ["t"]
    assert store.reader().list_invocations() == [inv("a")]


async def test_one_transaction_at_a_time(store: Store) -> None:
    txn = store.begin()
    with pytest.raises(RuntimeError, match="still open"):
        store.begin()
    await store.commit(txn)
    with pytest.raises(RuntimeError, match="not this store's open transaction"):
        await store.commit(txn)
    await store.commit(store.begin())  # the store is usable again


async def test_memory_store_rollback_is_unsupported() -> None:
    store = memory.Store()
    txn = store.begin()
    with pytest.raises(NotImplementedError, match="for tests"):
        store.rollback(txn)


# --- sqlite only: durability, isolation, migrations ------------------------------------------------


async def test_sqlite_data_survives_close_and_reopen(open_sqlite: OpenStore) -> None:
    store = open_sqlite()
    record = full_invocation()
    timer = Timer(id="t", fire_at=5, kind="retry", invocation_id="inv-1")
    async with committed(store) as t:
        t.put_invocation(record)
        t.append_entries("inv-1", 0, [Entry(1, b"a"), Entry(2, b"b")])
        t.set_state("S", "k", b"n", b"v")
        t.set_lock("S", "k", "inv-1")
        for x in ("w1", "w2", "w3"):
            t.inbox_push("S", "k", x)
        t.put_timer(timer)
    async with committed(store) as t:
        t.inbox_pop("S", "k")
    await store.close()

    store = open_sqlite()
    reader = store.reader()
    assert reader.get_invocation("inv-1") == record
    assert reader.read_journal("inv-1") == [Entry(1, b"a"), Entry(2, b"b")]
    assert reader.get_all_state("S", "k") == {b"n": b"v"}
    assert reader.all_timers() == [timer]
    txn = store.begin()
    assert txn.get_lock("S", "k") == "inv-1"
    txn.inbox_push("S", "k", "w4")  # pushes after reopen queue behind the survivors
    assert [txn.inbox_pop("S", "k") for _ in range(4)] == ["w2", "w3", "w4", None]
    await store.commit(txn)


async def test_sqlite_rollback_discards_writes(open_sqlite: OpenStore) -> None:
    store = open_sqlite()
    async with committed(store) as t:
        t.put_invocation(inv("kept"))
    txn = store.begin()
    txn.put_invocation(inv("dropped"))
    txn.delete_invocation("kept")
    txn.inbox_push("S", "k", "x")
    store.rollback(txn)

    reader = store.reader()
    assert reader.get_invocation("dropped") is None
    assert reader.get_invocation("kept") == inv("kept")
    txn = store.begin()  # the store is usable after a rollback
    assert txn.inbox_pop("S", "k") is None
    assert txn.get_invocation("dropped") is None
    await store.commit(txn)


async def test_sqlite_reader_does_not_see_uncommitted_writes(open_sqlite: OpenStore) -> None:
    store = open_sqlite()
    reader = store.reader()
    txn = store.begin()
    txn.put_invocation(inv("a"))
    txn.append_entries("a", 0, [Entry(1, b"x")])
    txn.set_state("S", "k", b"n", b"v")
    txn.put_timer(Timer(id="t", fire_at=1, kind="sleep", invocation_id="a"))
    assert reader.get_invocation("a") is None
    assert reader.read_journal("a") == []
    assert reader.get_all_state("S", "k") == {}
    assert reader.all_timers() == []
    assert reader.list_invocations() == []
    await store.commit(txn)
    assert reader.get_invocation("a") == inv("a")


async def test_sqlite_writes_run_off_the_event_loop_thread(open_sqlite: OpenStore) -> None:
    store = open_sqlite()
    threads: dict[str, set[int]] = {}
    # The trace callback runs on the thread that executes each statement.
    store._conn.set_trace_callback(lambda sql: threads.setdefault(sql, set()).add(threading.get_ident()))
    async with committed(store) as t:
        t.put_invocation(inv("a"))
        t.append_entries("a", 0, [Entry(1, b"x")])
        t.set_state("S", "k", b"n", b"v")
    async with committed(store) as t:
        got = t.get_invocation("a")
        assert got is not None
        t.put_invocation(got)
    store._conn.set_trace_callback(None)
    # One statement per commit (the trace shows it with its values bound, so two distinct texts).
    assert sum(sql.startswith("INSERT INTO perdure_batch") for sql in threads) == 2
    loop_thread = threading.get_ident()
    assert all(loop_thread not in ids for ids in threads.values())


async def test_sqlite_reader_connection_is_read_only(open_sqlite: OpenStore) -> None:
    store = open_sqlite()
    store.reader()
    assert store._read_conn is not None
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        store._read_conn.execute("DELETE FROM invocations")


async def test_sqlite_opens_in_wal_with_requested_synchronous(open_sqlite: OpenStore) -> None:
    store = open_sqlite(synchronous="normal")
    assert store._conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store._conn.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
    assert open_sqlite("full.db")._conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    with pytest.raises(ValueError, match="synchronous must be one of"):
        open_sqlite("bad.db", synchronous="EXTRA")


async def test_sqlite_migrations_are_idempotent_on_reopen(open_sqlite: OpenStore, tmp_path: Path) -> None:
    store = open_sqlite()
    async with committed(store) as t:
        t.put_invocation(inv("a"))
    await store.close()
    for _ in range(2):
        store = open_sqlite()
        assert store._conn.execute("PRAGMA user_version").fetchone()[0] == len(sqlite_backend.MIGRATIONS)
        assert store.reader().get_invocation("a") == inv("a")
        await store.close()
    tables = {
        name
        for (name,) in sqlite3.connect(tmp_path / "perdure.db").execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'"
        )
    }
    partitions = {
        "invocations",
        "journal",
        "journal_ids",
        "state",
        "locks",
        "inbox",
        "timers",
        "kafka_offsets",
    }
    catalog = {"deployments", "service_revisions", "kafka_clusters", "subscriptions"}
    assert tables == partitions | catalog | {"meta"}


async def test_sqlite_too_new_schema_raises(open_sqlite: OpenStore, tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "future.db")
    conn.execute(f"PRAGMA user_version = {len(sqlite_backend.MIGRATIONS) + 1}")
    conn.close()
    with pytest.raises(sqlite_backend.SchemaError, match="newer than this perdure knows"):
        open_sqlite("future.db")


async def test_sqlite_failed_migration_leaves_database_untouched(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_schema, "MIGRATIONS", ("0001_initial.sql", "0001_initial.sql"))
    with pytest.raises(sqlite3.OperationalError, match="already exists"):
        sqlite_backend.Store(tmp_path / "x.db")
    conn = sqlite3.connect(tmp_path / "x.db")
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 0
    assert conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] == 0
    conn.close()


# --- open_store ------------------------------------------------------------------------------------


async def test_open_store_memory() -> None:
    store = open_store("memory:")
    assert isinstance(store, memory.Store)
    await store.close()


async def test_open_store_sqlite_relative_path_creates_parents(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    store = open_store("sqlite:///data/nested/perdure.db")
    assert isinstance(store, sqlite_backend.Store)
    assert store.path == Path("data/nested/perdure.db")
    assert (tmp_path / "data/nested/perdure.db").exists()
    await store.close()


async def test_open_store_sqlite_absolute_path_and_synchronous(tmp_path: Path) -> None:
    target = tmp_path / "abs" / "p.db"
    store = open_store(f"sqlite:///{target}?synchronous=NORMAL")  # target starts with '/': 4 slashes
    assert isinstance(store, sqlite_backend.Store)
    assert store.path == target
    assert store._conn.execute("PRAGMA synchronous").fetchone()[0] == 1
    await store.close()


@pytest.mark.parametrize(
    "url",
    [
        "",
        "memory",
        "sqlite:",
        "sqlite://",
        "sqlite:///",
        "sqlite://host/path.db",
        "sqlite:///dir/",
        "sqlite:///p.db?synchronous=EXTRA",
        "sqlite:///p.db?journal=wal",
        "sqlite:///p.db?synchronous=FULL&synchronous=OFF",
    ],
)
def test_open_store_rejects_bad_urls(url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(
        ValueError, match=re.escape("accepted store URLs: 'memory:', 'sqlite:///relative/path.db'")
    ):
        open_store(url)


# --- Kafka offsets and the catalog ------------------------------------------------------------------


async def test_offsets_are_stored_with_the_transaction(store: Store) -> None:
    async with committed(store) as t:
        assert t.get_offset("sub", "t", 0) is None
        t.set_offset("sub", "t", 0, Position(5))
        t.set_offset("sub", "t", 1, Position(7, epoch=2))
        t.set_offset("other", "t", 0, Position(1))
        assert t.get_offset("sub", "t", 0) == Position(5)
    txn = store.begin()
    assert txn.get_offset("sub", "t", 1) == Position(7, 2)
    txn.set_offset("sub", "t", 0, Position(9))
    await store.commit(txn)
    assert store.reader().offsets("sub") == {("t", 0): Position(9), ("t", 1): Position(7, 2)}
    assert store.reader().offsets("nobody") == {}


async def test_catalog_changes_by_compare_and_set(store: Store) -> None:
    assert isinstance(store, memory.Store | sqlite_backend.Store | postgres_backend.PartitionStore)
    empty = store.read_catalog()
    assert empty.deployments == empty.clusters == empty.subscriptions == empty.revisions == {}
    cluster = KafkaCluster("local", {"bootstrap.servers": "127.0.0.1:9092"})
    sub = Subscription("sub_1", "kafka://local/t", "service://s/h", {"a": "b"})
    deployment = Deployment(
        id="dp_1", uri="http://x", protocol_mode="BIDI_STREAM", http_version="2",
        min_protocol_version=5, max_protocol_version=7, protocol_version=7, manifest=b'{"x": 1}',
    )  # fmt: skip
    change = CatalogChange(
        clusters={"local": cluster},
        subscriptions={"sub_1": sub},
        deployments={"dp_1": deployment},
        revisions={"S": ServiceRevision("dp_1", 1)},
    )
    assert await store.write_catalog(empty.version, change) is True
    assert await store.write_catalog(empty.version, CatalogChange(clusters={"late": cluster})) is False
    written = store.read_catalog()
    assert written == change.applied_to(empty) and written.version == empty.version + 1
    assert written.deployments["dp_1"] == deployment
    drop = CatalogChange(subscriptions={"sub_1": None}, revisions={"S": None, "never": None})
    assert await store.write_catalog(written.version, drop) is True
    after = store.read_catalog()
    assert (after.subscriptions, after.revisions, after.clusters) == ({}, {}, {"local": cluster})
