"""End-to-end behaviour of the durable core, in-process on the memory store with a ManualClock."""

from __future__ import annotations

import asyncio
import gc
import tracemalloc
from datetime import timedelta

import pytest

import perdure
from perdure import (
    Context,
    ObjectContext,
    ObjectSharedContext,
    RetryPolicy,
    Service,
    TerminalError,
    VirtualObject,
)
from perdure.storage.api import Status
from perdure.testing import Harness

pytestmark = pytest.mark.usefixtures("backend")  # memory and PostgreSQL

# ---- queue per key ------------------------------------------------------------------------------

queue = VirtualObject("queue")
order: list[tuple[str, int]] = []


@queue.handler()
async def work(ctx: ObjectContext, n: int) -> int:
    if n < 0:
        await ctx.sleep(timedelta(hours=1))
    order.append((ctx.key(), n))
    seen = (await ctx.get("seen")) or []
    ctx.set("seen", [*seen, n])
    return n


async def test_a_sleeping_key_blocks_only_itself() -> None:
    order.clear()
    async with Harness(perdure.App([queue])) as h:
        sleeper = await h.object_send(work, key="A", arg=-1)
        later = [await h.object_send(work, key="A", arg=i) for i in range(1, 4)]
        others = await asyncio.gather(*(h.object_call(work, key=f"B{i}", arg=i) for i in range(100)))
        assert others == list(range(100))
        await h.settle()
        assert h.status(sleeper).status is Status.SUSPENDED
        assert [h.status(i).status for i in later] == [Status.PENDING] * 3
        assert h.invoker.active == 0  # the sleeper is suspended, not a parked coroutine
        assert not [k for k, _ in order if k == "A"]

        await h.advance(timedelta(hours=1))
        assert [n for k, n in order if k == "A"] == [-1, 1, 2, 3]
        assert h.state("queue", "A") == {"seen": [-1, 1, 2, 3]}
        assert all(h.status(i).status is Status.COMPLETED for i in [sleeper, *later])


# ---- retries ------------------------------------------------------------------------------------

flaky = Service("flaky")
attempts: dict[str, list[int]] = {}
FAST = RetryPolicy(initial_interval=timedelta(seconds=1), factor=2, max_attempts=4)


@flaky.handler(options=perdure.HandlerOptions(retry_policy=FAST))
async def fails_twice(ctx: Context, tag: str) -> str:
    attempts.setdefault(tag, []).append(int(await ctx.run("t", lambda: 0)) or 0)
    times = attempts[tag]
    if len(times) <= 2:
        raise RuntimeError(f"transient failure {len(times)}")
    return f"ok after {len(times)}"


@flaky.handler(options=perdure.HandlerOptions(retry_policy=FAST))
async def always_fails(ctx: Context) -> None:
    attempts.setdefault("always", []).append(0)
    raise ConnectionError("downstream is down")


@flaky.handler(options=perdure.HandlerOptions(retry_policy=FAST))
async def terminal(ctx: Context) -> None:
    attempts.setdefault("terminal", []).append(0)
    raise TerminalError("bad request", status_code=422)


async def test_transient_failures_retry_with_backoff() -> None:
    attempts.clear()
    async with Harness(perdure.App([flaky])) as h:
        invocation_id = await h.service_send(fails_twice, arg="x")
        await h.settle()
        assert len(attempts["x"]) == 1
        inv = h.status(invocation_id)
        assert inv.status is Status.BACKING_OFF
        assert inv.last_failure is not None and "transient failure 1" in inv.last_failure.message
        await h.advance(0.999)
        assert len(attempts["x"]) == 1  # not before the 1 s backoff
        await h.advance(0.001)
        assert len(attempts["x"]) == 2
        await h.advance(1.999)  # second backoff is 2 s
        assert len(attempts["x"]) == 2
        await h.advance(0.001)
        assert h.status(invocation_id).status is Status.COMPLETED
        assert h.status(invocation_id).attempt == 3
        assert (await h.attach(invocation_id)).value == b'"ok after 3"'


async def test_terminal_error_is_never_retried() -> None:
    attempts.clear()
    async with Harness(perdure.App([flaky])) as h:
        with pytest.raises(TerminalError) as raised:
            await h.service_call(terminal)
        assert raised.value.status_code == 422 and raised.value.message == "bad request"
        await h.advance(timedelta(hours=1))
        assert len(attempts["terminal"]) == 1


