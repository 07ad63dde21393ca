"""Restarts in one process: stop an engine, open another on the same SQLite file and the same clock.

What was durable before the stop — a scheduled send, a sleep's timer, a stored `ctx.run` result —
must carry on in the second lifetime, and nothing whose result was stored may run again.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import msgspec
import pytest

import perdure
from perdure import ObjectContext, VirtualObject
from perdure.testing import Harness, ManualClock, Status

# Executions of each step, by name, across both lifetimes (the module outlives the engines).
executions: Counter[str] = Counter()
# The `gated` handler's second step sets "entered", then waits until a test sets "open".
gate: dict[str, asyncio.Event] = {}

restart = VirtualObject("restart")


def _count(name: str) -> str:
    executions[name] += 1
    return uuid.uuid4().hex


async def _gated_step(name: str) -> str:
    executions[name] += 1
    gate["entered"].set()
    await gate["open"].wait()
    return uuid.uuid4().hex


@restart.handler()
async def record(ctx: ObjectContext, note: str) -> str:
    await ctx.run("record", _count, args=("record",))
    ctx.set("note", note)
    return note


@restart.handler()
async def nap(ctx: ObjectContext) -> str:
    await ctx.run("before", _count, args=("before",))
    await ctx.sleep(timedelta(hours=1))
    await ctx.run("after", _count, args=("after",))
    return "rested"


@restart.handler()
async def gated(ctx: ObjectContext) -> list[str]:
    first = await ctx.run("first", _count, args=("first",))
    second = await ctx.run("second", _gated_step, args=("second",))
    return [first, second]


app = perdure.App([restart])


@pytest.fixture(autouse=True)
def _fresh_counters() -> Iterator[None]:
    executions.clear()
    gate["entered"], gate["open"] = asyncio.Event(), asyncio.Event()
    yield
    gate.clear()


@pytest.fixture
def lifetime(tmp_path: Path) -> Callable[[], Harness]:
    """A factory of engines on one SQLite file and one manual clock: each call is a new lifetime."""
    clock = ManualClock()
    url = f"sqlite:///{tmp_path}/x.db"
    return lambda: Harness(app, store=url, clock=clock)


async def test_delayed_send_fires_after_its_delay(lifetime: Callable[[], Harness]) -> None:
    async with lifetime() as h:
        invocation_id = await h.object_send(record, key="a", arg="late", delay=timedelta(seconds=10))
        await h.advance(timedelta(seconds=9.9))
        assert h.status(invocation_id).status is Status.SCHEDULED
        assert executions["record"] == 0

        await h.advance(timedelta(seconds=0.1))
        assert h.status(invocation_id).status is Status.COMPLETED
        assert executions["record"] == 1
        assert h.state("restart", "a") == {"note": "late"}


async def test_delayed_send_fires_after_its_delay_across_a_restart(lifetime: Callable[[], Harness]) -> None:
    async with lifetime() as h:
        invocation_id = await h.object_send(record, key="a", arg="late", delay=timedelta(seconds=10))
        await h.advance(timedelta(seconds=4))
        assert h.status(invocation_id).status is Status.SCHEDULED

    async with lifetime() as h:
        await h.settle()
        assert h.status(invocation_id).status is Status.SCHEDULED
        await h.advance(timedelta(seconds=5.9))
        assert h.status(invocation_id).status is Status.SCHEDULED
        assert executions["record"] == 0

        await h.advance(timedelta(seconds=0.1))
        assert h.status(invocation_id).status is Status.COMPLETED
        assert executions["record"] == 1
        assert h.state("restart", "a") == {"note": "late"}


async def test_hour_long_sleep_survives_a_restart(lifetime: Callable[[], Harness]) -> None:
    async with lifetime() as h:
        invocation_id = await h.object_send(nap, key="n")
        await h.settle()
        assert h.status(invocation_id).status is Status.SUSPENDED
        await h.advance(timedelta(minutes=30))
        assert h.status(invocation_id).status is Status.SUSPENDED
        assert executions == {"before": 1}

    async with lifetime() as h:
        await h.settle()
        await h.advance(timedelta(minutes=29, seconds=59))
        assert h.status(invocation_id).status is Status.SUSPENDED
        assert executions == {"before": 1}

        await h.advance(timedelta(seconds=1))
        inv = h.status(invocation_id)
        assert inv.status is Status.COMPLETED
        assert inv.outcome is not None and msgspec.json.decode(inv.outcome.value or b"") == "rested"
        assert executions == {"before": 1, "after": 1}


async def test_stored_run_result_is_not_reexecuted_after_a_restart(lifetime: Callable[[], Harness]) -> None:
    async with lifetime() as h:
        invocation_id = await h.object_send(gated, key="g")
        # The second step is running (blocked on the gate): the first one's result is stored.
        await asyncio.wait_for(gate["entered"].wait(), timeout=5)
        stored = [e.message for e in h.journal(invocation_id) if e.type == "RunCompletionNotification"]
        assert len(stored) == 1
        first = msgspec.json.decode(stored[0].value.content)
        assert h.status(invocation_id).status is Status.RUNNING

    gate["open"].set()
    async with lifetime() as h:
        outcome = await asyncio.wait_for(h.attach(invocation_id), timeout=5)
        assert outcome.failure is None
        tokens = msgspec.json.decode(outcome.value or b"")
        assert tokens[0] == first
        # The interrupted second step ran again; the stored first one did not.
        assert executions == {"first": 1, "second": 2}
