"""The sqlite store's own concerns: migration 0002, seq-keyed rows, journals without invocation, caches."""

from __future__ import annotations

import asyncio
import os
import sqlite3
from collections import Counter
from importlib import resources
from pathlib import Path

import msgspec
import pytest

from perdure.errors import DatabaseInUse
from perdure.storage import sqlite as sqlite_backend
from perdure.storage.api import (
    Deployment,
    Entry,
    Invocation,
    KafkaCluster,
    Position,
    ServiceRevision,
    Status,
    Subscription,
    Timer,
)
from perdure.storage.layered import view as _view
from perdure.storage.sqlite import MIGRATIONS, _schema

from .conftest import OpenStore, committed, full_invocation, inv

E = [Entry(type=i, payload=bytes([i]) * 4) for i in range(10)]
_encode = msgspec.msgpack.Encoder().encode


def _schema_1_database(path: Path) -> None:
    """A database as perdure with schema version 1 left it, with rows in every table."""
    conn = sqlite3.connect(path, isolation_level=None)
    script = (resources.files("perdure.storage.sqlite") / "migrations" / "0001_initial.sql").read_text()
    for statement in _schema.statements(script):
        conn.execute(statement)
    records = [full_invocation("inv-b"), inv("inv-a", status=Status.COMPLETED, created_at=5)]
    for r in records:
        conn.execute(
            "INSERT INTO invocations VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (r.id, r.service, r.handler, r.key, r.status.value, r.created_at, r.modified_at, _encode(r)),
        )
    rows = [("inv-a", i, E[i].type, E[i].payload) for i in range(3)]
    rows += [("inv-b", 0, 1, b"b0"), ("ghost", 0, 7, b"g0"), ("ghost", 1, 8, b"g1")]
    conn.executemany("INSERT INTO journal VALUES (?, ?, ?, ?)", rows)
    conn.execute("INSERT INTO state VALUES ('S', 'k', x'6e', x'76')")
    conn.execute("INSERT INTO locks VALUES ('S', 'k', 'inv-b')")
    conn.executemany("INSERT INTO inbox VALUES ('S', 'k', ?, ?)", [(3, "w1"), (9, "w2")])
    conn.execute("INSERT INTO timers VALUES ('t', 7, 'sleep', 'inv-b', 2)")
    conn.execute("PRAGMA user_version = 1")
    conn.close()


async def test_migration_0002_keeps_every_schema_1_row(open_sqlite: OpenStore, tmp_path: Path) -> None:
    _schema_1_database(tmp_path / "perdure.db")
    store = open_sqlite()
    assert store._conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS) >= 2
    assert store._conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    reader = store.reader()
    assert reader.get_invocation("inv-b") == full_invocation("inv-b")
    assert [i.id for i in reader.list_invocations()] == ["inv-a", "inv-b"]  # oldest first
    assert reader.read_journal("inv-a") == E[:3]
    assert reader.read_journal("inv-b") == [Entry(1, b"b0")]
    assert reader.read_journal("ghost") == [Entry(7, b"g0"), Entry(8, b"g1")]  # no invocation row
    assert reader.get_all_state("S", "k") == {b"n": b"v"}
    assert reader.all_timers() == [
        Timer(id="t", fire_at=7, kind="sleep", invocation_id="inv-b", completion_id=2)
    ]
    # Oldest first got the lowest seqs; the orphan journal's seq follows them.
    seqs = store._conn.execute("SELECT id, seq FROM invocations ORDER BY seq").fetchall()
    assert seqs == [("inv-a", 1), ("inv-b", 2)]
    assert store._conn.execute("SELECT id, seq FROM journal_ids").fetchall() == [("ghost", 3)]

    txn = store.begin()
    assert txn.get_lock("S", "k") == "inv-b"
    assert txn.read_journal("ghost") == [Entry(7, b"g0"), Entry(8, b"g1")]
    txn.inbox_push("S", "k", "w3")
    assert [txn.inbox_pop("S", "k") for _ in range(4)] == ["w1", "w2", "w3", None]
    txn.put_invocation(inv("inv-c"))
    txn.append_entries("inv-c", 0, E[:1])
    await store.commit(txn)
    assert store._conn.execute("SELECT seq FROM invocations WHERE id = 'inv-c'").fetchone() == (4,)
    assert store.reader().read_journal("inv-c") == E[:1]


