"""Shared fixtures: real HTTP servers on free loopback ports."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from perdure.runtime.http import Served, serve


@pytest.fixture
async def http_server() -> AsyncIterator[Callable[[Any], Awaitable[Served]]]:
    """Factory: `served = await http_server(asgi_app)`; `served.url` is its base URL."""
    started: list[Served] = []

    async def start(app: Any) -> Served:
        served = await serve(app, "127.0.0.1", 0)
        started.append(served)
        return served

    yield start
    for served in reversed(started):
        await served.stop()
