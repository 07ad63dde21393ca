"""The SQLite `Reads` of a view: point reads on the event loop thread's read-only connection.

Every statement runs to completion (`fetchall`), so each one starts a fresh WAL read transaction
and sees every commit that finished before it (the argument of `perdure.storage.layered.view`).
"""

from __future__ import annotations

import sqlite3

from perdure.storage.api import Entry, Position, Timer
from perdure.storage.layered.writes import ABSENT, Key, OffsetKey, Slot

# One probe for both places an id's seq can live (journal_ids only for a journal without invocation).
_SLOT = (
    "SELECT seq, record, status, modified_at, service, handler, key, created_at"
    " FROM invocations WHERE id = ?1"
    " UNION ALL SELECT seq, NULL, NULL, 0, NULL, NULL, NULL, NULL FROM journal_ids WHERE id = ?1"
)
_JOURNAL = "SELECT idx, type, payload FROM journal WHERE seq = ?"
_STATE = "SELECT value FROM state WHERE service = ? AND key = ? AND name = ?"
_ALL_STATE = "SELECT name, value FROM state WHERE service = ? AND key = ?"
_LOCK = "SELECT invocation_id FROM locks WHERE service = ? AND key = ?"
_INBOX = "SELECT seq, invocation_id FROM inbox WHERE service = ? AND key = ? ORDER BY seq"
_TIMER = "SELECT id, fire_at, kind, invocation_id, completion_id FROM timers WHERE id = ?"
_WITH_STATUS = "SELECT id, record FROM invocations WHERE status = ?"
_OFFSET = (
    "SELECT next_offset, epoch FROM kafka_offsets WHERE subscription = ? AND topic = ? AND partition = ?"
)


class Reads:
    __slots__ = ("_execute",)

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._execute = conn.execute

    def slot(self, invocation_id: str) -> Slot:
        rows = self._execute(_SLOT, (invocation_id,)).fetchall()
        if not rows:
            return ABSENT
        row = next((r for r in rows if r[1] is not None), rows[0])
        seq, record, status, modified_at, service, handler, key, created_at = row
        ident = None if record is None else (service, handler, key, created_at)
        return Slot(seq, record, status, modified_at, ident)

    def journal(self, seq: int) -> dict[int, Entry]:
        return {i: Entry(t, p) for i, t, p in self._execute(_JOURNAL, (seq,)).fetchall()}

    def state(self, key: Key, name: bytes) -> bytes | None:
        rows = self._execute(_STATE, (*key, name)).fetchall()
        return bytes(rows[0][0]) if rows else None

    def all_state(self, key: Key) -> dict[bytes, bytes]:
        return dict(self._execute(_ALL_STATE, key).fetchall())

    def lock(self, key: Key) -> str | None:
        rows = self._execute(_LOCK, key).fetchall()
        return rows[0][0] if rows else None

    def inbox(self, key: Key) -> list[tuple[int, str]]:
        return self._execute(_INBOX, key).fetchall()

    def timer(self, timer_id: str) -> Timer | None:
        rows = self._execute(_TIMER, (timer_id,)).fetchall()
        return Timer(*rows[0]) if rows else None

    def offset(self, key: OffsetKey) -> Position | None:
        rows = self._execute(_OFFSET, key).fetchall()
        return Position(*rows[0]) if rows else None

    def with_status(self, status: str) -> dict[str, bytes]:
        return dict(self._execute(_WITH_STATUS, (status,)).fetchall())
