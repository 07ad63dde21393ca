"""The engine stepped command by command: `apply(txn, command) -> actions`, no I/O, no clock."""

from __future__ import annotations

from typing import Any

import pytest

from perdure.engine.actions import Accepted, Completed, Notify, ScheduleTimer, StartAttempt
from perdure.engine.commands import AttemptOutput, FireTimer, Invoke, Recover, Resume
from perdure.engine.registry import HandlerInfo, Registry
from perdure.engine.state_machine import StateMachine
from perdure.protocol import ids
from perdure.protocol import messages as pm
from perdure.retry import RetryPolicy
from perdure.storage.api import Status
from perdure.storage.memory import Store


class World:
    """A state machine over a memory store, with a hand-moved clock."""

    def __init__(self) -> None:
        registry = Registry()
        registry.add(
            "obj", HandlerInfo("run", keyed=True, exclusive=True, retry_policy=RetryPolicy(max_attempts=2))
        )
        registry.add("obj", HandlerInfo("peek", keyed=True, exclusive=False))
        registry.add("svc", HandlerInfo("go", keyed=False, exclusive=False))
        self.now = 1_000
        self.store = Store()
        self.machine = StateMachine(registry, lambda: self.now)

    async def apply(self, command: Any) -> list[Any]:
        txn = self.store.begin()
        actions = self.machine.apply(txn, command)
        await self.store.commit(txn)
        return actions

    async def invoke(
        self, service: str, handler: str, key: str | None = None, **kw: Any
    ) -> tuple[str, list[Any]]:
        invocation_id = ids.random_id(service, key)
        return invocation_id, await self.apply(Invoke(invocation_id, service, handler, key, b"{}", **kw))

    def status(self, invocation_id: str) -> Status:
        inv = self.store.reader().get_invocation(invocation_id)
        assert inv is not None
        return inv.status


def _types(actions: list[Any]) -> list[str]:
    return [type(a).__name__ for a in actions]


def _end(value: bytes = b"1") -> list[Any]:
    return [pm.OutputCommand(value=pm.Value(content=value)), pm.EndMessage()]


async def test_exclusive_invocations_of_one_key_queue_in_arrival_order() -> None:
    w = World()
    first, actions = await w.invoke("obj", "run", "a")
    assert _types(actions) == ["Accepted", "StartAttempt"]
    second, actions = await w.invoke("obj", "run", "a")
    third, _ = await w.invoke("obj", "run", "a")
    _, actions_other = await w.invoke("obj", "run", "b")
    _, actions_shared = await w.invoke("obj", "peek", "a")
    assert _types(actions) == ["Accepted"] and w.status(second) is Status.PENDING
    assert "StartAttempt" in _types(actions_other) and "StartAttempt" in _types(actions_shared)

    actions = await w.apply(AttemptOutput(first, 1, _end()))
    assert [type(a) for a in actions] == [Completed, StartAttempt]
    assert actions[1].invocation_id == second
    actions = await w.apply(AttemptOutput(second, 1, _end()))
    assert actions[1].invocation_id == third
    await w.apply(AttemptOutput(third, 1, _end()))
    txn = w.store.begin()
    assert txn.get_lock("obj", "a") is None
    await w.store.commit(txn)


async def test_run_proposal_is_journaled_then_notified() -> None:
    w = World()
    invocation_id, _ = await w.invoke("svc", "go")
    proposal = [
        pm.RunCommand(result_completion_id=1, name="s"),
        pm.ProposeRunCompletionMessage(result_completion_id=1, value=b"7"),
    ]
    actions = await w.apply(AttemptOutput(invocation_id, 1, proposal))
    [notify] = actions
    assert isinstance(notify, Notify) and notify.messages[0].value.content == b"7"
    journal = w.store.reader().read_journal(invocation_id)
    assert [e.type for e in journal] == [0x0400, 0x0411, 0x8011]


async def test_stale_attempts_are_ignored() -> None:
    w = World()
    invocation_id, _ = await w.invoke("svc", "go")
    assert await w.apply(AttemptOutput(invocation_id, 7, _end())) == []
    assert w.status(invocation_id) is Status.RUNNING


async def test_sleep_suspends_and_the_timer_resumes_with_a_new_attempt() -> None:
    w = World()
    invocation_id, _ = await w.invoke("svc", "go")
    actions = await w.apply(
        AttemptOutput(
            invocation_id,
            1,
            [
                pm.SleepCommand(wake_up_time=5_000, result_completion_id=1),
                pm.SuspensionMessage(waiting_completions=[1], waiting_signals=[1]),
            ],
        )
    )
    [schedule] = actions
    assert isinstance(schedule, ScheduleTimer) and schedule.timer.fire_at == 5_000
    assert w.status(invocation_id) is Status.SUSPENDED
    w.now = 5_000
    [start] = await w.apply(FireTimer(schedule.timer))
    assert isinstance(start, StartAttempt) and start.attempt == 2
    assert (
        start.start.known_entries == 3
        and type(start.journal[-1]).__name__ == "SleepCompletionNotificationMessage"
    )
    assert await w.apply(FireTimer(schedule.timer)) == []  # firing twice is harmless


async def test_calls_route_the_result_back_to_the_caller() -> None:
    w = World()
    caller, _ = await w.invoke("svc", "go")
    actions = await w.apply(
        AttemptOutput(
            caller,
            1,
            [
                pm.CallCommand(
                    service_name="obj",
                    handler_name="run",
                    key="z",
                    parameter=b"1",
                    invocation_id_notification_idx=1,
                    result_completion_id=2,
                ),
                pm.SuspensionMessage(waiting_completions=[2]),
            ],
        )
    )
    notify, accepted, start = actions
    child = notify.messages[0].invocation_id
    assert isinstance(accepted, Accepted) and accepted.invocation_id == child
    assert isinstance(start, StartAttempt) and start.journal[0].value.content == b"1"
    actions = await w.apply(AttemptOutput(child, 1, _end(b"42")))
    assert _types(actions) == ["StartAttempt", "Completed"]  # the caller resumes with the result
    assert actions[0].journal[-1].value.content == b"42"


