"""In-memory storage backend for tests: plain dicts, nothing durable, fail-stop.

A transaction writes straight into the dicts, so `commit()` has nothing to do and `rollback()` is
not supported (it raises `NotImplementedError`: a test that needs rollback uses the sqlite store).
For the same reason a `Reader` here also sees a transaction's writes before they are committed,
and the pipelining contract of `perdure.storage.api.Store` holds trivially: `commit()` closes the
transaction when it is called, so `begin()` may follow before its result is awaited.
Invocations are stored msgpack-encoded, so a caller mutating a record it put or got never changes
the stored copy behind the store's back — the same isolation the sqlite store gives.

Example::

    store = Store()
    txn = store.begin()
    txn.put_invocation(Invocation(id="inv-1", service="greeter", handler="greet"))
    await store.commit(txn)
"""

from __future__ import annotations

from collections import deque
from collections.abc import Coroutine, Sequence
from typing import Any

import msgspec

from perdure.storage import sql
from perdure.storage.api import (
    CatalogChange,
    CatalogSnapshot,
    Delivery,
    Entry,
    Invocation,
    Position,
    Reader,
    Status,
    Timer,
    Transaction,
)

_ENCODE = msgspec.msgpack.Encoder().encode
_DECODE_INVOCATION = msgspec.msgpack.Decoder(Invocation).decode

_Key = tuple[str, str]  # (service, key)


class _Tables:
    """The store's data, shared by its transactions and readers."""

    def __init__(self) -> None:
        self.invocations: dict[str, bytes] = {}  # id -> msgpack-encoded Invocation
        self.journals: dict[str, dict[int, Entry]] = {}
        self.state: dict[_Key, dict[bytes, bytes]] = {}
        self.locks: dict[_Key, str] = {}
        self.inboxes: dict[_Key, deque[str]] = {}
        self.timers: dict[str, Timer] = {}
        self.offsets: dict[tuple[str, str, int], Position] = {}
        self.deliveries: dict[int, Delivery] = {}
        self.delivery_ids = 0
        self.catalog = CatalogSnapshot()

    def get_invocation(self, invocation_id: str) -> Invocation | None:
        record = self.invocations.get(invocation_id)
        return None if record is None else _DECODE_INVOCATION(record)

    def read_journal(self, invocation_id: str) -> list[Entry]:
        journal = self.journals.get(invocation_id)
        return [] if journal is None else [journal[i] for i in sorted(journal)]

    def get_all_state(self, service: str, key: str) -> dict[bytes, bytes]:
        return dict(self.state.get((service, key), {}))

    def invocations_sorted(self) -> list[Invocation]:
        """All invocations, oldest first (created_at, then id), like the sqlite store orders them."""
        invocations = [_DECODE_INVOCATION(r) for r in self.invocations.values()]
        invocations.sort(key=lambda inv: (inv.created_at, inv.id))
        return invocations


