"""Cluster membership in the database: nodes, partition leases, and the notification channel.

A node is alive while its heartbeat (`nodes.expires_at`, the database's clock) is fresh and it has a
session open (`pg_stat_activity.application_name`: a SIGKILLed node's sessions end at once, so its
partitions move without waiting for the heartbeat to lapse). A partition's lease is taken only when
it is free or its holder is not alive, by incrementing `epoch` — the number every commit of the
partition checks (`_batch.INSTALL`). These statements run on an async connection of their own, so a
database that does not answer never blocks the event loop.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import psycopg

from perdure.storage.api import Lease, Member, StoreUnavailable

CHANNEL = "perdure"

_ALIVE = (
    "SELECT n.node FROM nodes AS n WHERE n.expires_at > now() AND EXISTS"
    " (SELECT 1 FROM pg_stat_activity AS a WHERE a.application_name LIKE 'perdure ' || n.node || ' %%')"
)


class Control:
    """Membership statements on one async connection (reconnected when lost)."""

    def __init__(self, url: str, node: str, connect_timeout: float) -> None:
        self._url = url
        self.node = node
        self._timeout = connect_timeout
        self._conn: psycopg.AsyncConnection[Any] | None = None

    async def _connection(self) -> psycopg.AsyncConnection[Any]:
        if self._conn is None or self._conn.closed:
            try:
                self._conn = await psycopg.AsyncConnection.connect(
                    self._url,
                    autocommit=True,
                    application_name=f"perdure {self.node} control",
                    connect_timeout=max(1, round(self._timeout)),
                )
            except psycopg.OperationalError as e:
                raise StoreUnavailable(f"cannot connect to PostgreSQL: {_one_line(e)}") from e
        return self._conn

    async def _rows(self, sql: str, params: Any = ()) -> list[tuple[Any, ...]]:
        conn = await self._connection()
        try:
            cur = await conn.execute(sql, params)
            return await cur.fetchall() if cur.description is not None else []
        except (psycopg.OperationalError, psycopg.InterfaceError) as e:
            if conn.closed or conn.broken:
                self._conn = None
                raise StoreUnavailable(f"the database did not answer: {_one_line(e)}") from e
            raise

    async def join(self, ttl_ms: int, *, host: str, pid: int, ingress_url: str, admin_url: str) -> None:
        await self._rows(
            "INSERT INTO nodes (node, expires_at, host, pid, ingress_url, admin_url)"
            " VALUES (%s, now() + %s * interval '1 millisecond', %s, %s, %s, %s)"
            " ON CONFLICT (node) DO UPDATE SET expires_at = excluded.expires_at,"
            " ingress_url = excluded.ingress_url, admin_url = excluded.admin_url",
            (self.node, ttl_ms, host, pid, ingress_url, admin_url),
        )

    async def heartbeat(self, ttl_ms: int) -> bool:
        """Extend this node's life; False when it had lapsed (others may have taken its partitions)."""
        rows = await self._rows(
            "UPDATE nodes SET expires_at = now() + %s * interval '1 millisecond'"
            " WHERE node = %s AND expires_at > now() RETURNING 1",
            (ttl_ms, self.node),
        )
        return bool(rows)

    async def leases(self) -> list[Lease]:
        rows = await self._rows(
            "SELECT partition, node, epoch, seq, inbox_seq FROM partition_leases ORDER BY partition"
        )
        return [Lease(*row) for row in rows]

    async def alive(self) -> list[str]:
        return [row[0] for row in await self._rows(_ALIVE + " ORDER BY n.node")]

    async def members(self) -> list[Member]:
        alive = set(await self.alive())
        rows = await self._rows(
            "SELECT node, host, pid, ingress_url, admin_url, started_at::text FROM nodes"
            " ORDER BY started_at, node"
        )
        return [Member(node, node in alive, host, pid, i, a, s) for node, host, pid, i, a, s in rows]

    async def acquire(self, partition: int) -> Lease | None:
        """Take `partition` if it is free or its holder is not alive; None otherwise."""
        conn = await self._connection()
        try:
            async with conn.transaction():
                await conn.execute("SET LOCAL lock_timeout = '1s'")
                cur = await conn.execute(
                    "UPDATE partition_leases SET node = %s, epoch = epoch + 1, acquired_at = now()"
                    f" WHERE partition = %s AND (node IS NULL OR node = %s OR node NOT IN ({_ALIVE}))"
                    " RETURNING partition, node, epoch, seq, inbox_seq",
                    (self.node, partition, self.node),
                )
                row = await cur.fetchone()
        except psycopg.errors.LockNotAvailable:
            return None  # its holder is committing right now: it is alive
        except (psycopg.OperationalError, psycopg.InterfaceError) as e:
            if conn.closed or conn.broken:
                self._conn = None
                raise StoreUnavailable(f"the database did not answer: {e}") from e
            raise
        return None if row is None else Lease(*row)

    async def release(self, partition: int, epoch: int) -> None:
        await self._rows(
            "UPDATE partition_leases SET node = NULL WHERE partition = %s AND node = %s AND epoch = %s",
            (partition, self.node, epoch),
        )

    async def leave(self) -> None:
        """Give up every lease and the membership (a clean shutdown)."""
        await self._rows("UPDATE partition_leases SET node = NULL WHERE node = %s", (self.node,))
        await self._rows("DELETE FROM nodes WHERE node = %s", (self.node,))

    async def backlog(self) -> dict[int, int]:
        """Deliveries waiting per partition."""
        rows = await self._rows("SELECT partition, count(*) FROM deliveries GROUP BY partition")
        return {p: n for p, n in rows}

    async def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                await self._conn.close()
            self._conn = None


async def notifications(url: str, node: str) -> AsyncIterator[str]:
    """The payloads sent on the cluster's channel, from LISTEN (raises `StoreUnavailable` when lost)."""
    try:
        conn = await psycopg.AsyncConnection.connect(
            url, autocommit=True, application_name=f"perdure {node} listen"
        )
    except psycopg.OperationalError as e:
        raise StoreUnavailable(f"cannot connect to PostgreSQL: {_one_line(e)}") from e
    try:
        await conn.execute(f"LISTEN {CHANNEL}")
        async for notify in conn.notifies():
            yield notify.payload
    except (psycopg.OperationalError, psycopg.InterfaceError) as e:
        raise StoreUnavailable(f"the notification connection was lost: {_one_line(e)}") from e
    finally:
        with contextlib.suppress(Exception):
            await conn.close()


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split())  # libpq's messages span lines
