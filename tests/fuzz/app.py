"""The app the HTTP fuzz tests serve with `perdure dev`: every kind of handler and input, each
quick (no sleeps), so a fuzzed call always gets its answer at once."""

from __future__ import annotations

from dataclasses import dataclass

import msgspec

import perdure
from perdure import (
    Context,
    ObjectContext,
    ObjectSharedContext,
    TerminalError,
    WorkflowContext,
    WorkflowSharedContext,
)


@dataclass
class Order:
    item: str
    quantity: int


class Profile(msgspec.Struct):
    name: str
    tags: list[str] = []
    age: int | None = None


greeter = perdure.Service("greeter")


@greeter.handler()
async def greet(ctx: Context, name: str) -> str:
    return await ctx.run("greet", lambda: f"hello {name}")


@greeter.handler()
async def order(ctx: Context, order: Order) -> int:
    if order.quantity < 0:
        raise TerminalError("a quantity is never negative", 400)
    return order.quantity


@greeter.handler()
async def echo(ctx: Context, data: bytes) -> bytes:
    return data


@greeter.handler()
async def ping(ctx: Context) -> None:
    return None


counter = perdure.VirtualObject("counter")


@counter.handler()
async def add(ctx: ObjectContext, n: int) -> int:
    total = int(await ctx.get("total") or 0) + n
    ctx.set("total", total)
    return total


@counter.handler()
async def profile(ctx: ObjectContext, p: Profile) -> Profile:
    ctx.set("profile", p)
    return p


@counter.handler(kind="shared")
async def get(ctx: ObjectSharedContext) -> int:
    return int(await ctx.get("total") or 0)


signup = perdure.Workflow("signup")


@signup.main()
async def run(ctx: WorkflowContext, email: str) -> str:
    ctx.set("email", email)
    return email


@signup.handler()
async def status(ctx: WorkflowSharedContext) -> str | None:
    email = await ctx.get("email")
    return None if email is None else str(email)


app = perdure.App([greeter, counter, signup])
