"""The app the `perdure dev` and management-command tests serve (tests/cli/sample_app.py:app).

- `counter/{key}/add` (exclusive) adds to the key's `total`; `counter/{key}/get` (shared) reads it;
- `jobs/work` runs one `ctx.run` step that takes `seconds` (an attempt in flight at shutdown);
- `jobs/nap` sleeps durably for `seconds` (suspended: something to kill, pause and purge);
- `jobs/flaky` always fails with a retryable error (backing-off, with a last failure).
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

import perdure
from perdure import Context, HandlerOptions, ObjectContext, ObjectSharedContext, RetryPolicy, VirtualObject

counter = VirtualObject("counter")


@counter.handler()
async def add(ctx: ObjectContext, n: int) -> int:
    total: int = (await ctx.get("total") or 0) + n
    ctx.set("total", total)
    return total


@counter.handler(kind="shared")
async def get(ctx: ObjectSharedContext) -> int:
    total: int = await ctx.get("total") or 0
    return total


jobs = perdure.Service("jobs")


async def take(seconds: float) -> str:
    await asyncio.sleep(seconds)
    return f"worked {seconds:g} s"


@jobs.handler()
async def work(ctx: Context, seconds: float) -> str:
    result: str = await ctx.run("work", take, args=(seconds,))
    return result


@jobs.handler()
async def nap(ctx: Context, seconds: float) -> str:
    await ctx.sleep(timedelta(seconds=seconds))
    return "rested"


@jobs.handler(options=HandlerOptions(retry_policy=RetryPolicy(initial_interval=timedelta(seconds=30))))
async def flaky(ctx: Context) -> None:
    raise RuntimeError("the downstream system is down")


app = perdure.App([counter, jobs])