async def test_exhausted_retries_pause_and_resume_works() -> None:
    attempts.clear()
    async with Harness(perdure.App([flaky])) as h:
        invocation_id = await h.service_send(always_fails)
        for _ in range(10):
            await h.advance(timedelta(minutes=1))
        inv = h.status(invocation_id)
        assert inv.status is Status.PAUSED
        assert len(attempts["always"]) == 4
        assert inv.last_failure is not None and "downstream is down" in inv.last_failure.message
        await h.resume(invocation_id)
        await h.settle()
        assert len(attempts["always"]) == 5
        assert h.status(invocation_id).status is Status.BACKING_OFF
        with pytest.raises(perdure.PerdureError, match="cannot resume an invocation that is backing-off"):
            await h.resume(invocation_id)


# ---- ctx.run: recorded once, own retry policy --------------------------------------------------

steps = Service("steps")
executions: list[str] = []
entered: list[int] = []


@steps.handler()
async def three_steps(ctx: Context) -> list[str]:
    entered.append(1)
    results = []
    for name in ("a", "b", "c"):
        results.append(await ctx.run(name, lambda n=name: executions.append(n) or n.upper()))
    if len(entered) == 1:
        raise RuntimeError("crash after the steps")
    return results


@steps.handler()
async def bounded_step(ctx: Context) -> str:
    def boom() -> str:
        executions.append("boom")
        raise ValueError("nope")

    try:
        return await ctx.run(
            "boom", boom, retry=RetryPolicy(initial_interval=timedelta(seconds=1), max_attempts=3)
        )
    except TerminalError as e:
        return f"gave up: {e.message}"


async def test_recorded_steps_are_not_run_again() -> None:
    executions.clear()
    entered.clear()
    async with Harness(perdure.App([steps]), autojump=True) as h:
        assert await h.service_call(three_steps) == ["A", "B", "C"]
        assert len(entered) == 2
        # attempt 1 ran a, b, c and failed; attempt 2 replayed them and ran nothing again
        assert executions == ["a", "b", "c"]


async def test_step_retry_policy_records_a_terminal_failure() -> None:
    executions.clear()
    async with Harness(perdure.App([steps]), autojump=True) as h:
        result = await h.service_call(bounded_step)
        assert executions == ["boom"] * 3
        assert result.startswith("gave up: step 'boom' failed after 3 attempts")


# ---- non-determinism ---------------------------------------------------------------------------

changing = Service("changing")
version = {"step": "first"}


@changing.handler()
async def evolves(ctx: Context) -> str:
    await ctx.run(version["step"], lambda: 1)
    raise RuntimeError("fail so that the next attempt replays")


async def test_diverging_handler_fails_with_journal_mismatch() -> None:
    version["step"] = "first"
    async with Harness(perdure.App([changing])) as h:
        invocation_id = await h.service_send(evolves)
        await h.settle()
        version["step"] = "second"
        await h.advance(timedelta(seconds=1))
        failure = h.status(invocation_id).last_failure
        assert failure is not None and failure.code == 570
        assert "changing/evolves" in failure.message
        assert "entry 1" in failure.message
        assert (
            "RunCommand(name='first')" in failure.message and "RunCommand(name='second')" in failure.message
        )


# ---- suspension keeps memory bounded ----------------------------------------------------------

sleepers = VirtualObject("sleepers")


@sleepers.handler()
async def nap(ctx: ObjectContext) -> str:
    await ctx.sleep(timedelta(hours=1))
    return ctx.key()


@pytest.mark.parametrize("backend", ["memory"], indirect=True)  # memory held by suspended attempts
async def test_ten_thousand_sleepers_are_suspended_not_parked() -> None:
    async with Harness(perdure.App([sleepers])) as h:
        gc.collect()
        tracemalloc.start()
        ids = [await h.object_send(nap, key=f"k{i}") for i in range(10_000)]
        await h.settle()
        assert h.invoker.active == 0
        assert h.invoker.suspended == 10_000
        gc.collect()
        # Python memory still allocated by everything that happened, beyond the store's records.
        current, _ = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert current / 10_000 < 8_000, f"{current / 10_000:.0f} bytes per suspended invocation"
        counts = h.reader().count_invocations()
        assert counts[Status.SUSPENDED] == 10_000
        await h.advance(timedelta(hours=1))
        assert h.reader().count_invocations()[Status.COMPLETED] == 10_000
        assert (await h.attach(ids[-1])).value == b'"k9999"'


# ---- delayed sends, calls, state --------------------------------------------------------------

