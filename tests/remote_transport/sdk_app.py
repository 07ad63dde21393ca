"""Handlers served by the official Python SDK under hypercorn, plus misbehaving endpoints.

Run as `hypercorn sdk_app:app` from this directory. Paths under the prefixes in `app` answer like
a broken deployment would; everything else goes to the SDK (which matches the path's suffix).
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import restate

greeter = restate.Service("Greeter")


@greeter.handler()
async def greet(ctx: restate.Context, name: str) -> str:
    return f"hello {name}"


@greeter.handler()
async def shout(ctx: restate.Context, name: str) -> str:
    loud = await ctx.run_typed("upper", lambda: name.upper())
    return f"{loud}!"


@greeter.handler()
async def steps(ctx: restate.Context, name: str) -> str:
    one = await ctx.run_typed("one", lambda: f"1-{name}")
    two = await ctx.run_typed("two", lambda: f"2-{one}")
    return two


@greeter.handler()
async def nap(ctx: restate.Context, ms: int) -> str:
    await ctx.sleep(timedelta(milliseconds=ms))
    return "rested"


@greeter.handler()
async def wait(ctx: restate.Context, _: str) -> str:
    _, future = ctx.awakeable(type_hint=str)
    return await future


@greeter.handler()
async def slow(ctx: restate.Context, seconds: float) -> str:
    async def work() -> str:
        await asyncio.sleep(seconds)
        return "done"

    return await ctx.run_typed("work", work)


@greeter.handler()
async def big(ctx: restate.Context, size: int) -> int:
    blob = await ctx.run_typed("blob", lambda: "x" * size)
    return len(blob)


sdk = restate.app(services=[greeter])


async def _answer(send: Any, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def app(scope: Any, receive: Any, send: Any) -> None:
    path = scope.get("path", "") if scope["type"] == "http" else ""
    request_type = dict(scope.get("headers", [])).get(b"content-type", b"")
    if path.startswith("/fail500/"):
        await _answer(send, 500, [(b"content-type", b"text/plain")], b"boom: the handler host is broken")
    elif path.startswith("/busy/"):
        await _answer(send, 503, [(b"retry-after", b"7")], b"busy, come back later")
    elif path.startswith("/noend/"):
        await _answer(send, 200, [(b"content-type", request_type)], b"")
    elif path.startswith("/garbage/"):
        await _answer(send, 200, [(b"content-type", request_type)], b"\x03\x00\x00\x00\x00\x00\x00\x00")
    elif path.startswith("/strict/") and not request_type.endswith((b".v5", b".v6", b".v7")):
        # what restate-server expects of an SDK for a version it does not speak (1.2.0 answers 500)
        await _answer(send, 415, [(b"content-type", b"text/plain")], b"unsupported protocol version")
    elif path.startswith("/wrongtype/"):
        await _answer(send, 200, [(b"content-type", b"text/html")], b"<html>hello</html>")
    else:
        await sdk(scope, receive, send)
