"""One transaction's buffered writes: what a layered store commits as a whole.

A `Writes` is coalesced per row as the transaction goes (the last put of an invocation wins, a
journal or state `clear` drops what the transaction wrote before it), so it holds each row's
*final* effect: a backend may apply its tables in any order between them (deletes first, then
inserts). While its transaction commits it is also a layer of the store's `View`.
"""

from __future__ import annotations

from collections import deque
from typing import NamedTuple

from perdure.storage.api import Entry, Position, Timer

Key = tuple[str, str]  # (service, key)
OffsetKey = tuple[str, str, int]  # (subscription, topic, Kafka partition)


class Slot(NamedTuple):
    """What the store knows about one invocation id; immutable, so layers can share it."""

    seq: int | None  # None: the id has no row anywhere (no invocation, no journal)
    record: bytes | None  # the msgpack-encoded Invocation; None: no invocation row
    status: str | None = None
    modified_at: int = 0
    ident: tuple[str, str, str | None, int] | None = None  # (service, handler, key, created_at)


ABSENT = Slot(None, None)


class JournalOps:
    """A transaction's effect on one journal: optionally cleared, then entries by index.

    `fresh`: the transaction allocated the seq, so no entries existed before these.
    """

    __slots__ = ("cleared", "entries", "fresh", "seq")

    def __init__(self, seq: int, *, fresh: bool = False) -> None:
        self.seq = seq
        self.fresh = fresh
        self.cleared = False
        self.entries: dict[int, Entry] = {}


class StateOps:
    """A transaction's effect on one (service, key): optionally cleared, then names set (None: cleared)."""

    __slots__ = ("cleared", "values")

    def __init__(self) -> None:
        self.cleared = False
        self.values: dict[bytes, bytes | None] = {}


class Writes:
    """A transaction's writes: its own view while open, an overlay of the store's while committing."""

    __slots__ = (
        "delivered",
        "deliveries",
        "first_seq",
        "inbox_dropped",
        "inbox_pushed",
        "inboxes",
        "invocations",
        "journals",
        "locks",
        "max_seq",
        "offsets",
        "seen",
        "state",
        "timers",
    )

    def __init__(self, first_seq: int = 0) -> None:
        self.first_seq = first_seq  # seqs above this one were allocated by this transaction
        self.invocations: dict[str, Slot] = {}  # id -> its slot after this transaction
        # id -> its slot before this transaction, for every id read or written: the view does not
        # change while the transaction is open, so each id is looked up there once. For a written id,
        # (seen, invocations) decides between INSERT, UPDATE and DELETE.
        self.seen: dict[str, Slot] = {}
        self.journals: dict[str, JournalOps] = {}
        self.state: dict[Key, StateOps] = {}
        self.locks: dict[Key, str | None] = {}  # None: released
        self.inboxes: dict[Key, deque[tuple[int, str]]] = {}  # whole queues, copied on first touch
        self.inbox_pushed: dict[int, tuple[str, str, int, str]] = {}  # inbox seq -> row
        self.inbox_dropped: list[tuple[str, str, int]] = []  # rows stored before this transaction
        self.timers: dict[str, Timer | None] = {}  # None: deleted
        self.offsets: dict[OffsetKey, Position] = {}
        self.deliveries: list[tuple[int, str, bytes]] = []  # (partition, source, body) to send
        self.delivered: list[int] = []  # ids of deliveries applied
        self.max_seq = 0  # the highest invocation seq this transaction allocated
