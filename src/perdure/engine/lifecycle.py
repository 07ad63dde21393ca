"""The invocation lifecycle: accepted → (scheduled) → pending in its key's inbox → running →
suspended / backing-off → completed or paused.

Exclusive invocations (object handlers, workflow runs) take their key's lock; the others queue
behind it in arrival order and start, one by one, as each holder completes. A holder keeps the
lock while it sleeps, backs off or is paused — that is the queue-per-key contract — but it never
holds any other key.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

from perdure.defaults import RETENTION_MS
from perdure.engine import bodies, deadletter
from perdure.engine.actions import (
    AbortAttempt,
    Accepted,
    Completed,
    Notify,
    Rejected,
    ScheduleTimer,
    StartAttempt,
)
from perdure.engine.commands import Invoke
from perdure.engine.step import Step
from perdure.engine.system import SYSTEM, promises_key
from perdure.protocol import ids
from perdure.protocol import messages as pm
from perdure.protocol.codec import message_type
from perdure.storage.api import Caller, Failure, Invocation, Outcome, Status, Timer

#: Statuses with a result: completed, or parked (failed, its Kafka record in the dead-letter store).
FINISHED = frozenset({Status.COMPLETED, Status.PARKED})


def _seed(invocation_id: str) -> int:
    return int.from_bytes(hashlib.blake2b(invocation_id.encode(), digest_size=8).digest(), "big")


def invoke(step: Step, cmd: Invoke) -> None:
    if not step.local(cmd.invocation_id):  # a call or send to another partition's invocation
        step.deliver(
            bodies.Invoked(
                invocation_id=cmd.invocation_id,
                service=cmd.service,
                handler=cmd.handler,
                key=cmd.key,
                input=cmd.input,
                headers=list(cmd.headers),
                idempotency_key=cmd.idempotency_key,
                caller=cmd.caller,
                execute_at=cmd.execute_at,
                failure=cmd.failure,
                on_failure=cmd.on_failure,
                queue_key=cmd.queue_key,
            )
        )
        return
    existing = None if cmd.fresh else step.load(cmd.invocation_id)
    if existing is not None:
        _attach(step, existing, cmd)
        return
    inv = Invocation(
        id=cmd.invocation_id,
        service=cmd.service,
        handler=cmd.handler,
        key=cmd.key,
        created_at=step.now,
        modified_at=step.now,
        idempotency_key=cmd.idempotency_key,
        callers=[cmd.caller] if cmd.caller is not None else [],
        random_seed=_seed(cmd.invocation_id),
        last_progress_at=step.now,
        on_failure=cmd.on_failure,
    )
    step.track(inv, fresh=cmd.fresh)
    step.counters.invocations_created += 1
    input_entry = pm.InputCommand(
        headers=[pm.Header(key=k, value=v) for k, v in cmd.headers], value=pm.Value(content=cmd.input)
    )
    step.append(inv, input_entry)
    inv.command_count = 1
    step.actions.append(Accepted(inv.id, previously=False))
    info = step.registry.get(cmd.service, cmd.handler)
    if info is None:
        complete(step, inv, _failed(404, f"no handler {cmd.service}/{cmd.handler} is registered"))
        return
    if cmd.failure is not None:
        complete(step, inv, Outcome(failure=cmd.failure))
        return
    if info.keyed and cmd.key is None:
        complete(step, inv, _failed(400, f"{cmd.service}/{cmd.handler} is keyed: a key is required"))
        return
    inv.exclusive = info.exclusive
    if not info.keyed and cmd.queue_key is not None:  # a service's Kafka records, FIFO per record key
        inv.exclusive, inv.queue_key = True, cmd.queue_key
    if cmd.execute_at is not None and cmd.execute_at > step.now:
        inv.status = Status.SCHEDULED
        inv.execute_at = cmd.execute_at
        schedule_timer(
            step, Timer(id=f"{inv.id}/invoke", fire_at=cmd.execute_at, kind="invoke", invocation_id=inv.id)
        )
        return
    enqueue(step, inv, [input_entry])


def _attach(step: Step, inv: Invocation, cmd: Invoke) -> None:
    """A repeated Invoke (idempotency key, retried send): join the existing invocation."""
    step.actions.append(Accepted(inv.id, previously=True))
    caller = cmd.caller
    if inv.status in FINISHED and inv.outcome is not None:
        step.actions.append(Completed(inv.id, inv.outcome))
        if caller is not None:
            answer(step, caller, caller_result(caller, inv.outcome))
    elif caller is not None and caller not in inv.callers:
        inv.callers.append(caller)


def enqueue(step: Step, inv: Invocation, journal: list[Any] | None = None) -> None:
    """Start now, or queue behind the invocation holding the key."""
    key = lock_key(inv)
    if key is not None:
        txn = step.txn
        if txn.get_lock(inv.service, key) is not None:
            inv.status = Status.PENDING
            txn.inbox_push(inv.service, key, inv.id)
            return
        txn.set_lock(inv.service, key, inv.id)
    start(step, inv, journal)


def lock_key(inv: Invocation) -> str | None:
    """The key an exclusive invocation holds while it runs: its object's, or its queue's."""
    if not inv.exclusive:
        return None
    return inv.key if inv.key is not None else inv.queue_key


def start(step: Step, inv: Invocation, journal: list[Any] | None = None) -> None:
    """Begin a new attempt: bump the epoch and hand the invoker the journal to replay."""
    inv.status = Status.RUNNING
    inv.attempt += 1
    step.counters.attempts_started += 1
    inv.attempt_start_length = inv.journal_length
    inv.notified = []
    inv.waiting_completions = []
    inv.waiting_signals = []
    inv.waiting_named_signals = []
    inv.waiting_named_signals = []
    inv.next_retry_at = None
    if journal is None:
        journal = step.read_journal(inv)
    if inv.protocol_version == 0:  # the first attempt pins where the invocation runs
        info = step.registry.get(inv.service, inv.handler)
        if info is not None and info.deployment_id is not None:
            inv.deployment_id, inv.protocol_version = info.deployment_id, info.protocol_version
    start_message = pm.StartMessage(
        id=ids.to_bytes(inv.id),
        debug_id=inv.id,
        known_entries=len(journal),
        key=inv.key or "",
        retry_count_since_last_stored_entry=inv.attempts_since_progress,
        duration_since_last_stored_entry=max(0, step.now - inv.last_progress_at),
        random_seed=inv.random_seed,
    )
    if inv.key is not None:
        state = step.txn.get_all_state(inv.service, inv.key)
        start_message.state_map.extend(pm.StateEntry(key=k, value=v) for k, v in state.items())
        start_message.partial_state = False
    else:
        start_message.partial_state = True
    step.actions.append(
        StartAttempt(
            inv.id,
            inv.attempt,
            inv.service,
            inv.handler,
            start_message,
            journal,
            inv.deployment_id,
            inv.protocol_version,
        )
    )


def answer(step: Step, caller: Caller, message: Any) -> None:
    """Hand a result to the invocation waiting for it, here or in its own partition."""
    if step.local(caller.invocation_id):
        parent = step.load(caller.invocation_id)
        if parent is not None:
            notify(step, parent, message, caller.completion_id)
    else:
        body = bodies.Notified(
            caller.invocation_id, message_type(message), message.SerializeToString(), caller.completion_id
        )
        step.deliver(body)


def attach(step: Step, target_id: str, caller: Caller) -> None:
    """`caller` waits for the target's result (`caller.attach`): at once when it has one."""
    if not step.local(target_id):
        step.deliver(bodies.Attached(target_id, caller))
        return
    target = step.load(target_id)
    if target is None:
        answer(step, caller, caller_result(caller, _failed(404, "invocation not found")))
    elif target.status in FINISHED and target.outcome is not None:
        answer(step, caller, caller_result(caller, target.outcome))
    elif caller not in target.callers:
        target.callers.append(caller)


