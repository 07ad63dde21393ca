"""Unlimited retries (`max_attempts=None`) back off at `max_interval` however long they go on."""

from __future__ import annotations

from datetime import timedelta

from perdure.engine.actions import ScheduleTimer
from perdure.engine.commands import AttemptOutput, FireTimer, Invoke
from perdure.engine.registry import HandlerInfo, Registry
from perdure.engine.state_machine import StateMachine
from perdure.protocol import ids
from perdure.protocol import messages as pm
from perdure.retry import RetryPolicy
from perdure.storage.memory import Store


def test_the_delay_stays_at_max_interval_past_the_range_of_floats() -> None:
    policy = RetryPolicy(max_attempts=None, max_interval=timedelta(seconds=30))
    assert policy.delay_ms(2) == 1_000
    assert policy.delay_ms(1_100) == policy.delay_ms(100_000) == 30_000  # 2.0**1099 overflows


async def test_an_invocation_keeps_backing_off_after_a_thousand_failures() -> None:
    # Found by the simulator: `python3 dev.py simulate --seeds 1 --seed 23 --duplicate-outputs`
    # (an invocation whose journal no longer replays fails forever). Its 1,026th failure made the
    # engine raise OverflowError; the command was dropped and the invocation stayed "running"
    # with no attempt.
    registry = Registry()
    policy = RetryPolicy(initial_interval=timedelta(milliseconds=10), max_attempts=None)
    registry.add("svc", HandlerInfo("go", keyed=False, exclusive=False, retry_policy=policy))
    now = [1_000]
    store, machine = Store(), StateMachine(registry, lambda: now[0])
    invocation_id = ids.random_id("svc", None)

    async def apply(command: object) -> list[object]:
        txn = store.begin()
        actions = machine.apply(txn, command)  # type: ignore[arg-type]
        await store.commit(txn)
        return actions

    await apply(Invoke(invocation_id, "svc", "go", None, b""))
    for attempt in range(1, 1_101):
        actions = await apply(
            AttemptOutput(invocation_id, attempt, [pm.ErrorMessage(code=500, message="down")])
        )
        [timer] = [a.timer for a in actions if isinstance(a, ScheduleTimer)]
        delay = timer.fire_at - now[0]
        now[0] = timer.fire_at
        await apply(FireTimer(timer))
    assert delay == 60_000  # the default max_interval
    inv = store.reader().get_invocation(invocation_id)
    assert inv is not None and inv.failures == 1_100 and inv.status.value == "running"
    assert inv.attempt == 1_101
