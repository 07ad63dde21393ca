"""Point reads of one partition's view, on the event loop thread's connection.

Each is one autocommit statement, so it sees every commit that finished before it (the argument of
`perdure.storage.layered.view`). A lost connection raises `StoreUnavailable`: the partition stops,
and the node starts it again from the durable state once the database answers.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import psycopg

from perdure.storage.api import Entry, Position, StoreUnavailable, Timer
from perdure.storage.layered.writes import ABSENT, Key, OffsetKey, Slot
from perdure.storage.postgres._keys import nkey, skey

_SLOT = (
    "SELECT seq, record, status, modified_at, service, handler, key, created_at"
    " FROM invocations WHERE id = %(id)s"
    " UNION ALL SELECT seq, NULL, NULL, 0, NULL, NULL, NULL, NULL FROM journal_ids WHERE id = %(id)s"
)
_JOURNAL = "SELECT idx, type, payload FROM journal WHERE seq = %s"
_STATE = "SELECT service, key, value FROM state WHERE skey = %s AND nkey = %s"
_ALL_STATE = "SELECT service, key, name, value FROM state WHERE skey = %s"
_LOCK = "SELECT service, key, invocation_id FROM locks WHERE skey = %s"
_INBOX = "SELECT service, key, seq, invocation_id FROM inbox WHERE skey = %s ORDER BY seq"
_TIMER = "SELECT id, fire_at, kind, invocation_id, completion_id FROM timers WHERE id = %s"
_OFFSET = (
    "SELECT next_offset, epoch FROM kafka_offsets"
    " WHERE subscription = %s AND topic = %s AND kafka_partition = %s"
)
_WITH_STATUS = "SELECT id, record FROM invocations WHERE status = %s AND partition = %s"


def _str(value: bytes | None) -> str | None:
    return None if value is None else bytes(value).decode()


class Reads:
    """The `perdure.storage.layered.view.Reads` of partition `partition`."""

    __slots__ = ("_execute", "partition")

    def __init__(self, execute: Callable[[str, Any], list[tuple[Any, ...]]], partition: int) -> None:
        self._execute = execute
        self.partition = partition

    def slot(self, invocation_id: str) -> Slot:
        rows = self._execute(_SLOT, {"id": invocation_id})
        if not rows:
            return ABSENT
        row = next((r for r in rows if r[1] is not None), rows[0])
        seq, record, status, modified_at, service, handler, key, created_at = row
        if record is None:
            return Slot(seq, None)
        ident = (_str(service), _str(handler), _str(key), created_at)
        return Slot(seq, bytes(record), status, modified_at, ident)  # type: ignore[arg-type]

    def journal(self, seq: int) -> dict[int, Entry]:
        return {i: Entry(t, bytes(p)) for i, t, p in self._execute(_JOURNAL, (seq,))}

    def state(self, key: Key, name: bytes) -> bytes | None:
        for service, k, value in self._execute(_STATE, (skey(*key), nkey(name))):
            if (_str(service), _str(k)) == key:
                return bytes(value)
        return None

    def all_state(self, key: Key) -> dict[bytes, bytes]:
        rows = self._execute(_ALL_STATE, (skey(*key),))
        return {bytes(n): bytes(v) for s, k, n, v in rows if (_str(s), _str(k)) == key}

    def lock(self, key: Key) -> str | None:
        for service, k, holder in self._execute(_LOCK, (skey(*key),)):
            if (_str(service), _str(k)) == key:
                return str(holder)
        return None

    def inbox(self, key: Key) -> list[tuple[int, str]]:
        rows = self._execute(_INBOX, (skey(*key),))
        return [(seq, i) for s, k, seq, i in rows if (_str(s), _str(k)) == key]

    def timer(self, timer_id: str) -> Timer | None:
        rows = self._execute(_TIMER, (timer_id,))
        return Timer(*rows[0]) if rows else None

    def offset(self, key: OffsetKey) -> Position | None:
        rows = self._execute(_OFFSET, key)
        return Position(*rows[0]) if rows else None

    def with_status(self, status: str) -> dict[str, bytes]:
        return {i: bytes(r) for i, r in self._execute(_WITH_STATUS, (status, self.partition))}


class ReadConnection:
    """The event loop thread's connection, connected again on the first use after it was lost."""

    def __init__(self, connect: Callable[[], psycopg.Connection[Any]], conn: psycopg.Connection[Any]) -> None:
        self._connect = connect
        self._conn: psycopg.Connection[Any] | None = conn

    def connection(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed or self._conn.broken:
            self.close()
            self._conn = self._connect()  # raises StoreUnavailable while the database is away
        return self._conn

    def execute(self, sql: str, params: Any) -> list[tuple[Any, ...]]:
        """`sql`'s rows; a lost connection raises `StoreUnavailable` (the next call reconnects)."""
        conn = self.connection()
        try:
            return conn.execute(sql, params).fetchall()
        except (psycopg.OperationalError, psycopg.InterfaceError) as e:
            if conn.closed or conn.broken:
                self.close()
            raise StoreUnavailable(f"the database did not answer: {' '.join(str(e).split())}") from e

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()