def peek(step: Step, target_id: str, caller: Caller) -> None:
    """`caller` gets the target's result if it has one now, else void (GetInvocationOutput)."""
    if not step.local(target_id):
        step.deliver(bodies.Attached(target_id, caller, peek=True))
        return
    target = step.load(target_id)
    cid = caller.completion_id
    if target is None or target.status not in FINISHED or target.outcome is None:
        message = pm.GetInvocationOutputCompletion(completion_id=cid, void=pm.Void())
    else:
        message = result_notification(pm.GetInvocationOutputCompletion, cid, target.outcome)
    answer(step, caller, message)


def notify(step: Step, inv: Invocation, message: Any, handle: int | str) -> None:
    """Append a result to `inv`'s journal and wake it if it waits for it.

    `handle` is the completion id, minus the signal index, or the signal's name.
    """
    if inv.status in FINISHED:
        return
    step.append(inv, message)
    if inv.status is Status.RUNNING:
        inv.notified.append(handle)
        step.actions.append(Notify(inv.id, inv.attempt, [message]))
    elif inv.status is Status.SUSPENDED and _waits_for(inv, handle):
        start(step, inv)


def _waits_for(inv: Invocation, handle: int | str) -> bool:
    if isinstance(handle, str):
        return handle in inv.waiting_named_signals
    if handle > 0:
        return handle in inv.waiting_completions
    return -handle in inv.waiting_signals


