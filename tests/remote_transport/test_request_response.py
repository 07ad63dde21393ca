"""Request/response attempts (httpx) against the official Python SDK over HTTP/1.1 and h2c."""

from __future__ import annotations

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