async def test_new_invocations_take_increasing_seqs(open_sqlite: OpenStore) -> None:
    store = open_sqlite()
    ids = [f"inv-{n * 7919 % 1009:04d}" for n in range(20)]  # not in id order
    for chunk in (ids[:7], ids[7:]):
        async with committed(store) as t:
            for i in chunk:
                t.append_entries(i, 0, E[:2])  # the engine appends a new invocation's journal first
                t.put_invocation(inv(i))
    rows = store._conn.execute("SELECT id FROM invocations ORDER BY seq").fetchall()
    assert [r[0] for r in rows] == ids
    journal = store._conn.execute("SELECT DISTINCT seq FROM journal ORDER BY seq").fetchall()
    assert [s for (s,) in journal] == list(range(1, 21))
    assert store._conn.execute("SELECT count(*) FROM journal_ids").fetchone()[0] == 0


async def test_updates_change_every_column_that_changed(open_sqlite: OpenStore) -> None:
    store = open_sqlite()
    async with committed(store) as t:
        t.put_invocation(inv("a", service="A", created_at=1))
    moved = inv("a", service="B", status=Status.PAUSED, created_at=2)
    async with committed(store) as t:
        t.put_invocation(moved)
    row = store._conn.execute("SELECT service, status, created_at FROM invocations").fetchone()
    assert row == ("B", "paused", 2)
    assert store.reader().list_invocations(service="B", status=Status.PAUSED) == [moved]
    same_status = inv("a", service="B", status=Status.PAUSED, created_at=2)
    same_status.modified_at = 99
    async with committed(store) as t:
        t.put_invocation(same_status)
    assert store._conn.execute("SELECT modified_at FROM invocations").fetchone() == (99,)
    assert store.reader().get_invocation("a") == same_status


async def test_journal_without_invocation_survives_reopen(open_sqlite: OpenStore) -> None:
    store = open_sqlite()

    def ids_rows() -> list[tuple[str, int]]:
        return store._conn.execute("SELECT id, seq FROM journal_ids").fetchall()  # type: ignore[no-any-return]

    async with committed(store) as t:
        t.append_entries("j", 0, E[:2])
    assert [i for i, _ in ids_rows()] == ["j"]
    await store.close()
    store = open_sqlite()
    assert store.reader().read_journal("j") == E[:2]
    async with committed(store) as t:
        assert t.read_journal("j") == E[:2]
        t.put_invocation(inv("j"))  # now the invocation row carries the seq
    assert ids_rows() == []
    async with committed(store) as t:
        t.delete_invocation("j")  # the journal stays: its seq must stay findable
    assert [i for i, _ in ids_rows()] == ["j"]
    await store.close()
    store = open_sqlite()
    assert store.reader().read_journal("j") == E[:2]
    async with committed(store) as t:
        t.append_entries("j", 2, E[2:3])
    async with committed(store) as t:
        t.delete_journal("j")
    assert ids_rows() == []
    assert store._conn.execute("SELECT count(*) FROM journal").fetchone()[0] == 0
    async with committed(store) as t:
        assert t.read_journal("j") == []
        t.append_entries("j", 0, E[5:6])  # starts over
    await store.close()
    store = open_sqlite()
    assert store.reader().read_journal("j") == E[5:6]


async def test_delete_and_recreate_across_pipelined_transactions(open_sqlite: OpenStore) -> None:
    store = open_sqlite()
    async with committed(store) as t:
        t.put_invocation(inv("a"))
        t.append_entries("a", 0, E[:3])
    first = store.begin()
    first.delete_journal("a")
    first.delete_invocation("a")
    committing = asyncio.ensure_future(store.commit(first))
    second = store.begin()
    assert second.get_invocation("a") is None
    assert second.read_journal("a") == []
    second.append_entries("a", 0, E[7:8])
    second.put_invocation(inv("a", created_at=9))
    await asyncio.gather(committing, store.commit(second))
    assert store.reader().get_invocation("a") == inv("a", created_at=9)
    assert store.reader().read_journal("a") == E[7:8]


