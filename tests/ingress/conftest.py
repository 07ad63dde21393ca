"""Fixtures: a test app behind a real ingress (uvicorn on a free port) and an httpx client to it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

import perdure
from perdure.ingress import Ingress
from perdure.runtime.http import Served
from perdure.testing import Harness

from .helpers import Record, build_app


@dataclass
class Stack:
    """An engine (a `Harness` on a `ManualClock`) behind an ingress, and a client to it."""

    h: Harness
    ingress: Ingress
    served: Served
    client: httpx.AsyncClient
    record: Record

    @property
    def url(self) -> str:
        return self.served.url


StartStack = Callable[..., Awaitable[Stack]]


@pytest.fixture
async def start_stack(http_server: Callable[[Any], Awaitable[Served]]) -> AsyncIterator[StartStack]:
    """Factory: `stack = await start_stack(app=None, **ingress_options)` (default: the test app)."""
    opened: list[tuple[Harness, httpx.AsyncClient]] = []

    async def start(app: perdure.App | None = None, **options: Any) -> Stack:
        record = Record()
        h = Harness(app or build_app(record))
        await h.start()
        ingress = Ingress(h, **options)
        served = await http_server(ingress)
        client = httpx.AsyncClient(base_url=served.url, timeout=10)
        opened.append((h, client))
        return Stack(h, ingress, served, client, record)

    yield start
    for h, client in reversed(opened):
        await client.aclose()
        await h.stop()


@pytest.fixture
async def stack(start_stack: StartStack) -> Stack:
    return await start_stack()