class _Transaction:
    """The write ports, applied directly to the tables."""

    __slots__ = ("_t",)

    def __init__(self, tables: _Tables) -> None:
        self._t = tables

    # InvocationTable

    def get_invocation(self, invocation_id: str) -> Invocation | None:
        return self._t.get_invocation(invocation_id)

    def put_invocation(self, invocation: Invocation, *, new: bool = False) -> None:
        self._t.invocations[invocation.id] = _ENCODE(invocation)

    def delete_invocation(self, invocation_id: str) -> None:
        self._t.invocations.pop(invocation_id, None)

    def invocations_with_status(self, status: Status) -> list[Invocation]:
        return [inv for inv in self._t.invocations_sorted() if inv.status == status]

    # JournalTable

    def append_entries(self, invocation_id: str, start_index: int, entries: Sequence[Entry]) -> None:
        journal = self._t.journals.setdefault(invocation_id, {})
        for i, entry in enumerate(entries, start_index):
            journal[i] = entry

    def read_journal(self, invocation_id: str) -> list[Entry]:
        return self._t.read_journal(invocation_id)

    def delete_journal(self, invocation_id: str) -> None:
        self._t.journals.pop(invocation_id, None)

    # StateTable

    def get_state(self, service: str, key: str, name: bytes) -> bytes | None:
        values = self._t.state.get((service, key))
        return None if values is None else values.get(name)

    def get_all_state(self, service: str, key: str) -> dict[bytes, bytes]:
        return self._t.get_all_state(service, key)

    def set_state(self, service: str, key: str, name: bytes, value: bytes) -> None:
        self._t.state.setdefault((service, key), {})[name] = value

    def clear_state(self, service: str, key: str, name: bytes) -> None:
        values = self._t.state.get((service, key))
        if values is not None:
            values.pop(name, None)
            if not values:
                del self._t.state[service, key]

    def clear_all_state(self, service: str, key: str) -> None:
        self._t.state.pop((service, key), None)

    # InboxTable

    def get_lock(self, service: str, key: str) -> str | None:
        return self._t.locks.get((service, key))

    def set_lock(self, service: str, key: str, invocation_id: str) -> None:
        self._t.locks[service, key] = invocation_id

    def release_lock(self, service: str, key: str) -> None:
        self._t.locks.pop((service, key), None)

    def inbox_push(self, service: str, key: str, invocation_id: str) -> None:
        inbox = self._t.inboxes.get((service, key))
        if inbox is None:
            inbox = self._t.inboxes[service, key] = deque()
        inbox.append(invocation_id)

    def inbox_pop(self, service: str, key: str) -> str | None:
        inbox = self._t.inboxes.get((service, key))
        if inbox is None:
            return None
        invocation_id = inbox.popleft()
        if not inbox:  # drop empty queues so idle keys cost nothing
            del self._t.inboxes[service, key]
        return invocation_id

    def inbox_remove(self, service: str, key: str, invocation_id: str) -> bool:
        inbox = self._t.inboxes.get((service, key))
        if inbox is None or invocation_id not in inbox:
            return False
        inbox.remove(invocation_id)
        if not inbox:
            del self._t.inboxes[service, key]
        return True

    # TimerTable

    def put_timer(self, timer: Timer) -> None:
        self._t.timers[timer.id] = timer

    def delete_timer(self, timer_id: str) -> bool:
        return self._t.timers.pop(timer_id, None) is not None

    def get_timer(self, timer_id: str) -> Timer | None:
        return self._t.timers.get(timer_id)

    # OutboxTable

    def put_delivery(self, partition: int, body: bytes) -> None:
        self._t.delivery_ids += 1
        self._t.deliveries[self._t.delivery_ids] = Delivery(self._t.delivery_ids, partition, body)

    def delete_delivery(self, delivery_id: int) -> None:
        self._t.deliveries.pop(delivery_id, None)

    # OffsetTable

    def get_offset(self, subscription_id: str, topic: str, partition: int) -> Position | None:
        return self._t.offsets.get((subscription_id, topic, partition))

    def set_offset(self, subscription_id: str, topic: str, partition: int, position: Position) -> None:
        self._t.offsets[subscription_id, topic, partition] = position