async def test_tiny_caches_give_the_same_answers(open_sqlite: OpenStore) -> None:
    store = open_sqlite(cache_size=2)
    in_flight: list[asyncio.Future[None]] = []
    for n in range(40):
        txn = store.begin()
        for i in range(max(0, n - 3), n):  # earlier invocations, some still committing
            got = txn.get_invocation(f"i{i}")
            assert got is not None and got.attempt == n - 1 - i
            assert txn.read_journal(f"i{i}") == [E[k % 10] for k in range(n - i)]
            got.attempt += 1
            txn.put_invocation(got)
            txn.append_entries(f"i{i}", n - i, [E[(n - i) % 10]])
        assert txn.get_invocation(f"i{n}") is None
        txn.append_entries(f"i{n}", 0, E[:1])
        txn.put_invocation(inv(f"i{n}"))
        key = f"k{n % 3}"
        assert txn.get_lock("S", key) == (None if n < 3 else f"i{n - 3}")
        txn.set_lock("S", key, f"i{n}")
        assert txn.get_all_state("S", key) == ({} if n < 3 else {b"n": str(n - 3).encode()})
        txn.set_state("S", key, b"n", str(n).encode())
        if n >= 3:
            assert txn.inbox_pop("S", key) == f"w{n - 3}"
        txn.inbox_push("S", key, f"w{n}")
        in_flight.append(asyncio.ensure_future(store.commit(txn)))
        if len(in_flight) == 2:
            await in_flight.pop(0)
    await asyncio.gather(*in_flight)
    assert store.reader().count_invocations()[Status.RUNNING] == 40


async def test_large_state_is_read_correctly_without_the_cache(open_sqlite: OpenStore) -> None:
    store = open_sqlite()
    big = b"x" * (_view.STATE_CACHE_BYTES + 1)
    for value in (b"small", big, b"small again"):
        async with committed(store) as t:
            assert t.get_state("S", "k", b"other") == b"o" or value == b"small"
            t.set_state("S", "k", b"v", value)
            t.set_state("S", "k", b"other", b"o")
        txn = store.begin()
        assert txn.get_all_state("S", "k") == {b"v": value, b"other": b"o"}
        assert txn.get_state("S", "k", b"v") == value
        await store.commit(txn)


async def test_invocations_with_status_merges_committing_writes(open_sqlite: OpenStore) -> None:
    store = open_sqlite()
    async with committed(store) as t:
        t.put_invocation(inv("r1", created_at=1))
        t.put_invocation(inv("r2", created_at=2))
    first = store.begin()
    done = inv("r1", status=Status.COMPLETED, created_at=1)
    first.put_invocation(done)
    first.put_invocation(inv("r0", created_at=0))
    committing = asyncio.ensure_future(store.commit(first))
    second = store.begin()
    second.delete_invocation("r2")
    second.put_invocation(inv("r3", created_at=3))
    assert [i.id for i in second.invocations_with_status(Status.RUNNING)] == ["r0", "r3"]
    assert second.invocations_with_status(Status.COMPLETED) == [done]
    await asyncio.gather(committing, store.commit(second))


def test_invocation_record_is_the_api_struct() -> None:
    """The record column is a plain msgpack Invocation, so SQL views can decode it."""
    record = _encode(full_invocation())
    assert msgspec.msgpack.decode(record, type=Invocation) == full_invocation()


async def test_journal_reads_before_and_beyond_the_recent_layers(open_sqlite: OpenStore) -> None:
    """Whole journals in memory (fresh, then appended) and ones that need the database plus layers."""
    store = open_sqlite()
    expected: dict[str, list[Entry]] = {"a": [], "b": []}
    async with committed(store) as t:
        t.put_invocation(inv("b"))  # b's seq comes from an earlier transaction than its journal
    for n in range(_view.RECENT_LAYERS + 4):
        first = store.begin()
        for i in ("a", "b") if n % 3 else ("a",):
            entry = E[(n + len(i)) % 10]
            first.append_entries(i, len(expected[i]), [entry])
            expected[i].append(entry)
        committing = asyncio.ensure_future(store.commit(first))
        second = store.begin()
        assert second.read_journal("a") == expected["a"]
        assert second.read_journal("b") == expected["b"]
        await asyncio.gather(committing, store.commit(second))
        txn = store.begin()
        assert txn.read_journal("a") == expected["a"]
        assert txn.read_journal("b") == expected["b"]
        await store.commit(txn)
    await store.close()
    store = open_sqlite()
    assert store.reader().read_journal("a") == expected["a"]
    assert store.reader().read_journal("b") == expected["b"]


async def test_one_store_per_database_file(open_sqlite: OpenStore, tmp_path: Path) -> None:
    """A second store on a held file is refused naming the holder; closing releases it."""
    first = open_sqlite()
    with pytest.raises(
        DatabaseInUse, match=rf"perdure\.db is in use by another perdure engine \(pid {os.getpid()} "
    ):
        open_sqlite()
    reader = sqlite3.connect(tmp_path / "perdure.db")  # read-only tools need no lock
    assert reader.execute("SELECT count(*) FROM invocations").fetchone() == (0,)
    reader.close()
    await first.close()
    second = open_sqlite()
    async with committed(second) as t:
        t.put_invocation(inv("after"))


