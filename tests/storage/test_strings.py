"""Every string a user chooses round-trips exactly through every backend, restart included.

Property-based (hypothesis): service and handler names, object keys, idempotency keys, state names,
header values, promise and signal names — NUL, lone control characters, emoji, right-to-left text,
keys of 64 KiB and more. Keys that differ must never share a row (Kafka's integer key serializers
give keys like "\\x00\\x00\\x00\\x01", valid UTF-8).
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import msgspec
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from perdure.storage import memory
from perdure.storage import postgres as postgres_backend
from perdure.storage import sqlite as sqlite_backend
from perdure.storage.api import Caller, Entry, Invocation, Status, Store, Transaction

# Text as users send it: any code point but surrogates (which no UTF-8 input can carry), with the
# awkward ones made likely.
AWKWARD = st.sampled_from(["\x00", "\x01", "\x1f", "\x7f", "\u202e", "\u05d0", "🦀", "\ufeff", "%", "/", "'"])
TEXT = st.lists(st.one_of(st.characters(exclude_categories=("Cs",)), AWKWARD), max_size=12).map("".join)
LONG = "k" * (64 * 1024) + "\x00end"


class Sample(msgspec.Struct):
    service: str
    handler: str
    keys: list[str]  # distinct object keys
    idempotency_key: str
    state_name: str
    header: str
    signal: str


SAMPLES = st.builds(
    Sample,
    service=TEXT,
    handler=TEXT,
    keys=st.lists(TEXT, min_size=1, max_size=4, unique=True),
    idempotency_key=TEXT,
    state_name=TEXT,
    header=TEXT,
    signal=TEXT,
)


def _write(store: Store, s: Sample) -> Transaction:
    txn = store.begin()
    for n, key in enumerate(s.keys):
        txn.put_invocation(_invocation(s, n, key))
        txn.append_entries(f"inv-{n}", 0, [Entry(1, s.header.encode())])
        txn.set_state(s.service, key, s.state_name.encode(), str(n).encode())
        txn.set_state("__perdure", f"promises/{s.service}/{key}", s.signal.encode(), str(n).encode())
        txn.set_lock(s.service, key, f"inv-{n}")
        txn.inbox_push(s.service, key, f"queued-{n}")
    return txn


def _invocation(s: Sample, n: int, key: str) -> Invocation:
    return Invocation(
        id=f"inv-{n}",
        service=s.service,
        handler=s.handler,
        key=key,
        status=Status.SUSPENDED,
        idempotency_key=s.idempotency_key,
        callers=[Caller(f"parent-{n}", 1)],
        waiting_named_signals=[s.signal],
    )


def _check(store: Store, s: Sample, *, reader: bool) -> None:
    """What a transaction (and, with `reader`, a Reader) reads back is exactly what was written."""
    txn = store.begin()
    for n, key in enumerate(s.keys):
        assert txn.get_invocation(f"inv-{n}") == _invocation(s, n, key)
        assert txn.read_journal(f"inv-{n}") == [Entry(1, s.header.encode())]
        assert txn.get_state(s.service, key, s.state_name.encode()) == str(n).encode()
        assert txn.get_all_state(s.service, key) == {s.state_name.encode(): str(n).encode()}
        promises = txn.get_all_state("__perdure", f"promises/{s.service}/{key}")
        assert promises == {s.signal.encode(): str(n).encode()}
        assert txn.get_lock(s.service, key) == f"inv-{n}"
    # Pop from the inboxes: each key has exactly its own entry.
    for n, key in enumerate(s.keys):
        assert txn.inbox_pop(s.service, key) == f"queued-{n}"
        assert txn.inbox_pop(s.service, key) is None
    _discard(store, txn)
    if reader:
        r = store.reader()
        for n, key in enumerate(s.keys):
            assert r.get_invocation(f"inv-{n}") == _invocation(s, n, key)
            assert r.get_all_state(s.service, key) == {s.state_name.encode(): str(n).encode()}
        listed = {inv.id: inv for inv in r.list_invocations(service=s.service, limit=100)}
        assert {i: listed[i].key for i in listed} == {f"inv-{n}": k for n, k in enumerate(s.keys)}


def _discard(store: Store, txn: Transaction) -> None:
    """Drop the pops (the memory store cannot roll back; its data is checked only once)."""
    if isinstance(store, memory.Store):
        store.commit(txn).close()
    else:
        store.rollback(txn)


async def _round_trip(open_store: Callable[[], Store], s: Sample, *, durable: bool) -> None:
    store = open_store()
    txn = _write(store, s)
    await store.commit(txn)
    _check(store, s, reader=durable)
    await _close(store)
    if durable:  # what the next process sees: nothing cached
        store = open_store()
        try:
            _check(store, s, reader=True)
        finally:
            await _close(store)


async def _close(store: Store) -> None:
    await store.close()
    if isinstance(store, postgres_backend.PartitionStore):  # and the node's database with it
        await store.database.close()


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    """One database for every example (hypothesis runs many in one test): emptied between them."""
    from tests.conftest import POSTGRES, _admin

    name = "perdure_test_strings"
    with _admin() as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.execute(f"CREATE DATABASE {name}")
    yield f"{POSTGRES}/{name}"
    with _admin() as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


_SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
_EXAMPLES = [
    Sample("counter", "add", ["\x00nul", "\x00other", ""], "\x00", "\x00", "\x00", "\x00"),
    Sample("kafka", "h", ["\x00\x00\x00\x01", "\x00\x00\x00\x02", "\x00\x00\x00\x00"], "i", "n", "v", "s"),
    Sample("svc\x00x", "h\x00", [LONG, LONG[:-1]], LONG, LONG, LONG, LONG),
    Sample("שלום", "🦀", ["\u202eevil", "e\u0301", "é"], "\x1b[31m", "\x7f", "\r\n", "\t"),
]


def _with_examples(test: Callable[[Sample], None]) -> Callable[[Sample], None]:
    for sample in _EXAMPLES:
        test = example(sample)(test)
    return test


@_SETTINGS
@given(SAMPLES)
@_with_examples
def test_strings_round_trip_memory(s: Sample) -> None:
    asyncio.run(_round_trip(memory.Store, s, durable=False))


@_SETTINGS
@given(SAMPLES)
@_with_examples
def test_strings_round_trip_sqlite_and_restart(s: Sample) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "perdure.db"
        asyncio.run(_round_trip(lambda: sqlite_backend.Store(path), s, durable=True))


@_SETTINGS
@given(SAMPLES)
@_with_examples
def test_strings_round_trip_postgres_and_restart(postgres_url: str, s: Sample) -> None:
    """PostgreSQL text cannot hold U+0000: user text is stored as UTF-8 bytea, long keys hashed."""

    def open_store() -> Store:
        return postgres_backend.Database(postgres_url, partitions=1).take_partition(0)

    asyncio.run(_round_trip(open_store, s, durable=True))
    asyncio.run(_empty(postgres_url))


async def _empty(url: str) -> None:
    """Between examples: the one database starts empty again."""
    import psycopg

    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await conn.execute(
            "TRUNCATE invocations, journal, journal_ids, state, locks, inbox, timers, deliveries"
        )
