"""The app the awakeable restart test serves with `perdure dev` (tests/crash/awakeable_app.py:app).

Each handler creates an awakeable, publishes its id with a `ctx.run` step, waits for it, then
ships with a second step. Both steps append a line to the file named by $PERDURE_TEST_EFFECTS
(one `O_APPEND` write each), so the test can count how often each side effect happened:

- `approvals/quick` suspends 0.2 s after it starts waiting (nothing of it in memory at the kill);
- `approval/{key}/run`, a workflow, keeps the default 60 s inactivity timeout (still in memory).
"""

from __future__ import annotations

import os
from datetime import timedelta

import perdure
from perdure import Context, HandlerOptions, Service, TerminalError, Workflow, WorkflowContext


def record(line: str) -> None:
    fd = os.open(os.environ["PERDURE_TEST_EFFECTS"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


async def approve(ctx: Context, name: str) -> str:
    """Publish an awakeable, wait for it, ship; the answer names who approved (or the rejection)."""
    awakeable_id, approved = ctx.awakeable(type_hint=str)
    await ctx.run("publish", record, args=(f"published {name} {awakeable_id}",))
    try:
        by = f"approved by {await approved}"
    except TerminalError as e:
        by = f"rejected ({e.status_code}): {e.message}"
    await ctx.run("ship", record, args=(f"shipped {name} {by}",))
    return f"{name} {by}"


approvals = Service("approvals")


@approvals.handler(options=HandlerOptions(inactivity_timeout=timedelta(milliseconds=200)))
async def quick(ctx: Context, name: str) -> str:
    return await approve(ctx, name)


approval = Workflow("approval")


@approval.main()
async def run(ctx: WorkflowContext, name: str) -> str:
    return await approve(ctx, name)


app = perdure.App([approvals, approval])
