"""Fixtures: one real tansu broker on a free loopback port for the whole session; topic factories."""

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Callable

import pytest

from perdure.kafka import Broker

_names = itertools.count()


@pytest.fixture
def topic(broker: Broker) -> Callable[..., Awaitable[str]]:
    """Factory: `name = await topic(partitions=2)` creates a fresh, uniquely named topic."""

    async def create(partitions: int = 1) -> str:
        name = f"t{next(_names)}"
        await broker.create_topic(name, partitions)
        return name

    return create
