"""What a new transaction starts from: durable data plus the writes of transactions still committing.

Three layers, read top-down (the open transaction's own `Writes` sits above all of them):

1. `layers`: the `Writes` of committing transactions, oldest first. Each stays here until the
   loop hears that its COMMIT returned; it is then dropped and merged into the caches (2).
2. Caches of durable data: invocation slots, locks, inbox queues and whole state maps, each
   bounded (`Cache`), and the journal writes of the last few durable layers (`recent`). They are
   *read-through* caches of the database: an entry is only ever set from a read of the database or
   from a layer that just became durable, so dropping any entry is safe.
3. The database, through the backend's `Reads` (a connection used only on the event loop thread).

Why a read in (3) is never stale: a row is read there only when no layer covers it. A row that
some committing transaction writes is covered by that transaction's layer until its COMMIT
returned on the writer thread — and the loop drops the layer only after that (a callback the writer
schedules once COMMIT returned). Every read is a statement of its own that runs to completion, so
it sees every commit that finished before it began (a fresh WAL read transaction in SQLite, a fresh
snapshot in PostgreSQL's READ COMMITTED). So the database shows at least everything the layers no
longer cover, and whatever newer data it may show (a COMMIT finishing while the layer is still
there) is shadowed by the layer with the same values. One writer owns the rows a view covers (the
one process of a SQLite database; the lease holder of a partition, which opens a fresh view when it
takes the partition), so nothing else changes them behind the caches.

Caches are filled from the database only where no layer covers the row — except whole state maps,
which are cached even under layers, and journals, read from the database under layers. Such a
read may already include the first few layers (their COMMIT returned, their merge not yet run);
applying them again is harmless, because a layer's effect on a state map or journal (optional
clear, then each name's or index's last value) gives every name or index the value of the last
layer touching it, however often earlier layers are applied — and every later layer is still
applied on top, in order. A journal needs no database read at all when its writes in `recent`,
the layers and the transaction start with a clear, or with the transaction that allocated its seq
(`JournalOps.fresh`): there were no rows before.
"""

from __future__ import annotations

import enum
from collections import deque
from typing import Final, Generic, Literal, Protocol, TypeVar

from perdure.storage.api import Entry, Position, Timer
from perdure.storage.layered.writes import JournalOps, Key, OffsetKey, Slot, Writes

_EMPTY: deque[tuple[int, str]] = deque()


class Reads(Protocol):
    """Point reads of durable data that a backend gives a view (event loop thread only)."""

    def slot(self, invocation_id: str) -> Slot:
        """The id's invocation row, else the seq of its journal without one, else `ABSENT`."""
        ...

    def journal(self, seq: int) -> dict[int, Entry]: ...
    def state(self, key: Key, name: bytes) -> bytes | None: ...
    def all_state(self, key: Key) -> dict[bytes, bytes]: ...
    def lock(self, key: Key) -> str | None: ...
    def inbox(self, key: Key) -> list[tuple[int, str]]:
        """(inbox seq, invocation id) of the key's queue, oldest first."""
        ...

    def timer(self, timer_id: str) -> Timer | None: ...
    def offset(self, key: OffsetKey) -> Position | None: ...
    def with_status(self, status: str) -> dict[str, bytes]:
        """id -> record of the durable invocations with `status` (in the view's partitions)."""
        ...


class _Miss(enum.Enum):
    MISS = enum.auto()


_MISS: Final = _Miss.MISS  # not cached (a cached value may be None)
#: A key's state is cached only while its names and values total at most this many bytes.
STATE_CACHE_BYTES = 16 * 1024
#: Durable layers whose journal writes stay readable in memory.
RECENT_LAYERS = 8

K = TypeVar("K")
V = TypeVar("V")


