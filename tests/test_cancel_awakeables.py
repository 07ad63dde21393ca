"""Cancellation (signals, propagation down a call chain, compensation), kill of a chain, awakeables."""

from __future__ import annotations

from datetime import timedelta

import pytest

import perdure
from perdure import Context, ObjectContext, Service, TerminalError, VirtualObject
from perdure.storage.api import Failure, Status
from perdure.testing import Harness

pytestmark = pytest.mark.usefixtures("backend")  # memory and PostgreSQL

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
        note = f"refund {depth} ({e.status_code})"
        await ctx.run(f"refund {depth}", lambda: effects.append(note))
        raise


async def _call_ids(h: Harness, invocation_id: str) -> list[str]:
    ids = [
        e.message.invocation_id
        for e in h.journal(invocation_id)
        if e.type == "CallInvocationIdCompletionNotification"
    ]
    return ids


async def test_cancel_in_a_depth_3_chain_compensates_every_level_once() -> None:
    effects.clear()
    async with Harness(perdure.App([chain])) as h:
        top = await h.service_send(level, arg=1)
        await h.settle()
        [middle] = await _call_ids(h, top)
        [bottom] = await _call_ids(h, middle)
        assert h.status(bottom).status is Status.SUSPENDED  # sleeping an hour, not in memory
        await h.cancel(top)
        await h.settle()
        for invocation_id in (top, middle, bottom):
            outcome = await h.attach(invocation_id)
            assert outcome.failure is not None and (outcome.failure.code, outcome.failure.message) == (
                409,
                "cancelled",
            )
        assert sorted(effects) == sorted(
            ["book 1", "book 2", "book 3", "refund 3 (409)", "refund 2 (409)", "refund 1 (409)"]
        )
        await h.advance(timedelta(hours=2))
        assert "after sleep" not in effects
        with pytest.raises(perdure.ConflictError, match="cannot cancel an invocation that is completed"):
            await h.cancel(top)


async def test_kill_of_a_chain_stops_every_level_without_more_side_effects() -> None:
    effects.clear()
    async with Harness(perdure.App([chain])) as h:
        top = await h.service_send(level, arg=1)
        await h.settle()
        [middle] = await _call_ids(h, top)
        [bottom] = await _call_ids(h, middle)
        await h.kill(top)
        await h.advance(timedelta(hours=2))
        for invocation_id in (top, middle, bottom):
            assert h.status(invocation_id).status is Status.COMPLETED
            outcome = h.status(invocation_id).outcome
            assert outcome is not None and outcome.failure is not None and outcome.failure.message == "killed"
        assert effects == ["book 1", "book 2", "book 3"]


queue = VirtualObject("queue")


@queue.handler()
async def nap(ctx: ObjectContext, tag: str) -> str:
    await ctx.sleep(timedelta(hours=1))
    return tag


async def test_cancelling_a_sleeping_object_invocation_frees_its_key() -> None:
    async with Harness(perdure.App([queue])) as h:
        first = await h.object_send(nap, key="k", arg="a")
        second = await h.object_send(nap, key="k", arg="b")
        queued = await h.object_send(nap, key="k", arg="c")
        await h.settle()
        await h.cancel(queued)  # queued: completes at once
        await h.cancel(first)  # sleeping holder: releases the key
        await h.settle()
        assert h.status(second).status is Status.SUSPENDED
        assert (await h.attach(queued)).failure == Failure(409, "cancelled")
        await h.advance(timedelta(hours=1))
        assert (await h.attach(second)).value == b'"b"'


approvals = Service("approvals")
resolver = Service("resolver")


@approvals.handler()
async def wait_for_approval(ctx: Context) -> str:
    awakeable_id, approved = ctx.awakeable(type_hint=str)
    await ctx.run("publish id", lambda: published.append(awakeable_id))
    try:
        return f"approved by {await approved}"
    except TerminalError as e:
        return f"rejected: {e.message}"


@resolver.handler()
async def approve(ctx: Context, awakeable_id: str) -> None:
    ctx.resolve_awakeable(awakeable_id, "a handler")


published: list[str] = []


async def test_awakeables_resolved_from_outside_and_from_a_handler_while_suspended() -> None:
    published.clear()
    async with Harness(perdure.App([approvals, resolver])) as h:
        outside = await h.service_send(wait_for_approval)
        inside = await h.service_send(wait_for_approval)
        rejected = await h.service_send(wait_for_approval)
        await h.settle()
        assert len(published) == 3 and all(p.startswith("sign_1") for p in published)
        await h.advance(timedelta(minutes=2))  # past the inactivity timeout: suspended
        assert h.status(outside).status is Status.SUSPENDED
        await h.complete_awakeable(published[0], b'"ops"')
        await h.service_call(approve, arg=published[1])
        await h.complete_awakeable(published[2], failure=Failure(500, "not today"))
        assert (await h.attach(outside)).value == b'"approved by ops"'
        assert (await h.attach(inside)).value == b'"approved by a handler"'
        assert (await h.attach(rejected)).value == b'"rejected: not today"'
        await h.complete_awakeable(published[0], b'"again"')  # already completed: ignored
        with pytest.raises(perdure.InvalidInputError, match="malformed awakeable id"):
            await h.complete_awakeable("sign_1nope", b"1")


@approvals.handler()
async def wants_a_number(ctx: Context) -> str:
    awakeable_id, number = ctx.awakeable(type_hint=int)
    await ctx.run("publish id", lambda: published.append(awakeable_id))
    try:
        return str(await number)
    except TerminalError as e:
        return f"{e.status_code}: {e.message}"


async def test_a_value_that_does_not_fit_fails_the_await_for_good() -> None:
    published.clear()
    async with Harness(perdure.App([approvals, resolver])) as h:
        invocation_id = await h.service_send(wants_a_number)
        await h.settle()
        await h.complete_awakeable(published[0], b'"not a number"')
        outcome = await h.attach(invocation_id)
        assert outcome.value is not None and outcome.value.startswith(b'"500: a result does not fit')
