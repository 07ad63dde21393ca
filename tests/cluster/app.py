"""The app every node of the cluster tests serves (loaded as tests/cluster/app.py:app).

`counter/{key}/add` takes a request id: its `ctx.run` step appends `"{rid} {token} {pid}\\n"` to
the log file named by PERDURE_TEST_LOG (one O_APPEND write, shared by every node) and returns the
token, so the journal says which execution's result was stored; then it appends the request id to
the key's `seen` list and returns the count. `relay/{key}/add` calls `counter/{key}/add` (the
callee's key lands in any partition, usually another node's) and returns what it answered.
`echo/say` (a service) answers its input. `counter/{key}/record` is the Kafka sink: the record's
value is the request id. `counter/{key}/slow` counts like `add`, with a step of
PERDURE_TEST_SLOW_MS (default 1500) that logs its start too. PERDURE_TEST_STEP_MS (default 2)
delays both sides of the write, so kills land inside steps too.
"""

from __future__ import annotations

import asyncio
import os
import random
import uuid

import perdure
from perdure import Context, ObjectContext, Service, VirtualObject

LOG_FD = os.open(os.environ["PERDURE_TEST_LOG"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
STEP_MS = float(os.environ.get("PERDURE_TEST_STEP_MS", "2"))
SLOW_MS = float(os.environ.get("PERDURE_TEST_SLOW_MS", "1500"))

counter = VirtualObject("counter")
relay = VirtualObject("relay")
echo = Service("echo")


async def log_request(rid: str) -> str:
    await asyncio.sleep(random.uniform(0, STEP_MS) / 1000)
    token = uuid.uuid4().hex
    os.write(LOG_FD, f"{rid} {token} {os.getpid()}\n".encode())
    await asyncio.sleep(random.uniform(0, STEP_MS) / 1000)
    return token


async def count(ctx: ObjectContext, rid: str) -> dict[str, object]:
    token: str = await ctx.run("log", log_request, args=(rid,))
    seen = await ctx.get("seen") or []
    ctx.set("seen", [*seen, rid])
    return {"rid": rid, "token": token, "count": len(seen) + 1}


@counter.handler()
async def add(ctx: ObjectContext, rid: str) -> dict[str, object]:
    return await count(ctx, rid)


@counter.handler()
async def record(ctx: ObjectContext, rid: str) -> dict[str, object]:
    return await count(ctx, rid)


async def slow_step(rid: str) -> str:
    """Logs its start and its end: a start after the end of the stored execution would be a re-run."""
    os.write(LOG_FD, f"{rid} start {os.getpid()}\n".encode())
    await asyncio.sleep(SLOW_MS / 1000)
    token = uuid.uuid4().hex
    os.write(LOG_FD, f"{rid} {token} {os.getpid()}\n".encode())
    return token


@counter.handler()
async def slow(ctx: ObjectContext, rid: str) -> dict[str, object]:
    token: str = await ctx.run("slow", slow_step, args=(rid,))
    seen = await ctx.get("seen") or []
    ctx.set("seen", [*seen, rid])
    return {"rid": rid, "token": token, "count": len(seen) + 1}


@relay.handler("add")
async def relay_add(ctx: ObjectContext, rid: str) -> dict[str, object]:
    answer: dict[str, object] = await ctx.object_call(add, key=ctx.key(), arg=rid)
    return answer


@echo.handler("say")
async def echo_say(ctx: Context, text: str) -> str:
    return text


app = perdure.App([counter, relay, echo])