class Cache(Generic[K, V]):
    """An approximate LRU of about `size` entries in two generations.

    Hits in the old generation are copied to the new one; when the new one holds size/2 entries it
    becomes the old one, and the old one is dropped whole. Every operation is O(1), and merging a
    whole durable layer is one `dict.update` — no per-entry bookkeeping on the event loop.
    """

    __slots__ = ("_half", "_new", "_old")

    def __init__(self, size: int) -> None:
        self._half = max(1, size // 2)
        self._new: dict[K, V] = {}
        self._old: dict[K, V] = {}

    def get(self, key: K) -> V | Literal[_Miss.MISS]:
        value = self._new.get(key, _MISS)
        if value is _MISS:
            value = self._old.get(key, _MISS)
            if value is not _MISS:
                self.put(key, value)
        return value

    def put(self, key: K, value: V) -> None:
        self._new[key] = value
        if len(self._new) >= self._half:
            self._old, self._new = self._new, {}

    def update(self, items: dict[K, V]) -> None:
        self._new.update(items)
        if len(self._new) >= self._half:
            self._old, self._new = self._new, {}

    def discard(self, key: K) -> None:
        self._new.pop(key, None)
        self._old.pop(key, None)


class View:
    """`seq_step`: seqs this view allocates are `last_seq + seq_step`, `+ 2 * seq_step`, …, so views
    of different partitions (each its own residue) never allocate the same one."""

    def __init__(
        self,
        reads: Reads,
        *,
        cache_size: int,
        last_seq: int,
        inbox_seq: int,
        seq_step: int = 1,
        name: str = "",
    ) -> None:
        self.name = name  # names the deliveries this view sends: "{name}:{seq}" is unique
        self.layers: list[Writes] = []
        self._reads = reads
        self._step = seq_step
        self._slots: Cache[str, Slot] = Cache(cache_size)
        self._locks: Cache[Key, str | None] = Cache(cache_size)
        self._inboxes: Cache[Key, deque[tuple[int, str]]] = Cache(cache_size)
        # (state, its bytes); fewer keys, as each may hold up to STATE_CACHE_BYTES (80 MiB at most).
        self._states: Cache[Key, tuple[dict[bytes, bytes], int]] = Cache(cache_size // 10)
        # The journal writes of the last few durable layers: a journal read soon after it was written
        # (an invocation queued behind its key starts) finds its whole journal here, no SQL.
        self.recent: deque[dict[str, JournalOps]] = deque(maxlen=RECENT_LAYERS)
        self.last_seq = last_seq  # the highest invocation seq allocated so far
        self.durable_seq = last_seq  # no journal rows exist under a seq above this one
        self._inbox_seq = inbox_seq

    def next_seq(self) -> int:
        self.last_seq += self._step
        return self.last_seq

    @property
    def inbox_seq(self) -> int:
        """The highest inbox seq allocated so far."""
        return self._inbox_seq

    def next_inbox_seq(self) -> int:
        self._inbox_seq += self._step
        return self._inbox_seq

    # ---- per-row lookups below the open transaction

    def slot(self, invocation_id: str) -> Slot:
        for layer in reversed(self.layers):
            written = layer.invocations.get(invocation_id)
            if written is not None:
                return written
        cached = self._slots.get(invocation_id)
        if cached is not _MISS:
            return cached
        slot = self._reads.slot(invocation_id)
        self._slots.put(invocation_id, slot)
        return slot

    def lock(self, key: Key) -> str | None:
        for layer in reversed(self.layers):
            locks = layer.locks
            if key in locks:
                return locks[key]
        holder = self._locks.get(key)
        if holder is _MISS:
            holder = self._reads.lock(key)
            self._locks.put(key, holder)
        return holder

    def inbox(self, key: Key) -> deque[tuple[int, str]]:
        """The queue of `key` as (inbox seq, invocation id), oldest first; callers must not mutate it."""
        for layer in reversed(self.layers):
            written = layer.inboxes.get(key)
            if written is not None:
                return written
        cached = self._inboxes.get(key)
        if cached is not _MISS:
            return cached
        rows = self._reads.inbox(key)
        queue = deque(rows) if rows else _EMPTY
        self._inboxes.put(key, queue)
        return queue

    # ---- durable data only (the transaction applies the layers on top)

    def journal(self, seq: int) -> dict[int, Entry]:
        """The durable journal of `seq` by index."""
        if seq > self.durable_seq:  # allocated by a transaction that is not durable yet: no rows
            return {}
        return self._reads.journal(seq)

    def state(self, service: str, key: str, name: bytes) -> bytes | None:
        cached = self._states.get((service, key))
        if cached is not _MISS:
            return cached[0].get(name)
        return self._reads.state((service, key), name)

    def all_state(self, service: str, key: str) -> dict[bytes, bytes]:
        """The state of (service, key), as a dict the caller may keep and change."""
        cached = self._states.get((service, key))
        if cached is not _MISS:
            return dict(cached[0])
        state = self._reads.all_state((service, key))
        size = sum(len(n) + len(v) for n, v in state.items())
        if size <= STATE_CACHE_BYTES:
            self._states.put((service, key), (dict(state), size))
        return state

    def timer(self, timer_id: str) -> Timer | None:
        return self._reads.timer(timer_id)

    def offset(self, key: OffsetKey) -> Position | None:
        """Read once per Kafka batch: not cached, the layers are looked at by the transaction."""
        return self._reads.offset(key)

    def with_status(self, status: str) -> dict[str, bytes]:
        """Durable invocations with `status`: id -> record."""
        return self._reads.with_status(status)

    # ---- the oldest layer became durable

    def durable(self) -> Writes:
        """Drop the oldest layer, merging it into the caches; return it."""
        writes = self.layers.pop(0)
        self._slots.update(writes.invocations)
        self._locks.update(writes.locks)
        self._inboxes.update(writes.inboxes)
        states = self._states
        for key, ops in writes.state.items():
            state: dict[bytes, bytes]
            if ops.cleared:
                state, size = {}, 0
            else:
                cached = states.get(key)
                if cached is _MISS:
                    continue  # not cached, and the layer does not know the whole state either
                state, size = cached
            for name, value in ops.values.items():
                old = state.pop(name, None)
                if old is not None:
                    size -= len(name) + len(old)
                if value is not None:
                    state[name] = value
                    size += len(name) + len(value)
            if size <= STATE_CACHE_BYTES:
                states.put(key, (state, size))
            else:
                states.discard(key)
        self.recent.append(writes.journals)
        if writes.max_seq > self.durable_seq:
            self.durable_seq = writes.max_seq
        return writes
