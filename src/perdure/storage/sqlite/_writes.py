"""One transaction's buffered writes, and the few set-based SQL statements that apply them.

A `Writes` is coalesced per row as the transaction goes (the last put of an invocation wins, a
journal or state `clear` drops what the transaction wrote before it), so it holds each row's
*final* effect and the statements can run in any order between tables: deletes first, then inserts.

Each statement gets all its rows as one JSON array (`json_each`) plus one blob holding the byte
strings (records, payloads, state names and values) that rows cut out with `substr()`. Applying a
batch is then one `execute` per statement kind, each a single C-level step that runs without the
GIL: `executemany` would bind every row under the GIL and, with the event loop busy, wait for the
GIL again after every row.
"""

from __future__ import annotations

import json
from collections import deque
from typing import NamedTuple

from perdure.storage.api import Entry, Timer

Key = tuple[str, str]  # (service, key)
Statement = tuple[str, tuple[object, ...]]


class Slot(NamedTuple):
    """What the store knows about one invocation id; immutable, so layers can share it."""

    seq: int | None  # None: the id has no row anywhere (no invocation, no journal)
    record: bytes | None  # the msgpack-encoded Invocation; None: no invocation row
    status: str | None = None
    modified_at: int = 0
    ident: tuple[str, str, str | None, int] | None = None  # (service, handler, key, created_at)


ABSENT = Slot(None, None)


class JournalOps:
    """A transaction's effect on one journal: optionally cleared, then entries by index."""

    __slots__ = ("cleared", "entries", "seq")

    def __init__(self, seq: int) -> None:
        self.seq = seq
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
        "inbox_dropped",
        "inbox_pushed",
        "inboxes",
        "invocations",
        "journals",
        "locks",
        "max_seq",
        "state",
        "timers",
    )

    def __init__(self) -> None:
        # id -> (slot after this transaction, slot before it): the pair decides INSERT/UPDATE/DELETE.
        self.invocations: dict[str, tuple[Slot, Slot]] = {}
        self.journals: dict[str, JournalOps] = {}
        self.state: dict[Key, StateOps] = {}
        self.locks: dict[Key, str | None] = {}  # None: released
        self.inboxes: dict[Key, deque[tuple[int, str]]] = {}  # whole queues, copied on first touch
        self.inbox_pushed: dict[int, tuple[str, str, int, str]] = {}  # inbox seq -> row
        self.inbox_dropped: list[tuple[str, str, int]] = []  # rows stored before this transaction
        self.timers: dict[str, Timer | None] = {}  # None: deleted
        self.max_seq = 0  # the highest invocation seq this transaction allocated


# ---- SQL. ?1 is the JSON array of rows; ?2, when used, the blob that byte columns are cut from.


def _c(i: int, row: str = "value") -> str:
    return f"json_extract({row}, '$[{i}]')"


def _b(i: int, row: str = "value") -> str:
    """A byte column stored as (offset, length) at row positions i and i+1."""
    return f"substr(?2, {_c(i, row)}, {_c(i + 1, row)})"


def _cols(n: int, row: str = "value") -> str:
    return ", ".join(_c(i, row) for i in range(n))


