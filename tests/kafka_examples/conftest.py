"""Fixtures: one real tansu broker on a free loopback port for this package; topics; a producer."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import pytest
from aiokafka import AIOKafkaProducer

from perdure.kafka import Broker

_names = itertools.count()


@pytest.fixture(scope="package")
def broker() -> Iterator[Broker]:
    """A tansu broker (memory storage) shared by these tests; stopped by pid after them."""
    b = Broker()
    asyncio.run(b.start())
    try:
        yield b
    finally:
        asyncio.run(b.stop())


@pytest.fixture
def topic(broker: Broker) -> Callable[..., Awaitable[str]]:
    """Factory: `name = await topic("user-updates", partitions=4)` creates a fresh, unique topic."""

    async def create(prefix: str = "t", partitions: int = 1) -> str:
        name = f"{prefix}-{next(_names)}"
        await broker.create_topic(name, partitions)
        return name

    return create


@pytest.fixture
async def producer(broker: Broker) -> AsyncIterator[AIOKafkaProducer]:
    p = AIOKafkaProducer(bootstrap_servers=broker.bootstrap_servers, linger_ms=2)
    await p.start()
    try:
        yield p
    finally:
        await p.stop()