async def test_failed_attempts_back_off_then_pause_and_resume() -> None:
    w = World()
    invocation_id, _ = await w.invoke("obj", "run", "a")
    [timer] = await w.apply(AttemptOutput(invocation_id, 1, [pm.ErrorMessage(code=500, message="boom")]))
    assert isinstance(timer, ScheduleTimer) and timer.timer.fire_at == w.now + 500
    assert w.status(invocation_id) is Status.BACKING_OFF
    [start] = await w.apply(FireTimer(timer.timer))
    assert (
        await w.apply(
            AttemptOutput(invocation_id, start.attempt, [pm.ErrorMessage(code=500, message="boom")])
        )
        == []
    )
    assert w.status(invocation_id) is Status.PAUSED
    second, _ = await w.invoke("obj", "run", "a")
    assert w.status(second) is Status.PENDING  # the paused holder keeps its key
    [start] = await w.apply(Resume(invocation_id))
    assert start.attempt == 3


async def test_state_writes_from_shared_handlers_fail_the_attempt() -> None:
    w = World()
    invocation_id, _ = await w.invoke("obj", "peek", "a")
    await w.apply(
        AttemptOutput(invocation_id, 1, [pm.SetStateCommand(key=b"x", value=pm.Value(content=b"1"))])
    )
    inv = w.store.reader().get_invocation(invocation_id)
    assert inv is not None and inv.status is Status.BACKING_OFF
    assert inv.last_failure is not None and "may not write state" in inv.last_failure.message
    assert w.store.reader().get_all_state("obj", "a") == {}


@pytest.mark.parametrize("key", [None])
async def test_unknown_targets_and_missing_keys_complete_with_errors(key: str | None) -> None:
    w = World()
    _, actions = await w.invoke("nope", "x", key)
    assert actions[-1].outcome.failure.code == 404
    _, actions = await w.invoke("obj", "run", key)
    assert actions[-1].outcome.failure.code == 400


async def test_recover_restarts_running_attempts_with_a_new_epoch() -> None:
    w = World()
    invocation_id, _ = await w.invoke("svc", "go")
    [start] = await w.apply(Recover())
    assert start.invocation_id == invocation_id and start.attempt == 2


async def test_repeated_invoke_joins_the_existing_invocation() -> None:
    w = World()
    invocation_id, _ = await w.invoke("svc", "go")
    again = await w.apply(Invoke(invocation_id, "svc", "go", None, b"{}"))
    assert again == [Accepted(invocation_id, previously=True)]
    await w.apply(AttemptOutput(invocation_id, 1, _end(b"5")))
    again = await w.apply(Invoke(invocation_id, "svc", "go", None, b"{}"))
    assert _types(again) == ["Accepted", "Completed"] and again[1].outcome.value == b"5"


@pytest.mark.parametrize(
    ("behavior", "status"),
    [
        (pm.ERROR_RETRY, Status.BACKING_OFF),
        (pm.ERROR_PAUSE, Status.PAUSED),
        (pm.ERROR_FAIL, Status.COMPLETED),
    ],
)
async def test_an_error_message_behavior_decides_retry_pause_or_fail(behavior: int, status: Status) -> None:
    """Protocol V7: the SDK may ask to pause the invocation, or to fail it without retries."""
    w = World()
    invocation_id, _ = await w.invoke("svc", "go")
    error = pm.ErrorMessage(code=503, message="not now", behavior=behavior)
    actions = await w.apply(AttemptOutput(invocation_id, 1, [error]))
    assert w.status(invocation_id) is status
    inv = w.store.reader().get_invocation(invocation_id)
    assert inv is not None and inv.last_failure is not None and inv.last_failure.message == "not now"
    if status is Status.COMPLETED:
        assert inv.outcome is not None and inv.outcome.failure is not None and inv.outcome.failure.code == 503
        assert "Completed" in _types(actions)
    if status is Status.PAUSED:
        await w.apply(Resume(invocation_id))
        assert w.status(invocation_id) is Status.RUNNING


async def test_get_output_and_attach_read_another_invocations_result() -> None:
    w = World()
    target, _ = await w.invoke("svc", "go")
    reader, _ = await w.invoke("svc", "go")
    peek = pm.GetInvocationOutputCommand(invocation_id=target, result_completion_id=1)
    attach = pm.AttachInvocationCommand(invocation_id=target, result_completion_id=2)
    actions = await w.apply(AttemptOutput(reader, 1, [peek, attach]))
    [notify] = [a for a in actions if type(a) is Notify]
    assert notify.messages[0].WhichOneof("result") == "void"  # not finished yet; attach waits
    actions = await w.apply(AttemptOutput(target, 1, _end(b'"done"')))
    [notify] = [a for a in actions if type(a) is Notify and a.invocation_id == reader]
    assert type(notify.messages[0]) is pm.AttachInvocationCompletion
    assert notify.messages[0].completion_id == 2 and notify.messages[0].value.content == b'"done"'
    missing = pm.AttachInvocationCommand(invocation_id=ids.random_id("svc", None), result_completion_id=3)
    actions = await w.apply(AttemptOutput(reader, 1, [missing]))
    [notify] = [a for a in actions if type(a) is Notify]
    assert notify.messages[0].failure.code == 404
