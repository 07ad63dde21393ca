"""Applying what a running attempt sends: journal each command and carry out its effect.

Commands are appended in the order received; state changes, timers and child invocations are
written in the same transaction, so the journal and its effects are never out of step.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from perdure.engine import egress, lifecycle, promises
from perdure.engine.commands import AttemptOutput, Invoke
from perdure.engine.step import Step
from perdure.protocol import awakeables, ids
from perdure.protocol import egress as egress_wire
from perdure.protocol import messages as pm
from perdure.protocol.codec import message_type
from perdure.storage.api import Caller, Failure, Invocation, Outcome, Status, Timer


class _InvalidCommand(Exception):
    """The attempt sent a command its handler may not use; the attempt fails (and retries)."""


_RUNNING = Status.RUNNING
_COMMAND_MIN, _COMMAND_MAX, _CUSTOM_MIN = pm.COMMAND_MIN, pm.COMMAND_MAX, pm.CUSTOM_MIN


def apply_output(step: Step, cmd: AttemptOutput) -> None:
    inv = step.load(cmd.invocation_id)
    attempt = cmd.attempt
    if inv is None or inv.status is not _RUNNING or inv.attempt != attempt:
        return  # a stale attempt: its invocation has moved on
    for message in cmd.messages:
        code = message_type(message)
        if _COMMAND_MIN <= code <= _COMMAND_MAX or code >= _CUSTOM_MIN:  # pm.is_command, inlined
            try:
                _command(step, inv, code, message)
            except _InvalidCommand as e:
                lifecycle.fail_attempt(step, inv, Failure(code=pm.PROTOCOL_VIOLATION, message=str(e)))
                return
        else:
            handler = _CONTROL.get(code)
            if handler is None:
                name = pm.NAME_OF.get(code, hex(code))
                lifecycle.fail_attempt(
                    step, inv, Failure(pm.PROTOCOL_VIOLATION, f"unexpected message {name}")
                )
                return
            handler(step, inv, message)
        if inv.status is not _RUNNING or inv.attempt != attempt:
            return  # the attempt ended (End, Suspension, Error)


def _command(step: Step, inv: Invocation, code: int, message: Any) -> None:
    effect = _EFFECTS.get(code)
    if effect is None and code < pm.CUSTOM_MIN and code not in _JOURNAL_ONLY:
        raise _InvalidCommand(f"{pm.NAME_OF.get(code, hex(code))} is not supported by this engine yet")
    inv.command_count += 1
    step.append(inv, message)
    if effect is not None:
        effect(step, inv, message)


# ---- effects of commands


def _writable(step: Step, inv: Invocation) -> tuple[str, str]:
    info = step.registry.get(inv.service, inv.handler)
    if info is None or not info.writes_state or inv.key is None:
        raise _InvalidCommand(
            f"{inv.service}/{inv.handler} may not write state (only exclusive object handlers can)"
        )
    return inv.service, inv.key


def _readable(step: Step, inv: Invocation) -> tuple[str, str]:
    if inv.key is None:
        raise _InvalidCommand(f"{inv.service}/{inv.handler} has no key, so no state")
    return inv.service, inv.key


def _set_state(step: Step, inv: Invocation, m: Any) -> None:
    step.txn.set_state(*_writable(step, inv), m.key, m.value.content)


def _clear_state(step: Step, inv: Invocation, m: Any) -> None:
    step.txn.clear_state(*_writable(step, inv), m.key)


def _clear_all_state(step: Step, inv: Invocation, m: Any) -> None:
    step.txn.clear_all_state(*_writable(step, inv))


def _get_lazy_state(step: Step, inv: Invocation, m: Any) -> None:
    value = step.txn.get_state(*_readable(step, inv), m.key)
    result = pm.GetLazyStateCompletion(completion_id=m.result_completion_id)
    if value is None:
        result.void.SetInParent()
    else:
        result.value.content = value
    lifecycle.notify(step, inv, result, m.result_completion_id)


def _get_lazy_state_keys(step: Step, inv: Invocation, m: Any) -> None:
    keys = sorted(step.txn.get_all_state(*_readable(step, inv)))
    result = pm.GetLazyStateKeysCompletion(
        completion_id=m.result_completion_id, state_keys=pm.StateKeys(keys=keys)
    )
    lifecycle.notify(step, inv, result, m.result_completion_id)


def _sleep(step: Step, inv: Invocation, m: Any) -> None:
    timer = Timer(
        id=f"{inv.id}/sleep/{m.result_completion_id}",
        fire_at=m.wake_up_time,
        kind="sleep",
        invocation_id=inv.id,
        completion_id=m.result_completion_id,
    )
    lifecycle.schedule_timer(step, timer)


def _child(step: Step, inv: Invocation, m: Any, caller: Caller | None, execute_at: int | None) -> None:
    key = m.key if step.registry.get(m.service_name, m.handler_name) is None or _keyed(step, m) else None
    idempotency_key = m.idempotency_key if m.HasField("idempotency_key") else None
    info = step.registry.get(m.service_name, m.handler_name)
    if info is not None and info.workflow_run and key is not None:
        child_id = ids.workflow_id(m.service_name, key)
    elif idempotency_key is not None:
        if not idempotency_key:
            raise _InvalidCommand("an idempotency key must not be empty")
        child_id = ids.idempotent_id(m.service_name, m.handler_name, key, idempotency_key)
    else:
        child_id = ids.child_id(inv.id, inv.command_count - 1, m.service_name, key)
    idx = m.invocation_id_notification_idx
    lifecycle.notify(step, inv, pm.CallInvocationIdCompletion(completion_id=idx, invocation_id=child_id), idx)
    lifecycle.invoke(
        step,
        Invoke(
            invocation_id=child_id,
            service=m.service_name,
            handler=m.handler_name,
            key=key,
            input=m.parameter,
            headers=[(h.key, h.value) for h in m.headers],
            idempotency_key=idempotency_key,
            caller=caller,
            execute_at=execute_at,
        ),
    )


def _keyed(step: Step, m: Any) -> bool:
    info = step.registry.get(m.service_name, m.handler_name)
    return info is not None and info.keyed


def _call(step: Step, inv: Invocation, m: Any) -> None:
    _child(step, inv, m, Caller(inv.id, m.result_completion_id), None)


def _one_way_call(step: Step, inv: Invocation, m: Any) -> None:
    if m.service_name == egress_wire.SERVICE:
        if m.handler_name != egress_wire.HANDLER:
            raise _InvalidCommand(f"{egress_wire.SERVICE} has one handler, {egress_wire.HANDLER}")
        try:
            egress.accept(step, inv, m)
        except ValueError as e:
            raise _InvalidCommand(str(e)) from e
        return
    _child(step, inv, m, None, m.invoke_time or None)


def _output(step: Step, inv: Invocation, m: Any) -> None:
    """Remember the result; the invocation completes with it at End."""
    if m.WhichOneof("result") == "failure":
        inv.outcome = Outcome(failure=Failure(code=m.failure.code, message=m.failure.message))
    else:
        inv.outcome = Outcome(value=m.value.content)


def _send_signal(step: Step, inv: Invocation, m: Any) -> None:
    named = m.WhichOneof("signal_id") == "name"
    if not named and m.idx == pm.CANCEL_SIGNAL:
        lifecycle.cancel(step, m.target_invocation_id, report=False)
        return
    result = m.WhichOneof("result")
    failure = Failure(m.failure.code, m.failure.message) if result == "failure" else None
    value = m.value.content if result == "value" else None
    signal = m.name if named else m.idx
    lifecycle.complete_signal(step, m.target_invocation_id, signal, value, failure, report=False)


def _complete_awakeable(step: Step, inv: Invocation, m: Any) -> None:
    try:
        target, idx = awakeables.parse(m.awakeable_id)
    except ValueError as e:
        raise _InvalidCommand(str(e)) from None
    failure = Failure(m.failure.code, m.failure.message) if m.WhichOneof("result") == "failure" else None
    value = m.value.content if m.WhichOneof("result") == "value" else None
    lifecycle.complete_signal(step, target, idx, value, failure, report=False)


def _target_id(step: Step, m: Any) -> str:
    """The invocation an attach / get-output command names (by id, idempotency key or workflow)."""
    which = m.WhichOneof("target")
    if which == "invocation_id":
        return str(m.invocation_id)
    if which == "idempotent_request_target":
        t = m.idempotent_request_target
        key = t.service_key if t.HasField("service_key") else None
        return ids.idempotent_id(t.service_name, t.handler_name, key, t.idempotency_key)
    if which == "workflow_target":
        return ids.workflow_id(m.workflow_target.workflow_name, m.workflow_target.workflow_key)
    raise _InvalidCommand("attach/get-output names no target invocation")


def _attach_invocation(step: Step, inv: Invocation, m: Any) -> None:
    """Wait for another invocation's result (at once when it has one)."""
    lifecycle.attach(step, _target_id(step, m), Caller(inv.id, m.result_completion_id, attach=True))


