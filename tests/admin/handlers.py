"""Handlers the admin tests drive: steps, sleeps and state; failures; long sleeps; raw bytes."""

from __future__ import annotations

from datetime import timedelta

import perdure
from perdure import (
    Context,
    HandlerOptions,
    ObjectContext,
    ObjectSharedContext,
    RetryPolicy,
    Service,
    TerminalError,
    VirtualObject,
)

account = VirtualObject("account")


@account.handler()
async def deposit(ctx: ObjectContext, amount: int) -> int:
    """Add to the balance after a confirmation step and a short wait."""
    confirmed = await ctx.run("confirm", lambda: amount * 10)
    await ctx.sleep(timedelta(seconds=5))
    balance = (await ctx.get("balance") or 0) + confirmed
    ctx.set("balance", balance)
    ctx.set("history", [amount])
    return int(balance)


@account.handler(kind="shared")
async def balance(ctx: ObjectSharedContext) -> int:
    return int(await ctx.get("balance") or 0)


@account.handler()
async def wait(ctx: ObjectContext, hours: int) -> str:
    await ctx.sleep(timedelta(hours=hours))
    return "woke"


@account.handler(options=HandlerOptions(retry_policy=RetryPolicy(initial_interval=timedelta(minutes=10))))
async def flaky(ctx: ObjectContext) -> None:
    raise RuntimeError("the bank is closed")


greeter = Service("greeter", options=HandlerOptions(documentation="Says hello."))


@greeter.handler()
async def greet(ctx: Context, name: str) -> str:
    return f"hello {name}"


@greeter.handler()
async def refuse(ctx: Context, name: str) -> str:
    raise TerminalError(f"not greeting {name}", status_code=403)


@greeter.handler()
async def raw(ctx: Context) -> bytes:
    return b"\xff\x00binary"


@greeter.handler()
async def relay(ctx: Context, name: str) -> str:
    """Send a deposit to `name`'s account, then call `greet`: a journal with two child invocations."""
    ctx.object_send(deposit, key=name, arg=1)
    return str(await ctx.service_call(greet, arg=name))


APP = perdure.App([account, greeter])