class _Reader:
    """Reads over the same tables (uncommitted writes included: see the module docstring)."""

    __slots__ = ("_t",)

    def __init__(self, tables: _Tables) -> None:
        self._t = tables

    def get_invocation(self, invocation_id: str) -> Invocation | None:
        return self._t.get_invocation(invocation_id)

    def get_invocations(self, invocation_ids: Sequence[str]) -> dict[str, Invocation]:
        records = self._t.invocations
        return {i: _DECODE_INVOCATION(records[i]) for i in invocation_ids if i in records}

    def read_journal(self, invocation_id: str) -> list[Entry]:
        return self._t.read_journal(invocation_id)

    def get_all_state(self, service: str, key: str) -> dict[bytes, bytes]:
        return self._t.get_all_state(service, key)

    def list_invocations(
        self, *, status: Status | None = None, service: str | None = None, limit: int = 100
    ) -> list[Invocation]:
        return [
            inv
            for inv in self._t.invocations_sorted()
            if (status is None or inv.status == status) and (service is None or inv.service == service)
        ][:limit]

    def completed_before(
        self, modified_before: int, *, after: tuple[int, str] | None = None, limit: int = 1000
    ) -> list[tuple[int, str]]:
        found = sorted(
            (inv.modified_at, inv.id)
            for inv in self._t.invocations_sorted()
            if inv.status is Status.COMPLETED and inv.modified_at < modified_before
        )
        return [row for row in found if after is None or row > after][:limit]

    def all_timers(self, partition: int | None = None) -> list[Timer]:  # one partition: all of them
        return sorted(self._t.timers.values(), key=lambda t: (t.fire_at, t.id))

    def count_invocations(self) -> dict[Status, int]:
        counts = dict.fromkeys(Status, 0)
        for inv in self._t.invocations_sorted():
            counts[inv.status] += 1
        return counts

    def offsets(self, subscription_id: str) -> dict[tuple[str, int], Position]:
        return {(t, p): pos for (s, t, p), pos in self._t.offsets.items() if s == subscription_id}


class Store:
    """A dict-backed store for tests; nothing survives the process and rollback is unsupported."""

    def __init__(self) -> None:
        self._tables = _Tables()
        self._current: _Transaction | None = None

    def begin(self) -> Transaction:
        if self._current is not None:
            raise RuntimeError("a transaction is still open; commit it before begin()")
        txn = self._current = _Transaction(self._tables)
        return txn

    def commit(self, txn: Transaction) -> Coroutine[Any, Any, None]:
        """Close the transaction now (its writes already landed); the result has nothing to wait for."""
        self._check_current(txn)
        self._current = None
        return _done()

    def rollback(self, txn: Transaction) -> None:
        self._check_current(txn)
        # Writes already landed in the dicts and there is no undo log: the store is now
        # inconsistent, so leave the transaction open and every later begin() fails (fail-stop).
        raise NotImplementedError(
            "the memory store cannot roll back (its writes are applied immediately); it is for tests"
            " and fail-stop — use the sqlite store to exercise rollback"
        )

    def reader(self) -> Reader:
        return _Reader(self._tables)

    def sql_base(self, everything: bool) -> sql.Rows:
        """The tables as base-layer rows (journals and state with `everything`)."""
        t, rows = self._tables, sql.Rows()
        for inv in t.invocations_sorted():
            record = t.invocations[inv.id]
            rows.invocations.append(
                (
                    inv.id,
                    inv.service,
                    inv.handler,
                    inv.key,
                    inv.status.value,
                    inv.created_at,
                    inv.modified_at,
                    record,
                )
            )
        rows.locks = [(service, key, holder) for (service, key), holder in t.locks.items()]
        rows.inbox = [
            (service, key, seq, invocation_id)
            for (service, key), queue in t.inboxes.items()
            for seq, invocation_id in enumerate(queue)
        ]
        if everything:
            rows.entries = [
                (i, idx, entry.type, entry.payload)
                for i, journal in t.journals.items()
                for idx, entry in journal.items()
            ]
            rows.state = [(s, k, n, v) for (s, k), values in t.state.items() for n, v in values.items()]
        return rows

    def read_catalog(self) -> CatalogSnapshot:
        return self._tables.catalog

    async def write_catalog(self, expected_version: int, change: CatalogChange) -> bool:
        if self._tables.catalog.version != expected_version:
            return False
        self._tables.catalog = change.applied_to(self._tables.catalog)
        return True

    async def close(self) -> None:
        self._current = None

    def _check_current(self, txn: Transaction) -> None:
        if txn is not self._current:
            raise RuntimeError("not this store's open transaction (already committed?)")


async def _done() -> None:
    return None
