"""The simulated app: real perdure handlers whose side effects are recorded by the simulator.

`build_app(effects)` defines the handlers as closures over `effects`, so every world has its
own app and nothing is shared between seeds. What the handlers do is decided by their input
(`Op`), which the workload generator draws from the seed.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

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
from perdure.retry import RetryPolicy
from perdure.sdk.options import HandlerOptions

COUNTER, WORKER, FLOW = "counter", "worker", "flow"

#: Faults make attempts fail often; the simulation checks liveness, not the retry budget.
RETRY = HandlerOptions(
    retry_policy=RetryPolicy(initial_interval=timedelta(milliseconds=50), max_attempts=None),
    inactivity_timeout=timedelta(seconds=5),
)


class Op(msgspec.Struct, frozen=True):
    """One `counter/add`: add `n` to the key's total and append `id` to its log, after doing
    whatever else the flags ask for (sleep, a call, an awakeable, a send to another key)."""

    id: str
    n: int
    sleep_ms: int = 0
    compute: bool = False
    awakeable: bool = False
    send_to: str | None = None
    send_n: int = 0
    send_delay_ms: int = 0


class Resolve(msgspec.Struct, frozen=True):
    awakeable_id: str
    value: int


class Effects:
    """Called from `ctx.run` steps: counts executions and lets the simulator check that a step
    whose result is stored never runs again (`check` is set by the world)."""

    def __init__(self) -> None:
        self.runs: dict[tuple[str, str], int] = {}
        self.check: Callable[[str, str], None] = lambda invocation_id, name: None

    def run(self, invocation_id: str, name: str) -> int:
        self.check(invocation_id, name)
        key = (invocation_id, name)
        self.runs[key] = self.runs.get(key, 0) + 1
        return 1


def build_app(effects: Effects) -> perdure.App:
    counter = perdure.VirtualObject(COUNTER, options=RETRY)
    worker = perdure.Service(WORKER, options=RETRY)
    flow = perdure.Workflow(FLOW, options=RETRY)

    @worker.handler()
    async def compute(ctx: Context, n: int) -> int:
        await ctx.run("compute", effects.run, args=(ctx.request().id, "compute"))
        if n % 3 == 0:
            await ctx.sleep(timedelta(milliseconds=200))
        return n

    @worker.handler()
    async def resolve(ctx: Context, r: Resolve) -> None:
        ctx.resolve_awakeable(r.awakeable_id, r.value)

    @counter.handler()
    async def add(ctx: ObjectContext, op: Op) -> int:
        me = ctx.request().id
        await ctx.run("effect", effects.run, args=(me, "effect"))
        if op.sleep_ms:
            await ctx.sleep(timedelta(milliseconds=op.sleep_ms))
        if op.compute:
            # Every other call is idempotent by n: adds with the same n share one computation.
            idempotency_key = f"n{op.n}" if op.n % 2 else None
            if await ctx.service_call(compute, arg=op.n, idempotency_key=idempotency_key) != op.n:
                raise TerminalError("compute returned another number")
        if op.awakeable:
            awakeable_id, result = ctx.awakeable(type_hint=int)
            ctx.service_send(resolve, arg=Resolve(awakeable_id, op.n))
            if await result != op.n:
                raise TerminalError("the awakeable carried another number")
        if op.send_to is not None:
            child = Op(id=f"{op.id}>", n=op.send_n)
            delay = timedelta(milliseconds=op.send_delay_ms) if op.send_delay_ms else None
            ctx.object_send(add, key=op.send_to, arg=child, delay=delay)
        total = (await ctx.get("total", type_hint=int)) or 0
        log = (await ctx.get("log", type_hint=list[str])) or []
        ctx.set("total", total + op.n)
        ctx.set("log", [*log, op.id])
        return total + op.n

    @counter.handler(kind="shared")
    async def get(ctx: ObjectSharedContext) -> int:
        return int((await ctx.get("total", type_hint=int)) or 0)

    @flow.main()
    async def run(ctx: WorkflowContext, x: int) -> int:
        ctx.set("status", "waiting")
        await ctx.run("effect", effects.run, args=(ctx.request().id, "effect"))
        value = int(await ctx.promise("go", type_hint=int).value())
        ctx.set("status", "done")
        return value + x

    @flow.handler()
    async def signal(ctx: WorkflowSharedContext, value: int) -> str:
        try:
            await ctx.promise("go", type_hint=int).resolve(value)
        except TerminalError:
            return "late"
        return "won"

    return perdure.App([counter, worker, flow])
