"""Workflows: run once per key, durable promises, attach, retention."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

import perdure
from perdure import TerminalError, Workflow, WorkflowContext, WorkflowSharedContext
from perdure.protocol import ids
from perdure.storage.api import Status
from perdure.testing import Harness

pytestmark = pytest.mark.usefixtures("backend")  # memory and PostgreSQL

signup = Workflow("signup", options=perdure.HandlerOptions(workflow_retention=timedelta(hours=1)))
runs: list[str] = []


@signup.main()
async def run(ctx: WorkflowContext, email: str) -> str:
    runs.append(ctx.key())
    ctx.set("status", "waiting for the link")
    secret = await ctx.promise("link").value()
    ctx.set("status", "verified")
    return f"{email} verified with {secret}"


@signup.handler()
async def click(ctx: WorkflowSharedContext, secret: str) -> None:
    await ctx.promise("link").resolve(secret)


@signup.handler()
async def status(ctx: WorkflowSharedContext) -> str | None:
    return await ctx.get("status")


@signup.handler()
async def peek(ctx: WorkflowSharedContext) -> str | None:
    return await ctx.promise("link").peek()


async def test_run_once_under_concurrent_submissions_and_promise_after_wait() -> None:
    runs.clear()
    async with Harness(perdure.App([signup])) as h:
        sends = await asyncio.gather(
            *(h.submit("signup", "run", b'"a@x.io"', key="a") for _ in range(20)), return_exceptions=True
        )
        assert {s[0] for s in sends if isinstance(s, tuple)} == {ids.workflow_id("signup", "a")}
        assert sum(1 for s in sends if isinstance(s, tuple) and not s[1]) == 1  # one Accepted, 19 previously
        await h.settle()
        assert runs == ["a"]
        assert await h.object_call(status, key="a") == "waiting for the link"
        assert await h.object_call(peek, key="a") is None
        await h.object_call(click, key="a", arg="s3cret")
        outcome = await h.attach(ids.workflow_id("signup", "a"))
        assert outcome.value == b'"a@x.io verified with s3cret"'
        with pytest.raises(TerminalError, match="already completed"):
            await h.object_call(click, key="a", arg="again")
        with pytest.raises(perdure.ConflictError, match="already invoked"):
            await h.object_call(run, key="a", arg="a@x.io")
        assert runs == ["a"]


async def test_promise_resolved_before_the_workflow_waits() -> None:
    runs.clear()
    async with Harness(perdure.App([signup])) as h:
        await h.object_call(click, key="b", arg="early")
        assert await h.object_call(peek, key="b") == "early"
        assert await h.object_call(run, key="b", arg="b@x.io") == "b@x.io verified with early"


async def test_after_retention_the_key_runs_again_from_a_clean_slate() -> None:
    runs.clear()
    async with Harness(perdure.App([signup])) as h:
        await h.object_call(click, key="c", arg="one")
        await h.object_call(run, key="c", arg="c@x.io")
        await h.advance(timedelta(hours=2))
        assert await h.sweep() == 1
        assert await h.object_call(status, key="c") is None  # state cleared with the workflow
        invocation_id = await h.object_send(run, key="c", arg="c@x.io")
        await h.advance(timedelta(minutes=2))  # past the inactivity timeout
        assert h.status(invocation_id).status is Status.SUSPENDED  # waits: the old promise is gone
        assert runs == ["c", "c"]
