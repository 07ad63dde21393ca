"""Parked Kafka records (dead letters) in the admin API: list, show, re-drive, discard.

    GET  /dead-letters?subscription=ID&key=K&state=parked|redriven|all&limit=N
    GET  /dead-letters/{invocation_id}
    POST /dead-letters/{invocation_id}/redrive     → {"redriven": [{"id", "invocation"}]}
    POST /dead-letters/redrive {"subscription": ID, "key": K}   (all of a key, or of a subscription)
    POST /dead-letters/{invocation_id}/discard

Re-driving several records submits them one by one in their original order (topic, partition,
offset), each applied before the next is sent, so one key's records queue in that order. In a
cluster any node answers: each re-drive goes to the node that owns the record's partition.
"""

from __future__ import annotations

import base64
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from perdure.admin.http import HTTPError, Request, Response, int_param, only
from perdure.admin.render import timestamp
from perdure.errors import ConflictError, UnknownTargetError
from perdure.storage.api import Invocation, Status

if TYPE_CHECKING:
    from perdure.runtime.node import Engine

Endpoint = Callable[[Request], Awaitable[Response]]
STATES = ("parked", "redriven", "all")
MAX_LIMIT = 10_000


def text(data: bytes | None) -> str | None:
    """Bytes as UTF-8 text, or `base64:` + URL-safe base64 when they are not UTF-8."""
    if data is None:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return "base64:" + base64.urlsafe_b64encode(data).decode()


def view(inv: Invocation, engine: Engine | None = None) -> dict[str, Any]:
    """One parked record as JSON: where it came from, the record, the error, what re-drive did."""
    letter = inv.dead_letter
    assert letter is not None
    redrives = []
    for r in letter.redrives:
        done = engine.reader().get_invocation(r.invocation_id) if engine is not None else None
        failure = done.outcome.failure if done is not None and done.outcome is not None else None
        redrives.append(
            {
                "at": timestamp(r.at),
                "invocation": r.invocation_id,
                "status": done.status.value if done is not None else None,
                "error": None if failure is None else {"code": failure.code, "message": failure.message},
            }
        )
    return {
        "id": inv.id,
        "subscription": letter.subscription,
        "topic": letter.topic,
        "partition": letter.partition,
        "offset": letter.offset,
        "key": text(letter.key),
        "headers": {name: text(value) for name, value in letter.headers},
        "value": text(letter.value),
        "error": {"code": letter.error.code, "message": letter.error.message},
        "attempts": letter.attempts,
        "policy": letter.policy,
        "parked_at": timestamp(letter.parked_at),
        "state": letter.state if inv.status is Status.PARKED else "discarded",
        "produced": letter.produced if letter.policy.startswith("topic:") else None,
        "redrive_of": letter.redrive_of,
        "redrives": redrives,
        "target": f"{inv.service}/{inv.handler}" + (f"/{inv.key}" if inv.key is not None else ""),
    }


def key_bytes(key: str | None) -> bytes | None:
    """A key as given on the command line or in a query: text, or `base64:` + URL-safe base64."""
    if key is None:
        return None
    if key.startswith("base64:"):
        return base64.urlsafe_b64decode(key[7:])
    return key.encode()


async def redrive_all(engine: Engine, records: list[Invocation]) -> list[dict[str, str]]:
    """Re-drive `records` one after the other, in the given (original) order."""
    done = []
    for inv in records:
        done.append({"id": inv.id, "invocation": await engine.redrive(inv.id)})
    return done


class Endpoints:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def routes(self) -> list[tuple[str, str, Endpoint]]:
        return [
            ("GET", "/dead-letters", self.list_records),
            ("POST", "/dead-letters/redrive", self.redrive_many),
            ("GET", "/dead-letters/(?P<id>[^/]+)", self.show),
            ("POST", "/dead-letters/(?P<id>[^/]+)/redrive", self.redrive_one),
            ("POST", "/dead-letters/(?P<id>[^/]+)/discard", self.discard),
        ]

    def _select(self, subscription: str | None, key: str | None, state: str, limit: int) -> list[Invocation]:
        if state not in STATES:
            raise HTTPError(400, f"bad state {state!r}; one of {', '.join(STATES)}")
        if subscription is not None and self.engine.subscription(subscription) is None:
            parked = {
                i.dead_letter.subscription for i in self.engine.dead_letters(state=None) if i.dead_letter
            }
            if subscription not in parked:
                raise HTTPError(404, f"no subscription {subscription!r}")
        found = self.engine.dead_letters(
            subscription, key=key_bytes(key), state=None if state == "all" else state
        )
        return found[:limit]

    async def list_records(self, request: Request) -> Response:
        only(request.query, "subscription", "key", "state", "limit")
        limit = int_param(request.query, "limit", 100, MAX_LIMIT)
        q = request.query
        found = self._select(q.get("subscription"), q.get("key"), q.get("state", "parked"), limit)
        return Response(200, {"dead_letters": [view(i, self.engine) for i in found]})

    async def show(self, request: Request) -> Response:
        inv = self.engine.reader().get_invocation(request.params["id"])
        if inv is None or inv.dead_letter is None:
            raise HTTPError(404, f"no parked record {request.params['id']!r}")
        return Response(200, view(inv, self.engine))

    async def redrive_one(self, request: Request) -> Response:
        inv = self.engine.reader().get_invocation(request.params["id"])
        if inv is None or inv.dead_letter is None:
            raise HTTPError(404, f"no parked record {request.params['id']!r}")
        return Response(200, {"redriven": await self._redrive([inv])})

    async def redrive_many(self, request: Request) -> Response:
        body = request.json() or {}
        usage = 'send {"subscription": ID} and/or {"key": K}: which parked records to re-drive'
        if not isinstance(body, dict) or not (body.get("subscription") or body.get("key") is not None):
            raise HTTPError(400, usage)
        for field in ("subscription", "key"):
            if body.get(field) is not None and not isinstance(body[field], str):
                raise HTTPError(400, f"{field!r} must be a string; {usage}")
        records = self._select(body.get("subscription"), body.get("key"), "parked", MAX_LIMIT)
        return Response(200, {"redriven": await self._redrive(records)})

    async def _redrive(self, records: list[Invocation]) -> list[dict[str, str]]:
        try:
            return await redrive_all(self.engine, records)
        except UnknownTargetError as e:
            raise HTTPError(404, str(e)) from None
        except ConflictError as e:
            raise HTTPError(409, str(e)) from None

    async def discard(self, request: Request) -> Response:
        try:
            await self.engine.discard(request.params["id"])
        except UnknownTargetError as e:
            raise HTTPError(404, str(e)) from None
        except ConflictError as e:
            raise HTTPError(409, str(e)) from None
        return Response(200, {"discarded": request.params["id"]})


def metric_samples(engine: Engine) -> list[tuple[str, float]]:
    """Parked records (not re-driven nor discarded) per subscription, for `perdure_dead_letters`."""
    counts: dict[str, int] = {s.id: 0 for s in engine.subscriptions()}
    for inv in engine.dead_letters():
        assert inv.dead_letter is not None
        counts[inv.dead_letter.subscription] = counts.get(inv.dead_letter.subscription, 0) + 1
    return [(f'{{subscription="{_label(name)}"}}', n) for name, n in sorted(counts.items())]


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
