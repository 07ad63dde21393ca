"""Applying what other partitions delivered: each body's effect, as if it had happened here.

A `Deliver` command carries the deliveries waiting for this partition, oldest first; each is applied
and deleted in the same transaction, so it takes effect exactly once, and in the order its sender
wrote it. Applying one may deliver further effects (a result back to the caller in another
partition).
"""

from __future__ import annotations

from perdure.engine import bodies, deadletter, lifecycle
from perdure.engine.commands import Deliver, Invoke
from perdure.engine.step import Step, decode_entry
from perdure.storage.api import Entry


def apply(step: Step, cmd: Deliver) -> None:
    for delivery in cmd.deliveries:
        step.txn.delete_delivery(delivery.id)
        step.counters.deliveries_applied += 1
        _effect(step, bodies.decode(delivery.body))


def _effect(step: Step, body: bodies.Body) -> None:
    match body:
        case bodies.Invoked():
            lifecycle.invoke(
                step,
                Invoke(
                    invocation_id=body.invocation_id,
                    service=body.service,
                    handler=body.handler,
                    key=body.key,
                    input=body.input,
                    headers=tuple(body.headers),
                    idempotency_key=body.idempotency_key,
                    caller=body.caller,
                    execute_at=body.execute_at,
                    failure=body.failure,
                    on_failure=body.on_failure,
                    queue_key=body.queue_key,
                    fresh=body.fresh,  # a delivery applies once, so a fresh id is still unused
                ),
            )
        case bodies.Notified():
            inv = step.load(body.invocation_id)
            if inv is not None:
                lifecycle.notify(step, inv, decode_entry(Entry(body.type, body.payload)), body.handle)
        case bodies.Signaled():
            lifecycle.complete_signal(
                step, body.invocation_id, body.idx, body.value, body.failure, report=False
            )
        case bodies.Stopped():
            if body.kill:
                lifecycle.kill(step, body.invocation_id, report=False)
            else:
                lifecycle.cancel(step, body.invocation_id, report=False)
        case bodies.Attached():
            if body.peek:
                lifecycle.peek(step, body.invocation_id, body.caller)
            else:
                lifecycle.attach(step, body.invocation_id, body.caller)
        case bodies.Controlled():
            control = {
                "resume": lifecycle.resume,
                "pause": lifecycle.pause,
                "purge": lifecycle.purge,
                "redrive": deadletter.redrive,
                "discard": deadletter.discard,
            }
            control[body.verb](step, body.invocation_id)
