"""The app `bench/soak.py` serves with `perdure dev` (loaded as bench/soak_app.py:app).

`soak/{key}/add` takes an event id. Its one `ctx.run` step appends `"{event} {token}\\n"` to the
file named by PERDURE_SOAK_LOG (one O_APPEND write) and returns the fresh token, so the journal
says which execution's result was stored; then the key's `count` goes up by one and the event is
appended to its `seen` list. The output is `{"event", "token"}`.
"""

from __future__ import annotations

import os
import uuid

import perdure
from perdure import ObjectContext, VirtualObject

soak = VirtualObject("soak")


def log_step(event: str) -> str:
    token = uuid.uuid4().hex
    fd = os.open(os.environ["PERDURE_SOAK_LOG"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{event} {token}\n".encode())
    finally:
        os.close(fd)
    return token


@soak.handler()
async def add(ctx: ObjectContext, event: str) -> dict[str, str]:
    token: str = await ctx.run("log", log_step, args=(event,))
    ctx.set("count", (await ctx.get("count") or 0) + 1)
    ctx.set("seen", [*(await ctx.get("seen") or []), event])
    return {"event": event, "token": token}


app = perdure.App([soak])
