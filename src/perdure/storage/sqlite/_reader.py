"""Read-only queries over durable data, on the store's reader connection (tools, tests, admin API)."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence

import msgspec

from perdure.storage.api import Entry, Invocation, Position, Status, Timer

_decode = msgspec.msgpack.Decoder(Invocation).decode

_GET_INVOCATION = "SELECT record FROM invocations WHERE id = ?"
# The ids as one JSON array: one statement whatever their number (no limit on bound parameters).
_GET_INVOCATIONS = "SELECT id, record FROM invocations WHERE id IN (SELECT value FROM json_each(?))"
_READ_JOURNAL = (
    "SELECT type, payload FROM journal WHERE seq ="
    " (SELECT seq FROM invocations WHERE id = ?1 UNION ALL SELECT seq FROM journal_ids WHERE id = ?1)"
    " ORDER BY idx"
)
_GET_ALL_STATE = "SELECT name, value FROM state WHERE service = ? AND key = ?"
_ALL_TIMERS = "SELECT id, fire_at, kind, invocation_id, completion_id FROM timers ORDER BY fire_at, id"
_LIST_INVOCATIONS = {
    (False, False): "SELECT record FROM invocations ORDER BY created_at, id LIMIT ?",
    (True, False): "SELECT record FROM invocations WHERE status = ? ORDER BY created_at, id LIMIT ?",
    (False, True): "SELECT record FROM invocations WHERE service = ? ORDER BY created_at, id LIMIT ?",
    (True, True): (
        "SELECT record FROM invocations WHERE status = ? AND service = ? ORDER BY created_at, id LIMIT ?"
    ),
}
_COMPLETED_BEFORE = (
    "SELECT modified_at, id FROM invocations WHERE status = 'completed' AND modified_at < ?1"
    " AND (modified_at, id) > (?2, ?3) ORDER BY modified_at, id LIMIT ?4"
)
_COUNT_INVOCATIONS = "SELECT status, count(*) FROM invocations GROUP BY status"
_OFFSETS = "SELECT topic, partition, next_offset, epoch FROM kafka_offsets WHERE subscription = ?"


class Reader:
    """Each statement runs to completion, so each sees the newest committed (durable) snapshot."""

    __slots__ = ("_execute",)

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._execute = conn.execute

    def get_invocation(self, invocation_id: str) -> Invocation | None:
        rows = self._execute(_GET_INVOCATION, (invocation_id,)).fetchall()
        return _decode(rows[0][0]) if rows else None

    def get_invocations(self, invocation_ids: Sequence[str]) -> dict[str, Invocation]:
        rows = self._execute(_GET_INVOCATIONS, (json.dumps(list(invocation_ids)),)).fetchall()
        return {i: _decode(r) for i, r in rows}

    def read_journal(self, invocation_id: str) -> list[Entry]:
        return [Entry(t, p) for t, p in self._execute(_READ_JOURNAL, (invocation_id,)).fetchall()]

    def get_all_state(self, service: str, key: str) -> dict[bytes, bytes]:
        return dict(self._execute(_GET_ALL_STATE, (service, key)).fetchall())

    def list_invocations(
        self, *, status: Status | None = None, service: str | None = None, limit: int = 100
    ) -> list[Invocation]:
        params: list[object] = []
        if status is not None:
            params.append(status.value)
        if service is not None:
            params.append(service)
        params.append(limit)
        sql = _LIST_INVOCATIONS[status is not None, service is not None]
        return [_decode(r[0]) for r in self._execute(sql, params).fetchall()]

    def completed_before(
        self, modified_before: int, *, after: tuple[int, str] | None = None, limit: int = 1000
    ) -> list[tuple[int, str]]:
        at, last = after if after is not None else (-1, "")
        rows = self._execute(_COMPLETED_BEFORE, (modified_before, at, last, limit)).fetchall()
        return [(m, i) for m, i in rows]

    def all_timers(self, partition: int | None = None) -> list[Timer]:  # one partition: all of them
        return [Timer(*row) for row in self._execute(_ALL_TIMERS).fetchall()]

    def count_invocations(self) -> dict[Status, int]:
        counts = dict.fromkeys(Status, 0)
        for status, n in self._execute(_COUNT_INVOCATIONS).fetchall():
            counts[Status(status)] = n
        return counts

    def offsets(self, subscription_id: str) -> dict[tuple[str, int], Position]:
        rows = self._execute(_OFFSETS, (subscription_id,)).fetchall()
        return {(topic, partition): Position(n, epoch) for topic, partition, n, epoch in rows}
