"""Fixtures: one real tansu broker on a free loopback port for the whole session; topic factories."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import pytest
from aiokafka import AIOKafkaProducer

from perdure.kafka import Broker

_names = itertools.count()


@pytest.fixture(scope="session")
def broker() -> Iterator[Broker]:
    """A tansu broker (memory storage) shared by the session's Kafka tests; stopped by pid after."""
    b = Broker()
    asyncio.run(b.start())
    try:
        yield b
    finally:
        asyncio.run(b.stop())


@pytest.fixture
def topic(broker: Broker) -> Callable[..., Awaitable[str]]:
    """Factory: `name = await topic(partitions=2)` creates a fresh, uniquely named topic."""

    async def create(partitions: int = 1) -> str:
        name = f"t{next(_names)}"
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