_INV_DELETE = "DELETE FROM invocations WHERE seq IN (SELECT value FROM json_each(?1))"
_INV_INSERT = (
    "INSERT INTO invocations (seq, id, service, handler, key, status, created_at, modified_at, record)"
    f" SELECT {_cols(8)}, {_b(8)} FROM json_each(?1)"
)
# UPDATEs name only the columns that change, so SQLite touches the status index only when it must.
_INV_UPDATE = (
    f"UPDATE invocations SET modified_at = {_c(1, 'j.value')}, record = {_b(2, 'j.value')}"
    f" FROM json_each(?1) AS j WHERE invocations.seq = {_c(0, 'j.value')}"
)
_INV_UPDATE_STATUS = (
    f"UPDATE invocations SET status = {_c(1, 'j.value')}, modified_at = {_c(2, 'j.value')},"
    f" record = {_b(3, 'j.value')} FROM json_each(?1) AS j WHERE invocations.seq = {_c(0, 'j.value')}"
)
_INV_UPDATE_ALL = (
    "UPDATE invocations SET"
    f" service = {_c(1, 'j.value')}, handler = {_c(2, 'j.value')}, key = {_c(3, 'j.value')},"
    f" status = {_c(4, 'j.value')}, created_at = {_c(5, 'j.value')}, modified_at = {_c(6, 'j.value')},"
    f" record = {_b(7, 'j.value')} FROM json_each(?1) AS j WHERE invocations.seq = {_c(0, 'j.value')}"
)
_JOURNAL_DELETE = "DELETE FROM journal WHERE seq IN (SELECT value FROM json_each(?1))"
_JOURNAL_PUT = (
    f"INSERT OR REPLACE INTO journal (seq, idx, type, payload) SELECT {_cols(3)}, {_b(3)} FROM json_each(?1)"
)
_STATE_CLEAR_ALL = f"DELETE FROM state WHERE (service, key) IN (SELECT {_cols(2)} FROM json_each(?1))"
_STATE_CLEAR = (
    f"DELETE FROM state WHERE (service, key, name) IN (SELECT {_cols(2)}, {_b(2)} FROM json_each(?1))"
)
_STATE_SET = (
    f"INSERT OR REPLACE INTO state (service, key, name, value) SELECT {_cols(2)}, {_b(2)}, {_b(4)}"
    " FROM json_each(?1)"
)
_LOCK_RELEASE = f"DELETE FROM locks WHERE (service, key) IN (SELECT {_cols(2)} FROM json_each(?1))"
_LOCK_SET = f"INSERT OR REPLACE INTO locks (service, key, invocation_id) SELECT {_cols(3)} FROM json_each(?1)"
_INBOX_DELETE = f"DELETE FROM inbox WHERE (service, key, seq) IN (SELECT {_cols(3)} FROM json_each(?1))"
_INBOX_PUSH = f"INSERT INTO inbox (service, key, seq, invocation_id) SELECT {_cols(4)} FROM json_each(?1)"
_TIMER_DELETE = "DELETE FROM timers WHERE id IN (SELECT value FROM json_each(?1))"
_TIMER_PUT = (
    "INSERT OR REPLACE INTO timers (id, fire_at, kind, invocation_id, completion_id)"
    f" SELECT {_cols(5)} FROM json_each(?1)"
)
# journal_ids holds the seq of a journal that has no invocation row. For ids whose rows were deleted
# or that gained an orphan journal, make it match the tables rather than track every case.
_JOURNAL_IDS_DROP = (
    f"DELETE FROM journal_ids WHERE id IN (SELECT {_c(0)} FROM json_each(?1)"
    f" WHERE EXISTS (SELECT 1 FROM invocations WHERE seq = {_c(1)})"
    f" OR NOT EXISTS (SELECT 1 FROM journal WHERE seq = {_c(1)}))"
)
_JOURNAL_IDS_KEEP = (
    f"INSERT OR IGNORE INTO journal_ids (id, seq) SELECT {_cols(2)} FROM json_each(?1)"
    f" WHERE NOT EXISTS (SELECT 1 FROM invocations WHERE seq = {_c(1)})"
    f" AND EXISTS (SELECT 1 FROM journal WHERE seq = {_c(1)})"
)

_to_json = json.JSONEncoder(separators=(",", ":"), check_circular=False).encode


class _Rows:
    """One statement's rows and the blob its byte columns are cut from."""

    __slots__ = ("offset", "parts", "rows")

    def __init__(self) -> None:
        self.rows: list[object] = []
        # A leading byte: substr() of an empty blob is NULL, of a non-empty one at its end is x''.
        self.parts: list[bytes] = [b"\x00"]
        self.offset = 2  # substr() counts from 1

    def cut(self, data: bytes) -> int:
        """Append `data` to the blob; return its offset (its length is len(data))."""
        offset = self.offset
        self.parts.append(data)
        self.offset = offset + len(data)
        return offset

    def statement(self, sql: str, out: list[Statement]) -> None:
        if self.rows:
            if len(self.parts) > 1:
                out.append((sql, (_to_json(self.rows), b"".join(self.parts))))
            else:
                out.append((sql, (_to_json(self.rows),)))


