"""perdure: lightweight, transactional event processing for Python.

Handlers are ordinary async functions whose every step is journaled: after a crash they resume
where they stopped. Virtual objects get a queue and consistent state per key.

    import perdure
    from perdure import ObjectContext, VirtualObject

    counter = VirtualObject("counter")

    @counter.handler()
    async def add(ctx: ObjectContext, n: int) -> int:
        total = (await ctx.get("total") or 0) + n
        ctx.set("total", total)
        return total

    async with perdure.Engine(perdure.App([counter]), store="sqlite:///perdure.db") as engine:
        await engine.object_call(add, key="a", arg=5)
"""

from perdure.errors import (
    ConflictError,
    InvalidInputError,
    JournalMismatchError,
    PerdureError,
    SerdeError,
    TerminalError,
    UnknownTargetError,
)
from perdure.retry import RetryPolicy
from perdure.runtime.clock import Clock, ManualClock, SystemClock
from perdure.runtime.node import Engine
from perdure.sdk.context import (
    Context,
    DurablePromise,
    ObjectContext,
    ObjectSharedContext,
    Request,
    WorkflowContext,
    WorkflowSharedContext,
)
from perdure.sdk.futures import gather, select
from perdure.sdk.options import HandlerOptions
from perdure.sdk.service import App, KafkaSubscription, Service, VirtualObject, Workflow

__version__ = "0.1.0"

__all__ = [
    "App",
    "Clock",
    "ConflictError",
    "Context",
    "DurablePromise",
    "Engine",
    "HandlerOptions",
    "InvalidInputError",
    "JournalMismatchError",
    "KafkaSubscription",
    "ManualClock",
    "ObjectContext",
    "ObjectSharedContext",
    "PerdureError",
    "Request",
    "RetryPolicy",
    "SerdeError",
    "Service",
    "SystemClock",
    "TerminalError",
    "UnknownTargetError",
    "VirtualObject",
    "Workflow",
    "WorkflowContext",
    "WorkflowSharedContext",
    "__version__",
    "gather",
    "select",
]
