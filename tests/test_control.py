"""Operator controls: kill, pause/resume, purge."""

from __future__ import annotations

from datetime import timedelta

import pytest

import perdure
from perdure import ObjectContext, VirtualObject
from perdure.storage.api import Status
from perdure.testing import Harness

pytestmark = pytest.mark.usefixtures("backend")  # memory and PostgreSQL

obj = VirtualObject("ctl")
effects: list[str] = []


@obj.handler()
async def slow(ctx: ObjectContext, tag: str) -> str:
    await ctx.run("before", lambda: effects.append(f"{tag}:before"))
    await ctx.sleep(timedelta(hours=1))
    await ctx.run("after", lambda: effects.append(f"{tag}:after"))
    return tag


async def test_kill_stops_without_more_user_code_and_frees_the_key() -> None:
    effects.clear()
    async with Harness(perdure.App([obj])) as h:
        first = await h.object_send(slow, key="k", arg="a")
        queued = await h.object_send(slow, key="k", arg="b")
        doomed = await h.object_send(slow, key="k", arg="c")
        await h.settle()
        await h.kill(doomed)  # pending in the inbox: removed from the queue
        await h.kill(first)  # suspended holder: the key passes to the next one
        await h.settle()
        outcome = await h.attach(first)
        assert outcome.failure is not None and (outcome.failure.code, outcome.failure.message) == (
            409,
            "killed",
        )
        assert h.status(queued).status is Status.SUSPENDED
        await h.advance(timedelta(hours=1))
        assert effects == ["a:before", "b:before", "b:after"]
        assert h.status(doomed).status is Status.COMPLETED
        with pytest.raises(perdure.ConflictError, match="cannot kill an invocation that is completed"):
            await h.kill(first)
        with pytest.raises(perdure.UnknownTargetError, match="no such invocation"):
            await h.kill("inv_1" + "0" * 33)


async def test_pause_and_resume_a_suspended_invocation() -> None:
    effects.clear()
    async with Harness(perdure.App([obj])) as h:
        invocation_id = await h.object_send(slow, key="p", arg="p")
        await h.settle()
        await h.pause(invocation_id)
        await h.advance(timedelta(hours=2))
        assert h.status(invocation_id).status is Status.PAUSED
        assert effects == ["p:before"]
        await h.resume(invocation_id)
        await h.settle()
        assert effects == ["p:before", "p:after"]
        assert h.status(invocation_id).status is Status.COMPLETED


async def test_purge_only_completed_invocations() -> None:
    async with Harness(perdure.App([obj]), autojump=True) as h:
        invocation_id = await h.object_send(slow, key="x", arg="x")
        await h.settle()
        with pytest.raises(perdure.ConflictError, match="cannot purge"):
            await h.purge(invocation_id)
        await h.attach(invocation_id)
        await h.purge(invocation_id)
        assert h.reader().get_invocation(invocation_id) is None
        assert h.reader().read_journal(invocation_id) == []


async def test_retention_sweep_frees_idempotency_keys() -> None:
    short = VirtualObject("short")

    @short.handler(options=perdure.HandlerOptions(idempotency_retention=timedelta(hours=1)))
    async def once(ctx: ObjectContext) -> int:
        n = (await ctx.get("n") or 0) + 1
        ctx.set("n", n)
        return n

    async with Harness(perdure.App([short])) as h:
        assert await h.object_call(once, key="k", idempotency_key="same") == 1
        assert await h.object_call(once, key="k", idempotency_key="same") == 1  # the stored result
        await h.advance(timedelta(minutes=59))
        assert await h.sweep() == 0
        await h.advance(timedelta(minutes=2))
        assert await h.sweep() == 1
        assert await h.object_call(once, key="k", idempotency_key="same") == 2  # a new invocation