def statements(w: Writes) -> list[Statement]:
    """The SQL that applies `w` to a database holding everything committed before it."""
    inv_delete, inv_insert, update, update_status, update_all = _Rows(), _Rows(), _Rows(), _Rows(), _Rows()
    reconcile: dict[str, int] = {}
    for id, (new, old) in w.invocations.items():
        seq, record = new.seq, new.record
        assert seq is not None  # a slot written by a transaction always has its seq
        if record is None:
            if old.record is not None:
                inv_delete.rows.append(seq)
            reconcile[id] = seq
            continue
        n = len(record)
        ident = new.ident
        assert ident is not None
        if old.record is None:
            off = inv_insert.cut(record)
            inv_insert.rows.append(
                [seq, id, ident[0], ident[1], ident[2], new.status, ident[3], new.modified_at, off, n]
            )
            if old.seq is not None:  # not a fresh seq: it may have a journal_ids row to drop
                reconcile[id] = seq
        elif ident != old.ident:
            off = update_all.cut(record)
            update_all.rows.append(
                [seq, ident[0], ident[1], ident[2], new.status, ident[3], new.modified_at, off, n]
            )
        elif new.status != old.status:
            off = update_status.cut(record)
            update_status.rows.append([seq, new.status, new.modified_at, off, n])
        else:
            off = update.cut(record)
            update.rows.append([seq, new.modified_at, off, n])

    journal_delete, journal_put = _Rows(), _Rows()
    for id, ops in w.journals.items():
        seq = ops.seq
        if ops.cleared:
            journal_delete.rows.append(seq)
            reconcile[id] = seq
        rows, cut = journal_put.rows, journal_put.cut
        for idx, entry in ops.entries.items():
            payload = entry.payload
            rows.append([seq, idx, entry.type, cut(payload), len(payload)])

    state_clear_all, state_clear, state_set = _Rows(), _Rows(), _Rows()
    for (service, key), sops in w.state.items():
        if sops.cleared:
            state_clear_all.rows.append([service, key])
        for name, value in sops.values.items():
            if value is None:
                state_clear.rows.append([service, key, state_clear.cut(name), len(name)])
            else:
                state_set.rows.append(
                    [service, key, state_set.cut(name), len(name), state_set.cut(value), len(value)]
                )

    lock_release, lock_set = _Rows(), _Rows()
    for (service, key), holder in w.locks.items():
        if holder is None:
            lock_release.rows.append([service, key])
        else:
            lock_set.rows.append([service, key, holder])

    inbox_delete, inbox_push = _Rows(), _Rows()
    inbox_delete.rows.extend(list(row) for row in w.inbox_dropped)
    inbox_push.rows.extend(list(row) for row in w.inbox_pushed.values())

    timer_delete, timer_put = _Rows(), _Rows()
    for timer_id, timer in w.timers.items():
        if timer is None:
            timer_delete.rows.append(timer_id)
        else:
            timer_put.rows.append(
                [timer.id, timer.fire_at, timer.kind, timer.invocation_id, timer.completion_id]
            )

    ids = _Rows()
    ids.rows.extend([id, seq] for id, seq in reconcile.items())

    out: list[Statement] = []
    for table, sql in (
        (inv_delete, _INV_DELETE),
        (inv_insert, _INV_INSERT),
        (update, _INV_UPDATE),
        (update_status, _INV_UPDATE_STATUS),
        (update_all, _INV_UPDATE_ALL),
        (journal_delete, _JOURNAL_DELETE),
        (journal_put, _JOURNAL_PUT),
        (state_clear_all, _STATE_CLEAR_ALL),
        (state_clear, _STATE_CLEAR),
        (state_set, _STATE_SET),
        (lock_release, _LOCK_RELEASE),
        (lock_set, _LOCK_SET),
        (inbox_delete, _INBOX_DELETE),
        (inbox_push, _INBOX_PUSH),
        (timer_delete, _TIMER_DELETE),
        (timer_put, _TIMER_PUT),
        # After every other table: they decide whether a journal_ids row is needed.
        (ids, _JOURNAL_IDS_DROP),
        (ids, _JOURNAL_IDS_KEEP),
    ):
        table.statement(sql, out)
    return out
