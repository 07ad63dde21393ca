"""`GET /subscriptions/{id}/failures`: the records of a subscription whose invocation failed —
poison records the handler could not decode, and records whose handler ended with a terminal
error — newest first, each with its topic, partition and offset and the invocation to open.

A record's origin is in its invocation's input headers (`restate.subscription.id`, `kafka.topic`,
`kafka.partition`, `kafka.offset`, set by the Kafka intake); only failed invocations of the
subscription's sink handler are looked at.
"""

from __future__ import annotations

import json
from typing import Any

import msgspec

from perdure.admin.http import int_param, only
from perdure.admin.invocations import summary
from perdure.admin.query import Database
from perdure.kafka.options import parse_sink
from perdure.storage.api import Invocation, Subscription

DEFAULT_LIMIT = 50
MAX_LIMIT = 1000
_DECODE = msgspec.msgpack.Decoder(Invocation).decode

_SQL = """
SELECT record, input FROM (
    SELECT i.record, (SELECT perdure_entry(j.type, j.payload, 'entry_json') FROM perdure_journal AS j
                      WHERE j.invocation_id = i.id AND j.idx = 0) AS input
    FROM perdure_invocation AS i
    WHERE i.status IN ('completed', 'parked') AND i.service = :service AND i.handler = :handler
        AND perdure_failed(i.record)
    ORDER BY i.created_at DESC, i.id DESC)
WHERE json_extract(input, '$.headers."restate.subscription.id"') = :subscription
LIMIT :limit
"""


def limit_of(query: dict[str, str]) -> int:
    only(query, "limit")
    return int_param(query, "limit", DEFAULT_LIMIT, MAX_LIMIT)


async def failed_records(database: Database, sub: Subscription, limit: int) -> dict[str, Any]:
    """Up to `limit` failed records of `sub`, newest first."""
    service, handler = parse_sink(sub.sink)
    params = {"service": service, "handler": handler, "subscription": sub.id, "limit": limit}
    result = await database.run(_SQL, params, everything=True)
    failures = []
    for record, entry_json in result.rows:
        headers = json.loads(entry_json).get("headers", {})
        inv = _DECODE(record)
        failure = inv.outcome.failure if inv.outcome is not None else None
        failures.append(
            {
                "topic": headers.get("kafka.topic"),
                "partition": _int(headers.get("kafka.partition")),
                "offset": _int(headers.get("kafka.offset")),
                "key": inv.key,
                "failure": None if failure is None else {"code": failure.code, "message": failure.message},
                "invocation": summary(inv),
            }
        )
    return {"subscription": sub.id, "failures": failures}


def _int(value: str | None) -> int | None:
    return int(value) if value is not None and value.isdigit() else None
