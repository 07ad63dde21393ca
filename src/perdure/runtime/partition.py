"""A partition: one store view, its state machine, its processor and its timers.

The single writer of the invocations, journals, state, inboxes and timers of the keys that hash to
it. Commands enter through `submit`; the actions of each durable batch go out through `dispatch`:
timers stay here, attempts and completions go to the node (`Effects`). In a cluster, it also
applies what other partitions delivered to it (`poke` when some arrived; it looks every second too).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

from perdure.engine.actions import (
    AbortAttempt,
    Action,
    Completed,
    Delivered,
    EgressPending,
    Notify,
    ScheduleTimer,
    StartAttempt,
)
from perdure.engine.commands import Command, Deliver, Recover
from perdure.engine.counters import Counters
from perdure.engine.registry import Registry
from perdure.engine.state_machine import StateMachine
from perdure.engine.step import EVERYTHING, Partitioning
from perdure.runtime.clock import Clock
from perdure.runtime.delivery_reads import DELIVERY_BATCH
from perdure.runtime.processor import Processor, Stats
from perdure.runtime.timers import TimerService
from perdure.storage.api import Delivery, Store, Timer

log = logging.getLogger("perdure.partition")

#: A partition looks for deliveries this often even when nobody pokes it (a lost notification).
DELIVERY_POLL_S = 1.0


class Effects(Protocol):
    """What a partition's actions ask of the node: run attempts, answer whoever waits."""

    def start(self, action: StartAttempt) -> None: ...
    def notify(self, action: Notify) -> None: ...
    def abort(self, invocation_id: str) -> None: ...
    def completed(self, action: Completed) -> None: ...
    def delivered(self, partition: int) -> None: ...
    def egress_pending(self, partition: int) -> None: ...


class Partition:
    """The engine of partition `number` (see the module docstring).

    `partitioning` says which invocations it owns (by default: every one, the one partition of an
    engine alone on its database); `deliveries(number)` reads what others delivered to it, oldest
    first (None: nothing can be, there are no others).
    """

    def __init__(
        self,
        store: Store,
        registry: Registry,
        clock: Clock,
        effects: Effects,
        *,
        counters: Counters,
        number: int = 0,
        partitioning: Partitioning = EVERYTHING,
        deliveries: Callable[[int], Awaitable[Sequence[Delivery]]] | None = None,
    ) -> None:
        self.store = store
        self.number = number
        self._effects = effects
        self.machine = StateMachine(registry, clock.now_ms, counters=counters, partitioning=partitioning)
        self.processor = Processor(store, self.machine, self.dispatch)
        self.timers = TimerService(clock, self.processor.submit)
        self._deliveries = deliveries
        self._poked = asyncio.Event()
        self._reading = False  # a read of deliveries is under way: what it finds is work to come
        self._inbox: asyncio.Task[None] | None = None

    async def start(self, timers: Sequence[Timer]) -> None:
        """Arm the stored timers, start processing, and restart the attempts a crash cut short."""
        self.timers.load(timers)
        self.processor.start()
        self.timers.start()
        await self.processor.submit_and_wait(Recover())
        if self._deliveries is not None:
            self._inbox = asyncio.get_running_loop().create_task(self._apply_deliveries())

    def poke(self) -> None:
        """Deliveries arrived for this partition."""
        self._poked.set()

    async def _apply_deliveries(self) -> None:
        """One `Deliver` at a time: what it applies is deleted when it commits, before the next read
        (so a delivery committed late, below ids already seen, is never passed over). The read may
        be made together with other partitions' (`perdure.runtime.delivery_reads`): it still begins
        after this partition's previous `Deliver` committed. After a read of fewer than a full
        batch the next one waits for a poke: everything committed before the read began was in it."""
        assert self._deliveries is not None
        while True:
            self._poked.clear()
            self._reading = True
            try:
                found = await self._deliveries(self.number)
            finally:
                self._reading = False
            if found:
                await self.processor.submit_and_wait(Deliver(found))
                if len(found) == DELIVERY_BATCH:
                    continue  # more may be waiting
            # What commits after the read began pokes (`d <partition>`, or `delivered` from this
            # node) once committed, setting `_poked` again: waiting for it passes nothing over.
            if not self._poked.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._poked.wait(), DELIVERY_POLL_S)

    async def quiesce(self) -> None:
        """Take no more work in: stop applying deliveries and firing timers (the next owner will).
        What is queued and what running attempts send is still applied."""
        if self._inbox is not None:
            self._inbox.cancel()
            with contextlib.suppress(BaseException):
                await self._inbox
            self._inbox = None
        await self.timers.stop()

    async def stop(self) -> None:
        """Stop taking work in, finish the queued commands, then stop (the store stays open)."""
        await self.quiesce()
        await self.processor.stop()

    @property
    def done(self) -> bool:
        """The partition stopped by itself (a storage failure, a lost lease: see `failure`)."""
        return self.processor.failure is not None or (self._inbox is not None and self._inbox.done())

    def submit(self, command: Command) -> None:
        self.processor.submit(command)

    async def submit_and_wait(self, command: Command) -> list[Action]:
        return await self.processor.submit_and_wait(command)

    @property
    def idle(self) -> bool:
        """Nothing queued or committing, and no delivery known to wait for it or being looked for."""
        return self.processor.idle and not self._poked.is_set() and not self._reading

    @property
    def failure(self) -> BaseException | None:
        return self.processor.failure

    @property
    def stats(self) -> Stats:
        return self.processor.stats

    def dispatch(self, actions: list[Action]) -> None:
        effects = self._effects
        for action in actions:
            if type(action) is Notify:
                effects.notify(action)
            elif type(action) is StartAttempt:
                effects.start(action)
            elif type(action) is AbortAttempt:
                effects.abort(action.invocation_id)
            elif type(action) is ScheduleTimer:
                self.timers.schedule(action.timer)
            elif type(action) is Completed:
                effects.completed(action)
            elif type(action) is Delivered:
                effects.delivered(action.partition)
            elif type(action) is EgressPending:
                effects.egress_pending(action.partition)