def suspend(
    step: Step, inv: Invocation, completions: list[int], signals: list[int], names: list[str]
) -> None:
    inv.status = Status.SUSPENDED
    step.counters.suspensions += 1
    inv.waiting_completions = completions
    inv.waiting_signals = signals
    inv.waiting_named_signals = names
    # A result may have been journaled while the attempt was deciding to suspend.
    if any(_waits_for(inv, h) for h in inv.notified):
        start(step, inv)


def complete(step: Step, inv: Invocation, outcome: Outcome, *, operator: bool = False) -> None:
    """`inv` has its result. A failed Kafka record of a parking subscription is parked (not when an
    operator killed or cancelled it)."""
    inv.status = Status.COMPLETED
    if outcome.failure is None:
        step.counters.completed_ok += 1
    else:
        step.counters.completed_failed += 1
    inv.outcome = outcome
    inv.completed_at = step.now
    inv.waiting_completions = []
    inv.waiting_signals = []
    info = step.registry.get(inv.service, inv.handler)
    if info is None:
        inv.retention_until = step.now + RETENTION_MS
    else:
        if info.workflow_run:
            retention = info.workflow_retention_ms
        elif inv.idempotency_key:
            retention = info.idempotency_retention_ms
        else:
            retention = info.journal_retention_ms
        inv.retention_until = step.now + retention
    for caller in inv.callers:
        answer(step, caller, caller_result(caller, outcome))
    if inv.on_failure is not None and outcome.failure is not None and not operator:
        deadletter.park(step, inv, outcome.failure)
    step.actions.append(Completed(inv.id, outcome))
    key = lock_key(inv)
    if key is not None:
        release_key(step, inv.service, key, inv.id)


def release_key(step: Step, service: str, key: str, holder: str) -> None:
    """The holder is done: start the next queued invocation of the key, or free the lock."""
    txn = step.txn
    if txn.get_lock(service, key) != holder:
        return
    while (next_id := txn.inbox_pop(service, key)) is not None:
        nxt = step.load(next_id)
        if nxt is not None and nxt.status is Status.PENDING:
            txn.set_lock(service, key, next_id)
            start(step, nxt)
            return
    txn.release_lock(service, key)


def fail_attempt(
    step: Step,
    inv: Invocation,
    failure: Failure,
    next_retry_delay: int | None = None,
    *,
    behavior: int = pm.ERROR_RETRY,
) -> None:
    """The attempt failed (not terminally): back off and retry, or pause/kill when exhausted.

    `behavior` (protocol V7) lets the SDK pause the invocation or fail it now instead.
    """
    inv.last_failure = failure
    step.counters.attempts_failed += 1
    inv.failures += 1
    inv.attempts_since_progress += 1
    if behavior == pm.ERROR_FAIL:
        complete(step, inv, Outcome(failure=failure))
        return
    if behavior == pm.ERROR_PAUSE:
        inv.status = Status.PAUSED
        return
    info = step.registry.get(inv.service, inv.handler)
    if info is None:
        complete(step, inv, _failed(404, f"no handler {inv.service}/{inv.handler} is registered"))
        return
    policy = info.retry_policy
    if policy.exhausted(inv.failures, step.now - inv.last_progress_at):
        if policy.on_max_attempts == "kill" or inv.on_failure is not None:  # killed, or parked
            message = f"gave up after {inv.failures} attempts; last error: {failure.message}"
            complete(step, inv, _failed(failure.code or 500, message))
        else:
            inv.status = Status.PAUSED
        return
    delay = next_retry_delay if next_retry_delay is not None else policy.delay_ms(inv.failures)
    inv.status = Status.BACKING_OFF
    inv.next_retry_at = step.now + delay
    schedule_timer(
        step,
        Timer(
            id=f"{inv.id}/retry/{inv.attempt}", fire_at=inv.next_retry_at, kind="retry", invocation_id=inv.id
        ),
    )


