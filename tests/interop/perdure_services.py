"""Scenario services written with perdure's SDK, and drivers that exercise them over Restate's
ingress HTTP API — so the same scenarios run on restate-server and on perdure's own engine.

`app` is an ASGI deployment: `hypercorn interop.perdure_services:app` (PYTHONPATH=tests).
Each driver takes an ingress base URL and a key unique to the run, and returns what it observed;
`EXPECTED` names the results in one place.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import httpx

import perdure
from perdure import Context, ObjectContext, ObjectSharedContext, WorkflowContext, WorkflowSharedContext

# ---- counter: an object, exclusive add / shared get

counter = perdure.VirtualObject("Counter")


@counter.handler()
async def add(ctx: ObjectContext, n: int) -> int:
    total = (await ctx.get("total") or 0) + n
    ctx.set("total", total)
    return total


@counter.handler(kind="shared")
async def get(ctx: ObjectSharedContext) -> int:
    return int(await ctx.get("total") or 0)


# ---- a journey through run, sleep, state, a delayed send and a call


@dataclass
class Trip:
    traveller: str
    stops: int = 1


greeter = perdure.Service("Greeter")


@greeter.handler()
async def greet(ctx: Context, name: str) -> str:
    return f"hello {name}"


postbox = perdure.VirtualObject("Postbox")


@postbox.handler()
async def post(ctx: ObjectContext, letter: str) -> None:
    ctx.set("letters", [*(await ctx.get("letters") or []), letter])


@postbox.handler(kind="shared")
async def letters(ctx: ObjectSharedContext) -> list[str]:
    return list(await ctx.get("letters") or [])


journey = perdure.VirtualObject("Journey")


@journey.handler()
async def travel(ctx: ObjectContext, trip: Trip) -> str:
    ticket = await ctx.run("book", lambda: f"ticket-{trip.traveller}")
    await ctx.sleep(0.1)
    ctx.set("visited", trip.stops)
    ctx.object_send(post, key=ctx.key(), arg=f"postcard from {trip.traveller}", delay=0.3)
    greeting = await ctx.service_call(greet, arg=trip.traveller)
    visited = await ctx.get("visited")
    return f"{ticket}|{greeting}|{visited}"


# ---- an awakeable completed over the ingress

approvals = perdure.VirtualObject("Approvals")


@approvals.handler()
async def request(ctx: ObjectContext, what: str) -> str:
    awakeable_id, decision = ctx.awakeable()
    ctx.set("awakeable", awakeable_id)
    answer = await decision
    return f"{what}: {answer}"


@approvals.handler(kind="shared")
async def pending(ctx: ObjectSharedContext) -> str | None:
    value = await ctx.get("awakeable")
    return None if value is None else str(value)


# ---- a workflow: run waits on a promise that a shared handler resolves

signup = perdure.Workflow("Signup")


@signup.main()
async def run(ctx: WorkflowContext, email: str) -> str:
    ctx.set("status", "waiting for the link")
    secret = await ctx.promise("link").value()
    ctx.set("status", "verified")
    return f"{email} verified with {secret}"


@signup.handler()
async def click(ctx: WorkflowSharedContext, secret: str) -> None:
    await ctx.promise("link").resolve(secret)


@signup.handler()
async def status(ctx: WorkflowSharedContext) -> str | None:
    value = await ctx.get("status")
    return None if value is None else str(value)


app = perdure.App([counter, greeter, postbox, journey, approvals, signup])

# ---- drivers (ingress HTTP only)

EXPECTED: dict[str, Any] = {
    "counter": [5, 12, 12],  # add 5, add 7, get
    "journey": "ticket-ada|hello ada|3",
    "journey_postbox": ["postcard from ada"],
    "awakeable": "a raise: approved",
    "workflow": "ada@example.com verified with s3cret",
}


async def _poll(fetch: Any, ready: Any, within: float = 20.0) -> Any:
    deadline = time.monotonic() + within
    while True:
        value = await fetch()
        if ready(value) or time.monotonic() > deadline:
            return value
        await asyncio.sleep(0.05)


def _json(response: httpx.Response) -> Any:
    """The JSON answer; None for an empty body (the official Python SDK encodes None so)."""
    assert response.status_code == 200, f"{response.request.url}: {response.status_code} {response.text}"
    return response.json() if response.content else None


async def counter_scenario(client: httpx.AsyncClient, key: str) -> list[int]:
    return [
        _json(await client.post(f"/Counter/{key}/add", json=5)),
        _json(await client.post(f"/Counter/{key}/add", json=7)),
        _json(await client.post(f"/Counter/{key}/get")),
    ]


async def journey_scenario(client: httpx.AsyncClient, key: str) -> tuple[str, list[str]]:
    result = _json(await client.post(f"/Journey/{key}/travel", json={"traveller": "ada", "stops": 3}))

    async def fetch() -> list[str]:
        return list(_json(await client.post(f"/Postbox/{key}/letters")))

    return result, await _poll(fetch, bool)


async def awakeable_scenario(client: httpx.AsyncClient, key: str, settle: float = 0.0) -> str:
    """`settle`: how long to leave the handler waiting before resolving (past the runtime's
    inactivity timeout, a bidirectional attempt suspends and a later one resumes it)."""
    sent = await client.post(f"/Approvals/{key}/request/send", json="a raise")
    assert sent.status_code == 202, sent.text
    invocation = sent.json()["invocationId"]

    async def fetch() -> str | None:
        return _json(await client.post(f"/Approvals/{key}/pending"))  # type: ignore[no-any-return]

    awakeable_id = await _poll(fetch, bool)
    assert awakeable_id, "the handler never published its awakeable id"
    await asyncio.sleep(settle)
    resolved = await client.post(f"/restate/awakeables/{awakeable_id}/resolve", json="approved")
    assert resolved.status_code in (200, 202), resolved.text
    return str(_json(await client.get(f"/restate/invocation/{invocation}/attach")))


async def workflow_scenario(client: httpx.AsyncClient, key: str, settle: float = 0.0) -> str:
    sent = await client.post(f"/Signup/{key}/run/send", json="ada@example.com")
    assert sent.status_code == 202, sent.text

    async def fetch() -> str | None:
        return _json(await client.post(f"/Signup/{key}/status"))  # type: ignore[no-any-return]

    await _poll(fetch, bool)  # run has started and is waiting on its promise
    await asyncio.sleep(settle)
    assert (await client.post(f"/Signup/{key}/click", json="s3cret")).status_code == 200
    return str(_json(await client.get(f"/restate/workflow/Signup/{key}/attach")))