async def test_migration_4_moves_the_catalog_out_of_system_state(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Schema 3 kept the catalog as state of `__perdure`; schema 4 moves it into tables."""
    sub = Subscription("sub_1", "kafka://local/t", "service://s/h", {"a": "b"})
    cluster = KafkaCluster("local", {"bootstrap.servers": "127.0.0.1:9092"})
    deployment = Deployment(
        id="dp_1", uri="http://x", protocol_mode="BIDI_STREAM", http_version="2",
        min_protocol_version=5, max_protocol_version=7, protocol_version=7,
    )  # fmt: skip
    monkeypatch.setattr(_schema, "MIGRATIONS", MIGRATIONS[:3])
    conn = sqlite3.connect(tmp_path / "old.db", isolation_level=None)
    _schema.migrate(conn)
    rows = [
        ("subscriptions", b"sub_1", _encode(sub)),
        ("kafka-clusters", b"local", _encode(cluster)),
        ("deployments", b"dp_1", _encode(deployment)),
        ("service-revisions", b"S", _encode(ServiceRevision("dp_1", 3))),
        ("offsets/sub_1", b"0/my.topic", b"17"),
        ("offsets/sub_1", b"12/my.topic", b"4,2"),
        ("promises/wf/k", b"p", b"kept"),
    ]
    conn.executemany("INSERT INTO state VALUES ('__perdure', ?, ?, ?)", rows)
    conn.close()
    monkeypatch.setattr(_schema, "MIGRATIONS", MIGRATIONS)
    store = sqlite_backend.Store(tmp_path / "old.db")
    try:
        catalog = store.read_catalog()
        assert catalog.version == 1
        assert catalog.subscriptions == {"sub_1": sub} and catalog.clusters == {"local": cluster}
        assert catalog.deployments == {"dp_1": deployment}
        assert catalog.revisions == {"S": ServiceRevision("dp_1", 3)}
        reader = store.reader()
        assert reader.offsets("sub_1") == {("my.topic", 0): Position(17), ("my.topic", 12): Position(4, 2)}
        for key in ("subscriptions", "kafka-clusters", "deployments", "service-revisions", "offsets/sub_1"):
            assert reader.get_all_state("__perdure", key) == {}
        assert reader.get_all_state("__perdure", "promises/wf/k") == {b"p": b"kept"}
    finally:
        await store.close()


async def test_a_batch_runs_only_the_statements_it_has_rows_for(
    open_sqlite: OpenStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    from perdure.storage.sqlite import _batch

    store = open_sqlite()
    executed: list[str] = []
    store._conn.set_trace_callback(executed.append)
    async with committed(store) as t:
        t.put_invocation(inv("a"))
        t.append_entries("a", 0, E[:2])
    async with committed(store) as t:
        got = t.get_invocation("a")
        assert got is not None
        t.put_invocation(got)
        t.append_entries("a", 2, E[2:3])
    async with committed(store):
        pass  # writes nothing: no statement at all
    # Every shape beyond MAX_SHAPES runs the statement with every part (and still applies right).
    monkeypatch.setattr(_batch, "_SHAPES", {_batch.EVERY: _batch.shape(_batch.EVERY)})
    monkeypatch.setattr(_batch, "MAX_SHAPES", 1)
    async with committed(store) as t:
        t.set_state("S", "k", b"n", b"v")
    store._conn.set_trace_callback(None)

    # The trace repeats a statement once per statement of its trigger that runs.
    runs = Counter(sql.split(" VALUES")[0] for sql in executed if sql.startswith("INSERT INTO perdure_batch"))
    views = [view.split()[-1] for view in runs]  # one per commit that writes: the third wrote nothing
    assert len(views) == 3 and views[2] == f"perdure_batch_{_batch.EVERY:x}"
    assert runs[f"INSERT INTO {views[0]}"] < runs[f"INSERT INTO {views[2]}"] // 4
    created = [sql for sql in executed if sql.startswith("CREATE TEMP TRIGGER")]
    triggers = {sql.split(" ON ")[1].split()[0]: sql for sql in created}
    assert "INSERT INTO invocations" in triggers[views[0]] and "state" not in triggers[views[0]]
    assert "UPDATE invocations" in triggers[views[1]] and "INSERT INTO invocations" not in triggers[views[1]]
    reader = store.reader()
    assert reader.read_journal("a") == E[:3]
    assert reader.get_all_state("S", "k") == {b"n": b"v"}