def fire_timer(step: Step, timer: Timer) -> None:
    if not step.txn.delete_timer(timer.id):
        return  # already fired, or its invocation is gone
    inv = step.load(timer.invocation_id)
    if inv is None:
        return
    if timer.kind == "sleep":
        notify(
            step,
            inv,
            pm.SleepCompletion(completion_id=timer.completion_id, void=pm.Void()),
            timer.completion_id,
        )
    elif timer.kind == "invoke" and inv.status is Status.SCHEDULED:
        inv.execute_at = None
        enqueue(step, inv)
    elif timer.kind == "retry" and inv.status is Status.BACKING_OFF:
        start(step, inv)


def _control(
    step: Step, invocation_id: str, allowed: set[Status], verb: str, report: bool = True
) -> Invocation | None:
    """The invocation a command applies to, or None (with a Rejected action when `report`)."""
    inv = step.load(invocation_id)
    if inv is None:
        if report:
            step.actions.append(Rejected(invocation_id, "no such invocation", code=404))
        return None
    if inv.status not in allowed:
        if report:
            message = f"cannot {verb} an invocation that is {inv.status.value}"
            step.actions.append(Rejected(invocation_id, message))
        return None
    return inv


_UNFINISHED = set(Status) - FINISHED
#: The statuses each operator control applies to (else it is refused with 409).
CONTROLLABLE: dict[str, set[Status]] = {
    "resume": {Status.PAUSED},
    "pause": {Status.RUNNING, Status.BACKING_OFF, Status.SUSPENDED},
    "kill": _UNFINISHED,
    "cancel": _UNFINISHED,
    "purge": set(FINISHED),
    "redrive": {Status.PARKED},
    "discard": {Status.PARKED},
}


def resume(step: Step, invocation_id: str) -> None:
    inv = _control(step, invocation_id, CONTROLLABLE["resume"], "resume")
    if inv is not None:
        inv.failures = 0
        start(step, inv)


def pause(step: Step, invocation_id: str) -> None:
    inv = _control(step, invocation_id, CONTROLLABLE["pause"], "pause")
    if inv is None:
        return
    if inv.status is Status.RUNNING:
        step.actions.append(AbortAttempt(inv.id))
    inv.status = Status.PAUSED
    inv.next_retry_at = None


def kill(step: Step, invocation_id: str, report: bool = True) -> None:
    """Stop now, without running more user code — and so the calls it is waiting on."""
    if not step.local(invocation_id):  # a cascade reaching another partition
        step.deliver(bodies.Stopped(invocation_id, kill=True))
        return
    inv = _control(step, invocation_id, CONTROLLABLE["kill"], "kill", report)
    if inv is None:
        return
    for child in _calls_in_flight(step, inv):
        kill(step, child, report=False)
    if inv.status is Status.RUNNING:
        step.actions.append(AbortAttempt(inv.id))
    elif inv.status is Status.PENDING and (key := lock_key(inv)) is not None:
        step.txn.inbox_remove(inv.service, key, inv.id)
    complete(step, inv, _failed(409, "killed"), operator=True)


def expire(step: Step, invocation_ids: Sequence[str]) -> None:
    """Delete completed invocations whose retention has passed: an idempotency key is free again."""
    for invocation_id in invocation_ids:
        inv = step.load(invocation_id)
        if inv is not None and inv.status is Status.COMPLETED and (inv.retention_until or 0) <= step.now:
            step.forget(inv)
            step.counters.expired += 1
            info = step.registry.get(inv.service, inv.handler)
            if info is not None and info.workflow_run and inv.key is not None:
                # The workflow's retention has passed: its key may run again, from a clean slate.
                step.txn.clear_all_state(inv.service, inv.key)
                step.txn.clear_all_state(SYSTEM, promises_key(inv.service, inv.key))


