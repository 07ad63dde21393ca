"""The keys of a virtual object or workflow: `GET /services/{name}/keys` lists the keys that have
state, hold their lock or have invocations queued; `GET /services/{name}/keys/{key}` shows one
key: its K/V state, the invocation holding it and the invocations queued behind it, in order.

Locks and inboxes come from the store through the admin SQL views (`perdure_lock`,
`perdure_inbox`), read-only like every `/query`.
"""

from __future__ import annotations

from typing import Any

import msgspec

from perdure.admin.http import int_param, only
from perdure.admin.invocations import summary
from perdure.admin.query import Database
from perdure.admin.render import payload, text
from perdure.storage.api import Invocation, Reader

DEFAULT_KEYS = 100
MAX_KEYS = 10_000
#: Queued invocations listed per key (`queued` counts them all).
MAX_INBOX = 200
_DECODE = msgspec.msgpack.Decoder(Invocation).decode

_KEYS_SQL = """
SELECT key, sum(entries), max(holder), sum(queued) FROM (
    SELECT key, count(*) AS entries, NULL AS holder, 0 AS queued FROM perdure_state
        WHERE service = :service GROUP BY key
    UNION ALL
    SELECT key, 0, invocation_id, 0 FROM perdure_lock WHERE service = :service
    UNION ALL
    SELECT key, 0, NULL, count(*) FROM perdure_inbox WHERE service = :service GROUP BY key
) WHERE substr(key, 1, length(:prefix)) = :prefix GROUP BY key ORDER BY key LIMIT :limit
"""

_KEY_SQL = """
SELECT 0 AS part, 0 AS seq, NULL, i.record FROM perdure_lock AS l
    JOIN perdure_invocation AS i ON i.id = l.invocation_id WHERE l.service = :service AND l.key = :key
UNION ALL
SELECT 1, 0, count(*), NULL FROM perdure_inbox WHERE service = :service AND key = :key
UNION ALL
SELECT * FROM (
    SELECT 2, b.seq, NULL, i.record FROM perdure_inbox AS b
        JOIN perdure_invocation AS i ON i.id = b.invocation_id
        WHERE b.service = :service AND b.key = :key ORDER BY b.seq LIMIT :limit)
ORDER BY part, seq
"""


def limits(query: dict[str, str]) -> tuple[str, int]:
    """`?prefix=&limit=` of the key listing, validated."""
    only(query, "prefix", "limit")
    return query.get("prefix", ""), int_param(query, "limit", DEFAULT_KEYS, MAX_KEYS)


async def list_keys(database: Database, service: str, prefix: str, limit: int) -> dict[str, Any]:
    """Keys in order, each with its state entry count, lock holder and queue length."""
    params = {"service": service, "prefix": prefix, "limit": limit + 1}
    result = await database.run(_KEYS_SQL, params, everything=True)
    rows = result.rows[:limit]
    return {
        "service": service,
        "keys": [
            {"key": key, "state_entries": entries, "locked_by": holder, "queued": queued}
            for key, entries, holder, queued in rows
        ],
        "truncated": len(result.rows) > limit,
    }


async def describe_key(database: Database, reader: Reader, service: str, key: str) -> dict[str, Any]:
    """One key: state, the invocation holding it (or null) and its inbox, oldest first."""
    result = await database.run(_KEY_SQL, {"service": service, "key": key, "limit": MAX_INBOX})
    holder: dict[str, Any] | None = None
    queued = 0
    inbox = []
    for part, _, count, record in result.rows:
        if part == 0:
            holder = summary(_DECODE(record))
        elif part == 1:
            queued = count
        else:
            inbox.append(summary(_DECODE(record)))
    return {
        "service": service,
        "key": key,
        "state": state_of(reader, service, key),
        "locked_by": holder,
        "queued": queued,
        "inbox": inbox,
    }


def state_of(reader: Reader, service: str, key: str) -> dict[str, Any]:
    """A key's state by name; values are JSON, or `{"base64": …}` when they are not JSON."""
    state = reader.get_all_state(service, key)
    return {text(name): _value(data) for name, data in sorted(state.items())}


def _value(data: bytes) -> Any:
    shown = payload(data, base64_key="base64")
    return shown.get("value", shown)
