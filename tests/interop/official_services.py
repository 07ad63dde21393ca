"""The interop scenarios written with the official Restate Python SDK (`restate-sdk`).

Served by hypercorn in a subprocess (`hypercorn tests.interop.official_services:app`) and
registered with perdure as a remote deployment. `twin_services.py` has the same services
written with perdure's SDK, run in-process: the tests expect identical results from both.
"""

from __future__ import annotations

import os
from datetime import timedelta

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
    total = (await ctx.get("count", type_hint=int) or 0) + n
    ctx.set("count", total)
    return total


@counter.handler(kind="shared")
async def get(ctx: ObjectSharedContext) -> int:
    return await ctx.get("count", type_hint=int) or 0


greeter = Service("Greeter")


@greeter.handler()
async def echo(ctx: Context, text: str) -> str:
    return f"echo:{text}"


profile = VirtualObject("Profile")


@profile.handler()
async def update(ctx: ObjectContext, name: str) -> str:
    """run → sleep → state → delayed send → call, the shape of the seed's example."""
    side = await ctx.run_typed("side", lambda: f"side:{name}")
    await ctx.sleep(timedelta(milliseconds=50))
    ctx.set("name", name)
    ctx.object_send(add, key=name, arg=1, send_delay=timedelta(milliseconds=100))
    echoed = await ctx.service_call(echo, arg=name)
    return f"{side}|{echoed}|{await ctx.get('name', type_hint=str)}"


waiter = VirtualObject("Waiter")


@waiter.handler()
async def wait(ctx: ObjectContext) -> str:
    if os.environ.get("WAITER_VARIANT") == "sleep-first":  # a changed deployment: a journal mismatch
        await ctx.sleep(timedelta(milliseconds=1))
    awakeable_id, promise = ctx.awakeable(type_hint=str)
    ctx.set("awakeable", awakeable_id)
    return f"woke:{await promise}"


@waiter.handler(kind="shared")
async def awakeable(ctx: ObjectSharedContext) -> str:
    return await ctx.get("awakeable", type_hint=str) or ""


signup = Workflow("Signup")


@signup.main()
async def run(ctx: WorkflowContext, email: str) -> str:
    secret = await ctx.promise("link", type_hint=str).value()
    return f"{email} verified with {secret}"


@signup.handler()
async def click(ctx: WorkflowSharedContext, secret: str) -> None:
    await ctx.promise("link", type_hint=str).resolve(secret)


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


def _append(marker: str, step: int) -> int:
    if marker:
        with open(marker, "a") as f:
            f.write(f"{step}\n")
    return step + 1


SERVICES = [counter, greeter, profile, waiter, signup, flaky]
app = restate.app(SERVICES)
