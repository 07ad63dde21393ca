"""The deterministic core: `apply(txn, command) -> actions`.

It only reads and writes the transaction and returns what the runtime should do once the
transaction is durable. No I/O, no wall clock: the time comes from the injected `now`.
"""

from __future__ import annotations

from collections.abc import Callable

from perdure.engine import deadletter, deliveries, egress, intake, lifecycle
from perdure.engine.actions import Action
from perdure.engine.commands import (
    AttemptOutput,
    Cancel,
    Command,
    CompleteSignal,
    Deliver,
    Discard,
    EgressProduced,
    Expire,
    FireTimer,
    Ingest,
    Invoke,
    Kill,
    MarkProduced,
    Pause,
    Purge,
    Recover,
    Redrive,
    ResetOffset,
    Resume,
)
from perdure.engine.counters import Counters
from perdure.engine.entries import apply_output
from perdure.engine.registry import Registry
from perdure.engine.step import EVERYTHING, Partitioning, Step
from perdure.storage.api import Transaction


class StateMachine:
    """Applies commands of one partition, in order. Single writer: no locks."""

    def __init__(
        self,
        registry: Registry,
        now: Callable[[], int],
        *,
        counters: Counters | None = None,
        partitioning: Partitioning = EVERYTHING,
    ) -> None:
        self.registry = registry
        self._now = now
        self.counters = counters if counters is not None else Counters()
        self.partitioning = partitioning

    def apply(self, txn: Transaction, command: Command) -> list[Action]:
        step = Step(txn, self._now(), self.registry, self.counters, self.partitioning)
        match command:
            case AttemptOutput():
                apply_output(step, command)
            case Invoke():
                lifecycle.invoke(step, command)
            case FireTimer():
                lifecycle.fire_timer(step, command.timer)
            case Resume():
                lifecycle.resume(step, command.invocation_id)
            case Kill():
                lifecycle.kill(step, command.invocation_id)
            case Cancel():
                lifecycle.cancel(step, command.invocation_id)
            case CompleteSignal():
                lifecycle.complete_signal(
                    step, command.invocation_id, command.idx, command.value, command.failure
                )
            case Pause():
                lifecycle.pause(step, command.invocation_id)
            case Purge():
                lifecycle.purge(step, command.invocation_id)
            case Expire():
                lifecycle.expire(step, command.invocation_ids)
            case Ingest():
                intake.ingest(step, command)
            case ResetOffset():
                intake.reset_offset(step, command)
            case Deliver():
                deliveries.apply(step, command)
            case EgressProduced():
                egress.produced(step, command)
            case Redrive():
                deadletter.redrive(step, command.invocation_id)
            case Discard():
                deadletter.discard(step, command.invocation_id)
            case MarkProduced():
                deadletter.mark_produced(step, command)
            case Recover():
                lifecycle.recover(step)
        step.flush()
        return step.actions
