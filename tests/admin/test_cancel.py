"""Cancel and kill over the admin API, down a call chain of depth 3 whose last level sleeps an hour.

Every level books something (`ctx.run`) and compensates (`ctx.run` again) when it sees the
cancellation; the side effects land in a list outside perdure, so "once" is checked where it matters.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from typing import Any

import httpx
import pytest

import perdure
from perdure import Context, Service, TerminalError
from perdure.admin import Admin
from perdure.runtime.http import Served
from perdure.storage.api import Status
from perdure.testing import Harness

chain = Service("chain")
effects: list[str] = []


@chain.handler()
async def level(ctx: Context, depth: int) -> str:
    await ctx.run(f"book {depth}", lambda: effects.append(f"book {depth}"))
    try:
        if depth < 3:
            return await ctx.service_call(level, arg=depth + 1)
        await ctx.sleep(timedelta(hours=1))
        await ctx.run("after sleep", lambda: effects.append("after sleep"))
        return "done"
    except TerminalError as e:
        note = f"refund {depth} ({e.status_code} {e.message})"
        await ctx.run(f"refund {depth}", lambda: effects.append(note))
        raise


Env = tuple[Harness, httpx.AsyncClient]


@pytest.fixture
async def env(http_server: Callable[[Any], Awaitable[Served]]) -> AsyncIterator[Env]:
    effects.clear()
    async with Harness(perdure.App([chain])) as h:
        served = await http_server(Admin(h))
        async with httpx.AsyncClient(base_url=served.url, timeout=10) as client:
            yield h, client


async def _chain(h: Harness, client: httpx.AsyncClient) -> list[str]:
    """Start the chain; the ids of its three levels, top first, once the last one sleeps."""
    top = await h.service_send(level, arg=1)
    await h.advance(timedelta(minutes=2))  # past the inactivity timeout: every level suspended
    ids = [top]
    for _ in range(2):
        journal = (await client.get(f"/invocations/{ids[-1]}")).json()["journal"]
        [summary] = [e["summary"] for e in journal if e["type"] == "CallInvocationIdCompletionNotification"]
        ids.append(re.search(r"invocation_id='(inv_1\w+)'", summary).group(1))  # type: ignore[union-attr]
    for invocation_id in ids:
        assert h.status(invocation_id).status is Status.SUSPENDED
    return ids


async def test_cancel_reaches_every_level_and_each_compensates_once(env: Env) -> None:
    h, client = env
    ids = await _chain(h, client)
    response = await client.patch(f"/invocations/{ids[0]}/cancel")
    assert (response.status_code, response.json()) == (202, {})
    await h.settle()
    for invocation_id in ids:
        body = (await client.get(f"/invocations/{invocation_id}")).json()
        assert body["status"] == "completed"
        assert body["outcome"] == {"failure": {"code": 409, "message": "cancelled"}}
    assert sorted(effects) == sorted(
        ["book 1", "book 2", "book 3"] + [f"refund {d} (409 cancelled)" for d in (1, 2, 3)]
    )
    await h.advance(timedelta(hours=2))  # the sleep's timer fires into a completed invocation
    assert "after sleep" not in effects
    assert len(effects) == 6
    assert (await client.patch(f"/invocations/{ids[2]}/cancel")).status_code == 409


async def test_cancel_of_the_sleeping_bottom_level_fails_the_chain_upwards(env: Env) -> None:
    h, client = env
    ids = await _chain(h, client)
    assert (await client.patch(f"/invocations/{ids[2]}/cancel")).status_code == 202
    await h.settle()
    # The bottom saw the cancellation; the levels above saw its 409 failure come back from their
    # call, and compensated too — each exactly once.
    assert sorted(effects) == sorted(
        ["book 1", "book 2", "book 3"] + [f"refund {d} (409 cancelled)" for d in (1, 2, 3)]
    )
    for invocation_id in ids:
        outcome = (await client.get(f"/invocations/{invocation_id}")).json()["outcome"]
        assert outcome == {"failure": {"code": 409, "message": "cancelled"}}


async def test_kill_stops_every_level_without_more_side_effects(env: Env) -> None:
    h, client = env
    ids = await _chain(h, client)
    assert (await client.patch(f"/invocations/{ids[0]}/kill")).status_code == 200
    await h.settle()
    for invocation_id in ids:
        outcome = (await client.get(f"/invocations/{invocation_id}")).json()["outcome"]
        assert outcome == {"failure": {"code": 409, "message": "killed"}}
    await h.advance(timedelta(hours=2))
    assert effects == ["book 1", "book 2", "book 3"]  # no compensation, nothing after the sleep
    assert (await client.patch(f"/invocations/{ids[0]}/cancel")).status_code == 409
