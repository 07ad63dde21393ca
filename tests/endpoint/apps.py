"""Handlers the endpoint tests serve: one per protocol feature, and one per kind of type hint."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import TypedDict

import msgspec
import pydantic

import perdure
from perdure import (
    Context,
    HandlerOptions,
    ObjectContext,
    ObjectSharedContext,
    RetryPolicy,
    TerminalError,
    WorkflowContext,
    WorkflowSharedContext,
)

# ---- protocol features

counter = perdure.VirtualObject("counter")


@counter.handler()
async def add(ctx: ObjectContext, n: int) -> int:
    total = (await ctx.get("total") or 0) + n
    ctx.set("total", total)
    return total


@counter.handler(kind="shared")
async def get(ctx: ObjectSharedContext) -> int:
    return int(await ctx.get("total") or 0)


steps = perdure.Service("steps")


@steps.handler()
async def run_then_sleep(ctx: Context, name: str) -> str:
    value = await ctx.run("side", lambda: f"ran {name}")
    await ctx.sleep(timedelta(milliseconds=10))
    return f"{value}, slept"


@steps.handler()
async def wait_awakeable(ctx: Context) -> str:
    _, future = ctx.awakeable()
    return str(await future)


@steps.handler()
async def lucky(ctx: Context) -> int:
    return ctx.random().randint(0, 1_000_000)


@steps.handler()
async def refuse(ctx: Context, reason: str) -> None:
    raise TerminalError(reason, 422)


@steps.handler()
async def crash(ctx: Context) -> None:
    raise RuntimeError("boom")


protocol_app = perdure.App([counter, steps])

# ---- type hints and options, as the manifest describes them


@dataclass
class Point:
    x: int
    y: int = 0


class Colour(msgspec.Struct):
    name: str
    rgb: tuple[int, int, int]


class Label(TypedDict):
    text: str


class Person(pydantic.BaseModel):
    name: str
    age: int


shapes = perdure.Service(
    "shapes",
    options=HandlerOptions(
        inactivity_timeout=timedelta(seconds=30),
        idempotency_retention=timedelta(hours=1),
        documentation="Geometry",
    ),
)


@shapes.handler()
async def move(ctx: Context, p: Point) -> Point:
    return Point(p.x + 1, p.y)


@shapes.handler(options=HandlerOptions(journal_retention=timedelta(minutes=5)))
async def paint(ctx: Context, c: Colour) -> Label:
    return {"text": c.name}


@shapes.handler()
async def greet(ctx: Context, person: Person) -> str:
    return person.name


@shapes.handler()
async def raw(ctx: Context, data: bytes) -> bytes:
    return data


@shapes.handler()
async def nothing(ctx: Context) -> None:
    return None


@shapes.handler()
async def untyped(ctx, value):  # type: ignore[no-untyped-def]
    return value


@shapes.handler()
async def maybe(ctx: Context, names: list[str]) -> int | None:
    return len(names) or None


signup = perdure.Workflow(
    "signup", options=HandlerOptions(workflow_retention=timedelta(days=2), retry_policy=RetryPolicy())
)


@signup.main(
    options=HandlerOptions(
        retry_policy=RetryPolicy(
            initial_interval=timedelta(milliseconds=100),
            factor=3.0,
            max_interval=timedelta(seconds=10),
            max_attempts=5,
            on_max_attempts="kill",
        )
    )
)
async def run(ctx: WorkflowContext, email: str) -> str:
    return email


@signup.handler()
async def click(ctx: WorkflowSharedContext, secret: str) -> None:
    return None


typed_app = perdure.App([shapes])
options_app = perdure.App([shapes, signup])
