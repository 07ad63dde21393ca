"""What a new transaction starts from: durable data plus the writes of transactions still committing.

Three layers, read top-down (the open transaction's own `Writes` sits above all of them):

1. `layers`: the `Writes` of committing transactions, oldest first. Each stays here until the
   loop hears that its COMMIT returned; it is then dropped and merged into the caches (2).
2. Caches of durable data: invocation slots (LRU, `cache_size`), locks and inbox queues (bounded
   alike). They are *read-through* caches of the database: an entry is only ever set from a read
   of the database or from a layer that just became durable, so evicting any entry is safe.
3. The database, through a read-only connection used only on the event loop thread.

Why a read in (3) is never stale: a row is read there only when no layer covers it. A row that
some committing transaction writes is covered by that transaction's layer until its COMMIT
returned on the writer thread — and the loop drops the layer only after that (a callback the writer
schedules once COMMIT returned). Every statement here runs to completion (`fetchall`), so each one
starts a fresh WAL read transaction, which sees every commit that finished before it began. So the
database shows at least everything the layers no longer cover, and whatever newer data it may show
(a COMMIT finishing while the layer is still there) is shadowed by the layer with the same values.
One process writes a database at a time (the engine's node owns it), so nothing else changes rows
behind the caches.
"""

from __future__ import annotations

import sqlite3
from collections import OrderedDict, deque
from typing import Any

from perdure.storage.api import Entry, Timer
from perdure.storage.sqlite._writes import ABSENT, Key, Slot, Writes

# One probe for both places an id's seq can live (journal_ids only for a journal without invocation).
_SLOT = (
    "SELECT seq, record, status, modified_at, service, handler, key, created_at"
    " FROM invocations WHERE id = ?1"
    " UNION ALL SELECT seq, NULL, NULL, 0, NULL, NULL, NULL, NULL FROM journal_ids WHERE id = ?1"
)
_JOURNAL = "SELECT type, payload FROM journal WHERE seq = ? ORDER BY idx"
_JOURNAL_IDX = "SELECT idx, type, payload FROM journal WHERE seq = ?"
_STATE = "SELECT value FROM state WHERE service = ? AND key = ? AND name = ?"
_ALL_STATE = "SELECT name, value FROM state WHERE service = ? AND key = ?"
_LOCK = "SELECT invocation_id FROM locks WHERE service = ? AND key = ?"
_INBOX = "SELECT seq, invocation_id FROM inbox WHERE service = ? AND key = ? ORDER BY seq"
_TIMER = "SELECT id, fire_at, kind, invocation_id, completion_id FROM timers WHERE id = ?"
_WITH_STATUS = "SELECT id, record FROM invocations WHERE status = ?"

_EMPTY: deque[tuple[int, str]] = deque()


class View:
    def __init__(self, conn: sqlite3.Connection, *, cache_size: int, last_seq: int, inbox_seq: int) -> None:
        self.layers: list[Writes] = []
        self._execute = conn.execute
        self._cache_size = cache_size
        self._slots: OrderedDict[str, Slot] = OrderedDict()
        self._locks: OrderedDict[Key, str | None] = OrderedDict()
        self._inboxes: OrderedDict[Key, deque[tuple[int, str]]] = OrderedDict()
        self.last_seq = last_seq  # the highest invocation seq allocated so far
        self.durable_seq = last_seq  # no journal rows exist under a seq above this one
        self._inbox_seq = inbox_seq

    def next_seq(self) -> int:
        self.last_seq += 1
        return self.last_seq

    def next_inbox_seq(self) -> int:
        self._inbox_seq += 1
        return self._inbox_seq

    # ---- per-row lookups below the open transaction

    def slot(self, invocation_id: str) -> Slot:
        for layer in reversed(self.layers):
            entry = layer.invocations.get(invocation_id)
            if entry is not None:
                return entry[0]
        slots = self._slots
        slot = slots.get(invocation_id)
        if slot is not None:
            slots.move_to_end(invocation_id)
            return slot
        rows = self._execute(_SLOT, (invocation_id,)).fetchall()
        if not rows:
            slot = ABSENT
        else:
            row = next((r for r in rows if r[1] is not None), rows[0])
            seq, record, status, modified_at, service, handler, key, created_at = row
            ident = None if record is None else (service, handler, key, created_at)
            slot = Slot(seq, record, status, modified_at, ident)
        self._remember(slots, invocation_id, slot)
        return slot

    def lock(self, key: Key) -> str | None:
        for layer in reversed(self.layers):
            if key in layer.locks:
                return layer.locks[key]
        locks = self._locks
        if key in locks:
            locks.move_to_end(key)
            return locks[key]
        rows = self._execute(_LOCK, key).fetchall()
        holder: str | None = rows[0][0] if rows else None
        self._remember(locks, key, holder)
        return holder

    def inbox(self, key: Key) -> deque[tuple[int, str]]:
        """The queue of `key` as (inbox seq, invocation id), oldest first; callers must not mutate it."""
        for layer in reversed(self.layers):
            queue = layer.inboxes.get(key)
            if queue is not None:
                return queue
        inboxes = self._inboxes
        queue = inboxes.get(key)
        if queue is not None:
            inboxes.move_to_end(key)
            return queue
        rows = self._execute(_INBOX, key).fetchall()
        queue = deque(rows) if rows else _EMPTY
        self._remember(inboxes, key, queue)
        return queue

    # ---- durable rows only (the transaction applies the layers on top)

    def journal(self, seq: int) -> list[Entry]:
        if seq > self.durable_seq:  # allocated by a transaction that is not durable yet: no rows
            return []
        return [Entry(t, p) for t, p in self._execute(_JOURNAL, (seq,)).fetchall()]

    def journal_by_index(self, seq: int) -> dict[int, Entry]:
        if seq > self.durable_seq:
            return {}
        return {i: Entry(t, p) for i, t, p in self._execute(_JOURNAL_IDX, (seq,)).fetchall()}

    def state(self, service: str, key: str, name: bytes) -> bytes | None:
        rows = self._execute(_STATE, (service, key, name)).fetchall()
        return bytes(rows[0][0]) if rows else None

    def all_state(self, service: str, key: str) -> dict[bytes, bytes]:
        return dict(self._execute(_ALL_STATE, (service, key)).fetchall())

    def timer(self, timer_id: str) -> Timer | None:
        rows = self._execute(_TIMER, (timer_id,)).fetchall()
        return Timer(*rows[0]) if rows else None

    def with_status(self, status: str) -> dict[str, bytes]:
        """Durable invocations with `status`: id -> record."""
        return dict(self._execute(_WITH_STATUS, (status,)).fetchall())

    # ---- the oldest layer became durable

    def durable(self) -> Writes:
        """Drop the oldest layer, merging it into the caches; return it."""
        writes = self.layers.pop(0)
        slots, locks, inboxes = self._slots, self._locks, self._inboxes
        for invocation_id, (slot, _) in writes.invocations.items():
            slots.pop(invocation_id, None)
            slots[invocation_id] = slot
        for key, holder in writes.locks.items():
            locks.pop(key, None)
            locks[key] = holder
        for key, queue in writes.inboxes.items():
            inboxes.pop(key, None)
            inboxes[key] = queue
        self.durable_seq = max(self.durable_seq, writes.max_seq)
        for cache in (slots, locks, inboxes):
            while len(cache) > self._cache_size:
                cache.popitem(last=False)
        return writes

    def _remember(self, cache: OrderedDict[Any, Any], key: Any, value: Any) -> None:
        cache[key] = value
        if len(cache) > self._cache_size:
            cache.popitem(last=False)
