"""Workflow promises: named, durable, completed once; every invocation waiting on one is woken.

Kept as state of the system object (`system.SYSTEM`) under `promises/{workflow}/{key}`, so a
promise is completed in the same transaction as the journal entry that completes it.
"""

from __future__ import annotations

from typing import Any

import msgspec

from perdure.engine import lifecycle
from perdure.engine.step import Step
from perdure.engine.system import SYSTEM, promises_key
from perdure.protocol import messages as pm
from perdure.storage.api import Caller, Failure, Invocation, Outcome

_encode = msgspec.msgpack.Encoder().encode


class Promise(msgspec.Struct):
    outcome: Outcome | None = None
    waiters: list[Caller] = msgspec.field(default_factory=list)


_decode = msgspec.msgpack.Decoder(Promise).decode


def _key(inv: Invocation) -> str:
    return promises_key(inv.service, inv.key or "")


def _load(step: Step, inv: Invocation, name: str) -> Promise:
    raw = step.txn.get_state(SYSTEM, _key(inv), name.encode())
    return Promise() if raw is None else _decode(raw)


def _save(step: Step, inv: Invocation, name: str, promise: Promise) -> None:
    step.txn.set_state(SYSTEM, _key(inv), name.encode(), _encode(promise))


def _result(cls: Any, completion_id: int, outcome: Outcome) -> Any:
    message = cls(completion_id=completion_id)
    if outcome.failure is not None:
        message.failure.CopyFrom(pm.Failure(code=outcome.failure.code, message=outcome.failure.message))
    else:
        message.value.content = outcome.value or b""
    return message


def get(step: Step, inv: Invocation, m: Any) -> None:
    promise = _load(step, inv, m.key)
    cid = m.result_completion_id
    if promise.outcome is not None:
        lifecycle.notify(step, inv, _result(pm.GetPromiseCompletion, cid, promise.outcome), cid)
        return
    promise.waiters.append(Caller(inv.id, cid))
    _save(step, inv, m.key, promise)


def peek(step: Step, inv: Invocation, m: Any) -> None:
    promise = _load(step, inv, m.key)
    cid = m.result_completion_id
    if promise.outcome is None:
        message = pm.PeekPromiseCompletion(completion_id=cid, void=pm.Void())
    else:
        message = _result(pm.PeekPromiseCompletion, cid, promise.outcome)
    lifecycle.notify(step, inv, message, cid)


def complete(step: Step, inv: Invocation, m: Any) -> None:
    promise = _load(step, inv, m.key)
    cid = m.result_completion_id
    if promise.outcome is not None:
        failure = pm.Failure(code=409, message=f"promise {m.key!r} was already completed")
        lifecycle.notify(step, inv, pm.CompletePromiseCompletion(completion_id=cid, failure=failure), cid)
        return
    if m.WhichOneof("completion") == "completion_failure":
        outcome = Outcome(failure=Failure(m.completion_failure.code, m.completion_failure.message))
    else:
        outcome = Outcome(value=m.completion_value.content)
    waiters, promise.waiters, promise.outcome = promise.waiters, [], outcome
    _save(step, inv, m.key, promise)
    lifecycle.notify(step, inv, pm.CompletePromiseCompletion(completion_id=cid, void=pm.Void()), cid)
    for waiter in waiters:
        target = step.load(waiter.invocation_id)
        if target is not None:
            message = _result(pm.GetPromiseCompletion, waiter.completion_id, outcome)
            lifecycle.notify(step, target, message, waiter.completion_id)
