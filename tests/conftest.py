"""Shared fixtures: real HTTP servers on free loopback ports; one real Kafka broker (tansu); fresh
PostgreSQL databases (on 127.0.0.1:5432, or PERDURE_TEST_POSTGRES)."""

from __future__ import annotations

import asyncio
import itertools
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import psycopg
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


#: The PostgreSQL server tests create their databases on (trust auth, user postgres).
POSTGRES = os.environ.get("PERDURE_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432")
_databases = itertools.count()


def _admin() -> psycopg.Connection[Any]:
    try:
        return psycopg.connect(f"{POSTGRES}/postgres", autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as e:
        raise RuntimeError(
            f"the tests need PostgreSQL at {POSTGRES} (trust auth, user postgres): {e}".strip()
            + " — start it (`pg_ctlcluster 15 main start`) or set PERDURE_TEST_POSTGRES"
        ) from None


@pytest.fixture
def postgres() -> Iterator[Callable[[], str]]:
    """Factory: `url = postgres()` creates an empty database of the test's own; dropped afterwards."""
    created: list[str] = []

    def create() -> str:
        name = f"perdure_test_{os.getpid()}_{next(_databases)}"
        with _admin() as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
            admin.execute(f"CREATE DATABASE {name}")
        created.append(name)
        return f"{POSTGRES}/{name}"

    yield create
    if created:
        with _admin() as admin:
            for name in created:
                admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture(params=["memory", "postgres"])
def backend(
    request: pytest.FixtureRequest, postgres: Callable[[], str], monkeypatch: pytest.MonkeyPatch
) -> str:
    """Runs a test on each backend a `Harness` made without a store can have: memory, and a
    PostgreSQL database of the test's own (a cluster of one node with four partitions)."""
    from perdure.testing import Harness

    if request.param == "postgres":
        monkeypatch.setattr(Harness, "default_store", postgres())
        monkeypatch.setattr(Harness, "default_partitions", 4)
    return str(request.param)