profile = VirtualObject("profile")
emitted: list[tuple[str, list[str]]] = []


@profile.handler()
async def add_feature(ctx: ObjectContext, feature: str) -> None:
    features = (await ctx.get("features")) or []
    if not features:
        ctx.object_send(flush, key=ctx.key(), delay=timedelta(seconds=1))
    ctx.set("features", [*features, feature])


@profile.handler()
async def flush(ctx: ObjectContext) -> None:
    emitted.append((ctx.key(), (await ctx.get("features")) or []))
    ctx.clear_all()


@profile.handler(kind="shared")
async def features(ctx: ObjectSharedContext) -> list[str]:
    return (await ctx.get("features")) or []


async def test_delayed_send_fires_after_its_delay() -> None:
    emitted.clear()
    async with Harness(perdure.App([profile])) as h:
        await h.object_call(add_feature, key="u1", arg="dark")
        await h.object_call(add_feature, key="u1", arg="beta")
        assert await h.object_call(features, key="u1") == ["dark", "beta"]
        await h.advance(0.9)
        assert emitted == []
        await h.advance(0.1)
        assert emitted == [("u1", ["dark", "beta"])]
        assert h.state("profile", "u1") == {}


chain = Service("chain")


@chain.handler()
async def double(ctx: Context, n: int) -> int:
    if n < 0:
        raise TerminalError("negative", status_code=400)
    return n * 2


@chain.handler()
async def fan_out(ctx: Context, n: int) -> list[int]:
    calls = [ctx.service_call(double, arg=i) for i in range(n)]
    return await perdure.gather(*calls)


@chain.handler()
async def race(ctx: Context) -> str:
    name, _ = await perdure.select(slow=ctx.sleep(10), fast=ctx.service_call(double, arg=1))
    return name


@chain.handler()
async def caller_of_failure(ctx: Context) -> str:
    try:
        await ctx.service_call(double, arg=-1)
    except TerminalError as e:
        return f"caught {e.status_code}: {e.message}"
    return "no error"


@chain.handler()
async def deterministic(ctx: Context) -> list[str]:
    values = [str(ctx.random().random()), str(ctx.uuid())]
    if not await ctx.run("once", lambda: True):
        pass
    values.append(str(await ctx.time()))
    return values


async def test_calls_gather_select_and_failures() -> None:
    async with Harness(perdure.App([chain]), autojump=True) as h:
        assert await h.service_call(fan_out, arg=5) == [0, 2, 4, 6, 8]
        assert await h.service_call(race) == "fast"
        assert await h.service_call(caller_of_failure) == "caught 400: negative"


async def test_random_uuid_and_time_are_stable_across_replays() -> None:
    async with Harness(perdure.App([chain])) as h:
        first = await h.service_call(deterministic, idempotency_key="k")
        again = await h.service_call(deterministic, idempotency_key="k")
        assert first == again


async def test_unknown_targets_and_missing_keys_are_rejected_before_invoking() -> None:
    async with Harness(perdure.App([chain, profile])) as h:
        with pytest.raises(perdure.UnknownTargetError, match="no service named 'nope'"):
            await h.generic_call("nope", "x")
        with pytest.raises(perdure.UnknownTargetError, match="has no handler 'nope'"):
            await h.generic_call("chain", "nope")
        with pytest.raises(perdure.InvalidInputError, match="keyed"):
            await h.generic_call("profile", "flush")
        with pytest.raises(perdure.InvalidInputError, match="invalid input"):
            await h.generic_call("chain", "double", b'"not a number"')
        assert await h.generic_call("chain", "double", b"21") == b"42"


@flaky.handler(
    options=perdure.HandlerOptions(
        retry_policy=RetryPolicy(
            max_attempts=None, max_duration=timedelta(seconds=10), on_max_attempts="kill"
        )
    )
)
async def gives_up_by_time(ctx: Context) -> None:
    attempts.setdefault("by_time", []).append(0)
    raise ConnectionError("still down")


async def test_max_duration_without_progress_ends_retries() -> None:
    attempts.clear()
    async with Harness(perdure.App([flaky]), autojump=True) as h:
        with pytest.raises(
            TerminalError, match="gave up after 6 attempts; last error: ConnectionError: still down"
        ):
            await h.service_call(gives_up_by_time)
        # attempts at 0, 0.5, 1.5, 3.5, 7.5 and 15.5 s: the first failure at or past 10 s ends it
        assert len(attempts["by_time"]) == 6
