"""The app `perdure dev` serves in the kill -9 test (loaded as tests/cli/crash_app.py:app).

`counter/{key}/add` takes a request id. Its one `ctx.run` step appends `"{rid} {token}\\n"` to the
log file named by PERDURE_TEST_LOG (one O_APPEND write) and returns the fresh token, so the journal
says which execution's result was stored. Then it bumps the key's `count` and appends the request
id to its `seen` list, and returns all three. PERDURE_TEST_STEP_MS (default 2) delays both sides of
the write, so that kills land inside steps as well as between them.
"""

from __future__ import annotations

import asyncio
import os
import random
import uuid

import perdure
from perdure import ObjectContext, VirtualObject

LOG_FD = os.open(os.environ["PERDURE_TEST_LOG"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
STEP_MS = float(os.environ.get("PERDURE_TEST_STEP_MS", "2"))

counter = VirtualObject("counter")


async def log_request(rid: str) -> str:
    await asyncio.sleep(random.uniform(0, STEP_MS) / 1000)
    token = uuid.uuid4().hex
    os.write(LOG_FD, f"{rid} {token}\n".encode())
    await asyncio.sleep(random.uniform(0, STEP_MS) / 1000)
    return token


@counter.handler()
async def add(ctx: ObjectContext, rid: str) -> dict[str, object]:
    token: str = await ctx.run("log", log_request, args=(rid,))
    count = (await ctx.get("count") or 0) + 1
    ctx.set("count", count)
    seen = await ctx.get("seen") or []
    ctx.set("seen", [*seen, rid])
    return {"rid": rid, "token": token, "count": count}


app = perdure.App([counter])
