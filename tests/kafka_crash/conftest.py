"""Fixtures: one tansu broker on a free loopback port for these tests; it outlives every engine kill."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterator

import pytest

from perdure.kafka import Broker

_names = itertools.count()


@pytest.fixture(scope="session")
def crash_broker() -> Iterator[Broker]:
    """A tansu broker (memory storage) in its own process; stopped by pid after the session."""
    b = Broker()
    asyncio.run(b.start())
    try:
        yield b
    finally:
        asyncio.run(b.stop())


@pytest.fixture
def new_topic(crash_broker: Broker) -> Iterator[str]:
    """A fresh, uniquely named topic name (created by the test with the partitions it needs)."""
    yield f"crash{next(_names)}"
