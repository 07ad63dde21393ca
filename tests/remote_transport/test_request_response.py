"""Request/response attempts against the official Python SDK: HTTP/1.1 (perdure's h11 client) and
h2c (the HTTP/2 pool, request body closed after the journal)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from perdure.protocol import messages as pm

from .driver import Driver, deployment, output_of


@pytest.fixture(params=["1.1", "2"])
async def driver(request: pytest.FixtureRequest, sdk_url: str) -> AsyncIterator[Driver]:
    d = Driver(deployment(sdk_url, bidi=False, http=request.param))
    yield d
    await d.invoker.stop()


async def test_echo_ends_in_one_attempt(driver: Driver) -> None:
    inv = driver.call("Greeter", "greet", "ada")
    end = await driver.ended(inv)
    assert isinstance(end, pm.EndMessage)
    assert output_of(driver.messages(inv)) == "hello ada"
    assert driver.invoker.active == 0


async def test_run_suspends_then_completes_on_replay(driver: Driver) -> None:
    inv = driver.call("Greeter", "steps", "x")
    first = await driver.ended(inv)
    assert isinstance(first, pm.SuspensionMessage)
    end, attempts = await driver.complete(inv)
    assert isinstance(end, pm.EndMessage)
    assert attempts == 3  # one suspension per ctx.run
    assert output_of(driver.messages(inv)) == "2-1-x"


async def test_sequential_attempts_reuse_one_connection(driver: Driver) -> None:
    for n in range(4):
        inv = driver.call("Greeter", "greet", f"n{n}")
        assert isinstance(await driver.ended(inv), pm.EndMessage)
        for _ in range(100):  # the response is read to its end, then the connection goes back
            if not driver.invoker.tasks:
                break
            await asyncio.sleep(0.01)
    assert driver.invoker.connections_opened == 1