def _get_invocation_output(step: Step, inv: Invocation, m: Any) -> None:
    """Another invocation's result if it has one now, else void."""
    lifecycle.peek(step, _target_id(step, m), Caller(inv.id, m.result_completion_id))


def _promise(effect: Callable[[Step, Invocation, Any], None]) -> Callable[[Step, Invocation, Any], None]:
    def checked(step: Step, inv: Invocation, m: Any) -> None:
        info = step.registry.get(inv.service, inv.handler)
        if info is None or not info.workflow or inv.key is None:
            raise _InvalidCommand(
                f"{inv.service}/{inv.handler} is not a workflow handler: it has no promises"
            )
        effect(step, inv, m)

    return checked


_EFFECTS: dict[int, Callable[[Step, Invocation, Any], None]] = {
    pm.TYPE_OF[pm.GetPromiseCommand]: _promise(promises.get),
    pm.TYPE_OF[pm.PeekPromiseCommand]: _promise(promises.peek),
    pm.TYPE_OF[pm.CompletePromiseCommand]: _promise(promises.complete),
    pm.TYPE_OF[pm.SendSignalCommand]: _send_signal,
    pm.TYPE_OF[pm.CompleteAwakeableCommand]: _complete_awakeable,
    pm.TYPE_OF[pm.OutputCommand]: _output,
    pm.TYPE_OF[pm.SetStateCommand]: _set_state,
    pm.TYPE_OF[pm.ClearStateCommand]: _clear_state,
    pm.TYPE_OF[pm.ClearAllStateCommand]: _clear_all_state,
    pm.TYPE_OF[pm.GetLazyStateCommand]: _get_lazy_state,
    pm.TYPE_OF[pm.GetLazyStateKeysCommand]: _get_lazy_state_keys,
    pm.TYPE_OF[pm.SleepCommand]: _sleep,
    pm.TYPE_OF[pm.CallCommand]: _call,
    pm.TYPE_OF[pm.OneWayCallCommand]: _one_way_call,
    pm.TYPE_OF[pm.AttachInvocationCommand]: _attach_invocation,
    pm.TYPE_OF[pm.GetInvocationOutputCommand]: _get_invocation_output,
}

