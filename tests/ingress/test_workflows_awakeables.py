"""Workflows (submit, run once, shared handlers, attach/output) and awakeables over the HTTP ingress."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import timedelta

import pytest

import perdure
from perdure import Context, Service, TerminalError, Workflow, WorkflowContext, WorkflowSharedContext
from perdure.protocol import awakeables, ids
from perdure.storage.api import Status

from .conftest import Stack, StartStack
from .helpers import JSON, assert_error

ALREADY_INVOKED = "the workflow method was already invoked"


@dataclass
class Seen:
    """What the handlers did: workflow runs per key, awakeable ids handed out."""

    runs: list[str] = field(default_factory=list)
    published: list[str] = field(default_factory=list)


def build_app(seen: Seen) -> perdure.App:
    signup = Workflow("signup")

    @signup.main()
    async def run(ctx: WorkflowContext, email: str) -> str:
        await ctx.run("count", lambda: seen.runs.append(ctx.key()))
        ctx.set("status", "waiting for the link")
        secret = await ctx.promise("link").value()
        ctx.set("status", "verified")
        return f"{email} verified with {secret}"

    @signup.handler()
    async def click(ctx: WorkflowSharedContext, secret: str) -> None:
        await ctx.promise("link").resolve(secret)

    @signup.handler()
    async def status(ctx: WorkflowSharedContext) -> str | None:
        value: str | None = await ctx.get("status")
        return value

    @signup.handler()
    async def peek(ctx: WorkflowSharedContext) -> str | None:
        value: str | None = await ctx.promise("link").peek()
        return value

    approvals = Service("approvals")

    @approvals.handler()
    async def approve(ctx: Context) -> str:
        awakeable_id, approved = ctx.awakeable(type_hint=str)
        await ctx.run("publish", lambda: seen.published.append(awakeable_id))
        try:
            return f"approved by {await approved}"
        except TerminalError as e:
            return f"rejected ({e.status_code}): {e.message}"

    @approvals.handler()
    async def two_steps(ctx: Context) -> list[str]:
        first_id, first = ctx.awakeable(type_hint=str)
        second_id, second = ctx.awakeable(type_hint=str)
        await ctx.run("publish", lambda: seen.published.extend([first_id, second_id]))
        return [await first, await second]

    @approvals.handler()
    async def raw(ctx: Context) -> bytes:
        awakeable_id, value = ctx.awakeable(type_hint=bytes)
        await ctx.run("publish", lambda: seen.published.append(awakeable_id))
        result: bytes = await value
        return result

    return perdure.App([signup, approvals])


@pytest.fixture
async def wf(start_stack: StartStack) -> tuple[Stack, Seen]:
    seen = Seen()
    return await start_stack(build_app(seen)), seen


async def test_twenty_concurrent_submissions_of_one_key_run_it_once(wf: tuple[Stack, Seen]) -> None:
    stack, seen = wf
    client = stack.client
    run_id = ids.workflow_id("signup", "a")
    sends = await asyncio.gather(*(client.post("/signup/a/run/send", json="a@x.io") for _ in range(20)))
    assert {r.status_code for r in sends} == {202}
    assert {r.json()["invocationId"] for r in sends} == {run_id}
    statuses = sorted(r.json()["status"] for r in sends)
    assert statuses == ["Accepted"] + ["PreviouslyAccepted"] * 19

    # Twenty concurrent *calls* of another key: one waits for the result, nineteen are refused.
    calls = [asyncio.create_task(client.post("/signup/b/run", json="b@x.io")) for _ in range(20)]
    for _ in range(1000):  # the refusals come back at once; the accepted call waits for the link
        if sum(c.done() for c in calls) >= 19:
            break
        await asyncio.sleep(0.01)
    await stack.h.settle()
    refused = [c for c in calls if c.done()]
    assert len(refused) == 19
    for task in refused:
        response = task.result()
        assert_error(response, 409, "invocation", ALREADY_INVOKED)
        assert response.headers["x-restate-id"] == ids.workflow_id("signup", "b")
    assert (await client.post("/signup/b/click", json="s3")).status_code == 200
    [winner] = [await c for c in calls if c not in refused]
    assert (winner.status_code, winner.json()) == (200, "b@x.io verified with s3")
    assert winner.headers["x-restate-id"] == ids.workflow_id("signup", "b")

    await stack.h.settle()
    assert sorted(seen.runs) == ["a", "b"]
    # Calling run again after it finished is a 409 too; sending it is "previously accepted".
    assert_error(await client.post("/signup/b/run", json="b@x.io"), 409, "invocation", ALREADY_INVOKED)
    again = await client.post("/restate/send/signup/b/run", json="other@x.io")
    assert (again.status_code, again.json()["status"]) == (202, "PreviouslyAccepted")
    assert sorted(seen.runs) == ["a", "b"]


async def test_an_idempotency_key_on_a_workflow_run_is_a_400(wf: tuple[Stack, Seen]) -> None:
    stack, _ = wf
    for path in ("/signup/c/run", "/signup/c/run/send", "/restate/call/signup/c/run"):
        response = await stack.client.post(path, json="c@x.io", headers={"idempotency-key": "k1"})
        assert_error(response, 400, "ingress", "idempotency-key header is not allowed")
    assert stack.h.reader().list_invocations() == []
    # Shared handlers take one like any handler.
    response = await stack.client.post("/signup/c/status", headers={"idempotency-key": "k1"})
    assert (response.status_code, response.json()) == (200, None)


async def test_promise_resolved_before_and_after_the_run_waits(wf: tuple[Stack, Seen]) -> None:
    stack, _ = wf
    client = stack.client
    # Before: the promise is resolved first; the run finds it and never waits.
    assert (await client.post("/signup/early/click", json="first")).status_code == 200
    assert (await client.post("/signup/early/peek")).json() == "first"
    response = await client.post("/signup/early/run", json="e@x.io")
    assert (response.status_code, response.json()) == (200, "e@x.io verified with first")

    # After: the run waits (suspended), a shared handler reads its state meanwhile.
    sent = await client.post("/signup/late/run/send", json="l@x.io")
    assert sent.status_code == 202
    await stack.h.advance(timedelta(minutes=2))  # past the inactivity timeout
    run_id = ids.workflow_id("signup", "late")
    assert stack.h.status(run_id).status is Status.SUSPENDED
    assert (await client.post("/signup/late/status")).json() == "waiting for the link"
    assert (await client.post("/signup/late/peek")).json() is None
    output = await client.get("/restate/workflow/signup/late/output")
    assert_error(output, 470, "ingress", "has not completed yet")
    attach = asyncio.create_task(client.get("/restate/workflow/signup/late/attach"))
    await stack.h.settle()
    assert not attach.done()
    assert (await client.post("/signup/late/click", json="later")).status_code == 200
    attached = await attach
    assert (attached.status_code, attached.json()) == (200, "l@x.io verified with later")
    assert attached.headers["x-restate-id"] == run_id
    assert (await client.post("/signup/late/status")).json() == "verified"
    # The promise completes once: a second resolve fails in the handler that tried.
    again = await client.post("/signup/late/click", json="again")
    assert_error(again, 409, "invocation", "already completed")


async def test_attach_and_output_after_completion_return_the_stored_result(wf: tuple[Stack, Seen]) -> None:
    stack, seen = wf
    client = stack.client
    await client.post("/signup/done/click", json="x")
    assert (await client.post("/signup/done/run", json="d@x.io")).status_code == 200
    run_id = ids.workflow_id("signup", "done")
    for path in (
        "/restate/workflow/signup/done/attach",
        "/restate/workflow/signup/done/output",
        f"/restate/invocation/{run_id}/output",
    ):
        response = await client.get(path)
        assert (response.status_code, response.json()) == (200, "d@x.io verified with x"), path
        assert response.headers["x-restate-id"] == run_id
    assert seen.runs == ["done"]

    unknown = await client.get("/restate/workflow/signup/nobody/output")
    assert_error(unknown, 404, "invocation", "not found")
    assert_error(await client.get("/restate/workflow/signup/nobody/attach"), 404, "invocation")
    missing = await client.get("/restate/workflow/nope/k/attach")
    assert_error(missing, 404, "ingress", "service 'nope' not found")
    assert_error(await client.get("/restate/workflow/approvals/k/attach"), 400, "ingress", "not a workflow")
    assert_error(await client.get("/restate/workflow/signup/done"), 400, "ingress", "bad path")
    assert_error(await client.get("/restate/workflow/signup/done/cancel"), 404, "ingress")
    assert_error(await client.post("/restate/workflow/signup/done/attach"), 405, "ingress")


async def test_awakeables_resolved_and_rejected_over_http_while_suspended(wf: tuple[Stack, Seen]) -> None:
    stack, seen = wf
    h, client = stack.h, stack.client
    resolved = (await client.post("/approvals/approve/send")).json()["invocationId"]
    rejected = (await client.post("/approvals/approve/send")).json()["invocationId"]
    raw = (await client.post("/approvals/raw/send")).json()["invocationId"]
    await h.advance(timedelta(minutes=2))  # past the inactivity timeout: nothing in memory
    assert {h.status(i).status for i in (resolved, rejected, raw)} == {Status.SUSPENDED}
    by_invocation = {awakeables.parse(a)[0]: a for a in seen.published}

    # Any content type: the body is the value's bytes, decoded by the awaiting handler.
    response = await client.post(
        f"/restate/awakeables/{by_invocation[resolved]}/resolve",
        content=b'"ops"',
        headers={"content-type": "text/plain"},
    )
    assert (response.status_code, response.content) == (202, b"")
    response = await client.post(f"/restate/a/{by_invocation[rejected]}/reject", content="not today")
    assert (response.status_code, response.content) == (202, b"")
    blob = b"\x00\xffbinary"
    response = await client.post(f"/restate/a/{by_invocation[raw]}/resolve", content=blob)
    assert response.status_code == 202

    assert (await h.attach(resolved)).value == b'"approved by ops"'
    assert (await h.attach(rejected)).value == b'"rejected (500): not today"'
    assert (await h.attach(raw)).value == blob

    # Completing it again, or an awakeable whose invocation is gone: 202, and nothing changes.
    again = await client.post(f"/restate/awakeables/{by_invocation[resolved]}/resolve", json="again")
    assert (again.status_code, again.content) == (202, b"")
    await h.purge(resolved)
    gone = await client.post(f"/restate/awakeables/{by_invocation[resolved]}/reject", content="late")
    assert gone.status_code == 202
    assert (await h.attach(rejected)).value == b'"rejected (500): not today"'


async def test_an_awakeable_completes_once(wf: tuple[Stack, Seen]) -> None:
    """The first completion wins, even while the invocation still waits for another awakeable."""
    stack, seen = wf
    h, client = stack.h, stack.client
    invocation_id = (await client.post("/approvals/two_steps/send")).json()["invocationId"]
    await h.settle()
    first, second = seen.published
    for value in ("one", "uno"):
        assert (await client.post(f"/restate/awakeables/{first}/resolve", json=value)).status_code == 202
    await h.settle()
    assert h.status(invocation_id).status is not Status.COMPLETED
    assert (await client.post(f"/restate/a/{first}/reject", content="too late")).status_code == 202
    assert (await client.post(f"/restate/a/{second}/resolve", json="two")).status_code == 202
    assert (await h.attach(invocation_id)).value == b'["one","two"]'


async def test_bad_awakeable_requests(wf: tuple[Stack, Seen]) -> None:
    stack, _ = wf
    client = stack.client
    for bad in ("sign_1abc", "prom_1abc", "nope", "sign_1" + "A" * 30):
        for path in (f"/restate/awakeables/{bad}/resolve", f"/restate/a/{bad}/reject"):
            assert_error(await client.post(path, json=1), 400, "ingress", "bad awakeable id")
    valid = awakeables.awakeable_id(ids.to_bytes(ids.random_id("approvals", None)), 17)
    assert_error(await client.get(f"/restate/awakeables/{valid}/resolve"), 405, "ingress")
    assert_error(await client.post(f"/restate/awakeables/{valid}/explode", json=1), 404, "ingress")
    assert_error(await client.post(f"/restate/awakeables/{valid}"), 400, "ingress", "bad path")
    assert_error(await client.post("/restate/awakeables"), 400, "ingress", "bad path")
    big = await client.post(f"/restate/awakeables/{valid}/resolve", content=b"x" * (11 << 20), headers=JSON)
    assert_error(big, 413, "ingress")
    # A well-formed id of an invocation that never existed: accepted and ignored, as in Restate.
    assert (await client.post(f"/restate/awakeables/{valid}/resolve", json=1)).status_code == 202
