"""The interop scenarios written with perdure's SDK: twins of `official_services.py`.

Same service and handler names, same behaviour; run in-process, they give the results the
official SDK's versions must give when perdure drives them over HTTP.
"""

from __future__ import annotations

from datetime import timedelta

import perdure
from perdure import (
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
    side = await ctx.run("side", lambda: f"side:{name}")
    await ctx.sleep(timedelta(milliseconds=50))
    ctx.set("name", name)
    ctx.object_send(add, key=name, arg=1, delay=timedelta(milliseconds=100))
    echoed = await ctx.service_call(echo, arg=name)
    return f"{side}|{echoed}|{await ctx.get('name', type_hint=str)}"


waiter = VirtualObject("Waiter")


@waiter.handler()
async def wait(ctx: ObjectContext) -> str:
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


app = perdure.App([counter, greeter, profile, waiter, signup])
