"""A task scheduler: each event schedules follow-up tasks as delayed sends, and they can be cancelled.

A customer signs up; the `scheduler/{customer}/on_event` handler schedules the follow-ups the event
calls for — a welcome email in a minute, an activation check in a day, a feedback survey in a
week — each a delayed send of `scheduler/{customer}/run_task`. The timers are durable: they fire
after a restart, and nothing waits in memory meanwhile. The handler keeps each scheduled task's
invocation id in the customer's state, so `cancel` (the customer closed the account) can cancel
the ones still pending with `ctx.cancel_invocation(id)`: a scheduled invocation cancelled before
its time completes at once, with a 409 "cancelled" failure, and never runs.

    POST /scheduler/ada/on_event  {"kind": "signed_up"}      → the three tasks, by id
    POST /scheduler/ada/pending_tasks                        → what is still to run
    POST /scheduler/ada/cancel                               → cancels what is still pending

Run the demo (delays shortened to seconds):  python examples/task_scheduler.py
Served:  perdure dev examples/task_scheduler.py:app
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import perdure
from perdure import ObjectContext, ObjectSharedContext, TerminalError, VirtualObject


@dataclass
class Event:
    kind: str  # "signed_up", "ordered", ...
    detail: str = ""


@dataclass
class Task:
    name: str
    detail: str = ""


#: The follow-ups each kind of event schedules: (task name, delay).
FOLLOW_UPS: dict[str, list[tuple[str, timedelta]]] = {
    "signed_up": [
        ("send welcome email", timedelta(minutes=1)),
        ("check activation", timedelta(days=1)),
        ("send feedback survey", timedelta(days=7)),
    ],
    "ordered": [("send order reminder", timedelta(hours=2))],
}


class Outbox:
    """Stand-in for the systems the tasks talk to (a mailer, a CRM): what was done, in order."""

    def __init__(self) -> None:
        self.done: list[tuple[str, str]] = []  # (customer, task name)

    def perform(self, customer: str, task: Task) -> str:
        self.done.append((customer, task.name))
        return f"{task.name} for {customer}: done"


outbox = Outbox()

scheduler = VirtualObject("scheduler")


@scheduler.handler()
async def on_event(ctx: ObjectContext, event: Event) -> dict[str, str]:
    """Schedule the event's follow-ups; returns {task name: invocation id}."""
    follow_ups = FOLLOW_UPS.get(event.kind)
    if follow_ups is None:
        raise TerminalError(f"no follow-ups for events of kind {event.kind!r}", status_code=400)
    pending: dict[str, str] = await ctx.get("pending") or {}
    scheduled = {}
    for name, delay in follow_ups:
        handle = ctx.object_send(run_task, key=ctx.key(), arg=Task(name, event.detail), delay=delay)
        scheduled[name] = await handle.invocation_id()
    pending.update(scheduled)
    ctx.set("pending", pending)
    return scheduled


@scheduler.handler()
async def run_task(ctx: ObjectContext, task: Task) -> str:
    """A follow-up whose time has come: do it, and strike it off the pending list."""
    result: str = await ctx.run(task.name, outbox.perform, args=(ctx.key(), task))
    pending: dict[str, str] = await ctx.get("pending") or {}
    if pending.get(task.name) == ctx.request().id:
        del pending[task.name]
        ctx.set("pending", pending)
    return result


@scheduler.handler()
async def cancel(ctx: ObjectContext) -> list[str]:
    """Cancel every task still pending; returns their names."""
    pending: dict[str, str] = await ctx.get("pending") or {}
    for invocation_id in pending.values():
        ctx.cancel_invocation(invocation_id)  # a task that already finished ignores it
    ctx.clear("pending")
    return sorted(pending)


@scheduler.handler(kind="shared")
async def pending_tasks(ctx: ObjectSharedContext) -> dict[str, str]:
    """The tasks still to run: {name: invocation id}."""
    pending: dict[str, str] = await ctx.get("pending") or {}
    return pending


app = perdure.App([scheduler])

# --- the demo -----------------------------------------------------------------------------------


async def demo(db: Path) -> None:
    db.parent.mkdir(parents=True, exist_ok=True)
    for stale in (db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")):
        stale.unlink(missing_ok=True)
    # Seconds instead of minutes, days and weeks, so the demo ends.
    FOLLOW_UPS["signed_up"] = [
        ("send welcome email", timedelta(seconds=1)),
        ("check activation", timedelta(seconds=2)),
        ("send feedback survey", timedelta(seconds=30)),
    ]
    async with perdure.Engine(app, store=f"sqlite:///{db}") as engine:
        for customer in ("ada", "bob"):
            scheduled = await engine.object_call(on_event, key=customer, arg=Event("signed_up"))
            print(f"{customer}: scheduled {', '.join(scheduled)}")
        await asyncio.sleep(2.5)
        print(f"after 2.5 s: done {outbox.done}")
        print(f"ada still pending: {sorted(await engine.object_call(pending_tasks, key='ada'))}")
        print(f"bob closes his account: cancelled {await engine.object_call(cancel, key='bob')}")
        print(f"bob still pending: {await engine.object_call(pending_tasks, key='bob')}")
        print(f"(ada's survey runs in about 30 s, from the journal in {db}, even after a restart)")


if __name__ == "__main__":
    asyncio.run(demo(Path(".perdure/task_scheduler.db")))
