"""Read-only queries over committed data, on the node's read connection (tools, the admin API)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import msgspec

from perdure.storage.api import Delivery, Entry, Invocation, Position, Status, Timer
from perdure.storage.postgres._keys import skey

_decode = msgspec.msgpack.Decoder(Invocation).decode
Execute = Callable[[str, Any], list[tuple[Any, ...]]]

_GET_INVOCATION = "SELECT record FROM invocations WHERE id = %s"
_GET_INVOCATIONS = "SELECT id, record FROM invocations WHERE id = ANY(%s)"
_READ_JOURNAL = (
    "SELECT type, payload FROM journal WHERE seq ="
    " (SELECT seq FROM invocations WHERE id = %(id)s UNION ALL SELECT seq FROM journal_ids WHERE id = %(id)s"
    " LIMIT 1) ORDER BY idx"
)
_GET_ALL_STATE = "SELECT service, key, name, value FROM state WHERE skey = %s"
_COMPLETED_BEFORE = (
    "SELECT modified_at, id FROM invocations WHERE status = 'completed' AND modified_at < %s"
    " AND (modified_at, id) > (%s, %s) ORDER BY modified_at, id LIMIT %s"
)
_COUNT = "SELECT status, count(*) FROM invocations GROUP BY status"
_OFFSETS = "SELECT topic, kafka_partition, next_offset, epoch FROM kafka_offsets WHERE subscription = %s"
_TIMERS = "SELECT id, fire_at, kind, invocation_id, completion_id FROM timers{} ORDER BY fire_at, id"
# Per partition, an index scan of (partition, id) that stops after `limit` rows.
_DELIVERIES = (
    "SELECT d.id, d.partition, d.body FROM unnest(%s::int[]) AS p (partition), LATERAL"
    " (SELECT id, partition, body FROM deliveries WHERE partition = p.partition ORDER BY id LIMIT %s) AS d"
    " ORDER BY d.partition, d.id"
)


class Reader:
    __slots__ = ("_execute",)

    def __init__(self, execute: Execute) -> None:
        self._execute = execute

    def get_invocation(self, invocation_id: str) -> Invocation | None:
        rows = self._execute(_GET_INVOCATION, (invocation_id,))
        return _decode(rows[0][0]) if rows else None

    def get_invocations(self, invocation_ids: Sequence[str]) -> dict[str, Invocation]:
        return {i: _decode(r) for i, r in self._execute(_GET_INVOCATIONS, (list(invocation_ids),))}

    def read_journal(self, invocation_id: str) -> list[Entry]:
        return [Entry(t, bytes(p)) for t, p in self._execute(_READ_JOURNAL, {"id": invocation_id})]

    def get_all_state(self, service: str, key: str) -> dict[bytes, bytes]:
        rows = self._execute(_GET_ALL_STATE, (skey(service, key),))
        want = (service.encode(), key.encode())
        return {bytes(n): bytes(v) for s, k, n, v in rows if (bytes(s), bytes(k)) == want}

    def list_invocations(
        self, *, status: Status | None = None, service: str | None = None, limit: int = 100
    ) -> list[Invocation]:
        where: list[str] = []
        params: list[object] = []
        if status is not None:
            where.append("status = %s")
            params.append(status.value)
        if service is not None:
            where.append("service = %s")
            params.append(service.encode())
        sql = "SELECT record FROM invocations"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY created_at, id LIMIT %s"
        return [_decode(r[0]) for r in self._execute(sql, (*params, limit))]

    def completed_before(
        self, modified_before: int, *, after: tuple[int, str] | None = None, limit: int = 1000
    ) -> list[tuple[int, str]]:
        at, last = after if after is not None else (-1, "")
        return [(m, i) for m, i in self._execute(_COMPLETED_BEFORE, (modified_before, at, last, limit))]

    def all_timers(self, partition: int | None = None) -> list[Timer]:
        if partition is None:
            return [Timer(*row) for row in self._execute(_TIMERS.format(""), ())]
        return [Timer(*row) for row in self._execute(_TIMERS.format(" WHERE partition = %s"), (partition,))]

    def count_invocations(self) -> dict[Status, int]:
        counts = dict.fromkeys(Status, 0)
        for status, n in self._execute(_COUNT, ()):
            counts[Status(status)] = n
        return counts

    def offsets(self, subscription_id: str) -> dict[tuple[str, int], Position]:
        rows = self._execute(_OFFSETS, (subscription_id,))
        return {(topic, p): Position(n, epoch) for topic, p, n, epoch in rows}

    def deliveries(self, partitions: Sequence[int], *, limit: int = 1000) -> dict[int, list[Delivery]]:
        """The oldest `limit` deliveries waiting for each of `partitions`, oldest first, by partition."""
        found: dict[int, list[Delivery]] = {}
        for i, p, b in self._execute(_DELIVERIES, (list(partitions), limit)):
            found.setdefault(p, []).append(Delivery(i, p, bytes(b)))
        return found