_JOURNAL_ONLY = {
    pm.TYPE_OF[pm.InputCommand],
    pm.TYPE_OF[pm.RunCommand],
    pm.TYPE_OF[pm.GetEagerStateCommand],
    pm.TYPE_OF[pm.GetEagerStateKeysCommand],
}


# ---- control messages


def _propose_run(step: Step, inv: Invocation, m: Any) -> None:
    cid = m.result_completion_id
    result = pm.RunCompletion(completion_id=cid)
    if m.WhichOneof("result") == "failure":
        result.failure.CopyFrom(m.failure)
    else:
        result.value.content = m.value
    lifecycle.notify(step, inv, result, cid)


def _end(step: Step, inv: Invocation, m: Any) -> None:
    lifecycle.complete(step, inv, inv.outcome or Outcome(value=b""))


def _suspension(step: Step, inv: Invocation, m: Any) -> None:
    completions, signals = list(m.waiting_completions), list(m.waiting_signals)
    names = list(m.waiting_named_signals)
    if m.HasField("awaiting_on"):
        _flatten(m.awaiting_on, completions, signals, names)
    if not completions and not signals and not names:
        lifecycle.fail_attempt(step, inv, Failure(pm.PROTOCOL_VIOLATION, "suspended waiting on nothing"))
        return
    lifecycle.suspend(step, inv, sorted(set(completions)), sorted(set(signals)), sorted(set(names)))


def _flatten(future: Any, completions: list[int], signals: list[int], names: list[str]) -> None:
    """Resume on any leaf: the SDK suspends again if that was not enough."""
    completions.extend(future.waiting_completions)
    signals.extend(future.waiting_signals)
    names.extend(future.waiting_named_signals)
    for nested in future.nested_futures:
        _flatten(nested, completions, signals, names)


def _error(step: Step, inv: Invocation, m: Any) -> None:
    delay = m.next_retry_delay if m.HasField("next_retry_delay") else None
    failure = Failure(code=m.code or 500, message=m.message)
    lifecycle.fail_attempt(step, inv, failure, delay, behavior=m.behavior)


def _ignore(step: Step, inv: Invocation, m: Any) -> None:
    pass


_CONTROL: dict[int, Callable[[Step, Invocation, Any], None]] = {
    pm.TYPE_OF[pm.ProposeRunCompletionMessage]: _propose_run,
    pm.TYPE_OF[pm.EndMessage]: _end,
    pm.TYPE_OF[pm.SuspensionMessage]: _suspension,
    pm.TYPE_OF[pm.ErrorMessage]: _error,
    pm.TYPE_OF[pm.AwaitingOnMessage]: _ignore,
}
