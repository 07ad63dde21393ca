"""Fixtures: one real tansu broker on a free loopback port for this package; topics; a producer."""

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Callable

import pytest

from perdure.kafka import Broker

_names = itertools.count()


@pytest.fixture
def topic(broker: Broker) -> Callable[..., Awaitable[str]]:
    """Factory: `name = await topic("user-updates", partitions=4)` creates a fresh, unique topic."""

    async def create(prefix: str = "t", partitions: int = 1) -> str:
        name = f"{prefix}-{next(_names)}"
        await broker.create_topic(name, partitions)
        return name

    return create
