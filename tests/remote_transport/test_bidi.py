"""Bidirectional attempts over h2c against the official Python SDK: one attempt per handler."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest

from perdure.protocol import messages as pm
from perdure.runtime.remote import RemoteOptions

from .conftest import start_hypercorn, stop
from .driver import Driver, deployment, output_of

MakeDriver = Callable[..., Driver]


@pytest.fixture
async def make(sdk_url: str) -> AsyncIterator[MakeDriver]:
    made: list[Driver] = []

    def make_driver(*, version: int = 6, answer: bool = True, **options: float) -> Driver:
        d = Driver(
            deployment(sdk_url, bidi=True, http="2", version=version),
            answer=answer,
            options=RemoteOptions(**options),  # type: ignore[arg-type]
        )
        made.append(d)
        return d

    yield make_driver
    for d in made:
        await d.invoker.stop()


@pytest.mark.parametrize("version", [6, 7])
async def test_run_completes_in_one_attempt(make: MakeDriver, version: int) -> None:
    """V6 gets the RunCompletion echoed; V7 asks for an ack (REQUESTED_ACK) and gets one."""
    driver = make(version=version)
    inv = driver.call("Greeter", "steps", "x")
    end = await driver.ended(inv)
    assert isinstance(end, pm.EndMessage), end
    assert output_of(driver.messages(inv)) == "2-1-x"
    assert driver.attempts[inv] == 1
    proposals = [m for m in driver.messages(inv) if isinstance(m, pm.ProposeRunCompletionMessage)]
    assert len(proposals) == 2


async def test_sleep_answered_while_the_stream_stays_open(make: MakeDriver) -> None:
    driver = make(version=7)
    inv = driver.call("Greeter", "nap", 150)
    end = await driver.ended(inv)
    assert isinstance(end, pm.EndMessage), end
    assert output_of(driver.messages(inv)) == "rested"


async def test_large_frames_both_ways_respect_flow_control(make: MakeDriver) -> None:
    """A 3 MB run result exceeds every window: read in pieces, echoed back in pieces."""
    driver = make(version=6)
    inv = driver.call("Greeter", "big", 3_000_000)
    end = await driver.ended(inv)
    assert isinstance(end, pm.EndMessage), end
    assert output_of(driver.messages(inv)) == 3_000_000


async def test_concurrent_attempts_share_one_connection(make: MakeDriver) -> None:
    driver = make()
    invs = [driver.call("Greeter", "nap", 200) for _ in range(6)]
    await asyncio.sleep(0.1)
    assert driver.invoker.active == 6
    assert driver.invoker.connections == 1
    for inv in invs:
        assert isinstance(await driver.ended(inv), pm.EndMessage)
    assert driver.invoker.connections_opened == 1


async def test_stream_cap_opens_another_connection(make: MakeDriver) -> None:
    driver = make(max_streams_per_connection=2)
    invs = [driver.call("Greeter", "nap", 300) for _ in range(3)]
    for inv in invs:
        assert isinstance(await driver.ended(inv), pm.EndMessage)
    assert driver.invoker.connections_opened == 2


async def test_a_connection_is_recycled_after_its_share_of_streams(make: MakeDriver) -> None:
    """Before a server's own per-connection request limit cuts streams in flight (hypercorn: 1,000)."""
    driver = make(recycle_after_streams=2)
    for n in range(5):
        inv = driver.call("Greeter", "shout", f"r{n}")
        assert isinstance(await driver.ended(inv), pm.EndMessage)
    assert driver.invoker.connections_opened == 3
    assert driver.invoker.connections <= 1


async def test_inactivity_closes_the_request_and_the_sdk_suspends(make: MakeDriver) -> None:
    driver = make(inactivity_timeout=0.3)
    inv = driver.call("Greeter", "wait", "")
    loop = asyncio.get_running_loop()
    began = loop.time()
    end = await driver.ended(inv)
    assert isinstance(end, pm.SuspensionMessage), end
    assert 0.3 <= loop.time() - began < 2
    assert driver.invoker.active == 0


async def test_abort_timeout_resets_an_attempt_that_does_not_end(make: MakeDriver) -> None:
    driver = make(inactivity_timeout=0.2, abort_timeout=0.3)
    inv = driver.call("Greeter", "slow", 5.0)
    end = await driver.ended(inv)
    assert isinstance(end, pm.ErrorMessage), end
    assert end.code == 504
    assert "aborted after 0.3 s" in end.message


async def test_abort_submits_nothing_more(make: MakeDriver) -> None:
    driver = make()
    inv = driver.call("Greeter", "slow", 0.5)
    await driver.until(lambda: any(isinstance(m, pm.RunCommand) for m in driver.messages(inv)))
    seen = len(driver.outputs)
    driver.invoker.abort(inv)
    assert driver.invoker.active == 0
    await asyncio.sleep(0.8)  # the closure finishes meanwhile: its proposal must not reach us
    assert len(driver.outputs) == seen


async def test_a_new_attempt_replaces_the_running_one(make: MakeDriver) -> None:
    driver = make()
    inv = driver.call("Greeter", "slow", 0.3)
    await driver.until(lambda: bool(driver.messages(inv, 1)))
    driver.resume(inv)  # attempt 2 replays the journal so far; attempt 1 is dropped
    assert driver.invoker.active == 1
    end = await driver.ended(inv)
    assert isinstance(end, pm.EndMessage), end
    await asyncio.sleep(0.4)  # attempt 1's closure has finished by now: nothing of it arrives
    assert [type(m) for m in driver.messages(inv, 1)] == [pm.RunCommand]
    assert output_of(driver.messages(inv, 2)) == "done"


async def test_all_blocked_when_no_frame_flows(make: MakeDriver) -> None:
    driver = make(version=7)
    inv = driver.call("Greeter", "wait", "")
    await asyncio.sleep(0.3)
    assert driver.invoker.active == 1
    assert driver.invoker.all_blocked
    driver.invoker.abort(inv)


async def test_many_attempts_multiplexed(make: MakeDriver) -> None:
    driver = make(version=7)
    invs = [driver.call("Greeter", "steps", str(i)) for i in range(40)]
    for i, inv in enumerate(invs):
        end = await driver.ended(inv)
        assert isinstance(end, pm.EndMessage), end
        assert output_of(driver.messages(inv)) == f"2-1-{i}"
    assert driver.invoker.connections_opened == 1
    assert driver.invoker.active == 0


async def test_connection_closed_by_an_idle_server_is_replaced() -> None:
    """hypercorn closes idle connections (GOAWAY) after --keep-alive s: the next attempt reconnects."""
    proc, url = start_hypercorn("--keep-alive", "1")
    driver = Driver(deployment(url, bidi=True, http="2", version=7))
    try:
        first = driver.call("Greeter", "shout", "a")
        assert isinstance(await driver.ended(first), pm.EndMessage)
        await asyncio.sleep(1.5)
        assert driver.invoker.connections == 0
        second = driver.call("Greeter", "shout", "b")
        assert isinstance(await driver.ended(second), pm.EndMessage)
        assert output_of(driver.messages(second)) == "B!"
        assert driver.invoker.connections_opened == 2
    finally:
        await driver.invoker.stop()
        stop(proc)
