"""The endpoint behind real HTTP servers: hypercorn (HTTP/1.1 and h2c) and uvicorn (HTTP/1.1),
driven by httpx (request/response: it sends the whole body before reading the answer)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest
from hypercorn.asyncio import serve as hypercorn_serve
from hypercorn.config import Config

from perdure.protocol.codec import decode_frames
from perdure.runtime.http import Served

from .apps import protocol_app
from .asgi import V, frames, input_command, names, start_message

ACCEPT = {"accept": "application/vnd.restate.endpointmanifest.v4+json"}


@pytest.fixture
async def hypercorn() -> AsyncIterator[str]:
    """protocol_app under hypercorn on this loop, on a pre-bound free loopback port."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = Config()
    config.bind = [f"fd://{sock.detach()}"]  # hypercorn takes the socket over
    config.accesslog = config.errorlog = None
    stop = asyncio.Event()
    task = asyncio.get_running_loop().create_task(
        hypercorn_serve(protocol_app, config, shutdown_trigger=stop.wait)
    )
    url = f"http://127.0.0.1:{port}"
    async with httpx.AsyncClient() as client:
        for _ in range(200):
            with contextlib.suppress(httpx.HTTPError):
                if (await client.get(f"{url}/health")).status_code == 200:
                    break
            await asyncio.sleep(0.01)
    yield url
    stop.set()
    await asyncio.wait_for(task, 10)


async def _exercise(url: str, client: httpx.AsyncClient) -> dict[str, Any]:
    discovered = await client.get(f"{url}/discover", headers=ACCEPT)
    done = await client.post(
        f"{url}/invoke/counter/add",
        content=frames(start_message(key="a", state={}), input_command(b"4")),
        headers={"content-type": V.format(6)},
    )
    suspended = await client.post(
        f"{url}/invoke/steps/run_then_sleep",
        content=frames(start_message(), input_command(b'"x"')),
        headers={"content-type": V.format(7)},
    )
    missing = await client.post(
        f"{url}/invoke/counter/nope", content=b"", headers={"content-type": V.format(6)}
    )
    return {
        "mode": json.loads(discovered.content)["protocolMode"],
        "http": discovered.http_version,
        "done": (done.headers["content-type"], names(decode_frames(done.content))),
        "suspended": names(decode_frames(suspended.content)),
        "missing": missing.status_code,
    }


EXPECTED = {
    "done": (V.format(6), ["GetEagerStateCommand", "SetStateCommand", "OutputCommand", "End"]),
    "suspended": ["RunCommand", "ProposeRunCompletion", "Suspension"],
    "missing": 404,
}


async def test_hypercorn_http11(hypercorn: str) -> None:
    async with httpx.AsyncClient(timeout=5) as client:
        seen = await _exercise(hypercorn, client)
    assert seen == {"mode": "REQUEST_RESPONSE", "http": "HTTP/1.1", **EXPECTED}


async def test_hypercorn_h2c(hypercorn: str) -> None:
    async with httpx.AsyncClient(http1=False, http2=True, timeout=5) as client:
        seen = await _exercise(hypercorn, client)
    assert seen == {"mode": "BIDI_STREAM", "http": "HTTP/2", **EXPECTED}


async def test_uvicorn_http11(http_server: Callable[[Any], Awaitable[Served]]) -> None:
    served = await http_server(protocol_app)
    async with httpx.AsyncClient(timeout=5) as client:
        seen = await _exercise(served.url, client)
    assert seen == {"mode": "REQUEST_RESPONSE", "http": "HTTP/1.1", **EXPECTED}
