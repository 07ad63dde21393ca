"""Shared fixtures: real HTTP servers on free loopback ports; one real Kafka broker (tansu)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

from perdure.kafka import Broker
from perdure.runtime.http import Served, serve


@pytest.fixture(scope="session")
def broker() -> Iterator[Broker]:
    """A tansu broker (memory storage) on a free loopback port, shared by the session's Kafka
    tests (each uses topics of its own); stopped by pid after them."""
    b = Broker()
    asyncio.run(b.start())
    try:
        yield b
    finally:
        asyncio.run(b.stop())


@pytest.fixture
async def producer(broker: Broker) -> AsyncIterator[AIOKafkaProducer]:
    p = AIOKafkaProducer(bootstrap_servers=broker.bootstrap_servers, linger_ms=2)
    await p.start()
    try:
        yield p
    finally:
        await p.stop()


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