def cancel(step: Step, invocation_id: str, report: bool = True) -> None:
    """`report=False` for cancellations from handlers: a target that has finished is fine."""
    if not step.local(invocation_id):
        step.deliver(bodies.Stopped(invocation_id))
        return
    inv = _control(step, invocation_id, CONTROLLABLE["cancel"], "cancel", report)
    if inv is None:
        return
    if inv.status in (Status.PENDING, Status.SCHEDULED):
        if inv.status is Status.PENDING and (key := lock_key(inv)) is not None:
            step.txn.inbox_remove(inv.service, key, inv.id)
        complete(step, inv, _failed(409, "cancelled"), operator=True)
        return
    signal(step, inv, pm.CANCEL_SIGNAL, pm.SignalNotification(idx=pm.CANCEL_SIGNAL, void=pm.Void()))
    if inv.status in (Status.BACKING_OFF, Status.PAUSED):
        start(step, inv)  # let it observe the cancellation (and compensate) now


def signal(step: Step, inv: Invocation, idx: int | str, message: Any) -> None:
    """Deliver a signal (awakeable result, CANCEL, a named signal) to an unfinished invocation."""
    notify(step, inv, message, idx if isinstance(idx, str) else -idx)


def complete_signal(
    step: Step,
    invocation_id: str,
    idx: int | str,
    value: bytes | None,
    failure: Failure | None,
    report: bool = True,
) -> None:
    """Signal `idx` (an awakeable's index, or a named signal's name) of an invocation."""
    if not step.local(invocation_id):
        step.deliver(bodies.Signaled(invocation_id, idx, value, failure))
        return
    inv = step.load(invocation_id)
    if inv is None:
        if report:
            step.actions.append(Rejected(invocation_id, "no such invocation", code=404))
        return
    message = pm.SignalNotification(name=idx) if isinstance(idx, str) else pm.SignalNotification(idx=idx)
    if failure is not None:
        message.failure.CopyFrom(pm.Failure(code=failure.code, message=failure.message))
    else:
        message.value.content = value or b""
    signal(step, inv, idx, message)  # completed invocations ignore it: Restate answers 202 anyway


def _calls_in_flight(step: Step, inv: Invocation) -> list[str]:
    """Ids of the invocations `inv` called and has no result from yet."""
    call, call_id, call_result = (
        pm.TYPE_OF[pm.CallCommand],
        pm.TYPE_OF[pm.CallInvocationIdCompletion],
        pm.TYPE_OF[pm.CallCompletion],
    )
    id_handles: dict[int, int] = {}  # id notification handle -> result handle
    children: dict[int, str] = {}  # result handle -> child id
    finished: set[int] = set()
    for message in step.read_journal(inv):
        code = message_type(message)
        if code == call:
            id_handles[message.invocation_id_notification_idx] = message.result_completion_id
        elif code == call_id and message.completion_id in id_handles:
            children[id_handles[message.completion_id]] = message.invocation_id
        elif code == call_result:
            finished.add(message.completion_id)
    return [child for handle, child in children.items() if handle not in finished]


def purge(step: Step, invocation_id: str) -> None:
    inv = _control(step, invocation_id, CONTROLLABLE["purge"], "purge")
    if inv is not None:
        step.forget(inv)


def recover(step: Step) -> None:
    """Attempts that were running when the process stopped start again (a new epoch)."""
    for inv in step.txn.invocations_with_status(Status.RUNNING):
        cached = step.load(inv.id)
        start(step, cached if cached is not None else inv)


def schedule_timer(step: Step, timer: Timer) -> None:
    """Store a timer and arm it once the transaction is durable."""
    step.txn.put_timer(timer)
    step.actions.append(ScheduleTimer(timer))


def _failed(code: int, message: str) -> Outcome:
    return Outcome(failure=Failure(code=code, message=message))


def caller_result(caller: Caller, outcome: Outcome) -> Any:
    """The notification that hands `outcome` to a caller: a call's result, or an attach's."""
    kind = pm.AttachInvocationCompletion if caller.attach else pm.CallCompletion
    return result_notification(kind, caller.completion_id, outcome)


def result_notification(kind: Any, completion_id: int, outcome: Outcome) -> Any:
    if outcome.failure is not None:
        failure = pm.Failure(code=outcome.failure.code, message=outcome.failure.message)
        return kind(completion_id=completion_id, failure=failure)
    return kind(completion_id=completion_id, value=pm.Value(content=outcome.value or b""))
