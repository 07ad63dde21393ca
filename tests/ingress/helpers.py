"""The test app and assertions shared by the ingress tests."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

import httpx
import msgspec

import perdure
from perdure import Context, ObjectContext, ObjectSharedContext, Service, TerminalError, VirtualObject


class Point(msgspec.Struct):
    x: int
    y: int


@dataclass
class Record:
    """What the test app's handlers saw."""

    runs: dict[str, int] = field(default_factory=dict)

    def ran(self, name: str) -> None:
        self.runs[name] = self.runs.get(name, 0) + 1


def build_app(record: Record) -> perdure.App:
    """`greeter` (a service) and `counter` (a virtual object) with handlers for every case."""
    greeter = Service("greeter")

    @greeter.handler()
    async def greet(ctx: Context, name: str) -> str:
        return f"hello {name}"

    @greeter.handler()
    async def headers(ctx: Context) -> dict[str, str]:
        return dict(ctx.request().headers)

    @greeter.handler()
    async def noinput(ctx: Context) -> str:
        return "ok"

    @greeter.handler()
    async def maybe(ctx: Context, name: str | None) -> str:
        return f"maybe {name}"

    @greeter.handler()
    async def echo(ctx: Context, data: bytes) -> bytes:
        return data

    @greeter.handler()
    async def point(ctx: Context, p: Point) -> int:
        return p.x + p.y

    @greeter.handler()
    async def nothing(ctx: Context) -> None:
        return None

    @greeter.handler()
    async def fail(ctx: Context, code: int) -> str:
        raise TerminalError("nope z", status_code=code)

    @greeter.handler()
    async def once(ctx: Context, name: str) -> str:
        record.ran(f"once:{name}")
        return f"once {name} #{record.runs[f'once:{name}']}"

    @greeter.handler()
    async def sleepy(ctx: Context, seconds: int) -> str:
        await ctx.sleep(timedelta(seconds=seconds))
        return "woke"

    counter = VirtualObject("counter")

    @counter.handler()
    async def add(ctx: ObjectContext, n: int) -> int:
        total: int = (await ctx.get("total") or 0) + n
        ctx.set("total", total)
        record.ran(f"add:{ctx.key()}")
        return total

    @counter.handler(kind="shared")
    async def get(ctx: ObjectSharedContext) -> int:
        total: int = await ctx.get("total") or 0
        return total

    return perdure.App([greeter, counter])


JSON = {"content-type": "application/json"}


def assert_error(response: httpx.Response, status: int, source: str, message: str | None = None) -> None:
    """A Restate-shaped error: status, JSON body with code/message/source, and the source header."""
    assert response.status_code == status, response.text
    assert response.headers["x-restate-error-source"] == source
    body = response.json()
    assert body["code"] == status and body["source"] == source, body
    if message is not None:
        assert message in body["message"], body
