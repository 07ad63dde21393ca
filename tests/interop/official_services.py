"""The interop scenarios written with the official Restate Python SDK (`restate-sdk`): twins of
`perdure_services.py` (same names, same behaviour), so its drivers and `EXPECTED` apply.

Served by hypercorn in a subprocess (`hypercorn tests.interop.official_services:app`) and
registered with perdure as a remote deployment. `Flaky` adds handlers for the failure tests.
"""

from __future__ import annotations

import base64
import os
from datetime import timedelta
from typing import Any

import restate
from restate import (
    Context,
    ObjectContext,
    ObjectSharedContext,
    Service,
    VirtualObject,
    Workflow,
    WorkflowContext,
    WorkflowSharedContext,
)

counter = VirtualObject("Counter")


@counter.handler()
async def add(ctx: ObjectContext, n: int) -> int:
    total = (await ctx.get("total", type_hint=int) or 0) + n
    ctx.set("total", total)
    return total


@counter.handler(kind="shared")
async def get(ctx: ObjectSharedContext) -> int:
    return await ctx.get("total", type_hint=int) or 0


greeter = Service("Greeter")


@greeter.handler()
async def greet(ctx: Context, name: str) -> str:
    return f"hello {name}"


postbox = VirtualObject("Postbox")


@postbox.handler()
async def post(ctx: ObjectContext, letter: str) -> None:
    ctx.set("letters", [*(await ctx.get("letters", type_hint=list[str]) or []), letter])


@postbox.handler(kind="shared")
async def letters(ctx: ObjectSharedContext) -> list[str]:
    return list(await ctx.get("letters", type_hint=list[str]) or [])


journey = VirtualObject("Journey")


@journey.handler()
async def travel(ctx: ObjectContext, trip: dict[str, Any]) -> str:
    """run → sleep → state → delayed send → call, the shape of the seed's example."""
    traveller = trip["traveller"]
    ticket = await ctx.run_typed("book", lambda: f"ticket-{traveller}")
    await ctx.sleep(timedelta(milliseconds=100))
    ctx.set("visited", trip.get("stops", 1))
    ctx.object_send(
        post, key=ctx.key(), arg=f"postcard from {traveller}", send_delay=timedelta(milliseconds=300)
    )
    greeting = await ctx.service_call(greet, arg=traveller)
    visited = await ctx.get("visited", type_hint=int)
    return f"{ticket}|{greeting}|{visited}"


approvals = VirtualObject("Approvals")


@approvals.handler()
async def request(ctx: ObjectContext, what: str) -> str:
    if os.environ.get("APPROVALS_VARIANT") == "sleep-first":  # a changed deployment: a journal mismatch
        await ctx.sleep(timedelta(milliseconds=1))
    awakeable_id, decision = ctx.awakeable(type_hint=str)
    ctx.set("awakeable", awakeable_id)
    answer = await decision
    return f"{what}: {answer}"


@approvals.handler(kind="shared")
async def pending(ctx: ObjectSharedContext) -> str | None:
    return await ctx.get("awakeable", type_hint=str)


signup = Workflow("Signup")


@signup.main()
async def run(ctx: WorkflowContext, email: str) -> str:
    ctx.set("status", "waiting for the link")
    secret = await ctx.promise("link", type_hint=str).value()
    ctx.set("status", "verified")
    return f"{email} verified with {secret}"


@signup.handler()
async def click(ctx: WorkflowSharedContext, secret: str) -> None:
    await ctx.promise("link", type_hint=str).resolve(secret)


@signup.handler()
async def status(ctx: WorkflowSharedContext) -> str | None:
    return await ctx.get("status", type_hint=str)


flaky = Service("Flaky")


@flaky.handler()
async def fail_until(ctx: Context, marker: str) -> str:
    """Fails (retryably) while the file `marker` is absent."""
    if not os.path.exists(marker):  # noqa: ASYNC240 - a test switch, read once per attempt
        raise RuntimeError(f"{marker} is not there yet")
    return "recovered"


@flaky.handler()
async def slow_steps(ctx: Context, count: int) -> int:
    """`count` steps of 100 ms each: long enough to kill the deployment in the middle."""
    done = 0
    for step in range(count):
        done = await ctx.run_typed(f"step {step}", _append, marker=os.environ.get("STEP_LOG", ""), step=step)
        await ctx.sleep(timedelta(milliseconds=100))
    return done


@flaky.handler()
async def give_up(ctx: Context, attempts: int) -> str:
    """A step that always fails: the SDK stops retrying it after `attempts`, counting the attempts
    from the retry counters the runtime sends in StartMessage."""
    try:
        await ctx.run_typed(
            "always fails",
            _fail,
            restate.RunOptions(max_attempts=attempts, initial_retry_interval=timedelta(milliseconds=10)),
        )
    except restate.TerminalError as e:
        return f"gave up: {e.message}"
    return "unreachable"


@flaky.handler()
async def attach(ctx: Context, invocation_id: str) -> str:
    """Waits for another invocation's result (AttachInvocationCommand)."""
    return await ctx.attach_invocation(invocation_id, type_hint=str)


@flaky.handler()
async def wait_for_signal(ctx: Context) -> str:
    """Waits for the named signal "go" (sent by `send_signal`)."""
    return f"got {await ctx.signal('go', type_hint=str)}"


@flaky.handler()
async def send_signal(ctx: Context, target: str) -> None:
    ctx.resolve_signal(target, "go", "green")


@flaky.handler()
async def emit(ctx: Context, topic: str) -> None:
    """Produce a Kafka record through perdure's egress: a send to `perdure.kafka/emit`."""
    key = base64.urlsafe_b64encode(b"from-sdk").decode()
    ctx.generic_send(
        "perdure.kafka", "emit", b'{"from":"official"}', key=topic, headers={"kafka.key": key, "via": "sdk"}
    )


def _fail() -> None:
    raise ValueError("nope")


def _append(marker: str, step: int) -> int:
    if marker:
        with open(marker, "a") as f:
            f.write(f"{step}\n")
    return step + 1


SERVICES = [counter, greeter, postbox, journey, approvals, signup, flaky]
app = restate.app(SERVICES)
