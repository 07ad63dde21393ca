"""The PostgreSQL store's own concerns: leases fence commits, a lost connection is retried, seqs of a
partition never collide after a takeover, the partition count is fixed, migrations run once."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import psycopg
import pytest

from perdure.storage.api import Entry, LeaseLost, Status
from perdure.storage.layered import StoreFailed
from perdure.storage.postgres import Database, SchemaError

from .conftest import committed, inv

Postgres = Callable[[], str]


async def test_a_partition_taken_by_another_node_commits_nothing_more(postgres: Postgres) -> None:
    url = postgres()
    a, b = Database(url, partitions=2, node="a"), Database(url, partitions=2, node="b")
    try:
        store_a = a.take_partition(1)
        async with committed(store_a) as t:
            t.put_invocation(inv("before"))
        store_b = b.take_partition(1)  # a new epoch: a's lease is gone
        txn = store_a.begin()
        txn.put_invocation(inv("fenced"))
        txn.set_state("S", "k", b"n", b"v")
        with pytest.raises(LeaseLost, match="partition 1 is owned by another node"):
            await store_a.commit(txn)
        with pytest.raises(StoreFailed):  # fail-stop: the partition stops on this node
            store_a.begin()
        assert b.reader().get_invocation("fenced") is None
        assert b.reader().get_all_state("S", "k") == {}
        async with committed(store_b) as t:
            assert t.get_invocation("before") == inv("before")
            t.put_invocation(inv("after"))
        assert a.reader().get_invocation("after") == inv("after")
        await store_a.close()
        await store_b.close()
    finally:
        await a.close()
        await b.close()


async def test_other_partitions_of_a_group_commit_when_one_is_fenced(postgres: Postgres) -> None:
    url = postgres()
    a, b = Database(url, partitions=3, node="a"), Database(url, partitions=3, node="b")
    try:
        stores = [a.take_partition(p) for p in range(3)]
        b.take_partition(0)
        commits = []
        for n, store in enumerate(stores):
            txn = store.begin()
            txn.put_invocation(inv(f"p{n}"))
            commits.append(store.commit(txn))  # handed to the writer together: one group
        results = await asyncio.gather(*commits, return_exceptions=True)
        assert isinstance(results[0], LeaseLost) and results[1:] == [None, None]
        assert [a.reader().get_invocation(f"p{n}") is not None for n in range(3)] == [False, True, True]
        for store in stores:
            await store.close()
    finally:
        await a.close()
        await b.close()


async def test_seqs_of_a_partition_never_collide_after_a_takeover(postgres: Postgres) -> None:
    """A new owner continues past the old one's high-water mark, kept with the lease."""
    url = postgres()
    first = Database(url, partitions=4, node="first")
    store = first.take_partition(3)
    async with committed(store) as t:
        for n in range(5):
            t.put_invocation(inv(f"old-{n}"))
            t.append_entries(f"old-{n}", 0, [Entry(1, b"old")])
            t.inbox_push("S", "k", f"old-{n}")
    await store.close()
    await first.close()
    second = Database(url, partitions=4, node="second")
    try:
        store = second.take_partition(3)
        async with committed(store) as t:
            t.put_invocation(inv("new"))
            t.append_entries("new", 0, [Entry(1, b"new")])
            t.inbox_push("S", "k", "new")
        reader = second.reader()
        assert [reader.read_journal(f"old-{n}") for n in range(5)] == [[Entry(1, b"old")]] * 5
        assert reader.read_journal("new") == [Entry(1, b"new")]
        seqs = [row[0] for row in second.execute("SELECT seq FROM invocations ORDER BY seq", ())]
        assert len(set(seqs)) == 6 and all(seq % 4 == 3 for seq in seqs)
        txn = store.begin()
        assert [txn.inbox_pop("S", "k") for _ in range(6)] == [*(f"old-{n}" for n in range(5)), "new"]
        store.rollback(txn)
        await store.close()
    finally:
        await second.close()


async def test_a_lost_connection_is_retried_and_nothing_is_lost(postgres: Postgres) -> None:
    url = postgres()
    database = Database(url, partitions=1, node="retry")
    try:
        store = database.take_partition(0)
        async with committed(store) as t:
            t.put_invocation(inv("first"))
        with psycopg.connect(url, autocommit=True) as admin:  # what a database restart does to us
            killed = admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name LIKE %s",
                ("perdure retry writer%",),
            ).fetchall()
        assert killed == [(True,)]
        async with committed(store) as t:
            t.put_invocation(inv("second", status=Status.SUSPENDED))
        assert database.reader().get_invocation("second") == inv("second", status=Status.SUSPENDED)
        await store.close()
    finally:
        await database.close()


async def test_deliveries_of_several_partitions_are_read_oldest_first_up_to_a_limit_each(
    postgres: Postgres,
) -> None:
    database = Database(postgres(), partitions=4, node="inbox")
    try:
        sent = [(2, "s:1", b"a"), (0, "s:2", b"b"), (2, "s:3", b"c"), (2, "s:4", b"d"), (3, "s:5", b"e")]
        await database.send(sent)
        found = database.deliveries([0, 1, 2], limit=2)  # partition 3 not asked, 1 has none
        assert {p: [d.body for d in rows] for p, rows in found.items()} == {0: [b"b"], 2: [b"a", b"c"]}
        assert all(d.partition == p for p, rows in found.items() for d in rows)
        assert [d.body for d in database.deliveries([2, 3])[2]] == [b"a", b"c", b"d"]
    finally:
        await database.close()


async def test_the_partition_count_is_fixed_when_the_database_is_created(postgres: Postgres) -> None:
    url = postgres()
    created = Database(url, partitions=6)
    assert created.partitions == 6
    await created.close()
    again = Database(url)  # no count asked: the stored one
    assert again.partitions == 6
    await again.close()
    with pytest.raises(SchemaError, match="created with 6 partitions, not 8"):
        Database(url, partitions=8)


async def test_invocations_with_ids_of_the_first_encoding_are_refused_not_misrouted(
    postgres: Postgres,
) -> None:
    url = postgres()
    database = Database(url, partitions=4)
    try:
        store = database.take_partition(1)
        async with committed(store) as t:
            t.put_invocation(inv("old"))
        await store.close()
    finally:
        await database.close()
    with psycopg.connect(url, autocommit=True) as conn:  # as a database written before the marker
        conn.execute("DELETE FROM meta WHERE name = 'id_format'")
    with pytest.raises(SchemaError, match="ids use the encoding of perdure before"):
        Database(url)
    with psycopg.connect(url, autocommit=True) as conn:  # no invocations: the marker is just added
        conn.execute("DELETE FROM invocations")
    again = Database(url)
    await again.close()
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT value FROM meta WHERE name = 'id_format'").fetchone() == (2,)


def test_an_unreachable_database_is_one_clear_error() -> None:
    from perdure.storage.api import StoreUnavailable

    with pytest.raises(StoreUnavailable, match=r"cannot connect to PostgreSQL at 127\.0\.0\.1:1/nowhere"):
        Database("postgresql://postgres:secret@127.0.0.1:1/nowhere", connect_timeout=1)


async def test_nodes_starting_together_migrate_once(postgres: Postgres) -> None:
    url = postgres()
    databases = await asyncio.gather(*(asyncio.to_thread(Database, url, partitions=3) for _ in range(4)))
    assert {d.partitions for d in databases} == {3}
    rows = databases[0].execute("SELECT count(*) FROM partition_leases", ())
    assert rows == [(3,)]
    for d in databases:
        await d.close()
