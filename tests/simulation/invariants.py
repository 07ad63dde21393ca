"""What must hold after every step of a simulation, and at its end.

After every command (inside the batch, on the transaction's view):
  - per-key FIFO: an exclusive invocation starts only when every invocation that entered its
    key's queue before it has completed.
After every commit (on the invocations the batch changed):
  - one completion per invocation: a completed invocation never changes its outcome or status;
  - at most one exclusive invocation of a key is active (running, suspended, backing off, paused);
  - a journal holds at most one result per completion id.
Whenever a `ctx.run` step executes:
  - its result is not in the committed journal (a stored step never runs again).
Every few steps, over every invocation (nothing stuck):
  - running: an attempt of that number is in memory, or its output is on the way;
  - suspended: it waits for something, and not for a result already in its journal;
  - backing off / scheduled: its timer is stored; pending: it is in its key's queue behind a
    holder that has not finished; nothing is paused but by an operator.
At the end, once the world has drained without faults (`check_end`): everything completed,
no timer, lock or queue left, and the state equals the model of the workload.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import msgspec

from perdure.engine.actions import Accepted, StartAttempt
from perdure.engine.commands import AttemptOutput, Command, FireTimer, Recover
from perdure.engine.step import decode_entry
from perdure.protocol import messages as pm
from perdure.protocol.codec import message_type
from perdure.storage.api import Invocation, Status, Transaction

from . import durable

if TYPE_CHECKING:
    from .world import World

_ACTIVE = {Status.RUNNING, Status.SUSPENDED, Status.BACKING_OFF, Status.PAUSED}
_decode_invocation = msgspec.msgpack.Decoder(Invocation).decode
_RUN = pm.TYPE_OF[pm.RunCommand]
_RUN_DONE = pm.TYPE_OF[pm.RunCompletion]
_SIGNAL = pm.TYPE_OF[pm.SignalNotification]
SCAN_EVERY = 20


class Violation(AssertionError):
    """An invariant does not hold: the message says which, and what was seen."""


Key = tuple[str, str]


class Invariants:
    def __init__(self, world: World) -> None:
        self.w = world
        self.entered: list[tuple[Key, str]] = []  # exclusive invocations, in the order they queued
        self._entered_committed = 0
        self._active: dict[Key, set[str]] = {}
        self._steps = 0
        self.seen: list[str] = []  # violations seen where they cannot be raised

    # ---- per command

    def before_apply(self, txn: Transaction, command: Command) -> Status | None:
        if isinstance(command, FireTimer) and command.timer.kind == "invoke":
            inv = txn.get_invocation(command.timer.invocation_id)
            return None if inv is None else inv.status
        return None

    def after_apply(
        self, txn: Transaction, command: Command, actions: list[Any], before: Status | None
    ) -> None:
        for action in actions:
            if type(action) is Accepted and not action.previously:
                inv = txn.get_invocation(action.invocation_id)
                if inv is not None and _queues(inv) and inv.status is not Status.SCHEDULED:
                    self.entered.append(((inv.service, inv.key or ""), inv.id))
        if before is Status.SCHEDULED and isinstance(command, FireTimer):
            inv = txn.get_invocation(command.timer.invocation_id)
            if inv is not None and _queues(inv) and inv.status not in (Status.SCHEDULED, Status.COMPLETED):
                self.entered.append(((inv.service, inv.key or ""), inv.id))
        for action in actions:
            if type(action) is StartAttempt:
                self._fifo(txn, action.invocation_id)

    def _fifo(self, txn: Transaction, invocation_id: str) -> None:
        inv = txn.get_invocation(invocation_id)
        if inv is None or not _queues(inv):
            return
        key = (inv.service, inv.key or "")
        for k, other in self.entered:
            if other == invocation_id:
                return
            if k == key:
                earlier = txn.get_invocation(other)
                if earlier is not None and earlier.status is not Status.COMPLETED:
                    raise Violation(
                        f"per-key FIFO: {_id(invocation_id)} started on {key} while {_id(other)}, "
                        f"queued before it, is {earlier.status.value}"
                    )
        raise Violation(f"{_id(invocation_id)} started on {key} without having entered its queue")

    # ---- per commit

    def committed(self, previous: durable.Snapshot) -> None:
        self._entered_committed = len(self.entered)
        store = self.w.store
        for invocation_id in durable.changed(previous, store):
            old_record = previous.invocations.get(invocation_id)
            old = None if old_record is None else _decode_invocation(old_record)
            new = store._tables.get_invocation(invocation_id)
            if old is not None and old.status is Status.COMPLETED and not _same_end(old, new):
                after = "deleted" if new is None else f"{new.status.value} {new.outcome}"
                raise Violation(f"{_id(invocation_id)} completed with {old.outcome}, then: {after}")
            if new is None:
                continue
            self._holder(new)
            self._one_result_per_completion(new)
        self._one_holder_per_key()

    def _holder(self, inv: Invocation) -> None:
        if not _queues(inv):
            return
        key = (inv.service, inv.key or "")
        active = self._active.setdefault(key, set())
        if inv.status in _ACTIVE:
            active.add(inv.id)
        else:
            active.discard(inv.id)

    def _one_holder_per_key(self) -> None:
        for key, active in self._active.items():
            if len(active) > 1:
                raise Violation(
                    f"{len(active)} exclusive invocations active on {key}: {sorted(map(_id, active))}"
                )

    def _one_result_per_completion(self, inv: Invocation) -> None:
        seen: set[int] = set()
        for entry in self.w.store._tables.read_journal(inv.id):
            # Signals may repeat (a second cancel, an awakeable completed twice): the first wins.
            if not pm.is_notification(entry.type) or entry.type == _SIGNAL:
                continue
            completion_id = decode_entry(entry).completion_id
            if completion_id in seen:
                raise Violation(
                    f"{_id(inv.id)}'s journal has two results for completion {completion_id}: "
                    f"{_journal(self.w, inv.id)}"
                )
            seen.add(completion_id)

    def restored(self) -> None:
        """The node crashed: forget what was not committed."""
        del self.entered[self._entered_committed :]
        self._active = {}
        for inv in self._invocations():
            self._holder(inv)

    # ---- ctx.run

    def run_executed(self, invocation_id: str, name: str) -> None:
        handles = set()
        for entry in self.w.store._tables.read_journal(invocation_id):
            if entry.type == _RUN:
                message = decode_entry(entry)
                if message.name == name:
                    handles.add(message.result_completion_id)
            elif entry.type == _RUN_DONE and decode_entry(entry).completion_id in handles:
                # Raised from the next step: inside the handler the SDK would take it for the
                # step's own failure and retry it.
                self.seen.append(
                    f"ctx.run {name!r} of {_id(invocation_id)} ran again after its result was stored"
                )

    # ---- every few steps: nothing stuck

    def after_step(self) -> None:
        if self.seen:
            raise Violation(self.seen[0])
        self._steps += 1
        if self._steps % SCAN_EVERY == 0:
            self.scan()

    def scan(self) -> None:
        w = self.w
        tables = w.store._tables
        recovering = any(isinstance(c, Recover) for c in w.inbox)
        for inv in self._invocations():
            status = inv.status
            if status is Status.RUNNING and not recovering and not self._attempt_alive(inv):
                raise Violation(
                    f"{_describe(inv)} is running, but no attempt #{inv.attempt} exists or reports"
                )
            if status is Status.SUSPENDED:
                self._suspended(inv)
            elif status is Status.BACKING_OFF and f"{inv.id}/retry/{inv.attempt}" not in tables.timers:
                raise Violation(f"{_describe(inv)} backs off without a retry timer")
            elif status is Status.SCHEDULED and f"{inv.id}/invoke" not in tables.timers:
                raise Violation(f"{_describe(inv)} is scheduled without a timer")
            elif status is Status.PENDING:
                key = (inv.service, inv.key or "")
                holder = tables.locks.get(key)
                holder_inv = None if holder is None else tables.get_invocation(holder)
                if inv.id not in tables.inboxes.get(key, ()):
                    raise Violation(f"{_describe(inv)} is pending but not in its key's queue")
                if holder_inv is None or holder_inv.status is Status.COMPLETED:
                    raise Violation(
                        f"{_describe(inv)} is pending behind {holder}, which is not holding its key"
                    )
            elif status is Status.PAUSED and inv.id not in w.client.pause_asked:
                raise Violation(f"{_describe(inv)} is paused, and no operator asked (retries are unlimited)")
        for key, holder in tables.locks.items():
            holder_inv = tables.get_invocation(holder)
            if holder_inv is None or holder_inv.status is Status.COMPLETED:
                raise Violation(f"the lock of {key} is held by {_id(holder)}, which has finished or is gone")

    def _attempt_alive(self, inv: Invocation) -> bool:
        w = self.w
        running = w.attempts.live.get(inv.id)
        if running is not None and running.number == inv.attempt:
            return True
        mine = [m for m in w.inbox if isinstance(m, AttemptOutput) and m.invocation_id == inv.id]
        mine += list(w.net.in_flight(("out", inv.id, str(inv.attempt))))
        return any(m.attempt == inv.attempt for m in mine)

    def _suspended(self, inv: Invocation) -> None:
        if not (inv.waiting_completions or inv.waiting_signals or inv.waiting_named_signals):
            raise Violation(f"{_describe(inv)} is suspended waiting for nothing")
        for entry in self.w.store._tables.read_journal(inv.id):
            if not pm.is_notification(entry.type):
                continue
            message = decode_entry(entry)
            if entry.type == _SIGNAL:
                hit = message.WhichOneof("signal_id") == "idx" and message.idx in inv.waiting_signals
            else:
                hit = message.completion_id in inv.waiting_completions
            if hit:
                raise Violation(
                    f"{_describe(inv)} is suspended waiting for a result already in its journal: "
                    f"{type(message).__name__}; {_journal(self.w, inv.id)}"
                )

    def _invocations(self) -> Iterable[Invocation]:
        tables = self.w.store._tables
        return [_decode_invocation(r) for r in tables.invocations.values()]


def _same_end(old: Invocation, new: Invocation | None) -> bool:
    return new is not None and new.status is Status.COMPLETED and new.outcome == old.outcome


def _queues(inv: Invocation) -> bool:
    """Takes its key's lock (an exclusive handler of an object, or a workflow's run)."""
    return inv.exclusive and inv.key is not None


def _id(invocation_id: str) -> str:
    return invocation_id[-8:]


def _describe(inv: Invocation) -> str:
    return f"{_id(inv.id)} ({inv.service}/{inv.handler} key={inv.key!r}, attempt {inv.attempt})"


def _journal(world: World, invocation_id: str) -> str:
    names = []
    for entry in world.store._tables.read_journal(invocation_id):
        message = decode_entry(entry)
        name = pm.NAME_OF.get(message_type(message), hex(entry.type))
        cid = getattr(message, "completion_id", None) or getattr(message, "result_completion_id", None)
        names.append(f"{name}({cid})" if cid else name)
    return "[" + ", ".join(names) + "]"
